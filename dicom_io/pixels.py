"""Decode one DICOM image into a :class:`Radiograph`: float32 ``H x W`` in ``[0, 1]``, bone bright.

Why one module owns this: the steps and their order decide what a model sees, and real tools
got them wrong (MONOCHROME1 inverted before the window, detector data shown with no window,
decoders that silently returned garbage). The pipeline, in order:

1. size check from the header, *before* anything is decoded (:class:`SizeLimitError`); an
   encapsulated frame's own header (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ, RLE segment
   count) must agree with the DICOM header and the limit too (:mod:`dicom_io.frame_header`);
2. decode one frame through pydicom and its plugins (only the frame the policy picks);
3. check the decoded values fit Bits Stored (unused high bits must be clear, or a sign
   extension for signed data), then sign-extend signed data;
4. colour (RGB, YBR, PALETTE COLOR) becomes grey by BT.601 luma, scaled by its bit depth;
5. monochrome: modality LUT / rescale, then VOI: the VOI LUT Sequence (preferred) or the first
   window when present and allowed, else a percentile window; a VOI that is invalid, or that
   maps the whole image to one value, falls back to the percentile window;
6. MONOCHROME1 inversion, after the VOI and never before;
7. float32 in ``[0, 1]``; NaN or inf never escape.

Deflated files are inflated in bounded chunks, header first, then only the Pixel Data bytes
the header declares (:mod:`dicom_io.deflate`); of their header only the elements the
pipeline reads are kept. Header values are read and checked in :mod:`dicom_io.pixel_header`.

Limits: VOI and rescale are read from the top-level dataset only (enhanced multi-frame
functional groups are not consulted); Presentation LUT Shape is not applied (MONOCHROME1 is
inverted, MONOCHROME2 is not, which is what the shape must say for these photometrics).

Reason codes used here (the ``reason`` of the raised error):

- ``too-large`` (:class:`SizeLimitError`): header claims more pixel bytes than the policy allows
  (or an encapsulated frame's own header does).
- ``frame-header-mismatch`` / ``bad-frame-header``: an encapsulated frame's own header
  disagrees with the DICOM header, or cannot be read (:mod:`dicom_io.frame_header`).
- ``header-too-large`` / ``pixel-length-mismatch`` / ``truncated-pixel-data``: a deflated
  file's header inflates past ``max_header_bytes``, its Pixel Data is more than twice what
  the header needs, or its stream ends inside it (:mod:`dicom_io.deflate`).
- ``unreadable`` / ``unreadable-header`` (:class:`DicomReadError`): the file cannot be read.
- ``no-pixel-data``: the dataset has no Pixel Data element.
- ``unsupported-pixel-data``: Float / Double Float Pixel Data (not a radiograph).
- ``bad-pixel-header``: Rows, Columns, Bits Allocated/Stored, Number of Frames ... missing or
  invalid.
- ``unsupported-photometric``: a photometric interpretation or sample count not handled here.
- ``decode-failed``: pydicom or its plugins could not decode (the message names the transfer
  syntax and the decoder's message).
- ``out-of-range``: decoded values do not fit Bits Stored.
- ``bad-modality-lut`` / ``bad-palette``: the Modality LUT or the palette could not be applied.
- ``non-finite``: the modality step produced NaN or inf.
- ``constant-image``: every pixel has the same value.
- ``invalid-argument`` (:class:`InvalidArgumentError`): a bad :class:`PixelPolicy` or
  :class:`Radiograph` field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    pixel_array,
)
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_io.deflate import DEFAULT_MAX_HEADER_BYTES, deflated_file_meta, read_deflated_dataset
from dicom_io.errors import (
    DicomIOError,
    DicomReadError,
    InvalidArgumentError,
    PixelDecodeError,
)
from dicom_io.frame_header import check_encapsulated_frame
from dicom_io.geometry import PixelSpacingInfo, spacing_from_dataset
from dicom_io.pixel_header import (
    PixelHeader,
    check_declared,
    declared_bytes,
    pixel_header,
    transfer_syntax_name,
)

__all__ = [
    "FRAME_POLICIES",
    "VOI_SOURCES",
    "DecodedFrame",
    "PixelPolicy",
    "Radiograph",
    "check_size",
    "dataset_to_radiograph",
    "decode_frame",
    "load_radiograph",
    "pixel_bytes",
    "to_unit_range",
]

FRAME_POLICIES = ("first", "middle")
VOI_SOURCES = ("voi-lut", "window", "percentile", "none")
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, the weights JPEG's YCbCr uses
_MESSAGE_LIMIT = 300  # decoder messages are cut here: enough to diagnose, never a data dump


@dataclass(frozen=True)
class PixelPolicy:
    """How to turn pixel data into a radiograph; the defaults suit projection radiographs."""

    frame: str = "first"
    """Which frame of a multi-frame image: ``"first"`` (index 0) or ``"middle"`` (index
    ``n_frames // 2``). Radiographs are single-frame; :attr:`Radiograph.n_frames` records more."""
    percentile_window: tuple[float, float] = (0.5, 99.5)
    """Low and high percentiles of the modality values mapped to 0 and 1 when the file has no
    usable VOI (FOR PROCESSING images) or ``use_voi`` is off."""
    use_voi: bool = True
    """Apply the file's VOI LUT or window when present; ``False`` always uses the percentiles."""
    max_pixel_bytes: int = 512 * 2**20
    """Refuse before decoding when Rows*Columns*Frames*SamplesPerPixel*BitsAllocated/8 (from
    the header), or an encapsulated frame's own header, exceeds this."""
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    """Refuse a deflated file whose elements before Pixel Data inflate to more than this."""

    def __post_init__(self) -> None:
        if self.frame not in FRAME_POLICIES:
            raise InvalidArgumentError(
                f"PixelPolicy.frame must be one of {FRAME_POLICIES}, got {self.frame!r}"
            )
        try:
            low, high = (float(v) for v in self.percentile_window)
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                "PixelPolicy.percentile_window must be two numbers (low, high), got "
                f"{self.percentile_window!r}"
            ) from None
        if not 0.0 <= low < high <= 100.0:
            raise InvalidArgumentError(
                "PixelPolicy.percentile_window must satisfy 0 <= low < high <= 100, got "
                f"{self.percentile_window!r}"
            )
        object.__setattr__(self, "percentile_window", (low, high))
        if not isinstance(self.use_voi, bool):
            raise InvalidArgumentError(f"PixelPolicy.use_voi must be a bool, got {self.use_voi!r}")
        for name in ("max_pixel_bytes", "max_header_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"PixelPolicy.{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class Radiograph:
    """One decoded image, ready for any member's preprocessing.

    Attributes:
        pixels: float32 ``rows x cols`` in ``[0, 1]``, bone bright (VOI applied, MONOCHROME1
            inverted); made read-only on construction.
        sop_instance_uid: SOP Instance UID ("" when the header lacks it).
        series_instance_uid: Series Instance UID ("" when absent).
        study_instance_uid: Study Instance UID ("" when absent).
        rows: source image height (equals ``pixels.shape[0]``).
        cols: source image width (equals ``pixels.shape[1]``).
        spacing: pixel spacing and which header attribute it came from.
        photometric: Photometric Interpretation as stored.
        frame_index: which frame was decoded (0-based).
        n_frames: frames in the file.
        voi_source: ``"voi-lut"``, ``"window"``, ``"percentile"`` or ``"none"`` (colour images
            scaled by their bit depth).
        percentile_bounds: the modality values mapped to 0 and 1 when ``voi_source`` is
            ``"percentile"`` (a presentation state shows the image with this window), else ``None``.
    """

    pixels: np.ndarray
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    rows: int
    cols: int
    spacing: PixelSpacingInfo
    photometric: str
    frame_index: int
    n_frames: int
    voi_source: str
    percentile_bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        px = self.pixels
        if not isinstance(px, np.ndarray) or px.dtype != np.float32 or px.ndim != 2:
            raise InvalidArgumentError(
                "Radiograph.pixels must be a 2-D float32 numpy array, got "
                f"{type(px).__name__} {getattr(px, 'dtype', '')} {getattr(px, 'shape', '')}"
            )
        if px.shape != (self.rows, self.cols):
            raise InvalidArgumentError(
                f"Radiograph.pixels has shape {px.shape} but rows, cols are "
                f"({self.rows}, {self.cols})"
            )
        if px.size and not (np.isfinite(px).all() and px.min() >= 0.0 and px.max() <= 1.0):
            raise InvalidArgumentError("Radiograph.pixels must be finite and within [0, 1]")
        if not 1 <= self.n_frames or not 0 <= self.frame_index < self.n_frames:
            raise InvalidArgumentError(
                f"Radiograph.frame_index must be in 0..n_frames-1, got {self.frame_index} "
                f"of {self.n_frames}"
            )
        if self.voi_source not in VOI_SOURCES:
            raise InvalidArgumentError(
                f"Radiograph.voi_source must be one of {VOI_SOURCES}, got {self.voi_source!r}"
            )
        px.setflags(write=False)


class DecodedFrame(NamedTuple):
    """Stored values of one frame (``H x W`` or ``H x W x 3`` RGB), checked against Bits Stored."""

    array: np.ndarray
    frame_index: int
    n_frames: int


def pixel_bytes(ds: Dataset) -> int:
    """Bytes the header says the pixel data holds: Rows*Columns*Frames*Samples*BitsAllocated/8."""
    return declared_bytes(pixel_header(ds))


def check_size(ds: Dataset, policy: PixelPolicy) -> None:
    """Raise :class:`SizeLimitError` when the header claims more than the policy allows.

    Reads only header values, so a forged header cannot make us allocate anything.
    """
    check_declared(pixel_header(ds), policy.max_pixel_bytes)


def _fit_bits_stored(arr: np.ndarray, h: PixelHeader) -> np.ndarray:
    """Check decoded values fit Bits Stored and sign-extend signed data.

    pydicom would silently mask stray high bits; we decode without that correction and
    refuse instead, since such values mean a decoder or writer error (e.g. a 12-bit codestream
    labelled 10 bits), not an image.
    """
    if not np.issubdtype(arr.dtype, np.integer):
        raise PixelDecodeError(
            f"decoder returned {arr.dtype} values", reason="unsupported-pixel-data"
        )
    width = arr.dtype.itemsize * 8
    bits = min(h.bits_stored, width)
    if h.signed and not np.issubdtype(arr.dtype, np.signedinteger):
        arr = arr.view(f"i{arr.dtype.itemsize}")
    if arr.size == 0:
        return arr
    low, high = int(arr.min()), int(arr.max())
    # Signed data may come sign-extended or with its unused bits clear; both fit this range.
    allowed = (-(2 ** (bits - 1)) if h.signed else 0, 2**bits - 1)
    if low < allowed[0] or high > allowed[1]:
        raise PixelDecodeError(
            f"decoded values {low}..{high} do not fit BitsStored={h.bits_stored} "
            f"({'signed' if h.signed else 'unsigned'}, allowed {allowed[0]}..{allowed[1]})",
            reason="out-of-range",
        )
    if h.signed and bits < width:
        shift = width - bits
        arr = np.right_shift(np.left_shift(arr, shift), shift)
    return arr


def decode_frame(ds: Dataset, policy: PixelPolicy = PixelPolicy()) -> DecodedFrame:
    """Decode the policy's frame after the header size check, checking it against Bits Stored.

    Raises:
        SizeLimitError: before any decoding, when the header claims too much.
        PixelDecodeError: see the module's reason codes.
    """
    check_size(ds, policy)
    h = pixel_header(ds)
    if h.samples not in (1, 3):
        raise PixelDecodeError(
            f"SamplesPerPixel={h.samples} is not handled (1 or 3)", reason="unsupported-photometric"
        )
    index = 0 if policy.frame == "first" else h.frames // 2
    check_encapsulated_frame(ds, h, index, policy.max_pixel_bytes)
    try:
        arr = pixel_array(ds, index=index, correct_unused_bits=False)
    except Exception as exc:  # noqa: BLE001 - pydicom and its plugins raise many types
        detail = f"{type(exc).__name__}: {exc}"[:_MESSAGE_LIMIT]
        raise PixelDecodeError(
            f"cannot decode frame {index} ({transfer_syntax_name(ds)}): {detail}",
            reason="decode-failed",
        ) from exc
    expected = (h.rows, h.cols) if h.samples == 1 else (h.rows, h.cols, 3)
    if arr.shape != expected:
        raise PixelDecodeError(
            f"decoder returned shape {arr.shape}, header says {expected} ({transfer_syntax_name(ds)})",
            reason="decode-failed",
        )
    return DecodedFrame(_fit_bits_stored(arr, h), index, h.frames)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float64) @ _LUMA


def _percentile_bounds(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """The values the percentile window maps to 0 and 1 (min..max when the percentiles coincide)."""
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    return low, high


def _output_range(out_of: Any, probe: np.ndarray) -> tuple[float, float]:
    """The VOI function's own output range, found by passing it the extreme inputs."""
    with np.errstate(all="ignore"):
        ends = np.asarray(out_of(probe), dtype=np.float64)
    return float(ends.min()), float(ends.max())


def _file_voi(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, str] | None:
    """Apply the file's VOI LUT (preferred) or first window, scaled to ``[0, 1]``.

    Returns ``None`` when the file has no usable VOI: absent, invalid (e.g. Window Width < 1
    for LINEAR, a malformed LUT) or mapping the whole image to a single value.
    """
    lut_items = ds.get("VOILUTSequence")
    if lut_items and "LUTDescriptor" in lut_items[0] and "LUTData" in lut_items[0]:
        try:
            entries, first, _ = (int(v) for v in lut_items[0].LUTDescriptor)
            probe = np.arange(first, first + (entries or 2**16), dtype=np.int64)
            low, high = _output_range(lambda a: apply_voi(a, ds, 0), probe)
            mapped = apply_voi(np.rint(values).astype(np.int64), ds, 0).astype(np.float64)
        except Exception:  # noqa: BLE001 - a broken LUT falls back to a window, not a failure
            return _window(values, ds)
        scaled = _scaled(mapped, low, high, "voi-lut")
        if scaled is not None:
            return scaled
    return _window(values, ds)


def _window(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, str] | None:
    if ds.get("WindowCenter") in (None, "") or ds.get("WindowWidth") in (None, ""):
        return None
    try:
        probe = np.array([-np.inf, np.inf])
        low, high = _output_range(lambda a: apply_windowing(a, ds, 0), probe)
        mapped = np.asarray(apply_windowing(values, ds, 0), dtype=np.float64)
    except Exception:  # noqa: BLE001 - invalid window (width < 1, bad function): use percentiles
        return None
    return _scaled(mapped, low, high, "window")


def _scaled(
    mapped: np.ndarray, low: float, high: float, source: str
) -> tuple[np.ndarray, str] | None:
    if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        return None
    if not np.isfinite(mapped).all() or mapped.min() == mapped.max():
        return None  # the VOI hides the whole image: a model would see one flat value
    return np.clip((mapped - low) / (high - low), 0.0, 1.0), source


def to_unit_range(
    stored: np.ndarray, ds: Dataset, policy: PixelPolicy = PixelPolicy()
) -> tuple[np.ndarray, str]:
    """Map stored values to float64 ``[0, 1]`` *before* any MONOCHROME1 inversion.

    Monochrome: modality LUT, then the file's VOI or the percentile window. Colour: luma,
    scaled by the bit depth (``"none"``).

    Returns:
        The unit-range image and the VOI source.

    Raises:
        PixelDecodeError: ``unsupported-photometric``, ``bad-modality-lut``, ``bad-palette``,
            ``non-finite`` or ``constant-image``.
    """
    unit, source, _ = _unit_range(stored, ds, policy)
    return unit, source


def _unit_range(
    stored: np.ndarray, ds: Dataset, policy: PixelPolicy
) -> tuple[np.ndarray, str, tuple[float, float] | None]:
    """:func:`to_unit_range`, plus the percentile window's bounds when it was used."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if stored.ndim == 3:
        grey = _luma(stored)
        return (*_unit_colour(grey, 2 ** int(ds.BitsStored) - 1), None)
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(stored, ds)
        except Exception as exc:  # noqa: BLE001 - malformed palettes raise many types
            raise PixelDecodeError(
                f"cannot apply the palette: {type(exc).__name__}: {exc}"[:_MESSAGE_LIMIT],
                reason="bad-palette",
            ) from exc
        return (*_unit_colour(_luma(rgb), np.iinfo(rgb.dtype).max), None)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise PixelDecodeError(
            f"PhotometricInterpretation {photometric!r} with one sample is not handled",
            reason="unsupported-photometric",
        )
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - malformed LUTs and rescale values raise many types
        raise PixelDecodeError(
            f"cannot apply the modality LUT/rescale: {type(exc).__name__}: {exc}"[:_MESSAGE_LIMIT],
            reason="bad-modality-lut",
        ) from exc
    if not np.isfinite(values).all():
        raise PixelDecodeError("modality LUT/rescale produced NaN or inf", reason="non-finite")
    if values.min() == values.max():
        raise PixelDecodeError(
            f"every pixel has the value {float(values.min()):g}", reason="constant-image"
        )
    if policy.use_voi:
        voi = _file_voi(values, ds)
        if voi is not None:
            return (*voi, None)
    low, high = _percentile_bounds(values, policy.percentile_window)
    return np.clip((values - low) / (high - low), 0.0, 1.0), "percentile", (low, high)


def _unit_colour(grey: np.ndarray, full_scale: float) -> tuple[np.ndarray, str]:
    if grey.min() == grey.max():
        raise PixelDecodeError(
            f"every pixel has the grey value {float(grey.min()):g}", reason="constant-image"
        )
    return np.clip(grey / full_scale, 0.0, 1.0), "none"


def dataset_to_radiograph(ds: Dataset, policy: PixelPolicy = PixelPolicy()) -> Radiograph:
    """Run the whole pipeline on a dataset (see the module docstring for the steps).

    Raises:
        SizeLimitError: the header claims more pixel bytes than ``policy.max_pixel_bytes``.
        PixelDecodeError: anything else that stops a usable image; ``reason`` says what.
    """
    frame = decode_frame(ds, policy)
    unit, voi_source, bounds = _unit_range(frame.array, ds, policy)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric.upper() == "MONOCHROME1" and frame.array.ndim == 2:
        unit = 1.0 - unit  # after the VOI, never before: the window is defined on stored values
    pixels = np.ascontiguousarray(unit, dtype=np.float32)
    if not np.isfinite(pixels).all():  # cannot happen after the checks above; never let it out
        raise PixelDecodeError("pipeline produced NaN or inf", reason="non-finite")
    return Radiograph(
        pixels=pixels,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")).strip(),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")).strip(),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")).strip(),
        rows=pixels.shape[0],
        cols=pixels.shape[1],
        spacing=spacing_from_dataset(ds),
        photometric=photometric,
        frame_index=frame.frame_index,
        n_frames=frame.n_frames,
        voi_source=voi_source,
        percentile_bounds=bounds,
    )


def load_radiograph(
    path: str | os.PathLike[str], policy: PixelPolicy = PixelPolicy()
) -> Radiograph:
    """Read a file and run :func:`dataset_to_radiograph` on it.

    Large elements (the pixel data) are read lazily, so the size check runs on the header
    before the pixel bytes are loaded; a deflated file's pixel data is inflated only after
    that check (:func:`dicom_io.deflate.read_deflated_dataset`).

    Raises:
        DicomReadError: ``unreadable`` (I/O error), ``unreadable-header`` (not DICOM) or
            ``header-too-large`` (a deflated header above ``policy.max_header_bytes``).
        PixelDecodeError: ``truncated-pixel-data`` when the file ends inside encapsulated data
            or a deflated file's stream ends inside its Pixel Data; ``pixel-length-mismatch``.
        SizeLimitError, PixelDecodeError: as :func:`dataset_to_radiograph`.
    """
    try:
        ds = _read_file(path, policy)
    except DicomIOError:
        raise
    except OSError as exc:
        raise DicomReadError(f"cannot read: {exc.strerror or exc}", reason="unreadable") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed headers
        detail = f"{type(exc).__name__}: {exc}"[:_MESSAGE_LIMIT]
        raise DicomReadError(
            f"header not readable as DICOM: {detail}", reason="unreadable-header"
        ) from exc
    if len(ds) == 0 and os.path.getsize(path) > 132:
        # pydicom returns an empty dataset when the file ends inside an undefined-length
        # element (encapsulated pixel data without its delimiter), although the header alone
        # reads (emri_small_jpeg_2k_lossless_too_short.dcm)
        raise PixelDecodeError(
            "the file ends inside an undefined-length element (encapsulated pixel data cut short)",
            reason="truncated-pixel-data",
        )
    _infer_transfer_syntax(ds)
    return dataset_to_radiograph(ds, policy)


def _read_file(path: str | os.PathLike[str], policy: PixelPolicy) -> Dataset:
    with open(path, "rb") as handle:
        deflated = deflated_file_meta(handle)
        if deflated is not None:
            return read_deflated_dataset(
                handle, deflated[1], max_header_bytes=policy.max_header_bytes,
                max_pixel_bytes=policy.max_pixel_bytes, name=str(path),
            )
    return pydicom.dcmread(path, force=True, defer_size="1 MB")


_NATIVE_SYNTAXES = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}


def _infer_transfer_syntax(ds: Dataset) -> None:
    """Give a file without a Transfer Syntax UID the native syntax it was read with.

    Old files without file meta (e.g. ACR-NEMA style) are native by necessity: an encapsulated
    syntax cannot be read without its UID. Only for datasets this module read itself.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return
    syntax = _NATIVE_SYNTAXES.get((implicit, little))
    if syntax is None:
        return
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
