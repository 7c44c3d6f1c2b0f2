"""Validation of a DETR run, scored the way the ``detr`` member scores at inference.

Each image goes through the member's own decoding (:func:`ensembles.members.detr.
decode_detr_outputs`: softmax, best real class, boxes above ``box_floor``, at most ``top_k``),
and its score is the best box score, as :class:`~ensembles.members.detr.DetrMember` reports it.
Box metrics come from :mod:`train.box_metrics` (pycocotools for mAP), in the letterboxed input
frame, where IoU is the same as in the source image (a uniform scale and a shift).

Keys: ``f1``, ``precision``, ``recall``, ``accuracy`` (at the member threshold), ``auc`` and
``study_auc``, ``val_loss``, ``mean_score``, ``map``, ``map_50``, ``f1_50``, ``box_recall``
(truth boxes matched at IoU >= 0.3 by a box at the member threshold), ``box_recall_any`` (by
any reported box, whatever its score: threshold-free, since the operating point sets the real
threshold later) and ``auc_box``, the mean of ``auc`` and ``box_recall_any``: a model-selection
metric that wants both a member that ranks images and boxes that land on fractures.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ensembles.members.detr import decode_detr_outputs
from train.box_metrics import ImageBoxes, box_metrics
from train.metrics import confusion_at, roc_auc, study_scores

if TYPE_CHECKING:  # pragma: no cover
    from train.recipes.detr import DetrTask


def _auc(labels: list[int], scores: list[float]) -> float:
    return roc_auc(labels, scores) if len(set(labels)) == 2 else math.nan


def detr_validation(task: "DetrTask") -> dict[str, float]:
    """Validation metrics of the DETR being trained, scored as the member scores (see module)."""
    if len(task.val_set) == 0:
        return {}
    s = task.section
    scores: list[float] = []
    labels: list[int] = []
    studies: list[str] = []
    images: list[ImageBoxes] = []
    loss_sum = 0.0
    for batch in task.val_batches():
        out, loss = task._forward(batch)
        logits = out.logits.float().cpu().numpy()
        pred_boxes = out.pred_boxes.float().cpu().numpy()
        loss_sum += float(loss.total) * len(batch["label"])
        for row in range(len(batch["label"])):
            detections, _ = decode_detr_outputs(logits[row], pred_boxes[row], s.labels,
                                                box_floor=s.box_floor, top_k=s.top_k)
            scores.append(max((d.score for d in detections), default=0.0))
            images.append(ImageBoxes(
                key=f"{len(images)}",
                truth=batch["boxes"][row].numpy().astype(np.float64),
                pred=np.array([list(d.box) for d in detections], dtype=np.float64).reshape(-1, 4),
                scores=np.array([d.score for d in detections], dtype=np.float64),
            ))
        labels.extend(batch["label"])
        studies.extend(batch["study"])
    conf = confusion_at([bool(v) for v in labels], scores, s.threshold)
    study_labels, study_values = study_scores(studies, labels, scores)
    boxes = box_metrics(s.name, images, score_threshold=s.threshold)
    reported = box_metrics(s.name, images, score_threshold=s.box_floor).recall_30
    auc = _auc(labels, scores)
    return {
        "f1": conf.f1, "precision": conf.precision, "recall": conf.recall,
        "accuracy": conf.accuracy, "auc": auc,
        "study_auc": _auc(study_labels, study_values), "val_loss": loss_sum / len(scores),
        "mean_score": float(np.mean(scores)), "map": boxes.map, "map_50": boxes.map_50,
        "f1_50": boxes.at_50.f1, "box_recall": boxes.recall_30,
        "box_recall_any": reported, "auc_box": _mean_finite(auc, reported),
    }


def _mean_finite(*values: float) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


__all__ = ["detr_validation"]
