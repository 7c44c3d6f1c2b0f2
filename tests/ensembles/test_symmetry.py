"""The square's eight symmetries: pixels and boxes move together, and the inverse maps back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ensembles.symmetry import (COUNTS, ORDER, apply_to_boxes, apply_to_pixels, box_from_symmetry,
                                first_symmetries, median_boxes)
from ensembles.types import Box

SIDE = 40


def _mask(box: tuple[int, int, int, int]) -> torch.Tensor:
    """A ``(3, SIDE, SIDE)`` image, 1 inside the pixel-edge box ``(x0, y0, x1, y1)``."""
    image = torch.zeros(3, SIDE, SIDE)
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = 1.0
    return image


def _bbox(image: torch.Tensor) -> tuple[float, ...]:
    rows = torch.nonzero(image[0].any(dim=1)).flatten()
    cols = torch.nonzero(image[0].any(dim=0)).flatten()
    return (int(cols[0]) / SIDE, int(rows[0]) / SIDE, (int(cols[-1]) + 1) / SIDE, (int(rows[-1]) + 1) / SIDE)


@pytest.mark.parametrize("k", range(8))
@pytest.mark.parametrize("box", [(3, 5, 11, 30), (20, 1, 39, 9), (0, 0, 40, 7)])
def test_boxes_move_with_the_pixels_and_come_back(k: int, box: tuple[int, int, int, int]) -> None:
    normalised = torch.tensor([box], dtype=torch.float32) / SIDE
    moved = apply_to_boxes(normalised, k)
    assert _bbox(apply_to_pixels(_mask(box), k)) == pytest.approx(tuple(moved[0].tolist()))
    back = box_from_symmetry(Box(*moved[0].tolist()), k)
    assert tuple(back) == pytest.approx(tuple(normalised[0].tolist()))


def test_the_eight_symmetries_are_distinct_and_the_counts_take_the_flips_first() -> None:
    image = torch.arange(SIDE * SIDE, dtype=torch.float32).reshape(1, SIDE, SIDE)
    seen = {tuple(apply_to_pixels(image, k).flatten().tolist()[:SIDE + 1]) for k in range(8)}
    assert len(seen) == 8 and sorted(ORDER) == list(range(8)) and ORDER[0] == 0
    assert [len(first_symmetries(n)) for n in COUNTS] == list(COUNTS)
    assert all(k & 1 == 0 for k in first_symmetries(4))  # no transposes before the flips are used up
    for bad in (0, 3, 9, True, "8", 8.0):
        with pytest.raises(ValueError, match="symmetries must be one of"):
            first_symmetries(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer in 0..7"):
        apply_to_pixels(image, 8)


def test_median_boxes_place_each_identity_box_and_drop_an_outlier() -> None:
    truth = Box(0.40, 0.40, 0.50, 0.50)
    identity = [Box(0.43, 0.40, 0.53, 0.50), Box(0.05, 0.05, 0.10, 0.10)]
    others = [[Box(0.39, 0.41, 0.49, 0.51)], [Box(0.40, 0.39, 0.50, 0.49), Box(0.8, 0.8, 0.9, 0.9)],
              [Box(0.90, 0.90, 0.95, 0.95)], []]
    fused = median_boxes(identity, others)
    # the identity decode decides the count; an other decode's extra box adds no finding
    assert len(fused) == 2
    box, votes = fused[0]
    assert votes == 3  # the identity box and the two overlapping decodes; the far one and the empty one do not vote
    assert box.iou(truth) > identity[0].iou(truth)
    assert fused[1] == (identity[1], 1)  # found by the identity decode alone: kept as it was
    assert median_boxes([], others) == []
    # medians of boxes are boxes (x0 < x1, y0 < y1)
    rng = np.random.default_rng(0)
    for _ in range(50):
        boxes = []
        for _ in range(rng.integers(2, 9)):
            (x0, x1), (y0, y1) = sorted(rng.random(2)), sorted(rng.random(2))
            boxes.append(Box(x0, y0, x1, y1))
        placed, votes = median_boxes(boxes[:1], [[b] for b in boxes[1:]], min_iou=0.0)[0]
        assert placed.x0 <= placed.x1 and placed.y0 <= placed.y1 and votes == len(boxes)


def test_training_augmentation_draws_the_same_symmetries_as_before() -> None:
    """augment_item uses this module: the same RNG draw gives the same symmetry (a resumed run
    or a rerun with the same seed sees the same images as before the refactor)."""
    from train.recipes.paligemma import augment_item

    box = (4, 6, 14, 30)
    item = {"pixel_values": _mask(box), "boxes": torch.tensor([box], dtype=torch.float32) / SIDE,
            "suffix": "old"}
    for seed in range(6):
        torch.manual_seed(seed)
        hflip, vflip, transpose = (int(v) for v in torch.randint(0, 2, (3,)).tolist())
        torch.manual_seed(seed)
        out = augment_item(item, "Fracture")
        k = transpose * 1 + hflip * 2 + vflip * 4
        assert torch.equal(out["pixel_values"], apply_to_pixels(item["pixel_values"], k))
        assert _bbox(out["pixel_values"]) == pytest.approx(tuple(out["boxes"][0].tolist()))
