"""Box metrics against hand-computed values: IoU, greedy matching, F1, mean IoU, recall, COCO mAP."""

from __future__ import annotations

import math

import numpy as np
import pytest

from train.box_metrics import (
    BoxMetricsError, ImageBoxes, box_metrics, coco_map, iou_matrix, match_boxes, match_counts,
)


def test_iou_matrix_hand_values() -> None:
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]]
    # same box 1; half overlap 50/150; disjoint 0; contained 25/100
    assert iou_matrix(a, b)[0] == pytest.approx([1.0, 1 / 3, 0.0, 0.25])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)


def test_greedy_matching_takes_highest_score_first() -> None:
    truth = [[0, 0, 10, 10]]
    # the lower-scored box overlaps better, but the higher score claims the truth first
    image = ImageBoxes("a", truth, [[0, 0, 10, 10], [1, 0, 11, 10]], [0.2, 0.9])
    matches = match_boxes(image, 0.5)
    assert matches == [(1, 0, pytest.approx(90 / 110))]


def test_match_counts_f1_precision_recall_mean_iou() -> None:
    images = [
        # one exact hit, one false positive far away
        ImageBoxes("a", [[0, 0, 10, 10]], [[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8]),
        # a box at IoU 1/3: a miss at 0.5, a hit at 0.3; plus an unmatched truth
        ImageBoxes("b", [[0, 0, 10, 10], [40, 40, 50, 50]], [[5, 0, 15, 10]], [0.7]),
        # a normal image with no boxes at all
        ImageBoxes("c"),
    ]
    at_50 = match_counts(images, 0.5)
    assert (at_50.tp, at_50.fp, at_50.fn) == (1, 2, 2)
    assert at_50.precision == pytest.approx(1 / 3)
    assert at_50.recall == pytest.approx(1 / 3)
    assert at_50.f1 == pytest.approx(2 * 1 / (2 * 1 + 2 + 2))
    assert at_50.mean_iou == pytest.approx(1.0)
    at_30 = match_counts(images, 0.3)
    assert (at_30.tp, at_30.fp, at_30.fn) == (2, 1, 1)
    assert at_30.mean_iou == pytest.approx((1.0 + 1 / 3) / 2)


def test_empty_counts_are_nan_not_guesses() -> None:
    counts = match_counts([ImageBoxes("a")], 0.5)
    assert math.isnan(counts.precision) and math.isnan(counts.recall) and math.isnan(counts.f1)
    assert math.isnan(counts.mean_iou)


def test_coco_map_hand_values() -> None:
    truth = [[10, 10, 30, 30]]
    perfect = [ImageBoxes("a", truth, truth, [0.9], width=64, height=64)]
    assert coco_map(perfect) == pytest.approx((1.0, 1.0))
    # a false positive ranked above the hit: precision 0.5 at every recall -> AP 0.5
    fp_first = [ImageBoxes("a", truth, [[40, 40, 60, 60], [10, 10, 30, 30]], [0.9, 0.5], width=64, height=64)]
    assert coco_map(fp_first) == pytest.approx((0.5, 0.5), abs=1e-6)
    # ranked below the hit it costs nothing
    fp_last = [ImageBoxes("a", truth, [[40, 40, 60, 60], [10, 10, 30, 30]], [0.1, 0.5], width=64, height=64)]
    assert coco_map(fp_last) == pytest.approx((1.0, 1.0))
    assert coco_map([ImageBoxes("a", truth, width=64, height=64)]) == (0.0, 0.0)
    assert all(math.isnan(v) for v in coco_map([ImageBoxes("a", [], [[0, 0, 5, 5]], [0.5], 64, 64)]))


def test_box_metrics_reports_only_boxes_at_threshold_but_ranks_all_for_map() -> None:
    truth = [[10, 10, 30, 30]]
    images = [ImageBoxes("a", truth, [[10, 10, 30, 30], [11, 12, 29, 31]], [0.3, 0.8], width=64, height=64),
              ImageBoxes("b", [], [[0, 0, 5, 5]], [0.9], width=64, height=64)]
    m = box_metrics("det", images, score_threshold=0.5)
    assert m.n_reported == 2 and m.n_truth == 1
    iou = (18 * 18) / (20 * 20 + 18 * 19 - 18 * 18)  # x 11..29, y 12..30 overlap
    assert m.at_50.tp == 1 and m.at_50.fp == 1 and m.at_50.mean_iou == pytest.approx(iou)
    assert m.recall_30 == 1.0
    assert 0.0 < m.map <= 1.0
    data = m.to_dict()
    assert data["f1_50"] == pytest.approx(2 / 3) and data["name"] == "det"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"truth": [[0, 0, 1]]}, "shape \\(n, 4\\)"),
        ({"pred": [[5, 0, 1, 1]], "scores": [0.5]}, "x0 < x1"),
        ({"pred": [[0, 0, 1, 1]], "scores": []}, "one value per predicted box"),
        ({"truth": [[0, 0, np.nan, 1]]}, "finite"),
    ],
    ids=["bad-shape", "inverted", "scores-length", "nan"],
)
def test_invalid_boxes_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(BoxMetricsError, match=message):
        ImageBoxes("x", **kwargs)


def test_iou_threshold_must_be_in_range() -> None:
    with pytest.raises(BoxMetricsError, match="iou_threshold"):
        match_boxes(ImageBoxes("a", [[0, 0, 1, 1]], [[0, 0, 1, 1]], [1.0]), 0.0)
