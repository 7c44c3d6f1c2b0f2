"""The Image Pixel module attributes the decode pipeline relies on, read and checked.

Shared by :mod:`dicom_io.pixels`, :mod:`dicom_io.frame_header` and :mod:`dicom_io.deflate`,
which all size-check before anything is decoded or inflated.

Reason codes used here: ``no-pixel-data``, ``unsupported-pixel-data`` (Float / Double Float
Pixel Data), ``bad-pixel-header`` (:class:`PixelDecodeError`) and ``too-large``
(:class:`SizeLimitError`).
"""

from __future__ import annotations

from typing import NamedTuple

from pydicom.dataset import Dataset

from dicom_io.errors import PixelDecodeError, SizeLimitError

__all__ = [
    "PixelHeader",
    "check_declared",
    "declared_bytes",
    "float_pixel_data_error",
    "image_pixel_module",
    "pixel_header",
    "transfer_syntax_name",
]


class PixelHeader(NamedTuple):
    """Image Pixel module values, checked (see :func:`image_pixel_module`)."""

    rows: int
    cols: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str


def _header_int(ds: Dataset, keyword: str, default: int | None = None, minimum: int = 1) -> int:
    """An integer header value, raising ``bad-pixel-header`` when missing or invalid."""
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise PixelDecodeError(f"{keyword} is missing", reason="bad-pixel-header")
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PixelDecodeError(
            f"{keyword} is not an integer: {str(value)[:40]!r}", reason="bad-pixel-header"
        ) from None
    if number < minimum:
        raise PixelDecodeError(
            f"{keyword} must be >= {minimum}, got {number}", reason="bad-pixel-header"
        )
    return number


def pixel_header(ds: Dataset) -> PixelHeader:
    """Read and check the Image Pixel module attributes of a dataset holding Pixel Data."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise float_pixel_data_error()
        raise PixelDecodeError("the dataset has no Pixel Data", reason="no-pixel-data")
    return image_pixel_module(ds)


def float_pixel_data_error() -> PixelDecodeError:
    return PixelDecodeError("float pixel data is not a radiograph", reason="unsupported-pixel-data")


def image_pixel_module(ds: Dataset) -> PixelHeader:
    """The Image Pixel module values, whether or not the Pixel Data has been read yet."""
    return PixelHeader(
        rows=_header_int(ds, "Rows"),
        cols=_header_int(ds, "Columns"),
        frames=_header_int(ds, "NumberOfFrames", default=1),
        samples=_header_int(ds, "SamplesPerPixel", default=1),
        bits_allocated=_header_int(ds, "BitsAllocated"),
        bits_stored=_header_int(ds, "BitsStored"),
        signed=_header_int(ds, "PixelRepresentation", default=0, minimum=0) == 1,
        photometric=str(ds.get("PhotometricInterpretation", "")).strip().upper(),
    )


def declared_bytes(h: PixelHeader) -> int:
    """Rows*Columns*Frames*Samples*BitsAllocated/8, rounded up."""
    return (h.rows * h.cols * h.frames * h.samples * h.bits_allocated + 7) // 8


def check_declared(h: PixelHeader, max_pixel_bytes: int) -> None:
    """Raise :class:`SizeLimitError` when the header claims more than ``max_pixel_bytes``."""
    claimed = declared_bytes(h)
    if claimed > max_pixel_bytes:
        raise SizeLimitError(
            f"header claims {h.rows}x{h.cols} pixels x {h.frames} frames x {h.samples} samples "
            f"at {h.bits_allocated} bits = {claimed:,} bytes, above the limit of "
            f"{max_pixel_bytes:,} bytes (raise PixelPolicy.max_pixel_bytes to allow it)"
        )


def transfer_syntax_name(ds: Dataset) -> str:
    """The dataset's transfer syntax for messages: name and UID."""
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if not uid:
        return "unknown transfer syntax"
    return f"{uid.name} ({uid})" if uid.name != uid else str(uid)
