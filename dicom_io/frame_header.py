"""Check an encapsulated frame's own header against the DICOM header, before any decoder runs.

A JPEG, JPEG-LS or JPEG 2000 decoder allocates its output from the codestream's header (SOF,
SOF55, SIZ), not from Rows and Columns, so a 5 KB frame whose SOF says 12000 x 12000 makes
the decoder allocate hundreds of megabytes before anything can object. These functions read
only those few header bytes and refuse a frame whose size, component count or precision
disagrees with the DICOM header, or whose decoded size is above the limit.

Reason codes used here (the ``reason`` of the raised error):

- ``frame-header-mismatch`` (:class:`PixelDecodeError`): the frame's header disagrees with
  Rows, Columns, SamplesPerPixel or BitsAllocated (or an RLE segment count with
  SamplesPerPixel x BitsAllocated / 8).
- ``bad-frame-header`` (:class:`PixelDecodeError`): the frame's header cannot be read (no SOI
  or SOC marker, no SOF or SIZ before the image data, cut short, RLE offsets out of order).
- ``too-large`` (:class:`SizeLimitError`): the frame's own header claims more decoded bytes
  than the limit.
"""

from __future__ import annotations

from typing import NamedTuple

from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.uid import (
    UID,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from dicom_io.errors import PixelDecodeError, SizeLimitError
from dicom_io.pixel_header import PixelHeader, transfer_syntax_name

__all__ = [
    "CHECKED_SYNTAXES",
    "FrameHeader",
    "check_encapsulated_frame",
    "check_frame",
    "j2k_frame_header",
    "jpeg_frame_header",
    "rle_segment_count",
]

#: Transfer syntaxes whose frames :func:`check_frame` reads.
CHECKED_SYNTAXES = frozenset(
    {*JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes, *JPEG2000TransferSyntaxes, RLELossless}
)
#: JPEG start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15 (C4 DHT, C8 JPG, CC DAC are not) and
#: JPEG-LS SOF55 (F7). All share the layout: length, P, Y, X, Nf.
_SOF_MARKERS = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7})
#: Markers without a length field: TEM, RST0-7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_SOS, _EOI = 0xDA, 0xD9
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
#: An RLE frame starts with a 64-byte header: a segment count and 15 segment offsets.
_RLE_HEADER = 64
_MESSAGE_LIMIT = 300  # pydicom's messages are cut here


class FrameHeader(NamedTuple):
    """What a codestream's own header says about the image it decodes to."""

    codec: str
    rows: int
    columns: int
    components: int
    precision: int

    @property
    def decoded_bytes(self) -> int:
        """Bytes a decoder allocates for it: rows x columns x components x bytes per sample."""
        return self.rows * self.columns * self.components * ((self.precision + 7) // 8)


def _bad(codec: str, detail: str) -> PixelDecodeError:
    return PixelDecodeError(
        f"the {codec} frame header cannot be read ({detail}); the pixel data is damaged: "
        "re-export the image from its source",
        reason="bad-frame-header",
    )


def jpeg_frame_header(frame: bytes) -> FrameHeader:
    """Read the first SOF (or JPEG-LS SOF55) segment of a JPEG or JPEG-LS frame.

    Walks the marker segments from SOI by their lengths, so bytes inside other segments are
    never mistaken for markers.

    Raises:
        PixelDecodeError: ``bad-frame-header`` when there is no SOI, the segments run past the
            end, or the scan (SOS) or EOI comes before any SOF.
    """
    if frame[:2] != b"\xff\xd8":
        raise _bad("JPEG", f"starts with {frame[:2].hex()}, not the SOI marker ffd8")
    end, at = len(frame), 2
    while at < end:
        if frame[at] != 0xFF:
            raise _bad("JPEG", f"expected a marker at byte {at}, found {frame[at]:02x}")
        while at < end and frame[at] == 0xFF:  # fill bytes may precede a marker
            at += 1
        if at >= end:
            break
        marker = frame[at]
        at += 1
        if marker in _STANDALONE:
            if marker == _EOI:
                break
            continue
        if marker == _SOS:
            raise _bad("JPEG", "the scan starts before any SOF marker")
        if at + 2 > end:
            break
        length = int.from_bytes(frame[at:at + 2], "big")
        if marker in _SOF_MARKERS:
            if length < 8 or at + 8 > end:
                break
            codec = "JPEG-LS" if marker == 0xF7 else "JPEG"
            return FrameHeader(
                codec=codec,
                precision=frame[at + 2],
                rows=int.from_bytes(frame[at + 3:at + 5], "big"),
                columns=int.from_bytes(frame[at + 5:at + 7], "big"),
                components=frame[at + 7],
            )
        if length < 2:
            raise _bad("JPEG", f"marker ff{marker:02x} at byte {at - 2} has length {length}")
        at += length
    raise _bad("JPEG", "no SOF marker before the end of the frame")


def _jp2_codestream(frame: bytes) -> bytes:
    """The contiguous codestream (``jp2c``) box of a JP2 file, walking its boxes by length."""
    at = 0
    while at + 8 <= len(frame):
        size = int.from_bytes(frame[at:at + 4], "big")
        kind = frame[at + 4:at + 8]
        header = 8
        if size == 1:
            if at + 16 > len(frame):
                break
            size, header = int.from_bytes(frame[at + 8:at + 16], "big"), 16
        elif size == 0:
            size = len(frame) - at
        if size < header:
            raise _bad("JPEG 2000", f"JP2 box {kind!r} at byte {at} has length {size}")
        if kind == b"jp2c":
            return frame[at + header:at + size]
        at += size
    raise _bad("JPEG 2000", "a JP2 file without a codestream (jp2c) box")


def j2k_frame_header(frame: bytes) -> FrameHeader:
    """Read the SIZ segment of a JPEG 2000 (or HTJ2K) codestream, bare or in a JP2 file.

    The SIZ segment must follow SOC directly (ISO 15444-1 A.5.1). Rows and columns are the
    image area (``Ysiz - YOsiz``, ``Xsiz - XOsiz``); precision is the largest component's.

    Raises:
        PixelDecodeError: ``bad-frame-header`` when SOC/SIZ are missing or cut short.
    """
    codestream = _jp2_codestream(frame) if frame.startswith(_JP2_SIGNATURE) else frame
    if codestream[:4] != _J2K_SOC_SIZ:
        raise _bad("JPEG 2000", f"starts with {codestream[:4].hex()}, not SOC and SIZ (ff4fff51)")
    siz = codestream[4:]
    if len(siz) < 38:
        raise _bad("JPEG 2000", "the SIZ segment is cut short")
    length = int.from_bytes(siz[0:2], "big")
    x, y, x0, y0 = (int.from_bytes(siz[i:i + 4], "big") for i in (4, 8, 12, 16))
    components = int.from_bytes(siz[36:38], "big")
    if length != 38 + 3 * components or len(siz) < length:
        raise _bad("JPEG 2000", f"SIZ length {length} does not fit {components} components")
    precision = max(((siz[38 + 3 * c] & 0x7F) + 1 for c in range(components)), default=0)
    if x < x0 or y < y0:
        raise _bad("JPEG 2000", f"image offset ({x0}, {y0}) lies beyond its size ({x}, {y})")
    return FrameHeader("JPEG 2000", rows=y - y0, columns=x - x0, components=components, precision=precision)


def rle_segment_count(frame: bytes) -> int:
    """The segment count of an RLE Lossless frame, after checking its offsets (PS3.5 G.5).

    Raises:
        PixelDecodeError: ``bad-frame-header`` for a frame shorter than its 64-byte header,
            a count outside 1..15, or offsets that do not rise from 64 within the frame.
    """
    if len(frame) < _RLE_HEADER:
        raise _bad("RLE", f"the frame has {len(frame)} bytes, fewer than its 64-byte header")
    count = int.from_bytes(frame[0:4], "little")
    if not 1 <= count <= 15:
        raise _bad("RLE", f"segment count {count} is not 1..15")
    offsets = [int.from_bytes(frame[4 * i:4 * i + 4], "little") for i in range(1, count + 1)]
    if offsets[0] != _RLE_HEADER or any(b <= a for a, b in zip(offsets, offsets[1:])) or offsets[-1] >= len(frame):
        raise _bad("RLE", f"segment offsets {offsets} must rise from 64 and stay below {len(frame)}")
    return count


def _mismatch(what: str, frame_says: str, dicom_says: str) -> PixelDecodeError:
    return PixelDecodeError(
        f"the {what} header says {frame_says} but the DICOM header says {dicom_says}: the file "
        "is damaged or was altered; re-export the image from its source",
        reason="frame-header-mismatch",
    )


def check_frame(
    frame: bytes,
    transfer_syntax: str,
    *,
    rows: int,
    columns: int,
    samples: int,
    bits_allocated: int,
    max_pixel_bytes: int,
) -> FrameHeader | None:
    """Refuse a frame whose own header disagrees with the DICOM header or exceeds the limit.

    Rows, columns and component count must match exactly; the precision must fit Bits
    Allocated. Syntaxes without a header parser here (MPEG, HEVC, ...) are left to pydicom,
    which has no decoder for them. RLE has no image size in its header: its segment count is
    checked, and its decoder allocates from the (already size-checked) DICOM header.

    Returns:
        The frame's header, or ``None`` for RLE and syntaxes not checked here.

    Raises:
        PixelDecodeError: ``frame-header-mismatch`` or ``bad-frame-header``.
        SizeLimitError: the frame's header claims more than ``max_pixel_bytes`` decoded bytes.
    """
    dicom_says = f"Rows={rows}, Columns={columns}, SamplesPerPixel={samples}, BitsAllocated={bits_allocated}"
    if transfer_syntax == RLELossless:
        count = rle_segment_count(frame)
        expected = samples * ((bits_allocated + 7) // 8)
        if count != expected:
            raise _mismatch("RLE", f"{count} segments", f"{dicom_says} ({expected} segments)")
        return None
    if transfer_syntax in JPEGTransferSyntaxes or transfer_syntax in JPEGLSTransferSyntaxes:
        header = jpeg_frame_header(frame)
    elif transfer_syntax in JPEG2000TransferSyntaxes:
        header = j2k_frame_header(frame)
    else:
        return None
    if (header.rows, header.columns, header.components) != (rows, columns, samples) or not (
        1 <= header.precision <= bits_allocated
    ):
        raise _mismatch(
            header.codec,
            f"{header.rows}x{header.columns} pixels, {header.components} component(s), "
            f"{header.precision} bits",
            dicom_says,
        )
    if header.decoded_bytes > max_pixel_bytes:
        raise SizeLimitError(
            f"the {header.codec} frame header claims {header.rows}x{header.columns} pixels x "
            f"{header.components} components at {header.precision} bits = "
            f"{header.decoded_bytes:,} bytes, above the limit of {max_pixel_bytes:,} bytes "
            "(raise max_pixel_bytes to allow it)"
        )
    return header


def check_encapsulated_frame(ds: Dataset, h: PixelHeader, index: int, max_pixel_bytes: int) -> None:
    """:func:`check_frame` on frame ``index`` of a dataset's encapsulated Pixel Data (no-op for
    native data and syntaxes not checked here).

    Raises:
        PixelDecodeError: ``decode-failed`` when the frame cannot be found in the
            encapsulation; as :func:`check_frame` otherwise.
        SizeLimitError: as :func:`check_frame`.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = UID(meta.get("TransferSyntaxUID", "")) if meta is not None else UID("")
    if syntax not in CHECKED_SYNTAXES:
        return
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        frame = get_frame(ds.PixelData, index, extended_offsets=offsets, number_of_frames=h.frames)
    except Exception as exc:  # noqa: BLE001 - malformed encapsulation raises many types
        detail = f"{type(exc).__name__}: {exc}"[:_MESSAGE_LIMIT]
        raise PixelDecodeError(
            f"cannot find frame {index} in the encapsulated Pixel Data ({transfer_syntax_name(ds)}): {detail}",
            reason="decode-failed",
        ) from exc
    check_frame(
        frame, syntax, rows=h.rows, columns=h.cols, samples=h.samples,
        bits_allocated=h.bits_allocated, max_pixel_bytes=max_pixel_bytes,
    )
