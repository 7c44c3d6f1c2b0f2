"""The ``randomised``, ``wide``, ``shifted`` and ``shifted-2`` phantom styles: one fracture task, rendered
many ways.

The task is the ``rods`` task of ``docs/phantom.md``: a thin dark gap crossing a bright bone is a
fracture; its truth box bounds the gap's part inside the bone, padded by 4..8 px. What differs is
*how* the image is drawn. Every rendering factor is drawn per image from one declared
:class:`StyleRanges`:

- :data:`RANDOMISED` (training): wide ranges that contain the ``rods`` ranges, so a model trained
  on it cannot lean on one bone shape, cortical profile, line profile, noise texture, window,
  collimation or marker look.
- ``WIDE`` (training, :mod:`dicom_io.phantom.style_ranges`): :data:`RANDOMISED` with every family
  the generator draws.
- :data:`SHIFTED` (measurement only): a rendering fixed before any training, whose factors lie
  outside :data:`RANDOMISED` wherever the task allows (:data:`DISJOINT_FACTORS`); the rest
  overlap on purpose (:data:`OVERLAPPING_FACTORS` says why).
- :data:`SHIFTED_2` (measurement only): a second such rendering, fixed once ``shifted`` had
  informed a training choice and before anything was chosen with it in view
  (:data:`HELD_OUT_STYLES` holds both, with what each shares with :data:`RANDOMISED` and why).

Values are linear attenuation (higher = denser) in 12 bits, as every phantom style; MONOCHROME1,
the study layout and the header come from the archive. The image's window (WindowCenter/Width)
is drawn here too (:attr:`PhantomImage.window`), always inside the valid range and never
clipping the bone away. Burned-in text and markers are drawn into the pixels while the header
keeps ``BurnedInAnnotation NO``, as every phantom file does, so that the archive's own selection
rules (which skip ``YES``) still select these images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from dicom_io.phantom.config import PhantomError
from dicom_io.phantom.draw import BOX_PAD_PX, MAX_VALUE, Box, PhantomImage
from dicom_io.phantom.style_ranges import (
    DISJOINT_FACTORS, HELD_OUT_STYLES, OVERLAPPING_FACTORS, RANDOMISED, SHIFTED, SHIFTED_2, STYLE_RANGES,
    HeldOutStyle, StyleRanges, range_fields,
)
from dicom_io.phantom.varied_bones import Bone, Gap, place_bones, place_gap, place_mark, render_bone, pick, soft_edge, uniform

__all__ = ["DISJOINT_FACTORS", "HELD_OUT_STYLES", "HeldOutStyle", "OVERLAPPING_FACTORS", "RANDOMISED", "SHIFTED",
           "SHIFTED_2", "STYLE_RANGES", "StyleRanges",
           "StyledDraw", "draw_styled", "generate_styled_image", "range_fields"]

_FONTS_PLAIN = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX)
_TEXTS_PLAIN = ("L", "R", "AP", "PA", "LAT", "PORTABLE", "SUPINE", "ER", "WB")
_TEXTS_LEAD = ("L", "R", "D", "S")
_DARK_LEVEL = (0.0, 150.0)
_BRIGHT_LEVEL = (2800.0, 4095.0)


@dataclass(frozen=True)
class StyledDraw:
    """One drawn image with what the tests and docs need to check it.

    Attributes:
        image: the image and its truth boxes (as the archive writes them).
        factors: the families drawn for this image (bone shapes, noise texture ...).
        gap_masks: per box, the gap's pixels inside the bone (the box's unpadded content).
        bone_mask: pixels inside any bone.
        bone_masks: pixels inside each bone.
        gap_bones: per box, the index (into ``bone_masks``) of the bone the gap crosses.
    """

    image: PhantomImage
    factors: Mapping[str, object]
    gap_masks: tuple[np.ndarray, ...]
    bone_mask: np.ndarray
    bone_masks: tuple[np.ndarray, ...]
    gap_bones: tuple[int, ...]


def _soft_tissue(rng: np.random.Generator, shape: tuple[int, int], bones: list[Bone]) -> np.ndarray:
    """A limb-like blob in [0, 1] around the bones (as the rods style), drawn small then enlarged."""
    rows, cols = shape
    small = (max(rows // 4, 8), max(cols // 4, 8))
    canvas: np.ndarray = np.zeros(small, dtype=np.float32)
    cx = float(np.mean([b.cx for b in bones])) / 4.0
    cy = float(np.mean([b.cy for b in bones])) / 4.0
    spread = sum(2 * b.reach() for b in bones) * 1.2
    along = rng.uniform(0.45, 0.75) * max(rows, cols) / 4.0
    across = max(spread * rng.uniform(1.3, 2.0), 0.25 * min(rows, cols)) / 4.0
    cv2.ellipse(canvas, (round(cx * 16), round(cy * 16)), (round(along * 16), round(across * 16)),
                math.degrees(bones[0].angle), 0.0, 360.0, 1.0, thickness=-1, lineType=cv2.LINE_AA, shift=4)
    canvas = cv2.GaussianBlur(canvas, (0, 0), sigmaX=rng.uniform(0.04, 0.08) * min(small),
                              borderType=cv2.BORDER_REFLECT)
    scaled = (canvas / max(float(canvas.max()), 1e-6)).astype(np.float32)
    return cv2.resize(scaled, (cols, rows), interpolation=cv2.INTER_LINEAR).astype(np.float64)


def _overlaps(rect: Box, boxes: list[Box], pad: int = 3) -> bool:
    x0, y0, x1, y1 = rect
    return any(x0 < b[2] + pad and b[0] - pad < x1 and y0 < b[3] + pad and b[1] - pad < y1 for b in boxes)


def _level(rng: np.random.Generator, kind: str) -> float:
    return float(rng.uniform(*(_DARK_LEVEL if kind == "dark" else _BRIGHT_LEVEL)))


def _collimation(rng: np.random.Generator, r: StyleRanges, shape: tuple[int, int], boxes: list[Box]
                 ) -> tuple[np.ndarray, str]:
    """Coverage in [0, 1] of the collimated border (never over a truth box) and its kind."""
    rows, cols = shape
    kind = pick(rng, r.collimation_kinds)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64) + 0.5
    mask = np.zeros((rows, cols), dtype=np.float64)
    if kind == "ellipse":
        cx = cols / 2 + rng.uniform(-0.05, 0.05) * cols
        cy = rows / 2 + rng.uniform(-0.05, 0.05) * rows
        ax, ay = uniform(rng, r.collimation_ellipse) * cols / 2, uniform(rng, r.collimation_ellipse) * rows / 2
        corners = [(x, y) for b in boxes for x in (b[0] - 3, b[2] + 3) for y in (b[1] - 3, b[3] + 3)]
        need = max([((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 for x, y in corners], default=0.0)
        if need > 0.9:
            ax, ay = ax * math.sqrt(need / 0.9), ay * math.sqrt(need / 0.9)
        # signed distance (px, approximate) outside the ellipse
        rho = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
        mask = soft_edge((rho - 1.0) * min(ax, ay))
        return mask, kind
    sides_range = r.collimation_sides or (0, 0)
    n_sides = int(rng.integers(sides_range[0], sides_range[1] + 1))
    chosen = rng.permutation(4)[:n_sides]
    for side in sorted(int(s) for s in chosen):
        tilt = math.tan(math.radians(rng.uniform(-3.0, 3.0)))
        extent = cols if side in (0, 1) else rows  # 0 left, 1 right, 2 top, 3 bottom
        other = rows if side in (0, 1) else cols
        band = uniform(rng, r.collimation_band) * extent
        if boxes:
            room = min(
                (b[0] if side == 0 else cols - b[2] if side == 1 else b[1] if side == 2 else rows - b[3])
                for b in boxes
            )
            band = min(band, room - abs(tilt) * other / 2 - 3.0)
        if band <= 1.0:
            continue
        if side == 0:
            d = band + tilt * (yy - rows / 2) - xx
        elif side == 1:
            d = xx - (cols - band + tilt * (yy - rows / 2))
        elif side == 2:
            d = band + tilt * (xx - cols / 2) - yy
        else:
            d = yy - (rows - band + tilt * (xx - cols / 2))
        mask = np.maximum(mask, soft_edge(d))
    return mask, kind


def _noise(rng: np.random.Generator, r: StyleRanges, image: np.ndarray) -> tuple[np.ndarray, str]:
    rows, cols = image.shape
    texture = pick(rng, r.noise_textures)
    sigma = uniform(rng, r.noise_sigma)
    if texture == "correlated":
        grain: np.ndarray = cv2.GaussianBlur(rng.normal(0.0, 1.0, (rows, cols)).astype(np.float32), (0, 0),
                                 sigmaX=uniform(rng, r.noise_correlation_px, 1.5))
        grain = grain / max(float(grain.std()), 1e-6)
        low: np.ndarray = rng.normal(0.0, 1.0, (max(rows // 16, 2), max(cols // 16, 2))).astype(np.float32)
        low = cv2.resize(cv2.GaussianBlur(low, (0, 0), 1.0), (cols, rows), interpolation=cv2.INTER_CUBIC)
        low = low / max(float(low.std()), 1e-6)
        return sigma * (grain + rng.uniform(0.0, 0.6) * low).astype(np.float64), texture
    if texture == "poisson":
        ref = max(float(image.mean()), 1.0)
        return rng.normal(0.0, 1.0, (rows, cols)) * sigma * np.sqrt(np.clip(image, 1.0, None) / ref), texture
    if texture == "line-stripes":
        strength = uniform(rng, r.stripe_strength, 0.6)
        if rng.random() < 0.5:
            lines = rng.normal(0.0, strength * sigma, (rows, 1))
        else:
            lines = rng.normal(0.0, strength * sigma, (1, cols))
        return lines + rng.normal(0.0, 0.7 * sigma, (rows, cols)), texture
    return rng.normal(0.0, sigma, (rows, cols)), texture


def _markers(rng: np.random.Generator, r: StyleRanges, image: np.ndarray, boxes: list[Box]
             ) -> tuple[np.ndarray, list[str]]:
    """Burn text or lead markers near the border (never over a truth box); the mask they cover."""
    rows, cols = image.shape
    short = min(rows, cols)
    covered = np.zeros((rows, cols), dtype=bool)
    drawn: list[str] = []
    count = int(rng.integers(r.marker_count[0], r.marker_count[1] + 1))
    for _ in range(count):
        style = pick(rng, r.marker_styles)
        height = uniform(rng, r.marker_height) * short
        if style == "boxed-lead":
            text, font = pick(rng, _TEXTS_LEAD), cv2.FONT_HERSHEY_TRIPLEX
        elif style == "label":
            text = pick(rng, _TEXTS_PLAIN) if rng.random() < 0.6 else f"{int(rng.integers(1, 10**4)):04d}"
            font = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX)[int(rng.integers(2))]
        else:
            text = pick(rng, _TEXTS_PLAIN) if rng.random() < 0.8 else f"{int(rng.integers(1, 10**4)):04d}"
            font = _FONTS_PLAIN[int(rng.integers(len(_FONTS_PLAIN)))]
        base = cv2.getTextSize("L", font, 1.0, 1)[0][1]
        scale = max(height / max(base, 1), 0.3)
        thickness = max(1, int(round(scale * rng.uniform(0.8, 2.0))))
        (tw, th), baseline = cv2.getTextSize(text, font, scale, thickness)
        pad = int(round(0.3 * th)) if style in ("boxed-lead", "label") else 1
        w, h = tw + 2 * pad, th + baseline + 2 * pad
        if w + 4 >= cols or h + 4 >= rows:
            continue
        edge = int(rng.integers(4))
        band = max(int(0.1 * short), 4)
        for _attempt in range(8):
            if edge in (0, 1):  # left or right border
                x = int(rng.integers(2, min(band, cols - w - 2) + 1)) if edge == 0 else cols - w - int(rng.integers(2, min(band, cols - w - 2) + 1))
                y = int(rng.integers(2, rows - h - 1))
            else:
                x = int(rng.integers(2, cols - w - 1))
                y = int(rng.integers(2, min(band, rows - h - 2) + 1)) if edge == 2 else rows - h - int(rng.integers(2, min(band, rows - h - 2) + 1))
            rect = (x, y, x + w, y + h)
            if not _overlaps(rect, boxes):
                break
        else:
            continue
        mask = np.zeros((rows, cols), dtype=np.uint8)
        origin = (x + pad, y + pad + th)
        if style in ("boxed-lead", "label"):
            plate = _level(rng, "bright") if style == "boxed-lead" else float(rng.uniform(1500.0, 4095.0))
            ink = float(rng.uniform(0.0, 300.0))
            image[y:y + h, x:x + w] = plate
            cv2.putText(mask, text, origin, font, scale, 255, thickness, cv2.LINE_AA)
            m = mask.astype(np.float64) / 255.0
            image[:] = image * (1.0 - m) + ink * m
        else:
            ink = _level(rng, "bright" if rng.random() < 0.7 else "dark")
            cv2.putText(mask, text, origin, font, scale, 255, thickness, cv2.LINE_AA)
            m = mask.astype(np.float64) / 255.0
            image[:] = image * (1.0 - m) + ink * m
        covered[y:y + h, x:x + w] = True
        drawn.append(style)
    return covered, drawn


def _window(rng: np.random.Generator, r: StyleRanges, image: np.ndarray, field: np.ndarray,
            bone: np.ndarray) -> tuple[int, int]:
    """Window centre and width (linear, MONOCHROME2 sense) from the style's preset ranges."""
    values = image[field] if field.any() else image.ravel()
    lo_ref, hi_ref = (float(v) for v in np.percentile(values, [0.5, 99.9]))
    in_bone = image[field & bone]
    bone_lo = float(np.percentile(in_bone, 5)) if in_bone.size else (lo_ref + hi_ref) / 2
    bone_lo = max(bone_lo, lo_ref)
    low = lo_ref + uniform(rng, r.window_low) * (bone_lo - lo_ref)
    high = hi_ref + uniform(rng, r.window_high) * max(hi_ref - lo_ref, 1.0)
    low, high = max(low, 0.0), min(max(high, low + 16.0), float(MAX_VALUE) * 1.5)
    return int(round((low + high) / 2)), max(int(round(high - low)), 2)


class _EmptyGap(PhantomError):
    """A placed gap left no pixel inside its bone (a bone a few pixels wide): draw again (never
    leaves :func:`draw_styled`)."""


#: Draws of one image before a style's ranges are judged impossible on the canvas.
_DRAW_TRIES = 20


def draw_styled(
    rng: np.random.Generator,
    ranges: StyleRanges,
    *,
    positive: bool,
    size_range: tuple[int, int] = (384, 768),
    two_fracture_fraction: float = 0.1,
) -> StyledDraw:
    """Draw one image of a style: pixels, truth boxes, window, and what was drawn.

    A draw whose fracture gap keeps no pixel inside its bone (bones only a few pixels wide on a
    small canvas) is drawn again from the same generator, so every truth box holds a gap; a draw
    that succeeds the first time is the draw it always was.

    Args:
        rng: the only source of randomness; the same generator state gives the same image.
        ranges: the style (one of :data:`STYLE_RANGES`).
        positive: draw one fracture (two with ``two_fracture_fraction``) when true.
        size_range: ``PhantomConfig.size_range``; canvas sides are ``ranges.size_of_max`` times
            its upper end.
        two_fracture_fraction: share of positive images with two fractures.

    Raises:
        PhantomError: no draw in :data:`_DRAW_TRIES` gave a visible gap (the canvas is too small
            for the style's bones).
    """
    for _ in range(_DRAW_TRIES):
        try:
            return _draw_once(rng, ranges, positive=positive, size_range=size_range,
                              two_fracture_fraction=two_fracture_fraction)
        except _EmptyGap:
            continue
    raise PhantomError(f"no fracture gap stayed visible in {_DRAW_TRIES} draws: the bones are too narrow on "
                       f"canvases of size_range {size_range}; draw larger images")


def _draw_once(rng: np.random.Generator, ranges: StyleRanges, *, positive: bool, size_range: tuple[int, int],
               two_fracture_fraction: float) -> StyledDraw:
    n_gaps = (2 if rng.random() < two_fracture_fraction else 1) if positive else 0
    for _attempt in range(60):
        lo, hi = (int(np.clip(round(f * size_range[1]), 64, 4096)) for f in ranges.size_of_max)
        rows, cols = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
        bones = place_bones(rng, ranges, (rows, cols))
        gaps: list[Gap] = []
        for _ in range(n_gaps):
            for _try in range(40):
                gap = place_gap(rng, ranges, bones, (rows, cols), gaps)
                if gap is not None:
                    gaps.append(gap)
                    break
        if len(gaps) == n_gaps:
            break
    else:  # pragma: no cover - the placement rules leave room on any allowed canvas
        raise PhantomError(f"could not place {n_gaps} fracture(s) in the style's ranges")
    shape = (rows, cols)

    kinds = [pick(rng, ranges.distractor_kinds)
             for _ in range(int(rng.integers(ranges.distractor_count[0], ranges.distractor_count[1] + 1)))]
    marks = [m for k in kinds if k in ("canal", "dot", "growth-plate", "harris-line")
             for m in [place_mark(rng, k, bones, gaps)] if m is not None]

    background = uniform(rng, ranges.background)
    tissue = uniform(rng, ranges.tissue)
    image = background + (tissue - background) * _soft_tissue(rng, shape, bones)

    bone_mask = np.zeros(shape, dtype=bool)
    covers: list[np.ndarray] = []
    gap_masks: dict[int, np.ndarray] = {}
    for index, bone in enumerate(bones):
        mine = [k for k, g in enumerate(gaps) if g.bone == index]
        layer, cover, masks = render_bone(bone, shape, [gaps[k] for k in mine],
                                           [m for m in marks if m.bone == index])
        image = image + layer
        bone_mask |= cover
        covers.append(cover)
        gap_masks.update(zip(mine, masks))

    yy, xx = np.ogrid[0:rows, 0:cols]
    for kind in kinds:  # distractors not tied to one bone
        if kind == "soft-tissue-edge":  # the edge of an overlapping fold of soft tissue
            fold: np.ndarray = np.zeros((max(rows // 2, 8), max(cols // 2, 8)), dtype=np.float32)
            b = bones[int(rng.integers(len(bones)))]
            centre = b.to_image(rng.uniform(-0.3, 0.3) * b.length, rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.9) * min(rows, cols))
            axes = (rng.uniform(0.3, 0.8) * cols / 2, rng.uniform(0.3, 0.8) * rows / 2)
            cv2.ellipse(fold, (round(centre[0] * 8), round(centre[1] * 8)), (round(axes[0] * 8), round(axes[1] * 8)),
                        rng.uniform(0, 180), 0.0, 360.0, 1.0, -1, cv2.LINE_AA, 4)
            fold = cv2.GaussianBlur(fold, (0, 0), rng.uniform(0.5, 1.5))
            image = image + rng.uniform(60.0, 250.0) * cv2.resize(fold, (cols, rows), interpolation=cv2.INTER_LINEAR)
        elif kind == "vessel":  # a thin, wavy, calcified (bright) vessel crossing the limb
            b = bones[int(rng.integers(len(bones)))]
            start = b.to_image(rng.uniform(-0.4, 0.4) * b.length, 0.0)
            heading = b.angle + rng.uniform(0.25, 0.6) * rng.choice([-1.0, 1.0])
            t = np.linspace(-max(rows, cols), max(rows, cols), 200)
            wobble = rng.uniform(3.0, 10.0) * np.sin(2 * math.pi * t / rng.uniform(40.0, 90.0) + rng.uniform(0, 6.3))
            px = start[0] + t * math.cos(heading) - wobble * math.sin(heading)
            py = start[1] + t * math.sin(heading) + wobble * math.cos(heading)
            line = np.zeros(shape, dtype=np.float32)
            pts = np.round(np.stack([px, py], axis=1) * 16).astype(np.int32)
            cv2.polylines(line, [pts], False, 1.0, int(rng.integers(1, 3)), cv2.LINE_AA, 4)
            image = image + rng.uniform(150.0, 300.0) * line

    gradient = pick(rng, ranges.gradient_kinds)
    amount = uniform(rng, ranges.gradient_amount)
    if gradient == "radial":
        rr = ((xx + 0.5 - cols / 2) / (cols / 2)) ** 2 + ((yy + 0.5 - rows / 2) / (rows / 2)) ** 2
        image = image * (1.0 - amount * rr / 2.0)
    else:
        gamma = rng.uniform(0.0, 2.0 * math.pi)
        half_extent = cols / 2 * abs(math.cos(gamma)) + rows / 2 * abs(math.sin(gamma))
        t_lin = ((xx + 0.5 - cols / 2) * math.cos(gamma) + (yy + 0.5 - rows / 2) * math.sin(gamma)) / half_extent
        image = image * (1.0 + amount * rng.choice([-1.0, 1.0]) * t_lin)

    boxes: list[Box] = []
    for k in range(len(gaps)):
        pad = int(rng.integers(BOX_PAD_PX[0], BOX_PAD_PX[1] + 1))
        ys, xs = np.nonzero(gap_masks[k])
        if ys.size == 0:  # a bone a few pixels wide can hide its gap entirely
            raise _EmptyGap("a fracture gap kept no pixel inside its bone")
        boxes.append((max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0),
                      min(int(xs.max()) + 1 + pad, cols), min(int(ys.max()) + 1 + pad, rows)))

    collimation, collimation_kind = _collimation(rng, ranges, shape, boxes)
    level = pick(rng, ranges.collimation_levels)
    image = image * (1.0 - collimation) + _level(rng, level) * collimation

    blur = uniform(rng, ranges.blur_sigma)
    if blur >= 0.05:
        image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigmaX=blur).astype(np.float64)
    noise, texture = _noise(rng, ranges, np.clip(image, 0.0, MAX_VALUE))
    image = np.clip(image + noise, 0.0, MAX_VALUE)
    marked, markers = _markers(rng, ranges, image, boxes)
    field = (collimation < 0.05) & ~marked
    window = _window(rng, ranges, image, field, bone_mask)
    pixels = np.clip(np.rint(image), 0, MAX_VALUE).astype(np.uint16)

    factors: dict[str, object] = {
        "bone_shapes": tuple(b.shape for b in bones),
        "bone_ends": tuple(b.ends for b in bones),
        "cortex_profiles": tuple(b.profile for b in bones),
        "fracture_profiles": tuple(g.profile for g in gaps),
        "partial": tuple(g.extent < 1.0 for g in gaps),
        "distractor_kinds": tuple(kinds),
        "noise_texture": texture,
        "gradient_kind": gradient,
        "collimation_kind": collimation_kind,
        "collimated": bool(collimation.max() > 0.5),
        "markers": tuple(markers),
        "window": window,
        "blur_sigma": blur,
    }
    return StyledDraw(
        image=PhantomImage(pixels=pixels, boxes=tuple(boxes), n_fractures=len(gaps),
                           distractor="+".join(kinds) if kinds else None, n_rods=len(bones),
                           window=window),
        factors=factors,
        gap_masks=tuple(gap_masks[k] for k in range(len(gaps))),
        bone_mask=bone_mask,
        bone_masks=tuple(covers),
        gap_bones=tuple(g.bone for g in gaps),
    )


def generate_styled_image(rng: np.random.Generator, style: str, *, positive: bool,
                          size_range: tuple[int, int], two_fracture_fraction: float) -> PhantomImage:
    """One image of a varied style (:data:`STYLE_RANGES`; see :func:`draw_styled`)."""
    if style not in STYLE_RANGES:
        raise PhantomError(f"unknown varied style {style!r}; choose one of {sorted(STYLE_RANGES)}")
    return draw_styled(rng, STYLE_RANGES[style], positive=positive, size_range=size_range,
                       two_fracture_fraction=two_fracture_fraction).image
