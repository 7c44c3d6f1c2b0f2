"""Boxes drawn on pixels: one look for every picture of a result (SC images, the page's thumbnails).

Why one module owns this: a radiologist sees the same finding in a presentation state, in a
secondary-capture image and on the morning page, so its colour, its line style and its words
must agree everywhere. :func:`level_style` decides how a level looks (GSPS graphics use it
too), :func:`finding_text` is the one wording, and :func:`burn_in` draws boxes into pixels.

Boxes are source-pixel edges ``(col0, row0, col1, row1)`` as in ``findings.csv``
(:mod:`dicom_io.geometry`: pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``), so a downscale by
``new_w / cols`` and ``new_h / rows`` maps them exactly.

Only the pixels and the boxes given are drawn: nothing from a header (no name, no id) ever
reaches the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from dicom_io.errors import InvalidArgumentError

__all__ = [
    "DOUBT_COLOUR",
    "STRICT_COLOUR",
    "BoxLabel",
    "LevelStyle",
    "burn_in",
    "finding_text",
    "level_style",
    "shrink",
]

STRICT_COLOUR = (255, 64, 32)
"""RGB of the strictest level (or of the one level of a single operating point): red-orange."""
DOUBT_COLOUR = (255, 200, 0)
"""RGB of every less strict level: yellow, drawn dashed."""
_BACKING = (0, 0, 0)
_BANNER_TEXT = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class LevelStyle:
    """How the boxes of one level look.

    Attributes:
        colour: RGB, each 0-255.
        dashed: dashed outline (a less strict level) rather than solid.
        name: the level's name (``"finding"`` for a single operating point's level ``None``).
    """

    colour: tuple[int, int, int]
    dashed: bool
    name: str

    def __post_init__(self) -> None:
        if len(self.colour) != 3 or any(
            isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 255 for c in self.colour
        ):
            raise InvalidArgumentError(f"LevelStyle.colour must be three ints 0-255 (RGB), got {self.colour!r}")


BoxLabel = tuple[tuple[float, float, float, float] | None, str, LevelStyle]
"""One box to draw: source-pixel edges (``None`` for an image-level finding: the image's
border is framed), its text, its style."""


def level_style(level: str | None, levels: Sequence[str]) -> LevelStyle:
    """The style of a finding's level.

    Args:
        level: the finding's level (``findings.csv`` ``level``; ``None`` or ``""`` for a single
            operating point).
        levels: the operating points' level names, from the most sensitive to the strictest
            (as :func:`screen.nightly.writers.box_levels` names them).

    Returns:
        Solid red-orange for the strictest level and for a single point; dashed yellow for any
        less strict level.

    Raises:
        InvalidArgumentError: ``level`` is not one of ``levels``.
    """
    if not level:
        return LevelStyle(STRICT_COLOUR, False, "finding")
    if level not in levels:
        raise InvalidArgumentError(
            f"level {level!r} is not one of the operating points' levels {list(levels)!r}; "
            "pass the levels of the operating-point file that graded the findings"
        )
    if level == levels[-1]:
        return LevelStyle(STRICT_COLOUR, False, level)
    return LevelStyle(DOUBT_COLOUR, True, level)


def finding_text(score: float, level: str | None) -> str:
    """The one wording of a finding: ``"AI fracture 87 %"`` or ``"AI fracture 87 % (doubt)"``.

    Raises:
        InvalidArgumentError: ``score`` is not a number in ``[0, 1]``.
    """
    value = float(score)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidArgumentError(f"finding_text: score must be in [0, 1], got {score!r}")
    text = f"AI fracture {int(round(value * 100))} %"
    return f"{text} ({level})" if level else text


def burn_in(
    grey: np.ndarray,
    boxes: Sequence[BoxLabel],
    *,
    banner: str | None = None,
    max_side: int | None = None,
    frame: tuple[int, int] | None = None,
) -> np.ndarray:
    """Draw boxes, their texts and an optional banner on a greyscale image.

    Args:
        grey: the image as the pipeline saw it: 2-D float in ``[0, 1]``
            (:class:`dicom_io.pixels.Radiograph` ``pixels``) or 2-D uint8.
        boxes: ``(box, text, style)`` per finding; boxes in source-pixel edges of ``grey``.
        banner: text written on a dark strip added *above* the image (so it never hides
            anatomy); the returned image is taller by the strip.
        max_side: downscale (never upscale) so the image's long side is at most this; the
            boxes are scaled with it.
        frame: ``(rows, cols)`` of the image the boxes are in when ``grey`` is its
            :func:`shrink` to ``max_side`` (a preview kept instead of the full image): the
            result is the one the full image gives. ``None``: the boxes are in ``grey``'s frame.

    Returns:
        uint8 RGB array ``(H', W', 3)`` (``H'`` includes the banner strip).

    Raises:
        InvalidArgumentError: ``grey`` is not a 2-D float or uint8 array, a box is not four
            finite edges with ``col0 < col1`` and ``row0 < row1``, or ``max_side < 16``.
    """
    image = _to_uint8(grey)
    rows, cols = image.shape if frame is None else frame
    new_h, new_w = _fitted(rows, cols, max_side)
    if frame is not None and image.shape != (new_h, new_w):
        raise InvalidArgumentError(f"burn_in: a {image.shape} preview is not the shrink of a {frame} "
                                   f"image to max_side {max_side}")
    if image.shape != (new_h, new_w):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    rgb = np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    sx, sy = new_w / cols, new_h / rows
    thickness = max(2, round(max(new_h, new_w) / 300))
    font_scale = max(0.4, max(new_h, new_w) / 1100)
    font_thickness = max(1, round(font_scale * 1.6))
    for box, text, style in boxes:
        if box is None:
            edges = (0, 0, new_w - 1, new_h - 1)
        else:
            col0, row0, col1, row1 = _checked_box(box)
            edges = (
                _clip(math.floor(col0 * sx), new_w), _clip(math.floor(row0 * sy), new_h),
                _clip(math.ceil(col1 * sx) - 1, new_w), _clip(math.ceil(row1 * sy) - 1, new_h),
            )
        _rectangle(rgb, edges, style, thickness)
        _label(rgb, _ascii(text), edges, style.colour, font_scale, font_thickness)
    if banner:
        rgb = _with_banner(rgb, _ascii(banner))
    return rgb


def shrink(grey: np.ndarray, max_side: int) -> np.ndarray:
    """``grey`` (as :func:`burn_in` takes it) as uint8, downscaled as :func:`burn_in` downscales
    it: a preview to draw on later with ``frame`` set to ``grey``'s shape, at a fraction of
    the memory and without decoding the source again."""
    image = _to_uint8(grey)
    new_h, new_w = _fitted(image.shape[0], image.shape[1], max_side)
    if image.shape == (new_h, new_w):
        return image
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)


def _fitted(rows: int, cols: int, max_side: int | None) -> tuple[int, int]:
    """The (rows, cols) an image of that size is drawn at: long side at most ``max_side``."""
    if max_side is not None and (isinstance(max_side, bool) or int(max_side) < 16):
        raise InvalidArgumentError(f"burn_in: max_side must be an int >= 16, got {max_side!r}")
    scale = 1.0 if max_side is None else min(1.0, max_side / max(rows, cols))
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def _to_uint8(grey: np.ndarray) -> np.ndarray:
    array = np.asarray(grey)
    if array.ndim != 2 or array.size == 0:
        raise InvalidArgumentError(
            f"burn_in: grey must be a non-empty 2-D (rows, cols) array, got shape {array.shape}"
        )
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidArgumentError(
            f"burn_in: grey must be float in [0, 1] or uint8, got dtype {array.dtype}"
        )
    unit = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.ascontiguousarray(np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8))


def _checked_box(box: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        col0, row0, col1, row1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"burn_in: a box must be four numbers (col0, row0, col1, row1), got {box!r}"
        ) from None
    if not all(math.isfinite(v) for v in (col0, row0, col1, row1)) or col0 >= col1 or row0 >= row1:
        raise InvalidArgumentError(
            "burn_in: a box must be finite source-pixel edges with col0 < col1 and row0 < row1, "
            f"got {box!r}"
        )
    return col0, row0, col1, row1


def _clip(value: int, size: int) -> int:
    return min(max(value, 0), size - 1)


def _rectangle(rgb: np.ndarray, edges: tuple[int, int, int, int], style: LevelStyle, thickness: int) -> None:
    """The box's outline, centred on its edges; a dashed style in dashes and equal gaps."""
    x0, y0, x1, y1 = edges
    colour = tuple(int(c) for c in style.colour)
    dash = max(4, 3 * thickness) if style.dashed else max(x1 - x0, y1 - y0) + 1
    lo = thickness // 2
    for a in range(x0, x1 + 1, 2 * dash):  # top and bottom edges
        b = min(a + dash - 1, x1)
        for y in (y0, y1):
            cv2.rectangle(rgb, (a, y - lo), (b, y - lo + thickness - 1), colour, cv2.FILLED)
    for a in range(y0, y1 + 1, 2 * dash):  # left and right edges
        b = min(a + dash - 1, y1)
        for x in (x0, x1):
            cv2.rectangle(rgb, (x - lo, a), (x - lo + thickness - 1, b), colour, cv2.FILLED)


def _label(rgb: np.ndarray, text: str, edges: tuple[int, int, int, int], colour: tuple[int, int, int],
           scale: float, thick: int) -> None:
    """Text in the level's colour on a dark backing: above the box when there is room, else
    just inside its top."""
    if not text:
        return
    (width, height), base = cv2.getTextSize(text, _FONT, scale, thick)
    pad = max(2, thick + 1)
    box_h = height + base + 2 * pad
    x0, y0 = edges[0], edges[1]
    top = y0 - box_h if y0 - box_h >= 0 else y0 + 1
    left = min(x0, max(0, rgb.shape[1] - width - 2 * pad))
    cv2.rectangle(rgb, (left, top), (left + width + 2 * pad, top + box_h), _BACKING, cv2.FILLED)
    cv2.putText(rgb, text, (left + pad, top + pad + height), _FONT, scale, tuple(int(c) for c in colour),
                thick, cv2.LINE_AA)


def _with_banner(rgb: np.ndarray, text: str) -> np.ndarray:
    """A dark strip above the image with ``text`` fitted to the image's width."""
    width = rgb.shape[1]
    scale, thick = max(0.35, width / 1400), 1
    (text_w, text_h), base = cv2.getTextSize(text, _FONT, scale, thick)
    if text_w > width - 8:
        scale *= (width - 8) / text_w
        (text_w, text_h), base = cv2.getTextSize(text, _FONT, scale, thick)
    pad = max(3, text_h // 2)
    strip = np.zeros((text_h + base + 2 * pad, width, 3), dtype=np.uint8)
    strip[:] = _BACKING
    cv2.putText(strip, text, (max(0, (width - text_w) // 2), pad + text_h), _FONT, scale,
                _BANNER_TEXT, thick, cv2.LINE_AA)
    return np.ascontiguousarray(np.concatenate([strip, rgb], axis=0))


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only: anything else becomes ``?``."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in str(text))
