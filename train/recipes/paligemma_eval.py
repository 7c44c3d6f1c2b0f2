"""Validation of a PaliGemma run, scored the way the member scores at inference.

The member class (:class:`~ensembles.members.paligemma_classifier.PaliGemmaClassifier` or
:class:`~ensembles.members.paligemma_detector.PaliGemmaDetector`) is built over the model being
trained, so validation F1 is the F1 of the checkpoint the run would write, at the threshold its
``member.json`` carries; no second scoring implementation can drift from the real one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ensembles.types import Box
from train.datasets import collate_text
from train.metrics import confusion_at, roc_auc, study_scores

if TYPE_CHECKING:  # pragma: no cover
    from train.recipes.paligemma import PaliGemmaTask

BOX_MATCH_IOU = 0.3
"""IoU at which a decoded box counts as finding a truth box (the demo's figure)."""


def _auc(labels: list[int], scores: list[float]) -> float:
    if len(set(labels)) < 2:
        return math.nan
    return roc_auc(labels, scores)


def _box_hits(detections: list[Any], truth: torch.Tensor) -> int:
    boxes = [d.box for d in detections]
    hits = 0
    for x0, y0, x1, y1 in truth.reshape(-1, 4).tolist():
        if x1 <= x0 or y1 <= y0:
            continue
        target = Box(x0, y0, x1, y1)
        if any(target.iou(b) >= BOX_MATCH_IOU for b in boxes):
            hits += 1
    return hits


def validation_metrics(task: "PaliGemmaTask") -> dict[str, float]:
    """Validation metrics of the model as it is now (the engine calls this in eval mode).

    Returns ``{}`` when there is no validation data. Keys: ``f1``, ``precision``, ``recall``,
    ``accuracy``, ``auc`` (image), ``study_auc``, ``val_loss``, ``mean_score``; ``patch_auc``
    (image AUC of the patch head's highest patch logit: is SigLIP learning the fracture?) with
    the patch loss on; for a detector with ``eval_boxes``, ``box_recall`` (share of truth boxes
    matched at IoU >= 0.3).
    """
    dataset = task.val_set
    if len(dataset) == 0:
        return {}
    member = task.member()
    decode = task.recipe == "detector" and task.section.eval_boxes
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=task.config.train.eval_batch_size, shuffle=False,
        collate_fn=collate_text,
    )
    scores: list[float] = []
    labels: list[int] = []
    studies: list[str] = []
    patch_scores: list[float] = []
    loss_sum = 0.0
    hits = total_boxes = 0
    for batch in loader:
        pixels = batch["pixel_values"].to(member.device, dtype=member.pixel_dtype)
        batch_scores, _ = member.scores_from_logits(member.first_step_logits(pixels))
        values = [float(s) for s in batch_scores.tolist()]
        if task.patch_head is not None and task._patch_tokens is not None:
            patch_logits = task.patch_head(task._patch_tokens)
            patch_scores.extend(float(v) for v in patch_logits.max(dim=1).values.tolist())
        scores.extend(values)
        labels.extend(int(v) for v in batch["label"].tolist())
        studies.extend(str(s) for s in batch["study_instance_uid"])
        loss_sum += float(task.training_loss(batch).total) * len(values)
        if decode:
            rows = [i for i, s in enumerate(values) if s >= member.threshold]  # type: ignore[union-attr]
            decoded: dict[int, list[Any]] = {}
            if rows:
                results = member.decode(pixels[rows], [values[i] for i in rows])  # type: ignore[union-attr]
                decoded = {row: result[1] for row, result in zip(rows, results)}
            for row, truth in enumerate(batch["boxes"]):
                if int(batch["label"][row]) != 1:
                    continue
                total_boxes += int(truth.reshape(-1, 4).shape[0])
                hits += _box_hits(decoded.get(row, []), truth)
    task.model.eval()  # the member switched the inner model; keep the engine's view
    threshold = float(task.spec.threshold)
    conf = confusion_at([bool(v) for v in labels], scores, threshold)
    study_labels, study_values = study_scores(studies, labels, scores)
    metrics = {
        "f1": conf.f1, "precision": conf.precision, "recall": conf.recall,
        "accuracy": conf.accuracy, "auc": _auc(labels, scores),
        "study_auc": _auc(study_labels, study_values), "val_loss": loss_sum / len(scores),
        "mean_score": sum(scores) / len(scores),
    }
    if len(patch_scores) == len(scores):
        metrics["patch_auc"] = _auc(labels, patch_scores)
    if decode:
        metrics["box_recall"] = hits / total_boxes if total_boxes else math.nan
    return metrics
