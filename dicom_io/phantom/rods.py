"""Bone rods of the phantom and the marks drawn on them (fracture gaps, canals, dots).

A rod is a rotated rectangle with fully rounded ends (a stadium). Everything is computed in
the rod's own frame: ``u`` along its axis from its centre, ``v`` across it, in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ROD_WIDTH_OF_SHORT_SIDE = (0.08, 0.15)
ROD_LENGTH_OF_LONG_SIDE = (0.5, 0.9)
BONE_DENSITY = (1200.0, 1800.0)
RIM_PX = (2.0, 4.0)
RIM_BOOST = (0.15, 0.30)
MEDULLA_DROP = (0.05, 0.15)
TWO_RODS_FRACTION = 0.4


@dataclass(frozen=True)
class Rod:
    """One bone: centre, axis angle (radians), size and density profile."""

    cx: float
    cy: float
    angle: float
    length: float
    width: float
    density: float
    rim: float
    rim_boost: float
    medulla_drop: float

    def half_shaft(self) -> float:
        """Half the length of the straight part, between the rounded ends."""
        return max(self.length / 2 - self.width / 2, 0.0)

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        """Rod frame to image ``(x, y)`` (continuous pixel coordinates)."""
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        return self.cx + u * ca - v * sa, self.cy + u * sa + v * ca

    def offset_to(self, other: Rod) -> float:
        """Distance of ``other``'s centre from this rod's axis, across it."""
        return -(other.cx - self.cx) * math.sin(self.angle) + (other.cy - self.cy) * math.cos(self.angle)


@dataclass(frozen=True)
class Fracture:
    """A gap across the whole rod through axis point ``u`` at ``theta`` to the axis.

    The far side (positive signed distance) is shifted across the rod by ``shift`` px.
    """

    rod: int
    u: float
    theta: float
    width: float
    drop: float
    shift: float


@dataclass(frozen=True)
class Canal:
    """A faint line entering from one edge (``side`` ±1), reaching ``depth`` px across."""

    rod: int
    u: float
    side: float
    angle: float
    depth: float
    width: float
    drop: float


@dataclass(frozen=True)
class Dot:
    """A small dense spot, ``gain`` times the bone density, at ``(u, v)``."""

    rod: int
    u: float
    v: float
    radius: float
    gain: float


def _one_rod(rng: np.random.Generator, cx: float, cy: float, angle: float, width: float, long: int) -> Rod:
    return Rod(
        cx=cx,
        cy=cy,
        angle=angle,
        length=rng.uniform(*ROD_LENGTH_OF_LONG_SIDE) * long,
        width=width,
        density=rng.uniform(*BONE_DENSITY),
        rim=rng.uniform(*RIM_PX),
        rim_boost=rng.uniform(*RIM_BOOST),
        medulla_drop=rng.uniform(*MEDULLA_DROP),
    )


def random_rods(rng: np.random.Generator, shape: tuple[int, int]) -> list[Rod]:
    """One bone, or two nearly parallel ones side by side (like a forearm), at any angle."""
    rows, cols = shape
    short, long = min(rows, cols), max(rows, cols)
    angle = rng.uniform(0.0, math.pi)
    mx, my = rng.uniform(0.38, 0.62) * cols, rng.uniform(0.38, 0.62) * rows
    w1 = rng.uniform(*ROD_WIDTH_OF_SHORT_SIDE) * short
    if rng.random() >= TWO_RODS_FRACTION:
        return [_one_rod(rng, mx, my, angle, w1, long)]
    w2 = rng.uniform(*ROD_WIDTH_OF_SHORT_SIDE) * short
    offset = (w1 + w2) / 2 * (1.0 + rng.uniform(0.3, 1.0))
    nx, ny = -math.sin(angle), math.cos(angle)
    along = rng.uniform(-0.1, 0.1) * long
    first = _one_rod(rng, mx - nx * offset / 2, my - ny * offset / 2, angle, w1, long)
    second = _one_rod(
        rng,
        mx + nx * offset / 2 + math.cos(angle) * along,
        my + ny * offset / 2 + math.sin(angle) * along,
        angle + math.radians(rng.uniform(-6.0, 6.0)),
        w2,
        long,
    )
    return [first, second]


def place_fracture(
    rng: np.random.Generator,
    rod: Rod,
    rod_index: int,
    shape: tuple[int, int],
    *,
    angle: float,
    width: float,
    drop: float,
    shift: float,
    margin: float,
    others: list[Fracture],
) -> Fracture | None:
    """A fracture on the rod's straight part whose whole crossing lies ``margin`` px inside.

    Returns ``None`` when this draw does not fit (too near a rounded end, the canvas edge, or
    another fracture on the same rod); the caller draws again.
    """
    rows, cols = shape
    r = rod.width / 2
    cot = math.cos(angle) / math.sin(angle)
    limit = rod.half_shaft() - r * abs(cot) - width / 2 - abs(shift) - 2.0
    if limit <= 1.0:
        return None
    u = rng.uniform(-0.85 * limit, 0.85 * limit)
    if any(abs(u - other.u) < 2.0 * rod.width for other in others):
        return None
    for v in (-r - abs(shift), r + abs(shift)):
        x, y = rod.to_image(u + v * cot, v)
        if not (margin <= x <= cols - margin and margin <= y <= rows - margin):
            return None
    return Fracture(rod=rod_index, u=u, theta=angle, width=width, drop=drop, shift=shift)


def _soft(edge_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance to an edge (positive = inside)."""
    return np.clip(edge_distance + 0.5, 0.0, 1.0)


def render_rod(
    rod: Rod,
    shape: tuple[int, int],
    fractures: list[Fracture],
    extras: list[Canal | Dot],
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """The rod's added density over the canvas, and one tight box per fracture.

    A tight box bounds the gap's pixels that lie inside the bone (before padding), as
    ``(x0, y0, x1, y1)`` with exclusive ends.
    """
    rows, cols = shape
    layer = np.zeros((rows, cols), dtype=np.float32)
    reach = rod.width / 2 + sum(abs(f.shift) for f in fractures) + 4.0
    ends = [rod.to_image(s * rod.length / 2, 0.0) for s in (-1.0, 1.0)]
    x0 = max(int(math.floor(min(e[0] for e in ends) - reach)), 0)
    x1 = min(int(math.ceil(max(e[0] for e in ends) + reach)), cols)
    y0 = max(int(math.floor(min(e[1] for e in ends) - reach)), 0)
    y1 = min(int(math.ceil(max(e[1] for e in ends) + reach)), rows)
    if x0 >= x1 or y0 >= y1:
        return layer, [(0, 0, 0, 0) for _ in fractures]

    dx = (np.arange(x0, x1, dtype=np.float64) + 0.5 - rod.cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float64) + 0.5 - rod.cy)[:, None]
    ca, sa = math.cos(rod.angle), math.sin(rod.angle)
    u = dx * ca + dy * sa
    v = -dx * sa + dy * ca

    signed = [(u - f.u) * math.sin(f.theta) - v * math.cos(f.theta) for f in fractures]
    v_eff = v.copy()
    for f, s in zip(fractures, signed):
        v_eff -= f.shift * (s > 0)
    radius = rod.width / 2
    depth = radius - np.hypot(np.maximum(np.abs(u) - rod.half_shaft(), 0.0), v_eff)
    cover = _soft(depth)
    rim = _soft(rod.rim - depth)
    bone = rod.density * cover * ((1.0 - rod.medulla_drop) + (rod.rim_boost + rod.medulla_drop) * rim)

    for item in extras:
        if isinstance(item, Canal):
            du, dv = math.cos(item.angle), -item.side * math.sin(item.angle)
            u0, v0 = item.u, item.side * radius
            length = item.depth / math.sin(item.angle)
            t = np.clip((u - u0) * du + (v - v0) * dv, 0.0, length)
            dist = np.hypot(u - u0 - t * du, v - v0 - t * dv)
            bone *= 1.0 - item.drop * _soft(item.width / 2 - dist)
        else:
            dist = np.hypot(u - item.u, v - item.v)
            bone += rod.density * item.gain * _soft(item.radius - dist) * cover

    boxes: list[tuple[int, int, int, int]] = []
    for f, s in zip(fractures, signed):
        gap = _soft(f.width / 2 - np.abs(s))
        bone *= 1.0 - f.drop * gap
        inside = (gap > 0.5) & (cover > 0.5)
        ys, xs = np.nonzero(inside)
        if ys.size == 0:
            boxes.append((0, 0, 0, 0))
            continue
        boxes.append((x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1))
    layer[y0:y1, x0:x1] = bone
    return layer, boxes
