"""frame_header: an encapsulated frame's own header is read and checked before any decoder runs.

Frames are built byte by byte here (the marker layouts of ITU T.81 B.2, T.87 and ISO 15444-1
A.5.1, PS3.5 G.5); real ones come from every encapsulated file pydicom and pydicom-data ship.
"""

from __future__ import annotations

import os
import warnings

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.encaps import get_frame
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    MPEG2MPML,
    RLELossless,
)

from dicom_io.errors import DicomIOError, PixelDecodeError, SizeLimitError
from dicom_io.frame_header import (
    CHECKED_SYNTAXES,
    FrameHeader,
    check_frame,
    j2k_frame_header,
    jpeg_frame_header,
    rle_segment_count,
)

SOI, SOS, EOI = b"\xff\xd8", b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00", b"\xff\xd9"


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _sof(rows: int, cols: int, *, components: int = 1, precision: int = 8, marker: int = 0xC0) -> bytes:
    specs = b"".join(bytes([i + 1, 0x11, 0]) for i in range(components))
    return _segment(marker, bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big")
                    + bytes([components]) + specs)


APP0 = _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
DQT = _segment(0xDB, bytes(65))
DHT = _segment(0xC4, bytes(29))  # C4 is DHT, not a start of frame


def _jpeg(*segments: bytes) -> bytes:
    return SOI + b"".join(segments) + SOS + b"\x12\x34" + EOI


def test_jpeg_sof_after_other_segments() -> None:
    frame = _jpeg(APP0, DQT, DHT, _sof(12000, 11000, components=3, precision=12, marker=0xC1))
    assert jpeg_frame_header(frame) == FrameHeader("JPEG", 12000, 11000, 3, 12)


def test_jpeg_sof_bytes_inside_a_segment_are_not_a_marker() -> None:
    decoy = _segment(0xE1, b"Exif\x00\x00" + _sof(9999, 9999))  # an SOF inside APP1's payload
    assert jpeg_frame_header(_jpeg(decoy, _sof(64, 32))).rows == 64


def test_jpeg_fill_bytes_before_a_marker() -> None:
    assert jpeg_frame_header(SOI + b"\xff\xff" + _sof(8, 8) + SOS).columns == 8


def test_jpeg_ls_sof55() -> None:
    header = jpeg_frame_header(_jpeg(_sof(100, 200, precision=16, marker=0xF7)))
    assert header == FrameHeader("JPEG-LS", 100, 200, 1, 16)


@pytest.mark.parametrize(
    "frame, fragment",
    [
        (b"\x00\x00" + _sof(8, 8), "not the SOI marker"),
        (_jpeg(APP0, DQT), "the scan starts before any SOF marker"),
        (SOI + APP0 + EOI, "no SOF marker"),
        (SOI + APP0[:5], "no SOF marker"),  # cut inside a segment
        (SOI + _sof(8, 8)[:7], "no SOF marker"),  # cut inside the SOF itself
        (SOI + b"\x12\x34", "expected a marker at byte 2"),
        (SOI + b"\xff\xe0\x00\x01", "has length 1"),
    ],
    ids=["no-soi", "sos-first", "eoi-first", "cut-segment", "cut-sof", "not-a-marker", "bad-length"],
)
def test_jpeg_unreadable_headers(frame: bytes, fragment: str) -> None:
    with pytest.raises(PixelDecodeError, match=fragment) as info:
        jpeg_frame_header(frame)
    assert info.value.reason == "bad-frame-header"
    assert "re-export the image from its source" in str(info.value)


def _siz(x: int, y: int, *, x0: int = 0, y0: int = 0, ssiz: tuple[int, ...] = (11,)) -> bytes:
    body = (
        (0).to_bytes(2, "big")
        + b"".join(v.to_bytes(4, "big") for v in (x, y, x0, y0, x, y, 0, 0))
        + len(ssiz).to_bytes(2, "big")
        + b"".join(bytes([s, 1, 1]) for s in ssiz)
    )
    return b"\xff\x4f" + _segment(0x51, body) + b"\xff\x52\x00\x0c" + bytes(10)


def _box(kind: bytes, payload: bytes) -> bytes:
    return (len(payload) + 8).to_bytes(4, "big") + kind + payload


def test_j2k_siz_bare_and_in_jp2() -> None:
    codestream = _siz(700, 500, x0=100, y0=50, ssiz=(15, 15, 0x8F))  # signed third component
    expected = FrameHeader("JPEG 2000", rows=450, columns=600, components=3, precision=16)
    assert j2k_frame_header(codestream) == expected
    jp2 = (_box(b"jP  ", b"\r\n\x87\n") + _box(b"ftyp", b"jp2 " + bytes(8))
           + _box(b"jp2h", bytes(30)) + _box(b"jp2c", codestream))
    assert j2k_frame_header(jp2) == expected


@pytest.mark.parametrize(
    "frame, fragment",
    [
        (b"\xff\xd8" + _siz(8, 8), "not SOC and SIZ"),
        (_siz(8, 8)[:30], "cut short"),
        (_siz(8, 8).replace(b"\x00\x01\x0b\x01\x01", b"\x00\x02\x0b\x01\x01"), "does not fit 2 components"),
        (_siz(8, 8, x0=9), "lies beyond its size"),
        (_box(b"jP  ", b"\r\n\x87\n") + _box(b"ftyp", bytes(12)), "without a codestream"),
    ],
    ids=["no-soc", "cut-siz", "siz-length", "offset", "jp2-without-jp2c"],
)
def test_j2k_unreadable_headers(frame: bytes, fragment: str) -> None:
    with pytest.raises(PixelDecodeError, match=fragment) as info:
        j2k_frame_header(frame)
    assert info.value.reason == "bad-frame-header"


def _rle(offsets: list[int], total: int) -> bytes:
    header = len(offsets).to_bytes(4, "little") + b"".join(o.to_bytes(4, "little") for o in offsets)
    return header.ljust(64, b"\x00").ljust(total, b"\x01")


def test_rle_segment_count() -> None:
    assert rle_segment_count(_rle([64, 100, 130], 200)) == 3


@pytest.mark.parametrize(
    "frame",
    [_rle([64], 40), _rle([], 100), _rle([64, 64], 100), _rle([80], 100), _rle([64, 100], 100)],
    ids=["short", "zero-segments", "not-rising", "not-at-64", "beyond-frame"],
)
def test_rle_bad_headers(frame: bytes) -> None:
    with pytest.raises(PixelDecodeError) as info:
        rle_segment_count(frame)
    assert info.value.reason == "bad-frame-header"


DICOM_64 = {"rows": 64, "columns": 64, "samples": 1, "bits_allocated": 8, "max_pixel_bytes": 2**20}


@pytest.mark.parametrize(
    "syntax, frame",
    [
        (JPEGBaseline8Bit, _jpeg(_sof(64, 64))),
        (JPEGLSLossless, _jpeg(_sof(64, 64, marker=0xF7))),
        (JPEG2000Lossless, _siz(64, 64, ssiz=(7,))),
    ],
    ids=["jpeg", "jpeg-ls", "j2k"],
)
def test_matching_frames_pass(syntax: str, frame: bytes) -> None:
    header = check_frame(frame, syntax, **DICOM_64)
    assert header is not None and (header.rows, header.columns, header.precision) == (64, 64, 8)


@pytest.mark.parametrize(
    "syntax, frame, says",
    [
        (JPEGBaseline8Bit, _jpeg(_sof(12000, 12000)), "JPEG header says 12000x12000 pixels, 1 component(s), 8 bits"),
        (JPEGBaseline8Bit, _jpeg(_sof(64, 64, components=3)), "3 component(s)"),
        (JPEGBaseline8Bit, _jpeg(_sof(64, 64, precision=12)), "12 bits"),
        (JPEGBaseline8Bit, _jpeg(_sof(0, 64)), "0x64 pixels"),  # height left to a DNL marker
        (JPEGLSLossless, _jpeg(_sof(64, 65, marker=0xF7)), "JPEG-LS header says 64x65"),
        (JPEG2000Lossless, _siz(12000, 12000, ssiz=(7,)), "JPEG 2000 header says 12000x12000"),
        (RLELossless, _rle([64, 80], 100), "RLE header says 2 segments"),
    ],
    ids=["jpeg-size", "jpeg-components", "jpeg-precision", "jpeg-dnl", "jpeg-ls", "j2k", "rle"],
)
def test_mismatched_frames_refused(syntax: str, frame: bytes, says: str) -> None:
    with pytest.raises(PixelDecodeError) as info:
        check_frame(frame, syntax, **DICOM_64)
    assert info.value.reason == "frame-header-mismatch"
    message = str(info.value)
    assert says in message
    assert "the DICOM header says Rows=64, Columns=64, SamplesPerPixel=1, BitsAllocated=8" in message


def test_frame_above_the_limit_refused() -> None:
    with pytest.raises(SizeLimitError) as info:
        check_frame(_jpeg(_sof(64, 64)), JPEGBaseline8Bit, **{**DICOM_64, "max_pixel_bytes": 4095})
    assert info.value.reason == "too-large"
    assert "4,096 bytes, above the limit of 4,095 bytes (raise max_pixel_bytes" in str(info.value)


def test_unchecked_syntax_is_left_to_pydicom() -> None:
    assert MPEG2MPML not in CHECKED_SYNTAXES
    assert check_frame(b"not a codestream", MPEG2MPML, **DICOM_64) is None


def test_rle_passes_without_a_size() -> None:
    assert check_frame(_rle([64], 100), RLELossless, **DICOM_64) is None


# --- real files: what pydicom decodes must pass; the known liar must not ---------------------


def _encapsulated_real_files() -> list[str]:
    paths = []
    for path in sorted({f for f in get_testdata_files() if os.path.isfile(f)}):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                meta = pydicom.filereader.read_file_meta_info(path)
        except Exception:  # noqa: BLE001 - files without meta cannot be encapsulated
            continue
        if meta.get("TransferSyntaxUID") in CHECKED_SYNTAXES:
            paths.append(path)
    return paths


def test_every_real_encapsulated_frame_agrees_with_its_header() -> None:
    paths = _encapsulated_real_files()
    if len(paths) < 30:
        pytest.skip(f"only {len(paths)} encapsulated test files installed")
    liar = get_testdata_file("JPEG2000-embedded-sequence-delimiter.dcm")
    checked, refused = 0, {}
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            try:
                frame = get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames") or 1))
            except Exception:  # noqa: BLE001 - broken encapsulation is the decoder's to report
                continue
        try:
            check_frame(frame, ds.file_meta.TransferSyntaxUID, rows=ds.Rows, columns=ds.Columns,
                        samples=ds.SamplesPerPixel, bits_allocated=ds.BitsAllocated,
                        max_pixel_bytes=512 * 2**20)
            checked += 1
        except DicomIOError as exc:
            refused[os.path.basename(path)] = exc.reason
    assert refused == {os.path.basename(str(liar)): "frame-header-mismatch"}
    assert checked >= 30
