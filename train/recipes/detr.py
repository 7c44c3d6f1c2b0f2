"""The DETR recipe: ``screen train detr --config train/configs/detr.toml``.

Trains a transformers ``DetrForObjectDetection`` with a timm backbone on ``DATA/<split>/
boxes.jsonl`` (letterboxed inputs, as the ``detr`` member runs) and writes checkpoints the
screener loads directly (``best/``: safetensors + ``member.json``).

- Losses: DETR's own, computed by transformers when it is given labels: Hungarian matching
  (scipy) of queries to truth boxes on class, L1 and GIoU costs, then class cross-entropy
  (the "no object" class down-weighted by ``eos_coefficient``), L1 and GIoU on matched boxes,
  repeated on every decoder layer with ``auxiliary_loss``. Optional: the heat-map loss on the
  backbone's last feature map (``heatmap_weight``; see :mod:`.detr_model`), the dense signal
  that made a from-scratch model learn on a CPU where DETR's sparse matching alone did not.
- From scratch, trainable BatchNorm is put back into the backbone (``train_batchnorm``).
- Validation (:func:`detr_validation`) scores each image as the member does: the member's own
  decoding (:func:`ensembles.members.detr.decode_detr_outputs`: softmax, best real class, boxes
  above ``box_floor``, at most ``top_k``), image score = best box score. Box metrics come from
  :mod:`train.box_metrics` (pycocotools for mAP), in the letterboxed input frame, where IoU is
  the same as in the source image (a uniform scale and a shift). Keys: ``f1``, ``precision``,
  ``recall``, ``accuracy`` (at the member threshold), ``auc`` and ``study_auc``, ``val_loss``,
  ``mean_score``, ``map``, ``map_50``, ``f1_50``, ``box_recall`` (truth boxes matched at IoU >=
  0.3 by a box at the member threshold), ``box_recall_any`` (by any reported box, whatever its
  score: threshold-free, since the operating point sets the real threshold later) and
  ``auc_box``, the mean of ``auc`` and ``box_recall_any``: a model-selection metric that wants
  both a member that ranks images and boxes that land on fractures.
- The ``[detr]`` table is :class:`~train.recipes.sections.DetrSection` (torch-free, so the file
  is validated when it is read); a model from scratch comes from the project's one DETR builder,
  :func:`ensembles.detr_arch.build_detr`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ensembles.detr_arch import build_detr
from ensembles.errors import EnsembleError
from ensembles.members.detr import decode_detr_outputs
from ensembles.quant import resolve_device
from train import losses
from train.appearance import AppearanceSource
from train.box_metrics import ImageBoxes, box_metrics
from train.datasets import load_records
from train.engine import StepLoss, fit
from train.errors import RecipeError
from train.metrics import confusion_at, roc_auc, study_scores
from train.recipes import register_recipe
from train.recipes.box_data import SquareCache, dihedral, normalise, xyxy_to_cxcywh
from train.recipes.detr_model import (
    FeatureCapture,
    HeatmapHead,
    PositionHead,
    apply_matcher_weights,
    feature_channels,
    load_detr_model,
    position_loss,
    save_detr_member,
    thaw_batchnorm,
)
from train.recipes.sections import DetrSection
from train.train_config import OptimConfig, TrainConfig

logger = logging.getLogger(__name__)


class DetrTask:
    """What the engine trains for one DETR run (see the module docstring)."""

    def __init__(self, config: TrainConfig, section: DetrSection) -> None:
        self.config, self.section = config, section
        self.device = resolve_device(config.device)
        if section.base:
            detr = load_detr_model(Path(section.base), section.labels)
        else:
            try:
                detr = build_detr(section.architecture(), seed=config.seed)
            except EnsembleError as exc:  # timm does not know the backbone
                raise RecipeError(f"[detr] {exc}") from None
        apply_matcher_weights(detr, section)
        if section.train_batchnorm:
            thawed = thaw_batchnorm(detr.model.backbone)
            logger.info("put trainable BatchNorm back in %d backbone layers", thawed)
        self.detr: Any = detr.to(self.device)
        modules: dict[str, torch.nn.Module] = {"detr": self.detr}
        self.head: HeatmapHead | None = None
        self.position: PositionHead | None = None
        self.capture: FeatureCapture | None = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 1)
            if section.heatmap_weight > 0:
                channels = feature_channels(self.detr, section.heatmap_feature)
                self.head = HeatmapHead(channels).to(self.device)
                modules["heatmap"] = self.head
            if section.position_weight > 0:
                self.position = PositionHead(feature_channels(self.detr)).to(self.device)
                modules["position"] = self.position
        if self.head is not None or self.position is not None:
            self.capture = FeatureCapture(self.detr)
        # counts training micro-batches; a float buffer, so the engine's last/ keeps it on resume
        self.progress = MicroBatchCounter()
        modules["progress"] = self.progress
        self.model: torch.nn.Module = torch.nn.ModuleDict(modules)
        self.preprocess = section.preprocess()
        self.train_set = self._cache("train", section.cache_images)
        if len(self.train_set) == 0:
            raise RecipeError(f"no training records in {config.data}/train/boxes.jsonl")
        self.val_set = self._cache("val", True, limit=section.max_val_images)

    def _cache(self, split: str, cache: bool, limit: int = 0) -> SquareCache:
        path = Path(self.config.data) / split / "boxes.jsonl"
        if not path.is_file():
            if split == "train":
                raise RecipeError(f"{str(path)!r} not found; run `screen prepare` first")
            logger.warning("no %s; validation metrics are skipped", path)
            records: list[dict[str, Any]] = []
        else:
            records = load_records(self.config.data, split, "boxes")
        if limit:
            records = records[:limit]
        look = self.config.appearance
        appearance = (AppearanceSource(Path(self.config.data), records, self.preprocess, look, keep=cache)
                      if split == "train" and look.active else None)
        return SquareCache(Path(self.config.data), records, self.preprocess, self.section.labels,
                           cache=cache, appearance=appearance)

    # --- engine protocol -------------------------------------------------------------------
    def param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        backbone_lr = self.section.backbone_lr or optim.lr
        head_lr = optim.head_lr or optim.lr
        groups: dict[str, list[torch.nn.Parameter]] = {"backbone": [], "rest": [], "head": []}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith(("heatmap.", "position.")):
                groups["head"].append(param)
            elif name.startswith("detr.model.backbone."):
                groups["backbone"].append(param)
            else:
                groups["rest"].append(param)
        lrs = {"backbone": backbone_lr, "rest": optim.lr, "head": head_lr}
        return [{"params": p, "lr": lrs[k]} for k, p in groups.items() if p]

    def num_batches(self) -> int:
        return -(-len(self.train_set) // self.config.train.batch_size)

    def train_batches(self, generator: torch.Generator) -> Iterable[Any]:
        order = torch.randperm(len(self.train_set), generator=generator).tolist()
        size = self.config.train.batch_size
        for start in range(0, len(order), size):
            yield self._batch(order[start : start + size], self.train_set, generator)

    def _batch(self, indices: list[int], data: SquareCache,
               generator: torch.Generator | None) -> dict[str, Any]:
        greys, boxes, classes = [], [], []
        for index in indices:
            rng = None
            if generator is not None and data.appearance is not None:
                rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator).item()))
            grey, box, cls = data.get(index, rng)
            if generator is not None and self.section.augment:
                grey, box = dihedral(grey, box, torch.rand(3, generator=generator).tolist())
            greys.append(torch.from_numpy(grey))
            boxes.append(torch.from_numpy(np.asarray(box, dtype=np.float32)).reshape(-1, 4))
            classes.append(torch.from_numpy(cls))
        return {
            "pixel_values": normalise(torch.stack(greys), self.preprocess),
            "boxes": boxes,
            "targets": [{"class_labels": c.to(self.device), "boxes": xyxy_to_cxcywh(b).to(self.device)}
                        for c, b in zip(classes, boxes)],
            "label": [data.label(i) for i in indices],
            "study": [data.study(i) for i in indices],
        }

    def warming_up(self) -> bool:
        """Whether training is still in the auxiliary-only warm-up (``aux_warmup_steps``)."""
        needed = self.section.aux_warmup_steps * self.config.train.grad_accum
        return float(self.progress.count) < needed

    def _forward(self, batch: dict[str, Any], *, detr_loss: bool = True) -> tuple[Any, StepLoss]:
        pixels = batch["pixel_values"].to(self.device)
        parts: dict[str, float] = {}
        if detr_loss:
            out = self.detr(pixel_values=pixels, labels=batch["targets"])
            parts = {k: float(out.loss_dict[k].detach()) for k in ("loss_ce", "loss_bbox", "loss_giou")
                     if k in out.loss_dict}
            total = out.loss
        else:  # warm-up: the backbone alone, for the auxiliary losses
            mask = torch.ones((pixels.shape[0], pixels.shape[2], pixels.shape[3]), device=self.device)
            out = self.detr.model.backbone(pixels, mask)
            total = pixels.sum() * 0.0
        maps = self.capture.take() if self.capture is not None else None
        if self.position is not None and maps is not None:
            where = position_loss(self.position(maps[-1]))
            parts["position_loss"] = float(where.detach())
            total = total + self.section.position_weight * where
        if self.head is not None and maps is not None:
            features = maps[self.section.heatmap_feature]
            grid = int(features.shape[-1])
            if int(features.shape[-2]) != grid:
                raise RecipeError(f"heat-map needs a square feature map, got {tuple(features.shape)}")
            targets = losses.patch_targets(batch["boxes"], grid).to(features.device)
            heat = losses.patch_loss(self.head(features), targets, self.section.heatmap_pos_weight)
            parts["heatmap_loss"] = float(heat.detach())
            total = total + self.section.heatmap_weight * heat
        return out, StepLoss(total=total, parts=parts)

    def training_loss(self, batch: dict[str, Any]) -> StepLoss:
        warm = self.warming_up()
        self.progress.count += 1
        return self._forward(batch, detr_loss=not warm)[1]

    def evaluate(self) -> dict[str, float]:
        return detr_validation(self)

    def save_member(self, directory: Path) -> None:
        s = self.section
        save_detr_member(directory, self.detr, name=s.name, image_size=s.image_size,
                         threshold=s.threshold, box_floor=s.box_floor, top_k=s.top_k,
                         canny_blend=s.canny_blend, clahe=s.clahe)

    def val_batches(self) -> Iterator[dict[str, Any]]:
        size = self.config.train.eval_batch_size
        indices = list(range(len(self.val_set)))
        for start in range(0, len(indices), size):
            yield self._batch(indices[start : start + size], self.val_set, None)


def _auc(labels: list[int], scores: list[float]) -> float:
    return roc_auc(labels, scores) if len(set(labels)) == 2 else math.nan


def detr_validation(task: DetrTask) -> dict[str, float]:
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


class MicroBatchCounter(torch.nn.Module):
    """Holds how many training micro-batches the run has seen (saved with the model state)."""

    def __init__(self) -> None:
        super().__init__()
        self.count: torch.Tensor
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))


def build_task(config: TrainConfig) -> DetrTask:
    """Build the model and data of a DETR run (without training it)."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    return DetrTask(config, config.section("detr", DetrSection))


@register_recipe("detr")
def train_detr(config: TrainConfig) -> Path:
    """Train a DETR member; returns the best checkpoint directory."""
    result = fit(build_task(config), config)
    if result.best_dir is None:
        raise RecipeError(f"the DETR run in {config.out} produced no checkpoint")
    return result.best_dir


__all__ = ["DetrSection", "DetrTask", "MicroBatchCounter", "build_task", "detr_validation",
           "train_detr"]
