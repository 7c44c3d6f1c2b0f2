"""The bones, fracture gaps and markers' places of the varied phantom styles.

Each bone is drawn in its own frame (``u`` along the possibly curved axis, ``v`` across it) from a
:class:`~dicom_io.phantom.style_ranges.StyleRanges`; a gap crosses one bone (wholly or, when the
style allows, partly) and its truth box bounds the gap's part inside the bone, padded by 4..8 px.
:mod:`dicom_io.phantom.varied` puts them on a canvas with tissue, noise, collimation and text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dicom_io.phantom.config import PhantomError
from dicom_io.phantom.draw import BOX_PAD_PX
from dicom_io.phantom.style_ranges import Range, StyleRanges


def uniform(rng: np.random.Generator, r: Range | None, default: float = 0.0) -> float:
    """A draw from ``r`` (``default`` when the style does not declare it)."""
    return default if r is None else float(rng.uniform(r[0], r[1]))


def pick(rng: np.random.Generator, names: tuple[str, ...]) -> str:
    """One of ``names``, uniformly."""
    return names[int(rng.integers(len(names)))]


def soft_edge(d: np.ndarray) -> np.ndarray:
    """A one-pixel anti-aliased edge from a signed distance (inside > 0)."""
    return np.clip(d + 0.5, 0.0, 1.0)


@dataclass(frozen=True)
class Bone:
    """One bone in its own frame: ``u`` along the (possibly curved) axis from its middle, ``v``
    across it; ``width`` is the mid-shaft width."""

    cx: float
    cy: float
    angle: float
    length: float
    width: float
    shape: str
    ends: str
    taper: float  # narrow/wide width ratio (1 = none); the narrow end is at u = -length/2
    waist: float  # mid/end width ratio (1 = none)
    kappa: float  # signed curvature, 1/px (0 = straight)
    end_width: float
    density: float
    profile: str
    rim: float
    rim_boost: float
    medulla_drop: float
    cortex_fraction: float

    def half_width(self, u: np.ndarray | float) -> np.ndarray:
        """Half the width at axis position ``u`` (clipped to the bone's length)."""
        half = self.length / 2
        t = np.clip(np.asarray(u, dtype=np.float64) / half, -1.0, 1.0)
        w = np.full_like(t, self.width / 2)
        if self.shape == "tapered":
            k = (1.0 - self.taper) / (1.0 + self.taper)
            w = w * (1.0 + k * t)
        elif self.shape == "waisted":
            w = w * (1.0 + (1.0 / self.waist - 1.0) * t * t)
        if self.ends == "flared":
            zone = self.flare_zone()
            f = np.clip((np.abs(t) * half - (half - zone)) / zone, 0.0, 1.0)
            w = w * (1.0 + (self.end_width - 1.0) * f * f * (3.0 - 2.0 * f))
        return w

    def flare_zone(self) -> float:
        return min(1.2 * self.width, 0.3 * self.length)

    def knob_radius(self) -> float:
        return self.end_width * self.width / 2

    def end_zone(self) -> float:
        """Axis length at each end where no fracture is placed (the epiphysis)."""
        if self.ends == "flared":
            return self.flare_zone()
        if self.ends == "knobbed":
            return self.knob_radius()
        return 0.5 * self.width

    def frame(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image ``(x, y)`` (pixel centres) to the bone frame ``(u, v)``."""
        dx, dy = x - self.cx, y - self.cy
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        a = dx * ca + dy * sa
        b = -dx * sa + dy * ca
        if abs(self.kappa) < 1e-9:
            return a, b
        s = 1.0 if self.kappa > 0 else -1.0
        radius = 1.0 / abs(self.kappa)
        rho = np.hypot(a, radius - s * b)
        return radius * np.arctan2(a, radius - s * b), s * (radius - rho)

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        """Bone frame to image ``(x, y)``."""
        if abs(self.kappa) < 1e-9:
            a, b = u, v
        else:
            s = 1.0 if self.kappa > 0 else -1.0
            radius = 1.0 / abs(self.kappa)
            phi = u / radius
            a = (radius - s * v) * math.sin(phi)
            b = s * (radius - (radius - s * v) * math.cos(phi))
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        return self.cx + a * ca - b * sa, self.cy + a * sa + b * ca

    def reach(self) -> float:
        """Largest half width anywhere (ends included)."""
        widest = float(np.max(self.half_width(np.linspace(-self.length / 2, self.length / 2, 33))))
        return max(widest, self.knob_radius() if self.ends == "knobbed" else 0.0)


@dataclass(frozen=True)
class Gap:
    """One fracture on bone ``bone``: a line through axis point ``u`` at ``theta`` to the axis."""

    bone: int
    u: float
    theta: float
    width: float
    drop: float
    shift: float
    profile: str
    extent: float  # share of the width crossed (1 = complete)
    side: float  # partial: the side it enters from; wedge: the side it opens towards
    wiggle: tuple[float, float, float, float, float, float]  # jagged: amp, wavelength, phase x2


@dataclass(frozen=True)
class Mark:
    """A non-fracture line or spot on bone ``bone`` at axis point ``u``."""

    kind: str
    bone: int
    u: float
    side: float
    params: tuple[float, ...]


def _one_bone(rng: np.random.Generator, r: StyleRanges, cx: float, cy: float, angle: float,
              width: float, long: int) -> Bone:
    shape = pick(rng, r.bone_shapes)
    ends = pick(rng, r.bone_ends)
    length = uniform(rng, r.bone_length) * long
    sagitta = uniform(rng, r.curvature) if shape == "curved" else 0.0
    # sagitta h of a chord L: curvature 8h / L² for small arcs (h as a share of L here)
    kappa = 8.0 * sagitta / length * (1.0 if rng.random() < 0.5 else -1.0)
    taper = uniform(rng, r.taper_ratio, 1.0) if shape == "tapered" else 1.0
    waist = uniform(rng, r.waist_ratio, 1.0) if shape == "waisted" else 1.0
    end_width = uniform(rng, r.end_width, 1.0) if ends in ("flared", "knobbed") else 1.0
    profile = pick(rng, r.cortex_profiles)
    return Bone(
        cx=cx, cy=cy, angle=angle, length=length, width=width, shape=shape, ends=ends,
        taper=taper, waist=waist, kappa=kappa, end_width=end_width,
        density=uniform(rng, r.bone_density), profile=profile,
        rim=uniform(rng, r.rim_px), rim_boost=uniform(rng, r.rim_boost), medulla_drop=uniform(rng, r.medulla_drop),
        cortex_fraction=uniform(rng, r.cortex_fraction, 0.3),
    )  # fmt: skip


def place_bones(rng: np.random.Generator, r: StyleRanges, shape: tuple[int, int]) -> list[Bone]:
    rows, cols = shape
    short, long = min(rows, cols), max(rows, cols)
    angle = rng.uniform(0.0, math.pi)
    mx, my = rng.uniform(0.38, 0.62) * cols, rng.uniform(0.38, 0.62) * rows
    count = int(rng.integers(r.bone_count[0], r.bone_count[1] + 1))
    w1 = uniform(rng, r.bone_width) * short
    if count == 1:
        return [_one_bone(rng, r, mx, my, angle, w1, long)]
    w2 = uniform(rng, r.bone_width) * short
    offset = (w1 + w2) / 2 * (1.0 + rng.uniform(0.3, 1.0))
    nx, ny = -math.sin(angle), math.cos(angle)
    along = rng.uniform(-0.1, 0.1) * long
    first = _one_bone(rng, r, mx - nx * offset / 2, my - ny * offset / 2, angle, w1, long)
    second = _one_bone(rng, r, mx + nx * offset / 2 + math.cos(angle) * along,
                       my + ny * offset / 2 + math.sin(angle) * along,
                       angle + math.radians(rng.uniform(-6.0, 6.0)), w2, long)
    return [first, second]


def place_gap(rng: np.random.Generator, r: StyleRanges, bones: list[Bone], shape: tuple[int, int],
               taken: list[Gap]) -> Gap | None:
    rows, cols = shape
    index = int(rng.integers(len(bones)))
    bone = bones[index]
    width = uniform(rng, r.fracture_width)
    obliquity = math.radians(uniform(rng, r.fracture_obliquity)) * (1.0 if rng.random() < 0.5 else -1.0)
    theta = math.pi / 2 + obliquity
    shift = uniform(rng, r.shift_px) * (1.0 if rng.random() < 0.5 else -1.0) if rng.random() < r.shift_fraction else 0.0
    profile = pick(rng, r.fracture_profiles)
    extent = uniform(rng, r.fracture_extent) if rng.random() < r.partial_fraction else 1.0
    amp = rng.uniform(0.5, 2.0) if profile == "jagged" else 0.0
    wiggle = (amp, rng.uniform(4.0, 12.0), rng.uniform(0, 2 * math.pi),
              amp * rng.uniform(0.2, 0.6), rng.uniform(2.5, 5.0), rng.uniform(0, 2 * math.pi))
    cot = math.cos(theta) / math.sin(theta)
    shaft = bone.length / 2 - bone.end_zone() - width / 2 - abs(shift) - amp - 2.0
    if shaft <= 1.0:
        return None
    u = rng.uniform(-0.85 * shaft, 0.85 * shaft)
    local = float(bone.half_width(u))
    # the whole crossing stays on the shaft (the width varies slowly: check both ends' widths)
    reach = max(local, float(bone.half_width(u + math.copysign(local * abs(cot), u))))
    if abs(u) + (reach + abs(shift)) * abs(cot) > shaft:
        return None
    if any(g.bone == index and abs(u - g.u) < 2.0 * bone.width + g.width for g in taken):
        return None
    margin = BOX_PAD_PX[1] + width / 2 + amp + 2.0
    for v in (-local - abs(shift), local + abs(shift)):
        x, y = bone.to_image(u + v * cot, v)
        if not (margin <= x <= cols - margin and margin <= y <= rows - margin):
            return None
    return Gap(bone=index, u=u, theta=theta, width=width, drop=uniform(rng, r.fracture_drop), shift=shift,
               profile=profile, extent=extent, side=1.0 if rng.random() < 0.5 else -1.0, wiggle=wiggle)


def place_mark(rng: np.random.Generator, kind: str, bones: list[Bone], gaps: list[Gap]) -> Mark | None:
    index = int(rng.integers(len(bones)))
    bone = bones[index]
    half = bone.length / 2
    side = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "growth-plate":  # in the epiphysis, where no fracture is placed
        zone = bone.end_zone()
        u = side * (half - zone * rng.uniform(0.4, 0.8))
        params: tuple[float, ...] = (rng.uniform(0.8, 1.5), rng.uniform(0.08, 0.2), rng.uniform(0.05, 0.15),
                                     rng.uniform(0.5, 1.5), rng.uniform(6.0, 14.0), rng.uniform(0, 2 * math.pi))
        return Mark(kind, index, u, side, params)
    shaft = half - bone.end_zone()
    if shaft <= 2.0:
        return None
    u = rng.uniform(-0.85 * shaft, 0.85 * shaft)
    if any(g.bone == index and abs(u - g.u) < 1.5 * bone.width + g.width for g in gaps):
        return None
    if kind == "canal":  # faint, thin, oblique, entering less than half the width
        params = (math.radians(rng.uniform(20.0, 70.0)), rng.uniform(0.2, 0.45), rng.uniform(0.8, 1.6),
                  rng.uniform(0.05, 0.2))
    elif kind == "dot":
        params = (rng.uniform(-0.6, 0.6), rng.uniform(1.5, 4.0), rng.uniform(0.2, 0.5))
    elif kind == "harris-line":  # a thin dense line across the full width
        params = (rng.uniform(0.8, 1.3), rng.uniform(0.25, 0.4))
    else:
        raise PhantomError(f"unknown bone mark {kind!r}")
    return Mark(kind, index, u, side, params)


def render_bone(bone: Bone, shape: tuple[int, int], gaps: list[Gap], marks: list[Mark]
                 ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The bone's added density, its coverage and one mask per gap (inside the bone)."""
    rows, cols = shape
    layer = np.zeros((rows, cols), dtype=np.float64)
    cover_full = np.zeros((rows, cols), dtype=bool)
    masks = [np.zeros((rows, cols), dtype=bool) for _ in gaps]
    reach = bone.reach() + sum(abs(g.shift) for g in gaps) + 6.0
    pts = [bone.to_image(t, 0.0) for t in np.linspace(-bone.length / 2, bone.length / 2, 33)]
    x0 = max(int(math.floor(min(p[0] for p in pts) - reach)), 0)
    x1 = min(int(math.ceil(max(p[0] for p in pts) + reach)), cols)
    y0 = max(int(math.floor(min(p[1] for p in pts) - reach)), 0)
    y1 = min(int(math.ceil(max(p[1] for p in pts) + reach)), rows)
    if x0 >= x1 or y0 >= y1:
        return layer, cover_full, masks
    xs = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    ys = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    u, v = bone.frame(xs, ys)
    u, v = np.broadcast_to(u, (y1 - y0, x1 - x0)), np.broadcast_to(v, (y1 - y0, x1 - x0))

    signed = [(u - g.u) * math.sin(g.theta) - v * math.cos(g.theta) for g in gaps]
    v_eff = v.copy()
    for g, s in zip(gaps, signed):
        v_eff = v_eff - g.shift * (s > 0)
    half = bone.length / 2
    radius = bone.half_width(np.clip(u, -half, half))
    depth = radius - np.hypot(np.maximum(np.abs(u) - half, 0.0), v_eff)
    if bone.ends == "knobbed":
        kr = bone.knob_radius()
        for end in (-half, half):
            knob = kr - np.hypot(u - end, v_eff)
            better = knob > depth
            depth = np.where(better, knob, depth)
            radius = np.where(better, kr, radius)
    cover = soft_edge(depth)
    if bone.profile in ("tubular", "solid"):
        r_axis = np.clip(radius - depth, 0.0, None)
        inner = radius * (1.0 - bone.cortex_fraction) if bone.profile == "tubular" else 0.0
        chord = np.sqrt(np.clip(radius**2 - r_axis**2, 0, None)) - np.sqrt(np.clip(inner**2 - r_axis**2, 0, None))
        density = bone.density * chord / np.sqrt(radius**2 - inner**2)
    else:
        rim = soft_edge(bone.rim - depth) if bone.rim > 0 else 0.0
        density = bone.density * cover * ((1.0 - bone.medulla_drop) + (bone.rim_boost + bone.medulla_drop) * rim)

    for m in marks:
        local = float(bone.half_width(m.u))
        if m.kind == "canal":
            angle, reach_share, width, drop = m.params
            du, dv = math.cos(angle), -m.side * math.sin(angle)
            u0, v0 = m.u, m.side * local
            length = reach_share * 2 * local / math.sin(angle)
            t = np.clip((u - u0) * du + (v - v0) * dv, 0.0, length)
            dist = np.hypot(u - u0 - t * du, v - v0 - t * dv)
            density = density * (1.0 - drop * soft_edge(width / 2 - dist))
        elif m.kind == "dot":
            vv, rad, gain = m.params
            dist = np.hypot(u - m.u, v - vv * local)
            density = density + bone.density * gain * soft_edge(rad - dist) * cover
        elif m.kind == "growth-plate":  # wavy, faint, blurred, with a dense band on the shaft side
            sigma, drop, boost, amp, wavelength, phase = m.params
            s = (u - m.u) * m.side + amp * np.sin(2 * math.pi * v / wavelength + phase)
            line = np.exp(-0.5 * (s / sigma) ** 2)
            band = np.exp(-0.5 * ((s + 3.0 * sigma) / (1.5 * sigma)) ** 2)
            density = density * (1.0 - drop * line) * (1.0 + boost * band)
        elif m.kind == "harris-line":
            sigma, gain = m.params
            density = density * (1.0 + gain * np.exp(-0.5 * ((u - m.u) / sigma) ** 2))

    for k, (g, s) in enumerate(zip(gaps, signed)):
        hw = g.width / 2
        local = float(bone.half_width(g.u))
        if g.profile == "blurred":
            gap = np.exp(-0.5 * (s / (g.width / 2.355)) ** 2)
        elif g.profile == "jagged":
            a1, l1, p1, a2, l2, p2 = g.wiggle
            wander = a1 * np.sin(2 * math.pi * v / l1 + p1) + a2 * np.sin(2 * math.pi * v / l2 + p2)
            gap = soft_edge(hw - np.abs(s + wander))
        elif g.profile == "wedge-sclerotic":
            opening = np.clip((g.side * v + local) / (2 * local), 0.0, 1.0)
            hw_v = hw * (0.45 + 0.55 * opening)
            gap = soft_edge(hw_v - np.abs(s))
            margin = np.clip(soft_edge(hw_v + 2.5 - np.abs(s)) - gap, 0.0, 1.0)
            density = density * (1.0 + 0.2 * margin)
        else:
            gap = soft_edge(hw - np.abs(s))
        if g.extent < 1.0:
            gap = gap * soft_edge(g.side * v - local * (1.0 - 2.0 * g.extent))
        density = density * (1.0 - g.drop * gap)
        masks[k][y0:y1, x0:x1] = (gap > 0.5) & (cover > 0.5)
    layer[y0:y1, x0:x1] = density
    cover_full[y0:y1, x0:x1] = cover > 0.5
    return layer, cover_full, masks
