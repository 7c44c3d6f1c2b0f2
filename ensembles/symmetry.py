"""The square's eight symmetries, on a member's input pixels and on its normalised boxes.

One convention for training's augmentation (``train.recipes.paligemma.augment_item``) and for
decoding a detector's boxes under several symmetries at inference
(:class:`~ensembles.members.paligemma_detector.PaliGemmaDetector` ``symmetries``), and for a
member's score averaged over them (:mod:`ensembles.symmetry_scored`). Symmetry
``k`` in ``0..7`` is a bit set, applied to a ``(..., H, W)`` square in this order: transpose
(bit 1), flip left-right (bit 2), flip top-bottom (bit 4). ``k = 0`` is the identity. Boxes are
normalised ``(x0, y0, x1, y1)`` in ``[0, 1]`` of the square (:class:`~ensembles.types.Box`).
"""

from __future__ import annotations

from statistics import median
from typing import Sequence

import numpy as np
import torch

from ensembles.types import Box

TRANSPOSE, HFLIP, VFLIP = 1, 2, 4
#: The order :func:`first_symmetries` takes them in: the flips before the transposes (a model
#: trained without transposes still sees its own kind of image in the first four).
ORDER: tuple[int, ...] = (0, HFLIP, VFLIP, HFLIP | VFLIP, TRANSPOSE, TRANSPOSE | HFLIP,
                          TRANSPOSE | VFLIP, TRANSPOSE | HFLIP | VFLIP)
#: The counts :func:`first_symmetries` accepts: the identity, the left-right flip, all flips, all.
COUNTS: tuple[int, ...] = (1, 2, 4, 8)
#: A box decoded under another symmetry is the same finding as an identity box when, mapped
#: back, it overlaps it at least this much (the one that overlaps most is taken).
MATCH_IOU = 0.05


def first_symmetries(count: int) -> tuple[int, ...]:
    """The first ``count`` symmetries of :data:`ORDER` (``count`` in :data:`COUNTS`)."""
    if isinstance(count, bool) or not isinstance(count, int) or count not in COUNTS:
        raise ValueError(f"symmetries must be one of {', '.join(map(str, COUNTS))}, got {count!r}")
    return ORDER[:count]


def _check(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < 8:
        raise ValueError(f"a symmetry is an integer in 0..7, got {k!r}")
    return k


def apply_to_pixels(pixels: torch.Tensor, k: int) -> torch.Tensor:
    """``pixels`` ``(..., S, S)`` under symmetry ``k``."""
    k = _check(k)
    if k & TRANSPOSE:
        pixels = pixels.transpose(-1, -2)
    if k & HFLIP:
        pixels = pixels.flip(-1)
    if k & VFLIP:
        pixels = pixels.flip(-2)
    return pixels


def apply_to_image(image: np.ndarray, k: int) -> np.ndarray:
    """A radiograph ``(H, W)`` (any shape, not only a square) under symmetry ``k``, as
    :func:`apply_to_pixels` moves a member's input: a transpose makes it ``(W, H)``."""
    moved = apply_to_pixels(torch.from_numpy(np.ascontiguousarray(image)), k)
    return np.ascontiguousarray(moved.numpy())


def apply_to_boxes(boxes: torch.Tensor, k: int) -> torch.Tensor:
    """Normalised ``(n, 4)`` boxes of a square, where they lie in the square under symmetry ``k``."""
    k = _check(k)
    boxes = boxes.reshape(-1, 4)
    if k & TRANSPOSE:
        boxes = boxes[:, [1, 0, 3, 2]]
    if k & HFLIP:
        boxes = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], dim=1)
    if k & VFLIP:
        boxes = torch.stack([boxes[:, 0], 1 - boxes[:, 3], boxes[:, 2], 1 - boxes[:, 1]], dim=1)
    return boxes.reshape(-1, 4)


def box_from_symmetry(box: Box, k: int) -> Box:
    """A box found in the square under symmetry ``k``, where it lies in the original square
    (the inverse of :func:`apply_to_boxes`: each step is its own inverse, undone in reverse)."""
    x0, y0, x1, y1 = box
    k = _check(k)
    if k & VFLIP:
        y0, y1 = 1 - y1, 1 - y0
    if k & HFLIP:
        x0, x1 = 1 - x1, 1 - x0
    if k & TRANSPOSE:
        x0, y0, x1, y1 = y0, x0, y1, x1
    return Box(x0, y0, x1, y1)


def median_boxes(identity: Sequence[Box], others: Sequence[Sequence[Box]],
                 min_iou: float = MATCH_IOU) -> list[tuple[Box, int]]:
    """Each identity box with its corners replaced by their median over the decodes that found
    it: the identity box and, from each other decode (boxes already mapped back by
    :func:`box_from_symmetry`), the box that overlaps it most, if at least ``min_iou``.

    The identity decode decides how many findings there are; the others only place them.

    Returns:
        ``(box, votes)`` per identity box, in order; ``votes`` counts the decodes that found it
        (1 to ``len(others) + 1``).
    """
    fused: list[tuple[Box, int]] = []
    for box in identity:
        group = [box]
        for found in others:
            best = max(found, key=box.iou, default=None)
            if best is not None and box.iou(best) >= min_iou:
                group.append(best)
        corners = [median(values) for values in zip(*group)]
        fused.append((Box(corners[0], corners[1], corners[2], corners[3]), len(group)))
    return fused


__all__ = ["COUNTS", "HFLIP", "MATCH_IOU", "ORDER", "TRANSPOSE", "VFLIP", "apply_to_boxes", "apply_to_image", "apply_to_pixels",
           "box_from_symmetry", "first_symmetries", "median_boxes"]
