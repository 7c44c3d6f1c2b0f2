"""Pixels and truth boxes of one phantom radiograph (numbers from ``docs/phantom.md``).

The image is linear attenuation (higher = denser): a blurred soft-tissue blob over a dim
background, one or two bright rods ("bones") with a cortical rim, and, for a positive image,
a dark gap across a rod (the fracture). Normal images sometimes carry a distractor that a
model must learn to ignore: a faint nutrient canal entering less than half the rod's width,
or a small dense dot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from dicom_io.phantom.config import PhantomError
from dicom_io.phantom.rods import Canal, Dot, Fracture, Rod, place_fracture, random_rods, render_rod

#: Largest stored value (12 bits).
MAX_VALUE = 4095
BACKGROUND = (80.0, 120.0)
TISSUE = (600.0, 1200.0)
GRADIENT_MAX = 0.15
NOISE_SIGMA = (20.0, 60.0)
FRACTURE_WIDTH_PX = (3.0, 6.0)
FRACTURE_ANGLE_DEG = (60.0, 120.0)
FRACTURE_DROP = (0.5, 0.8)
SHIFT_PX = (1.0, 4.0)
CANAL_DROP = (0.1, 0.2)
CANAL_WIDTH_PX = (1.0, 2.0)
DOT_RADIUS_PX = (1.5, 4.0)
DOT_GAIN = (0.2, 0.5)
BOX_PAD_PX = (4, 8)
# Blur of the detector (σ in px), so edges are not perfectly sharp.
DETECTOR_BLUR_SIGMA = 0.7

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PhantomImage:
    """One generated radiograph and its truth.

    Attributes:
        pixels: uint16 rows×columns, linear attenuation (higher = denser), 0..4095. This is
            the MONOCHROME2 sense; a MONOCHROME1 file stores ``4095 - pixels``.
        boxes: one truth box per fracture, ``(x0, y0, x1, y1)`` in source pixel edges:
            column ``c`` spans ``[c, c + 1)``, so ``x1``/``y1`` are exclusive ends; clipped
            to the image.
        n_fractures: 0, 1 or 2.
        distractor: ``None``, ``"canal"`` or ``"dot"`` (only on normal images).
        n_rods: number of bones drawn (1 or 2).
        window: ``(centre, width)`` in the linear (MONOCHROME2) sense for the header, or
            ``None`` for the archive's percentile window (the ``rods`` and ``toy`` styles).
    """

    pixels: np.ndarray
    boxes: tuple[Box, ...]
    n_fractures: int
    distractor: str | None
    n_rods: int
    window: tuple[int, int] | None = None

    @property
    def positive(self) -> bool:
        """Whether the image shows a fracture."""
        return self.n_fractures > 0


def _soft_tissue(rng: np.random.Generator, shape: tuple[int, int], rods: list[Rod]) -> np.ndarray:
    """A limb-like blob around the bones in [0, 1], drawn small and blurred, then enlarged.

    Drawing at a quarter of the size keeps the wide blur cheap on large canvases.
    """
    rows, cols = shape
    small = (max(rows // 4, 8), max(cols // 4, 8))
    canvas: np.ndarray = np.zeros(small, dtype=np.float32)
    cx = float(np.mean([r.cx for r in rods])) / 4.0
    cy = float(np.mean([r.cy for r in rods])) / 4.0
    spread = max(r.width for r in rods) + (abs(rods[0].offset_to(rods[-1])) if len(rods) > 1 else 0.0)
    along = rng.uniform(0.45, 0.7) * max(rows, cols) / 4.0
    across = max(spread * rng.uniform(1.5, 2.2), 0.25 * min(rows, cols)) / 4.0
    angle = math.degrees(rods[0].angle)
    cv2.ellipse(
        canvas,
        (round(cx * 16), round(cy * 16)),
        (round(along * 16), round(across * 16)),
        angle,
        0.0,
        360.0,
        1.0,
        thickness=-1,
        lineType=cv2.LINE_AA,
        shift=4,
    )
    sigma = rng.uniform(0.04, 0.08) * min(small)
    canvas = cv2.GaussianBlur(canvas, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    peak = max(float(canvas.max()), 1e-6)
    scaled = (canvas / peak).astype(np.float32)
    return cv2.resize(scaled, (cols, rows), interpolation=cv2.INTER_LINEAR)


def _draw_fractures(
    rng: np.random.Generator,
    rods: list[Rod],
    shape: tuple[int, int],
    count: int,
    shift_fraction: float,
) -> list[Fracture] | None:
    """Place ``count`` fractures fully inside the canvas, or ``None`` when they do not fit."""
    fractures: list[Fracture] = []
    for _ in range(count):
        placed = None
        for _attempt in range(40):
            rod_index = int(rng.integers(len(rods)))
            width = rng.uniform(*FRACTURE_WIDTH_PX)
            shift = rng.uniform(*SHIFT_PX) * rng.choice([-1.0, 1.0]) if rng.random() < shift_fraction else 0.0
            placed = place_fracture(
                rng,
                rods[rod_index],
                rod_index,
                shape,
                angle=math.radians(rng.uniform(*FRACTURE_ANGLE_DEG)),
                width=width,
                drop=rng.uniform(*FRACTURE_DROP),
                shift=shift,
                margin=BOX_PAD_PX[1] + width / 2 + 2,
                others=[f for f in fractures if f.rod == rod_index],
            )
            if placed is not None:
                break
        if placed is None:
            return None
        fractures.append(placed)
    return fractures


def _draw_distractor(rng: np.random.Generator, rods: list[Rod]) -> tuple[str, Canal | Dot]:
    """A nutrient canal (faint, less than half the width) or a dense dot on one rod."""
    rod_index = int(rng.integers(len(rods)))
    rod = rods[rod_index]
    shaft = max(rod.half_shaft() * 0.8, 1.0)
    if rng.random() < 0.5:
        canal = Canal(
            rod=rod_index,
            u=rng.uniform(-shaft, shaft),
            side=float(rng.choice([-1.0, 1.0])),
            angle=math.radians(rng.uniform(20.0, 70.0)),
            depth=rng.uniform(0.2, 0.45) * rod.width,
            width=rng.uniform(*CANAL_WIDTH_PX),
            drop=rng.uniform(*CANAL_DROP),
        )
        return "canal", canal
    dot = Dot(
        rod=rod_index,
        u=rng.uniform(-shaft, shaft),
        v=rng.uniform(-0.6, 0.6) * rod.width / 2,
        radius=rng.uniform(*DOT_RADIUS_PX),
        gain=rng.uniform(*DOT_GAIN),
    )
    return "dot", dot


def generate_image(
    rng: np.random.Generator,
    *,
    positive: bool,
    shape: tuple[int, int] | None = None,
    size_range: tuple[int, int] = (384, 768),
    two_fracture_fraction: float = 0.1,
    shift_fraction: float = 0.5,
    distractor_fraction: float = 0.2,
) -> PhantomImage:
    """Draw one phantom radiograph and its truth boxes.

    Args:
        rng: the only source of randomness; the same generator state gives the same image.
        positive: draw one fracture (two with ``two_fracture_fraction``) when true; a normal
            image gets a distractor with ``distractor_fraction``.
        shape: ``(rows, columns)``; drawn from ``size_range`` (each axis independently) when
            omitted.
        size_range: inclusive range of rows and columns when ``shape`` is omitted.
        two_fracture_fraction: share of positive images with two fractures.
        shift_fraction: share of fractures whose far fragment is shifted sideways 1..4 px.
        distractor_fraction: share of normal images with a distractor.

    Returns:
        The image (uint16, linear attenuation) with one box per fracture.

    Raises:
        PhantomError: a shape below 64 px or above 4096 px.
    """
    if shape is None:
        shape = (int(rng.integers(size_range[0], size_range[1] + 1)),
                 int(rng.integers(size_range[0], size_range[1] + 1)))
    if len(shape) != 2 or not all(64 <= int(s) <= 4096 for s in shape):
        raise PhantomError(f"generate_image shape must be (rows, columns) in 64..4096, got {shape!r}")
    rows, cols = int(shape[0]), int(shape[1])
    n_fractures = (2 if rng.random() < two_fracture_fraction else 1) if positive else 0

    for _attempt in range(50):
        rods = random_rods(rng, (rows, cols))
        fractures = _draw_fractures(rng, rods, (rows, cols), n_fractures, shift_fraction)
        if fractures is not None:
            break
    else:  # pragma: no cover - the placement rules leave room on any allowed canvas
        raise PhantomError(f"could not place {n_fractures} fracture(s) on a {rows}x{cols} canvas")

    distractor: str | None = None
    extras: list[Canal | Dot] = []
    if not positive and rng.random() < distractor_fraction:
        distractor, item = _draw_distractor(rng, rods)
        extras.append(item)

    background = rng.uniform(*BACKGROUND)
    tissue = rng.uniform(*TISSUE)
    image: np.ndarray = background + (tissue - background) * _soft_tissue(rng, (rows, cols), rods)

    tight: dict[int, Box] = {}
    for index, rod in enumerate(rods):
        mine = [k for k, f in enumerate(fractures) if f.rod == index]
        layer, gap_boxes = render_rod(
            rod, (rows, cols), [fractures[k] for k in mine], [e for e in extras if e.rod == index]
        )
        image += layer
        tight.update(zip(mine, gap_boxes))
    boxes: list[Box] = []
    for k in range(len(fractures)):
        pad = int(rng.integers(BOX_PAD_PX[0], BOX_PAD_PX[1] + 1))
        x0, y0, x1, y1 = tight[k]
        boxes.append((max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, cols), min(y1 + pad, rows)))

    gamma = rng.uniform(0.0, 2.0 * math.pi)
    gain = rng.uniform(-GRADIENT_MAX, GRADIENT_MAX)
    yy, xx = np.ogrid[0:rows, 0:cols]
    half_extent = cols / 2 * abs(math.cos(gamma)) + rows / 2 * abs(math.sin(gamma))
    t = ((xx + 0.5 - cols / 2) * math.cos(gamma) + (yy + 0.5 - rows / 2) * math.sin(gamma)) / half_extent
    image = image * (1.0 + gain * t)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigmaX=DETECTOR_BLUR_SIGMA)
    image = image + rng.normal(0.0, rng.uniform(*NOISE_SIGMA), size=(rows, cols))
    pixels = np.clip(np.rint(image), 0, MAX_VALUE).astype(np.uint16)
    return PhantomImage(
        pixels=pixels,
        boxes=tuple(boxes),
        n_fractures=len(fractures),
        distractor=distractor,
        n_rods=len(rods),
    )
