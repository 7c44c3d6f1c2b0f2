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
- Validation scores each image as the member does (the member's own decoding, image score =
  best box score): F1/precision/recall/accuracy at the member threshold, image and study AUC,
  the validation loss, COCO mAP (pycocotools), F1 at IoU 0.5 and the share of truth boxes
  matched at IoU >= 0.3 (``box_recall``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ensembles.preprocess import PreprocessConfig
from ensembles.quant import resolve_device
from ensembles.demo_arch.detr import IMAGENET_MEAN, IMAGENET_STD
from train import losses
from train.train_config import OptimConfig, TrainConfig
from train.datasets import load_records
from train.engine import StepLoss, fit
from train.errors import RecipeError, TrainConfigError
from train.recipes import register_recipe
from train.recipes.box_data import SquareCache, dihedral, normalise, xyxy_to_cxcywh
from train.recipes.detr_model import (
    DetrArchitecture,
    FeatureCapture,
    HeatmapHead,
    MatcherWeights,
    PositionHead,
    apply_matcher_weights,
    build_detr_model,
    feature_channels,
    load_detr_model,
    position_loss,
    save_detr_member,
    thaw_batchnorm,
)

logger = logging.getLogger(__name__)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise TrainConfigError(message)


@dataclass
class DetrSection:
    """The ``[detr]`` table. Defaults are DETR-ResNet-50's architecture at 512 px.

    Attributes:
        base: a local DETR ``save_pretrained`` directory to fine-tune; empty: build from
            scratch with the architecture fields below.
        backbone: timm backbone name (from scratch; never pretrained, there is no hub).
        feature_level: last backbone feature level used: a CNN's stage (4: stride 32; 3: stride
            16) or a ViT block index (0-based: 5 is test_vit's last).
        dilation: DETR's DC5 (stride 16 at level 4).
        num_queries: object queries (most boxes per image).
        d_model: transformer width.
        encoder_layers: transformer encoder depth.
        decoder_layers: transformer decoder depth.
        ffn_dim: feed-forward width.
        attention_heads: attention heads (divides ``d_model``).
        labels: the model's classes (box labels in ``boxes.jsonl`` must be among them).
        image_size: side of the letterboxed square input.
        train_batchnorm: put trainable BatchNorm back in the backbone (needed from scratch; a
            pretrained base usually keeps transformers' frozen BatchNorm: set false).
        class_cost: Hungarian matching cost of the class probability (transformers types the
            costs and coefficients below as integers).
        bbox_cost: matching cost of the L1 box distance.
        giou_cost: matching cost of the GIoU.
        bbox_loss_coefficient: weight of the L1 box loss.
        giou_loss_coefficient: weight of the GIoU loss.
        eos_coefficient: class weight of "no object" in the cross-entropy.
        auxiliary_loss: repeat the losses on every decoder layer's output.
        heatmap_weight: weight of the backbone heat-map loss (0: off).
        heatmap_pos_weight: BCE weight of cells that overlap a truth box (they are rare).
        heatmap_feature: which backbone feature map the heat-map head reads, as a Python index
            (-1: the last, which DETR reads; -2: the one before, twice as fine).
        position_weight: weight of the position loss: a 1x1 head on the same feature map
            predicts each cell's own centre, so the features carry the position DETR's
            attention values lack (training-only; 0: off).
        aux_warmup_steps: optimizer steps that train only the backbone with the auxiliary
            losses (heat-map, position) before DETR's own losses join: a from-scratch backbone
            learns to see fractures from the dense loss in a few hundred steps, while DETR's
            sparse, clipped gradients would starve it (0: from the first step).
        backbone_lr: learning rate of the backbone (0: ``[optim] lr``; DETR fine-tunes a
            pretrained one at a tenth of the rest).
        augment: random transposes and flips of the square input (with its boxes).
        name: the member's display name in ``member.json``.
        threshold: the member's image threshold (best box score), also used for val F1.
        box_floor: boxes scoring below this are not reported by the member.
        top_k: most boxes the member reports per image.
        canny_blend: Canny-edge blend weight (0: off), as inference applies it.
        clahe: CLAHE preprocessing (warns; explicit opt-in).
        cache_images: keep the preprocessed squares in memory between epochs.
        max_val_images: validate on at most this many images (0: all).
    """

    base: str = ""
    backbone: str = "resnet50"
    feature_level: int = 4
    dilation: bool = False
    num_queries: int = 100
    d_model: int = 256
    encoder_layers: int = 6
    decoder_layers: int = 6
    ffn_dim: int = 2048
    attention_heads: int = 8
    labels: tuple[str, ...] = ("fracture",)
    image_size: int = 512
    train_batchnorm: bool = True
    class_cost: int = 1
    bbox_cost: int = 5
    giou_cost: int = 2
    bbox_loss_coefficient: int = 5
    giou_loss_coefficient: int = 2
    eos_coefficient: float = 0.1
    auxiliary_loss: bool = True
    heatmap_weight: float = 0.0
    heatmap_pos_weight: float = 1.0
    heatmap_feature: int = -1
    position_weight: float = 0.0
    aux_warmup_steps: int = 0
    backbone_lr: float = 0.0
    augment: bool = True
    name: str = "detr"
    threshold: float = 0.5
    box_floor: float = 0.05
    top_k: int = 20
    canny_blend: float = 0.0
    clahe: bool = False
    cache_images: bool = True
    max_val_images: int = 0

    def __post_init__(self) -> None:
        for key in ("num_queries", "d_model", "encoder_layers", "decoder_layers", "ffn_dim",
                    "attention_heads", "top_k"):
            _check(getattr(self, key) >= 1, f"[detr] {key} must be >= 1, got {getattr(self, key)}")
        _check(self.image_size >= 32, f"[detr] image_size must be >= 32, got {self.image_size}")
        _check(self.feature_level >= 1, f"[detr] feature_level must be >= 1, got {self.feature_level}")
        _check(bool(self.labels), "[detr] labels must name at least one class, e.g. [\"fracture\"]")
        for key in ("threshold", "box_floor", "canny_blend"):
            value = getattr(self, key)
            _check(0.0 <= value <= 1.0, f"[detr] {key} must be in [0, 1], got {value}")
        for key in ("class_cost", "bbox_cost", "giou_cost", "bbox_loss_coefficient",
                    "giou_loss_coefficient", "eos_coefficient", "heatmap_weight", "position_weight",
                    "backbone_lr"):
            value = getattr(self, key)
            _check(value >= 0 and math.isfinite(value), f"[detr] {key} must be >= 0, got {value}")
        _check(self.heatmap_pos_weight > 0, f"[detr] heatmap_pos_weight must be > 0, got {self.heatmap_pos_weight}")
        _check(self.max_val_images >= 0, f"[detr] max_val_images must be >= 0, got {self.max_val_images}")
        _check(self.aux_warmup_steps >= 0, f"[detr] aux_warmup_steps must be >= 0, got {self.aux_warmup_steps}")
        _check(self.aux_warmup_steps == 0 or self.heatmap_weight > 0 or self.position_weight > 0,
               "[detr] aux_warmup_steps needs an auxiliary loss: set heatmap_weight or position_weight > 0")

    def architecture(self) -> DetrArchitecture:
        names = {f.name for f in fields(DetrArchitecture)}
        return DetrArchitecture(**{k: v for k, v in vars(self).items() if k in names})

    def matcher(self) -> MatcherWeights:
        names = {f.name for f in fields(MatcherWeights)}
        return MatcherWeights(**{k: v for k, v in vars(self).items() if k in names})

    def preprocess(self) -> PreprocessConfig:
        """Letterbox, ImageNet normalisation and the enhancement switches (as the member)."""
        return PreprocessConfig(image_size=self.image_size, resize="letterbox", mean=IMAGENET_MEAN,
                                std=IMAGENET_STD, canny_blend=self.canny_blend, clahe=self.clahe)


class DetrTask:
    """What the engine trains for one DETR run (see the module docstring)."""

    def __init__(self, config: TrainConfig, section: DetrSection) -> None:
        self.config, self.section = config, section
        self.device = resolve_device(config.device)
        if section.base:
            detr = load_detr_model(Path(section.base), section.labels)
        else:
            detr = build_detr_model(section.architecture(), config.seed)
        apply_matcher_weights(detr, section.matcher())
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
        return SquareCache(Path(self.config.data), records, self.preprocess, self.section.labels,
                           cache=cache)

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
            grey, box, cls = data.get(index)
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
        from train.recipes.detr_eval import detr_validation

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


__all__ = ["DetrSection", "DetrTask", "MicroBatchCounter", "build_task", "train_detr"]
