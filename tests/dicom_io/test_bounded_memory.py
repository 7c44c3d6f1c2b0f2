"""Bounded memory on hostile input.

Deflated files inflate only what the header needs (index) or the header plus exactly the Pixel
Data (decode); an encapsulated frame whose own header lies is refused before a decoder
allocates. Checked in-process with ``tracemalloc`` (Python allocations, zlib's output
included), then on ``screen scan --decode`` in a subprocess, where the peak resident memory of
its whole process tree is measured (see :data:`_MEASURE`).

Every hostile file is built here: a 400 MiB run of zeros is deflated once per MiB and the
block repeated after a full flush, so a "400 MiB" element costs the test a millisecond and a
kilobyte. Real deflated data: pydicom's bundled ``image_dfl.dcm`` (see tests/dicom_io/README.md).
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
)

import dicom_io.pixels as pixels_module
from dicom_io.deflate import InflatingReader, deflated_file_meta, read_header
from dicom_io.discover import discover
from dicom_io.errors import DicomIOError, DicomReadError
from dicom_io.index import IndexedFileError, read_instance
from dicom_io.pixels import PixelPolicy, dataset_to_radiograph, load_radiograph
from dicom_io.scan import scan_archive

MiB = 2**20
REPO = Path(__file__).resolve().parents[2]
PIXEL_DATA, TRAILING_PADDING, PRIVATE_CREATOR, PRIVATE_BLOB = 0x7FE00010, 0xFFFCFFFC, 0x7FDF0010, 0x7FDF1000


# --- builders ---------------------------------------------------------------------------------


def encode_body(ds: Dataset) -> bytes:
    """The dataset (no file meta) in explicit VR little endian, as a deflated file holds it."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def element(tag: int, vr: bytes, length: int) -> bytes:
    """An explicit VR little endian header of a long-VR element (OB, OW, UN ...)."""
    return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, length)


def deflate(*pieces: bytes | int, finish: bool = True) -> bytes:
    """A raw deflate stream of the pieces: bytes as they are, an int as that many MiB of
    zeros (one MiB deflated between full flushes, repeated). ``finish=False`` leaves the
    stream open at a byte boundary."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = []
    for piece in pieces:
        if isinstance(piece, int):
            out.append(compressor.flush(zlib.Z_FULL_FLUSH))
            block = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)
            out.append(block * piece)
        else:
            out.append(compressor.compress(piece))
    out.append(compressor.flush(zlib.Z_FINISH if finish else zlib.Z_FULL_FLUSH))
    return b"".join(out)


def write_deflated(path: Path, ds: Dataset, stream: bytes) -> Path:
    """A Part 10 file: preamble, file meta saying Deflated Explicit VR LE, then ``stream``."""
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = DicomBytesIO()
    write_file_meta_info(meta, ds.file_meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00" * 128 + b"DICM" + meta.getvalue() + stream)
    return path


def split_pixels(ds: Dataset) -> tuple[bytes, bytes]:
    """The encoded dataset cut just before its Pixel Data element (the last one)."""
    body = encode_body(ds)
    cut = len(body) - 12 - len(ds.PixelData)  # OW: 12-byte element header, even length
    assert body[cut:cut + 6] == b"\xe0\x7f\x10\x00OW"
    return body[:cut], body[cut:]


def encapsulated(ds: Dataset, syntax: str, frame: bytes, bits: int) -> Dataset:
    ds.file_meta.TransferSyntaxUID = syntax
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored, ds.HighBit = bits, bits - 1
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds


def jpeg_frame(rows: int, cols: int) -> bytes:
    """A real 64 x 64 baseline JPEG whose SOF0 says ``rows`` x ``cols``."""
    image = pytest.importorskip("PIL.Image")
    noise = np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)
    out = io.BytesIO()
    image.fromarray(noise).save(out, "JPEG", quality=90)
    frame = bytearray(out.getvalue())
    sof = frame.index(b"\xff\xc0")
    frame[sof + 5:sof + 9] = rows.to_bytes(2, "big") + cols.to_bytes(2, "big")
    return bytes(frame)


def j2k_frame(rows: int, cols: int) -> bytes:
    """A real 64 x 64 12-bit JPEG 2000 codestream whose SIZ (image and tile) says ``rows`` x ``cols``."""
    openjpeg = pytest.importorskip("openjpeg")
    noise = np.random.default_rng(4).integers(0, 4096, (64, 64), dtype=np.uint16)
    frame = bytearray(openjpeg.encode(noise, bits_stored=12, photometric_interpretation=2, use_mct=False))
    assert frame[:4] == b"\xff\x4f\xff\x51"  # SOC, SIZ: Xsiz at 8, Ysiz 12, XTsiz 24, YTsiz 28
    for offset, value in ((8, cols), (12, rows), (24, cols), (28, rows)):
        frame[offset:offset + 4] = value.to_bytes(4, "big")
    return bytes(frame)


def _found(path: Path):  # type: ignore[no-untyped-def]
    (found,) = discover(path).found
    return found


@pytest.fixture
def peak_python_bytes() -> Iterator[Callable[[], int]]:
    """``peak()``: the most bytes Python held at once (tracemalloc) since the test began."""
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- the inflating reader ---------------------------------------------------------------------

DATA = np.random.default_rng(5).bytes(3 * MiB)


def _reader(data: bytes = DATA, limit: int = 1 << 40) -> InflatingReader:
    return InflatingReader(io.BytesIO(deflate(data)), limit=limit)


def test_reader_reads_seeks_and_skips_like_a_file() -> None:
    reader = _reader()
    assert reader.read(10) == DATA[:10] and reader.tell() == 10
    assert reader.seek(2 * MiB) == 2 * MiB and reader.read(5) == DATA[2 * MiB:2 * MiB + 5]
    reader.seek(-5 - 12, 1)  # pydicom's look-backs are a few bytes
    assert reader.read(12) == DATA[2 * MiB - 12:2 * MiB]
    with pytest.raises(OSError, match="cannot seek to 0"):
        reader.seek(0)  # the skipped megabytes were not kept
    with pytest.raises(OSError, match="whence=2"):
        reader.seek(0, 2)
    assert reader.read() == DATA[2 * MiB:] and reader.read(1) == b""


def test_reader_limit_is_header_too_large() -> None:
    reader = _reader(limit=1000)
    assert reader.read(1000) == DATA[:1000]
    with pytest.raises(DicomReadError, match="more than 1,000 bytes before its Pixel Data") as info:
        reader.read(1)
    assert info.value.reason == "header-too-large" and "raise max_header_bytes" in str(info.value)


def test_reader_skip_keeps_nothing(peak_python_bytes: Callable[[], int]) -> None:
    reader = InflatingReader(io.BytesIO(deflate(b"head", 400, b"tail")), limit=1 << 40)
    reader.seek(4 + 400 * MiB)
    assert reader.read() == b"tail"
    assert peak_python_bytes() < 2 * MiB


def test_reader_short_read_at_a_cut_stream() -> None:
    stream = deflate(DATA[:100_000])
    reader = InflatingReader(io.BytesIO(stream[: len(stream) // 2]), limit=1 << 40)
    assert 0 < len(reader.read(100_000)) < 100_000


def test_only_deflated_part10_files_are_recognised(write_dicom, dataset_factory, tmp_path: Path) -> None:
    with open(write_dicom("plain.dcm"), "rb") as handle:
        assert deflated_file_meta(handle) is None
    path = write_deflated(tmp_path / "d.dcm", ds := dataset_factory(), deflate(encode_body(ds)))
    with open(path, "rb") as handle:
        found = deflated_file_meta(handle)
        assert found is not None and found[1].TransferSyntaxUID == DeflatedExplicitVRLittleEndian
        assert handle.tell() == path.stat().st_size - len(deflate(encode_body(ds)))


# --- deflated radiographs are screened -------------------------------------------------------


def test_real_deflated_file_indexed_and_decoded() -> None:
    path = get_testdata_file("image_dfl.dcm")
    if path is None:
        pytest.skip("pydicom's image_dfl.dcm is not installed")
    inst = read_instance(_found(Path(path)))
    assert inst.has_pixel_data and (inst.rows, inst.columns, inst.pixel_bytes) == (512, 512, 512 * 512)
    assert inst.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    reference = dataset_to_radiograph(pydicom.dcmread(path))  # pydicom inflating it all at once
    assert np.array_equal(load_radiograph(path).pixels, reference.pixels)


def test_deflated_radiograph_is_selected_and_decoded(dataset_factory, tmp_path: Path) -> None:
    ds = dataset_factory(rows=64, cols=48, WindowCenter=2048, WindowWidth=4096, PixelSpacing=[0.1, 0.1])
    plain = tmp_path / "plain" / "a.dcm"
    plain.parent.mkdir()
    ds.save_as(plain, enforce_file_format=True)
    deflated = write_deflated(tmp_path / "dfl" / "a.dcm", ds, deflate(encode_body(ds)))
    (row,) = scan_archive(tmp_path / "dfl", decode=True).rows
    assert (row.outcome, row.reason, row.voi_source) == ("selected", "", "window")
    assert row.as_dict()["transfer_syntax"] == "Deflated Explicit VR Little Endian"
    a, b = load_radiograph(plain), load_radiograph(deflated)
    assert np.array_equal(a.pixels, b.pixels) and a.spacing == b.spacing
    assert (a.sop_instance_uid, a.voi_source) == (b.sop_instance_uid, b.voi_source)


def _native_real_files() -> list[Any]:
    params = []
    for path in sorted({f for f in get_testdata_files() if os.path.isfile(f)}):
        if os.path.getsize(path) > 4 * MiB:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                syntax = pydicom.filereader.read_file_meta_info(path).get("TransferSyntaxUID")
        except Exception:  # noqa: BLE001 - no file meta: not a candidate
            continue
        if syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            params.append(pytest.param(path, id=os.path.basename(path)))
    return params


def test_every_native_real_image_decodes_the_same_deflated(tmp_path: Path) -> None:
    """Deflated files keep only the header elements the pipeline reads: any element it reads
    that the keep-list lacks changes some real image's result here."""
    compared = 0
    for param in _native_real_files():
        path = param.values[0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = load_radiograph(path)
                ds = pydicom.dcmread(path)
        except DicomIOError:
            continue
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.file_meta.get("MediaStorageSOPClassUID") or ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.file_meta.get("MediaStorageSOPInstanceUID") or ds.SOPInstanceUID
        copy = write_deflated(tmp_path / f"{compared}.dcm", ds, deflate(encode_body(ds)))
        got = load_radiograph(copy)
        assert np.array_equal(got.pixels, expected.pixels), path
        assert (got.voi_source, got.spacing, got.photometric) == (
            expected.voi_source, expected.spacing, expected.photometric), path
        compared += 1
    if compared < 20:
        pytest.skip(f"only {compared} native real images installed")


# --- deflate bombs ----------------------------------------------------------------------------


def pixel_bomb(path: Path, ds: Dataset) -> Path:
    """A header saying 64 x 64 over a 400 MiB Pixel Data element of zeros (about 400 KB)."""
    head, _ = split_pixels(ds)
    return write_deflated(path, ds, deflate(head, element(PIXEL_DATA, b"OW", 400 * MiB), 400))


def header_bomb(path: Path, ds: Dataset, mib: int = 400) -> Path:
    """A valid image with ``mib`` MiB of zeros in a private element before its Pixel Data."""
    head, pixels = split_pixels(ds)
    creator = struct.pack("<HH2sH", 0x7FDF, 0x0010, b"LO", 4) + b"BOMB"
    return write_deflated(path, ds, deflate(head + creator + element(PRIVATE_BLOB, b"OB", mib * MiB), mib, pixels))


def trailing_bomb(path: Path, ds: Dataset) -> Path:
    """A valid image followed by 400 MiB of Data Set Trailing Padding (never needed)."""
    return write_deflated(path, ds, deflate(encode_body(ds), element(TRAILING_PADDING, b"OB", 400 * MiB), 400))


def test_pixel_bomb_refused_from_the_element_header(dataset_factory, tmp_path: Path, peak_python_bytes) -> None:
    path = pixel_bomb(tmp_path / "bomb.dcm", dataset_factory(rows=64, cols=64))
    assert path.stat().st_size < 500_000
    with pytest.raises(IndexedFileError) as info:
        read_instance(_found(path))
    assert info.value.reason == "pixel-length-mismatch"
    assert str(info.value) == (
        "Pixel Data holds 419,430,400 bytes but Rows x Columns x Frames x Samples x Bits Allocated "
        "need 8,192 (more than twice that is not padding): the file is damaged or hostile; re-export it"
    )
    with pytest.raises(DicomIOError) as decoded:
        load_radiograph(path)
    assert decoded.value.reason == "pixel-length-mismatch"
    assert peak_python_bytes() < 4 * MiB


def test_header_bomb_refused_at_the_limit(dataset_factory, tmp_path: Path, peak_python_bytes) -> None:
    path = header_bomb(tmp_path / "bomb.dcm", dataset_factory(rows=64, cols=64))
    for read in (lambda: read_instance(_found(path)), lambda: load_radiograph(path)):
        with pytest.raises(DicomReadError) as info:
            read()
        assert info.value.reason == "header-too-large"
        assert "inflates to more than 16,777,216 bytes before its Pixel Data" in str(info.value)
    assert peak_python_bytes() < 4 * MiB


def test_max_header_bytes_is_a_setting(dataset_factory, tmp_path: Path) -> None:
    path = header_bomb(tmp_path / "big-header.dcm", dataset_factory(rows=64, cols=64), mib=2)
    assert read_instance(_found(path)).has_pixel_data
    assert load_radiograph(path).rows == 64
    with pytest.raises(DicomReadError, match="more than 1,048,576 bytes"):
        read_instance(_found(path), max_header_bytes=MiB)
    with pytest.raises(DicomReadError, match="more than 1,048,576 bytes"):
        load_radiograph(path, PixelPolicy(max_header_bytes=MiB))


def test_nothing_after_pixel_data_is_inflated(dataset_factory, tmp_path: Path, peak_python_bytes) -> None:
    path = trailing_bomb(tmp_path / "padded.dcm", dataset_factory(rows=64, cols=64))
    assert read_instance(_found(path)).has_pixel_data
    assert load_radiograph(path).rows == 64
    assert peak_python_bytes() < 4 * MiB


def test_read_header_is_dcmread_without_the_inflation(
    write_dicom, dataset_factory, tmp_path: Path, peak_python_bytes
) -> None:
    plain = write_dicom("plain.dcm")
    assert read_header(plain) == pydicom.dcmread(plain, stop_before_pixels=True)
    real = get_testdata_file("image_dfl.dcm")
    if real is not None:
        assert read_header(real) == pydicom.dcmread(real, stop_before_pixels=True)
    ds = dataset_factory(rows=64, cols=64)
    header = read_header(trailing_bomb(tmp_path / "padded.dcm", ds), specific_tags=["SOPInstanceUID"])
    assert header.SOPInstanceUID == ds.SOPInstanceUID and "PixelData" not in header and "Rows" not in header
    assert peak_python_bytes() < 4 * MiB


def test_stream_cut_inside_pixel_data(dataset_factory, tmp_path: Path) -> None:
    ds = dataset_factory(rows=64, cols=64)
    path = write_deflated(tmp_path / "cut.dcm", ds, deflate(encode_body(ds)))
    path.write_bytes(path.read_bytes()[:-2000])
    assert read_instance(_found(path)).has_pixel_data  # the index cannot tell without inflating it
    with pytest.raises(DicomIOError, match=r"ends after [\d,]+ of the 8,192 bytes of its Pixel Data") as info:
        load_radiograph(path)
    assert info.value.reason == "truncated-pixel-data"


def test_padded_pixel_data_is_read_up_to_what_the_header_needs(dataset_factory, tmp_path: Path) -> None:
    ds = dataset_factory(rows=64, cols=64)
    head, pixels = split_pixels(ds)
    padded = element(PIXEL_DATA, b"OW", 2 * 8192) + pixels[12:] + b"\x01" * 8192
    decoded = load_radiograph(write_deflated(tmp_path / "padded.dcm", ds, deflate(head + padded)))
    assert np.array_equal(decoded.pixels, dataset_to_radiograph(ds).pixels)
    too_long = element(PIXEL_DATA, b"OW", 2 * 8192 + 2) + pixels[12:] + b"\x01" * 8194
    with pytest.raises(DicomIOError, match="holds 16,386 bytes but") as info:
        load_radiograph(write_deflated(tmp_path / "long.dcm", ds, deflate(head + too_long)))
    assert info.value.reason == "pixel-length-mismatch"


def test_corrupt_stream_inside_pixel_data(dataset_factory, tmp_path: Path) -> None:
    ds = dataset_factory(rows=512, cols=512)  # 512 KiB of noise: the header reads only the first part
    head, pixels = split_pixels(ds)
    # 0xff at a block boundary: final block of the reserved type 3, an error for any inflater
    stream = deflate(head + pixels[:400_000], finish=False) + b"\xff" * 8
    with pytest.raises(DicomIOError, match="corrupt inside its Pixel Data") as info:
        load_radiograph(write_deflated(tmp_path / "bad.dcm", ds, stream))
    assert info.value.reason == "decode-failed"


# --- a hostile archive: the pipeline in-process, then ``screen scan --decode`` ---------------

HOSTILE_EXPECTED = {
    "bomb-pixels.dcm": ("failed", "pixel-length-mismatch"),
    "bomb-header.dcm": ("failed", "header-too-large"),
    "liar-jpeg.dcm": ("failed", "frame-header-mismatch"),
    "liar-j2k.dcm": ("failed", "frame-header-mismatch"),
    "padded-deflated.dcm": ("selected", ""),
    "good.dcm": ("selected", ""),
    "good-deflated.dcm": ("selected", ""),
    "good-jpeg.dcm": ("selected", ""),
    "good-j2k.dcm": ("selected", ""),
}


@pytest.fixture
def hostile_archive(dataset_factory, tmp_path: Path) -> Path:
    root = tmp_path / "hostile"

    def image() -> Dataset:
        return dataset_factory(rows=64, cols=64)

    pixel_bomb(root / "bomb-pixels.dcm", image())
    header_bomb(root / "bomb-header.dcm", image())
    trailing_bomb(root / "padded-deflated.dcm", image())
    write_deflated(root / "good-deflated.dcm", ds := image(), deflate(encode_body(ds)))
    image().save_as(root / "good.dcm", enforce_file_format=True)
    for name, syntax, frame, bits in [
        ("liar-jpeg.dcm", JPEGBaseline8Bit, jpeg_frame(12000, 12000), 8),
        ("good-jpeg.dcm", JPEGBaseline8Bit, jpeg_frame(64, 64), 8),
        ("liar-j2k.dcm", JPEG2000Lossless, j2k_frame(12000, 12000), 12),
        ("good-j2k.dcm", JPEG2000Lossless, j2k_frame(64, 64), 12),
    ]:
        encapsulated(image(), syntax, frame, bits).save_as(root / name, enforce_file_format=True)
    assert max(p.stat().st_size for p in root.iterdir()) < 500_000
    return root


@pytest.mark.parametrize("name, codec", [("liar-jpeg.dcm", "JPEG"), ("liar-j2k.dcm", "JPEG 2000")])
def test_lying_frame_never_reaches_a_decoder(
    hostile_archive: Path, name: str, codec: str, monkeypatch: pytest.MonkeyPatch, peak_python_bytes
) -> None:
    decoded: list[int] = []
    real_pixel_array = pixels_module.pixel_array

    def recording(ds: Dataset, **kwargs: Any) -> np.ndarray:
        decoded.append(int(ds.Rows))
        return real_pixel_array(ds, **kwargs)

    monkeypatch.setattr(pixels_module, "pixel_array", recording)
    with pytest.raises(DicomIOError) as info:
        load_radiograph(hostile_archive / name)
    assert info.value.reason == "frame-header-mismatch"
    assert str(info.value) == (
        f"the {codec} header says 12000x12000 pixels, 1 component(s), {8 if codec == 'JPEG' else 12} bits "
        "but the DICOM header says Rows=64, Columns=64, SamplesPerPixel=1, BitsAllocated="
        f"{8 if codec == 'JPEG' else 16}: the file is damaged or was altered; re-export the image from its source"
    )
    assert decoded == [] and peak_python_bytes() < 4 * MiB
    assert load_radiograph(hostile_archive / name.replace("liar", "good")).rows == 64
    assert decoded == [64]  # the honest twin does reach the decoder


#: Runs argv[1:] as a child and prints, as JSON, its exit status and three peaks (KiB):
#: ``max_process_kb``, the largest peak RSS of any one process of the tree (``ru_maxrss`` of
#: RUSAGE_CHILDREN; exact, not sampled: this process is made a child subreaper, so the
#: resource tracker, forkserver and pool workers are reaped here or by a reaped parent, and
#: their peaks propagate); ``tree_rss_kb`` and ``tree_pss_kb``, the largest sum over the tree
#: of RSS and of PSS (shared pages split between the processes sharing them), sampled every
#: 10 ms from /proc/PID/smaps_rollup. RSS sums count the forkserver's shared pages once per
#: worker, so the PSS sum is the one checked.
_MEASURE = r"""
import ctypes, json, os, resource, subprocess, sys, threading, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
me, peak, done = os.getpid(), {"rss": 0, "pss": 0}, threading.Event()
def tree(pid):
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            kids += [int(k) for k in open(f"/proc/{pid}/task/{task}/children").read().split()]
    except OSError:  # the process ended while we looked
        pass
    return kids + [g for k in kids for g in tree(k)]
def kb(pid, field):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
def sample():
    while not done.is_set():
        pids = tree(me)
        for field, key in (("Rss", "rss"), ("Pss", "pss")):
            peak[key] = max(peak[key], sum(kb(p, field) for p in pids))
        time.sleep(0.01)
sampler = threading.Thread(target=sample)
sampler.start()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        if os.waitpid(-1, os.WNOHANG)[0] == 0:
            time.sleep(0.02)
    except ChildProcessError:
        break
done.set()
sampler.join()
print(json.dumps({"rc": rc, "max_process_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "tree_rss_kb": peak["rss"], "tree_pss_kb": peak["pss"]}))
"""


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("workers", [1, 2])
def test_scan_decode_cli_peak_memory(hostile_archive: Path, tmp_path: Path, workers: int) -> None:
    out = tmp_path / f"out{workers}"
    command = [sys.executable, "-m", "screen", "scan", str(hostile_archive), "--out", str(out),
               "--decode", "--workers", str(workers)]
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *command], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout)
    print(f"workers={workers}: {measured}")
    assert measured["rc"] == 0, proc.stderr
    with open(out / "scan.csv", newline="") as handle:
        rows = [(Path(r["path"]).name, (r["outcome"], r["reason"])) for r in csv.DictReader(handle)]
    assert sorted(rows) == sorted(HOSTILE_EXPECTED.items())  # exactly one row a file
    assert measured["max_process_kb"] < 300 * 1024, measured
    assert 0 < measured["tree_pss_kb"] < 300 * 1024, measured
