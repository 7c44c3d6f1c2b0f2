"""Box metrics of a detector against truth boxes: F1 at an IoU, mean IoU, COCO mAP, recall at IoU.

All boxes of one image share a frame; IoU is invariant to scaling each axis, so source pixel
edges and normalised image-frame boxes give the same numbers. ``screen eval`` uses source
pixel edges (:mod:`dicom_io.geometry`).

Matching at an IoU threshold ``t`` (per image, greedy, the way COCO and most detection papers
match): predictions in descending score order each take the still-unmatched truth box they
overlap most, if that overlap is at least ``t``. Matched predictions are true positives,
unmatched predictions false positives, unmatched truth boxes false negatives. A box
*reported* by a detector is one whose score reaches the detector's threshold; the mean
average precision (pycocotools, ``AP@[.5:.95]`` and ``AP@.5``) instead ranks every box by score.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from train.errors import TrainError

__all__ = [
    "BoxMetrics", "BoxMetricsError", "ImageBoxes", "MatchCounts", "box_metrics", "coco_map",
    "iou_matrix", "match_boxes", "match_counts",
]


class BoxMetricsError(TrainError, ValueError):
    """Boxes or thresholds passed to a box metric are malformed."""


def _boxes(value: ArrayLike, what: str) -> NDArray[np.float64]:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise BoxMetricsError(f"{what} must have shape (n, 4) as (x0, y0, x1, y1), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise BoxMetricsError(f"{what} must be finite numbers")
    if ((arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1])).any():
        raise BoxMetricsError(f"{what} must satisfy x0 < x1 and y0 < y1 for every box")
    return arr


@dataclass(frozen=True)
class ImageBoxes:
    """Truth and predicted boxes of one image (one frame for both).

    Attributes:
        key: the image's id (SOP Instance UID).
        truth: ``(n, 4)`` truth boxes ``(x0, y0, x1, y1)``.
        pred: ``(m, 4)`` predicted boxes.
        scores: ``(m,)`` prediction scores in ``[0, 1]``.
        width: image width in the boxes' units (for COCO; 1 for normalised boxes).
        height: image height in the boxes' units.
    """

    key: str
    truth: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 4)))
    pred: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 4)))
    scores: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0,)))
    width: float = 1.0
    height: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "truth", _boxes(self.truth, f"truth boxes of {self.key}"))
        object.__setattr__(self, "pred", _boxes(self.pred, f"predicted boxes of {self.key}"))
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if scores.shape != (len(self.pred),):
            raise BoxMetricsError(
                f"scores of {self.key} must have one value per predicted box ({len(self.pred)}), "
                f"got {scores.shape}"
            )
        if not np.isfinite(scores).all():
            raise BoxMetricsError(f"scores of {self.key} must be finite")
        object.__setattr__(self, "scores", scores)
        if not (self.width > 0 and self.height > 0):
            raise BoxMetricsError(f"image size of {self.key} must be positive, got {self.width}x{self.height}")

    def above(self, score_threshold: float) -> "ImageBoxes":
        """Only the predictions scoring at least ``score_threshold`` (the reported boxes)."""
        keep = self.scores >= score_threshold
        return ImageBoxes(self.key, self.truth, self.pred[keep], self.scores[keep], self.width, self.height)


def iou_matrix(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """``(len(a), len(b))`` intersection over union of two sets of xyxy boxes."""
    boxes_a, boxes_b = _boxes(a, "boxes a"), _boxes(b, "boxes b")
    ix = np.clip(np.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2])
                 - np.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3])
                 - np.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_boxes(image: ImageBoxes, iou_threshold: float) -> list[tuple[int, int, float]]:
    """Greedy matches ``(pred index, truth index, IoU)`` of one image (see module docstring)."""
    if not 0.0 < iou_threshold <= 1.0:
        raise BoxMetricsError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    if not len(image.pred) or not len(image.truth):
        return []
    ious = iou_matrix(image.pred, image.truth)
    free = np.ones(len(image.truth), dtype=bool)
    matches: list[tuple[int, int, float]] = []
    for p in np.argsort(-image.scores, kind="stable"):
        candidates = np.where(free, ious[p], -1.0)
        t = int(np.argmax(candidates))
        if candidates[t] >= iou_threshold:
            free[t] = False
            matches.append((int(p), t, float(ious[p, t])))
    return matches


@dataclass(frozen=True)
class MatchCounts:
    """Matching totals over images at one IoU threshold."""

    tp: int
    fp: int
    fn: int
    ious: tuple[float, ...] = ()

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def recall(self) -> float:
        """Share of truth boxes matched."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def f1(self) -> float:
        den = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / den if den else math.nan

    @property
    def mean_iou(self) -> float:
        """Mean IoU of the matched pairs (``nan`` without matches)."""
        return float(np.mean(self.ious)) if self.ious else math.nan


def match_counts(images: Sequence[ImageBoxes], iou_threshold: float) -> MatchCounts:
    """TP/FP/FN and matched IoUs summed over ``images``."""
    tp = fp = fn = 0
    ious: list[float] = []
    for image in images:
        matches = match_boxes(image, iou_threshold)
        tp += len(matches)
        fp += len(image.pred) - len(matches)
        fn += len(image.truth) - len(matches)
        ious.extend(iou for _, _, iou in matches)
    return MatchCounts(tp, fp, fn, tuple(ious))


def coco_map(images: Sequence[ImageBoxes]) -> tuple[float, float]:
    """COCO ``(AP@[.5:.95], AP@.5)`` of all predictions ranked by score (pycocotools).

    ``nan`` when there is no truth box; 0 when there are truth boxes but no prediction.
    """
    n_truth = sum(len(i.truth) for i in images)
    if n_truth == 0:
        return math.nan, math.nan
    if sum(len(i.pred) for i in images) == 0:
        return 0.0, 0.0
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box: NDArray[np.float64]) -> list[float]:
        return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]

    dataset: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "fracture"}]}
    results: list[dict[str, Any]] = []
    for index, image in enumerate(images, start=1):
        dataset["images"].append({"id": index, "width": image.width, "height": image.height})
        for box in image.truth:
            bbox = xywh(box)
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": index, "category_id": 1,
                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0,
            })
        for box, score in zip(image.pred, image.scores):
            results.append({"image_id": index, "category_id": 1, "bbox": xywh(box), "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        detections = truth.loadRes(results)
        evaluator = COCOeval(truth, detections, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ap, ap50 = (float(v) for v in evaluator.stats[:2])
    return (ap if ap >= 0 else math.nan), (ap50 if ap50 >= 0 else math.nan)


@dataclass(frozen=True)
class BoxMetrics:
    """A detector's box metrics on a set of images.

    Attributes:
        name: the detector (member name, or ``ensemble``).
        n_images: images judged.
        n_truth: truth boxes.
        n_reported: predicted boxes at or above the score threshold.
        score_threshold: the reporting threshold.
        at_50: matching of the reported boxes at IoU 0.5 (F1, precision, recall, mean IoU).
        recall_30: share of truth boxes matched by a reported box at IoU >= 0.3.
        map: COCO AP@[.5:.95] over all boxes.
        map_50: COCO AP@.5 over all boxes.
    """

    name: str
    n_images: int
    n_truth: int
    n_reported: int
    score_threshold: float
    at_50: MatchCounts
    recall_30: float
    map: float
    map_50: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (``nan`` stays ``nan``)."""
        return {
            "name": self.name, "n_images": self.n_images, "n_truth": self.n_truth,
            "n_reported": self.n_reported, "score_threshold": self.score_threshold,
            "tp_50": self.at_50.tp, "fp_50": self.at_50.fp, "fn_50": self.at_50.fn,
            "precision_50": self.at_50.precision, "recall_50": self.at_50.recall,
            "f1_50": self.at_50.f1, "mean_iou_50": self.at_50.mean_iou, "recall_30": self.recall_30,
            "map": self.map, "map_50": self.map_50,
        }


def box_metrics(name: str, images: Sequence[ImageBoxes], *, score_threshold: float = 0.0) -> BoxMetrics:
    """Every box metric of one detector (see :class:`BoxMetrics`)."""
    reported = [image.above(score_threshold) for image in images]
    ap, ap50 = coco_map(images)
    return BoxMetrics(
        name=name,
        n_images=len(images),
        n_truth=sum(len(i.truth) for i in images),
        n_reported=sum(len(i.pred) for i in reported),
        score_threshold=float(score_threshold),
        at_50=match_counts(reported, 0.5),
        recall_30=match_counts(reported, 0.3).recall,
        map=ap,
        map_50=ap50,
    )
