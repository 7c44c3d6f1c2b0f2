"""The one geometry mapping between source pixels and a member's square input, and pixel spacing.

Why this module exists: a box found by a member lives in the member's ``S x S`` input image
(normalised ``(x0, y0, x1, y1)`` in ``[0, 1]``, see :mod:`ensembles.types`), while findings,
SR coordinates and truth boxes live in source pixel columns/rows. Only this module converts
between the two, so there is exactly one resize convention in the project:

- *squash*: resize to ``S x S`` independently per axis (``scale_x = S/W``, ``scale_y = S/H``).
- *letterbox*: ``s = min(S/H, S/W)``; ``new_h = round(H*s)``, ``new_w = round(W*s)`` (Python's
  ``round``, clamped to ``1..S``); the content sits at ``pad_top = (S-new_h)//2``,
  ``pad_left = (S-new_w)//2`` on a zero background; effective scales are ``new_w/W`` and
  ``new_h/H``.
- interpolation: ``cv2.INTER_AREA`` when an axis shrinks, ``cv2.INTER_LINEAR`` otherwise.

Source coordinates are continuous pixel-edge coordinates: pixel ``(r, c)`` covers
``[c, c+1) x [r, r+1)``, so a whole image spans ``0..cols`` by ``0..rows``. With this convention
a resize is an exact linear map of edges (which is also what ``cv2.resize`` does with its
pixel-centre sampling), so no half-pixel offsets appear anywhere.

Pixel spacing: ``PixelSpacing`` is in the patient plane; ``ImagerPixelSpacing`` is at the
detector and is larger than patient-plane size by the radiographic magnification. Using one for
the other is a known safety bug, so :class:`PixelSpacingInfo` always records which was used.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pydicom.dataset import Dataset

from dicom_io.errors import GeometryError
from ensembles.types import ResizeMode

__all__ = [
    "SPACING_SOURCES",
    "PixelSpacingInfo",
    "ResizeMode",
    "ResizeSpec",
    "resize_image",
    "spacing_from_dataset",
]

_TOLERANCE = 1e-6
"""How far outside ``[0, 1]`` a normalised coordinate may lie (float rounding) before it is an
error; values within the tolerance are clamped."""

SPACING_SOURCES = (
    "PixelSpacing",
    "ImagerPixelSpacing",
    "ImagerPixelSpacing/magnification",
    "none",
)


@dataclass(frozen=True)
class PixelSpacingInfo:
    """Physical pixel size and which header attribute it came from.

    Attributes:
        row_mm: distance between the centres of adjacent rows (vertical), in mm; ``None`` when
            unknown.
        col_mm: distance between the centres of adjacent columns (horizontal), in mm; ``None``
            when unknown.
        source: ``"PixelSpacing"`` (patient plane), ``"ImagerPixelSpacing"`` (detector plane,
            not corrected for magnification: callers must not treat it as patient size),
            ``"ImagerPixelSpacing/magnification"`` (detector spacing divided by
            EstimatedRadiographicMagnificationFactor, an estimate of patient plane) or
            ``"none"``.
    """

    row_mm: float | None
    col_mm: float | None
    source: str

    def __post_init__(self) -> None:
        if self.source not in SPACING_SOURCES:
            raise GeometryError(
                f"PixelSpacingInfo.source must be one of {SPACING_SOURCES}, got {self.source!r}"
            )
        known = (self.row_mm is not None, self.col_mm is not None)
        if self.source == "none" and any(known):
            raise GeometryError("PixelSpacingInfo with source 'none' must have no row_mm/col_mm")
        if self.source != "none":
            for name in ("row_mm", "col_mm"):
                value = getattr(self, name)
                if value is None or not math.isfinite(value) or value <= 0:
                    raise GeometryError(
                        f"PixelSpacingInfo.{name} must be a positive finite number for source "
                        f"{self.source!r}, got {value!r}"
                    )

    @property
    def is_patient_plane(self) -> bool:
        """Whether the spacing measures the patient (PixelSpacing or magnification-corrected)."""
        return self.source in ("PixelSpacing", "ImagerPixelSpacing/magnification")


def _positive_pair(value: Any) -> tuple[float, float] | None:
    """Return a header pair as two positive finite floats, or ``None`` when unusable.

    ``0\\0`` (seen in real CR files), a wrong number of values or text that is not a number all
    count as absent: a spacing that cannot be trusted is worse than none.
    """
    if value is None:
        return None
    try:
        items = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(items) != 2 or not all(math.isfinite(v) and v > 0 for v in items):
        return None
    return items[0], items[1]


def _positive_number(value: Any) -> float | None:
    """Return a header number as a positive finite float, or ``None`` when unusable."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def spacing_from_dataset(ds: Dataset) -> PixelSpacingInfo:
    """Read the pixel spacing of a projection radiograph, saying which plane it measures.

    Rules: PixelSpacing (patient plane) wins when present with two positive values. Otherwise
    ImagerPixelSpacing (detector plane) is divided by EstimatedRadiographicMagnificationFactor
    when that is present and positive, or reported as detector plane when it is not. Never
    raises for odd header values: unusable values count as absent.

    Args:
        ds: the instance's dataset (header only is enough).

    Returns:
        The spacing and its source.
    """
    pair = _positive_pair(ds.get("PixelSpacing"))
    if pair is not None:
        return PixelSpacingInfo(row_mm=pair[0], col_mm=pair[1], source="PixelSpacing")
    pair = _positive_pair(ds.get("ImagerPixelSpacing"))
    if pair is None:
        return PixelSpacingInfo(row_mm=None, col_mm=None, source="none")
    magnification = _positive_number(ds.get("EstimatedRadiographicMagnificationFactor"))
    if magnification is not None:
        return PixelSpacingInfo(
            row_mm=pair[0] / magnification,
            col_mm=pair[1] / magnification,
            source="ImagerPixelSpacing/magnification",
        )
    return PixelSpacingInfo(row_mm=pair[0], col_mm=pair[1], source="ImagerPixelSpacing")


def _positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an int, raising :class:`GeometryError` unless it is a positive int."""
    if isinstance(value, bool):
        raise GeometryError(f"ResizeSpec.{name} must be a positive int, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise GeometryError(
            f"ResizeSpec.{name} must be a positive int, got {value!r} ({type(value).__name__})"
        ) from None
    if number < 1:
        raise GeometryError(f"ResizeSpec.{name} must be a positive int, got {number}")
    return number


def _finite4(values: Any, what: str) -> tuple[float, float, float, float]:
    """Return four finite floats, raising :class:`GeometryError` otherwise."""
    try:
        items = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise GeometryError(f"{what} must be 4 finite numbers, got {values!r}") from None
    if len(items) != 4 or not all(math.isfinite(v) for v in items):
        raise GeometryError(f"{what} must be 4 finite numbers, got {values!r}")
    return items[0], items[1], items[2], items[3]


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


@dataclass(frozen=True)
class ResizeSpec:
    """The resize from a ``src_rows x src_cols`` image to a ``size x size`` model input.

    Attributes:
        src_rows: source image height H in pixels.
        src_cols: source image width W in pixels.
        size: side S of the square model input in pixels.
        mode: :class:`ResizeMode` or its string value (converted on construction).
    """

    src_rows: int
    src_cols: int
    size: int
    mode: ResizeMode | str = ResizeMode.SQUASH

    def __post_init__(self) -> None:
        for name in ("src_rows", "src_cols", "size"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        try:
            mode = ResizeMode(self.mode)
        except ValueError:
            valid = [m.value for m in ResizeMode]
            raise GeometryError(
                f"ResizeSpec.mode must be one of {valid}, got {self.mode!r}"
            ) from None
        object.__setattr__(self, "mode", mode)

    # --- the convention -------------------------------------------------------------------
    @property
    def _letterbox_scale(self) -> float:
        return min(self.size / self.src_rows, self.size / self.src_cols)

    @property
    def new_w(self) -> int:
        """Width of the resized content inside the square (``S`` for squash)."""
        if self.mode is ResizeMode.SQUASH:
            return self.size
        return min(self.size, max(1, round(self.src_cols * self._letterbox_scale)))

    @property
    def new_h(self) -> int:
        """Height of the resized content inside the square (``S`` for squash)."""
        if self.mode is ResizeMode.SQUASH:
            return self.size
        return min(self.size, max(1, round(self.src_rows * self._letterbox_scale)))

    @property
    def scale_x(self) -> float:
        """Model pixels per source column (``new_w / W``)."""
        return self.new_w / self.src_cols

    @property
    def scale_y(self) -> float:
        """Model pixels per source row (``new_h / H``)."""
        return self.new_h / self.src_rows

    @property
    def pad_left(self) -> int:
        """Zero columns left of the content (0 for squash)."""
        return (self.size - self.new_w) // 2

    @property
    def pad_top(self) -> int:
        """Zero rows above the content (0 for squash)."""
        return (self.size - self.new_h) // 2

    @property
    def interpolation(self) -> int:
        """The cv2 flag of the convention: INTER_AREA when an axis shrinks, else INTER_LINEAR."""
        shrinking = self.new_w < self.src_cols or self.new_h < self.src_rows
        return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR

    # --- points ---------------------------------------------------------------------------
    def point_to_source(self, x: float, y: float) -> tuple[float, float]:
        """Map a normalised model point to source ``(col, row)``, clipped to the image.

        Points in letterbox padding land on the nearest image edge.
        """
        col = (x * self.size - self.pad_left) / self.scale_x
        row = (y * self.size - self.pad_top) / self.scale_y
        return (
            _clamp(col, 0.0, float(self.src_cols)),
            _clamp(row, 0.0, float(self.src_rows)),
        )

    def point_from_source(self, col: float, row: float) -> tuple[float, float]:
        """Map a source ``(col, row)`` (pixel-edge coordinates) to a normalised model point."""
        x = (col * self.scale_x + self.pad_left) / self.size
        y = (row * self.scale_y + self.pad_top) / self.size
        return x, y

    # --- boxes ----------------------------------------------------------------------------
    def box_to_source(self, box: Any) -> tuple[float, float, float, float]:
        """Map a normalised model box to source ``(col0, row0, col1, row1)`` pixel edges.

        Args:
            box: ``(x0, y0, x1, y1)`` in ``[0, 1]`` of the ``S x S`` input (a
                :class:`ensembles.types.Box` or any 4-sequence).

        Returns:
            Float pixel-edge coordinates clipped to ``0..cols`` and ``0..rows``; a box wholly
            inside letterbox padding collapses onto the image edge.

        Raises:
            GeometryError: the box is not 4 finite numbers, has ``x1 <= x0`` or ``y1 <= y0``,
                or lies outside ``[0, 1]`` by more than 1e-6.
        """
        x0, y0, x1, y1 = _finite4(box, "box")
        if not (x1 > x0 and y1 > y0):
            raise GeometryError(
                f"box must have x0 < x1 and y0 < y1 (normalised x0, y0, x1, y1), got {box!r}"
            )
        if min(x0, y0) < -_TOLERANCE or max(x1, y1) > 1.0 + _TOLERANCE:
            raise GeometryError(
                f"box must be normalised to [0, 1] of the model input, got {box!r}; "
                "divide pixel coordinates by the input size first"
            )
        x0, y0, x1, y1 = (_clamp(v, 0.0, 1.0) for v in (x0, y0, x1, y1))
        col0, row0 = self.point_to_source(x0, y0)
        col1, row1 = self.point_to_source(x1, y1)
        return col0, row0, col1, row1

    def source_to_box(
        self, col0: float, row0: float, col1: float, row1: float
    ) -> tuple[float, float, float, float]:
        """Map a source pixel-edge box to a normalised model box (the inverse of
        :meth:`box_to_source`), e.g. to turn truth boxes into training targets.

        A box reaching past the image (truth boxes padded near an edge) is clipped to the image
        first.

        Raises:
            GeometryError: not 4 finite numbers, ``col1 <= col0`` or ``row1 <= row0``, or nothing
                of the box inside the image.
        """
        c0, r0, c1, r1 = _finite4((col0, row0, col1, row1), "source box")
        if not (c1 > c0 and r1 > r0):
            raise GeometryError(
                "source box must have col0 < col1 and row0 < row1, got "
                f"{(col0, row0, col1, row1)!r}"
            )
        c0, c1 = _clamp(c0, 0.0, float(self.src_cols)), _clamp(c1, 0.0, float(self.src_cols))
        r0, r1 = _clamp(r0, 0.0, float(self.src_rows)), _clamp(r1, 0.0, float(self.src_rows))
        if not (c1 > c0 and r1 > r0):
            raise GeometryError(
                f"source box {(col0, row0, col1, row1)!r} lies outside the "
                f"{self.src_cols}x{self.src_rows} (cols x rows) image"
            )
        x0, y0 = self.point_from_source(c0, r0)
        x1, y1 = self.point_from_source(c1, r1)
        return x0, y0, x1, y1


def resize_image(pixels: np.ndarray, spec: ResizeSpec) -> np.ndarray:
    """Resize a source image to the model input by the project convention (the reference).

    Args:
        pixels: 2-D array of shape ``(spec.src_rows, spec.src_cols)``.
        spec: the resize.

    Returns:
        float32 array of shape ``(spec.size, spec.size)``; letterbox padding is 0.

    Raises:
        GeometryError: the array is not 2-D or its shape does not match the spec.
    """
    array = np.asarray(pixels)
    if array.ndim != 2 or array.shape != (spec.src_rows, spec.src_cols):
        raise GeometryError(
            f"resize_image expects a 2-D array of shape ({spec.src_rows}, {spec.src_cols}) "
            f"(rows, cols) as in its ResizeSpec, got shape {array.shape}"
        )
    source = np.ascontiguousarray(array, dtype=np.float32)
    content: np.ndarray = source
    if (spec.new_h, spec.new_w) != source.shape:
        content = cv2.resize(source, (spec.new_w, spec.new_h), interpolation=spec.interpolation)
    out = np.zeros((spec.size, spec.size), dtype=np.float32)
    out[spec.pad_top : spec.pad_top + spec.new_h, spec.pad_left : spec.pad_left + spec.new_w] = (
        content
    )
    return out
