"""The refiner recipe: ``screen train refiner --config train/configs/refiner.toml``.

The refiner (:mod:`ensembles.members.refiner`) sees a crop around a proposed box and moves its
four corners. Training makes the proposals: every truth box of ``DATA/train/boxes.jsonl`` is
jittered ``samples_per_box`` times per epoch (each edge moved by up to ``jitter`` of the box's
width or height), the crop around each jittered box is cut exactly as at inference
(:meth:`Refiner.crop_inputs`, the member's own code), and the target is the correction that
turns the jittered box back into the truth box, in the window units the member applies
(:func:`ensembles.members.refiner.apply_corrections`). The loss is a smooth L1 (or L1) on the
four corner corrections, predicted as ``max_delta * tanh(output)``.

Validation jitters the validation boxes once, with a fixed seed, and reports the mean IoU of
the proposals with the truth before (``iou_before``) and after (``mean_iou``) refinement, their
difference (``iou_gain``), the share of boxes the refiner improved, and the validation loss.
Monitor ``mean_iou`` (the example config does). The ``[refiner]`` table is
:class:`~train.recipes.sections.RefinerSection` (torch-free, validated when the file is read).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ensembles.members.refiner import (
    Refiner,
    RefinerConfig,
    apply_corrections,
    build_refiner_model,
    crop_window,
    load_refiner_model,
    save_refiner,
)
from ensembles.checkpoint import read_member_spec
from ensembles.quant import resolve_device
from ensembles.types import Box
from train.datasets import load_image, load_records, record_boxes_px
from train.engine import StepLoss, fit
from train.errors import RecipeError
from train.recipes import register_recipe
from train.recipes.sections import RefinerSection
from train.train_config import OptimConfig, TrainConfig

logger = logging.getLogger(__name__)

VAL_SEED = 12345


def jitter_box(truth: Box, draws: np.ndarray, jitter: float) -> Box:
    """``truth`` with each edge moved by ``(2 * draw - 1) * jitter`` of the box's side.

    ``draws`` are four numbers in ``[0, 1)`` (x0, y0, x1, y1). The result is clipped to the
    image and kept at least 1 % wide and high.
    """
    w, h = truth.x1 - truth.x0, truth.y1 - truth.y0
    moves = (2.0 * np.asarray(draws, dtype=np.float64) - 1.0) * jitter
    return _clipped(truth.x0 + moves[0] * w, truth.y0 + moves[1] * h,
                    truth.x1 + moves[2] * w, truth.y1 + moves[3] * h)


def _clipped(x0: float, y0: float, x1: float, y1: float) -> Box:
    """Corners clipped to the image, the box kept at least 1 % wide and high."""
    x0, y0 = min(max(x0, 0.0), 0.99), min(max(y0, 0.0), 0.99)
    x1, y1 = max(min(x1, 1.0), x0 + 0.01), max(min(y1, 1.0), y0 + 0.01)
    return Box(x0, y0, min(x1, 1.0), min(y1, 1.0))


DRAWS = 8
"""Random numbers per training proposal: 4 for the edges, 2 for the shift, 2 for the scale."""


def proposal_box(truth: Box, draws: np.ndarray, jitter: float, shift: float = 0.0,
                 scale: float = 0.0) -> Box:
    """A training proposal around ``truth``: centre shift and side scaling, then edge jitter.

    ``draws`` are :data:`DRAWS` numbers in ``[0, 1)``: edges x0, y0, x1, y1 (see
    :func:`jitter_box`), then the centre's x and y shift (``(2 * d - 1) * shift`` box sides),
    then the width and height factors (``(1 + scale) ** (2 * d - 1)``).
    """
    d = np.asarray(draws, dtype=np.float64)
    if d.shape != (DRAWS,):
        raise ValueError(f"proposal_box needs {DRAWS} draws, got shape {d.shape}")
    base = truth
    if shift or scale:
        w, h = truth.x1 - truth.x0, truth.y1 - truth.y0
        cx = (truth.x0 + truth.x1) / 2 + (2 * d[4] - 1) * shift * w
        cy = (truth.y0 + truth.y1) / 2 + (2 * d[5] - 1) * shift * h
        nw, nh = w * (1 + scale) ** (2 * d[6] - 1), h * (1 + scale) ** (2 * d[7] - 1)
        base = _clipped(cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2)
    return jitter_box(base, d[:4], jitter)


def target_corrections(proposal: Box, truth: Box, height: int, width: int, pad_ratio: float,
                       max_delta: float) -> np.ndarray:
    """The ``(dx0, dy0, dx1, dy1)`` in window units that move ``proposal`` onto ``truth``
    (the inverse of :func:`ensembles.members.refiner.apply_corrections`), clipped to just
    inside ``+-max_delta`` (what ``max_delta * tanh`` can reach)."""
    window = crop_window(proposal, height, width, pad_ratio)
    sx, sy = width / window.width, height / window.height
    deltas = np.array([(truth.x0 - proposal.x0) * sx, (truth.y0 - proposal.y0) * sy,
                       (truth.x1 - proposal.x1) * sx, (truth.y1 - proposal.y1) * sy])
    limit = 0.999 * max_delta
    return np.clip(deltas, -limit, limit).astype(np.float32)


def dihedral_crops(crops: torch.Tensor, deltas: torch.Tensor, draws: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Transpose / flip ``(B, C, S, S)`` crops and their ``(B, 4)`` corrections per sample;
    ``draws`` is ``(B, 3)`` in ``[0, 1)`` (transpose, horizontal, vertical when < 0.5)."""
    crops, deltas = crops.clone(), deltas.clone()
    for i in range(crops.shape[0]):
        if draws[i, 0] < 0.5:
            crops[i] = crops[i].transpose(-1, -2).clone()
            deltas[i] = deltas[i][[1, 0, 3, 2]]
        if draws[i, 1] < 0.5:
            crops[i] = crops[i].flip(-1).clone()
            deltas[i] = torch.stack([-deltas[i, 2], deltas[i, 1], -deltas[i, 0], deltas[i, 3]])
        if draws[i, 2] < 0.5:
            crops[i] = crops[i].flip(-2).clone()
            deltas[i] = torch.stack([deltas[i, 0], -deltas[i, 3], deltas[i, 2], -deltas[i, 1]])
    return crops, deltas


class RefinerTask:
    """What the engine trains for one refiner run (see the module docstring)."""

    def __init__(self, config: TrainConfig, section: RefinerSection) -> None:
        self.config, self.section = config, section
        if config.appearance.active:
            raise RecipeError("[appearance] re-renders whole images for the PaliGemma and DETR "
                              "recipes; the refiner's crops do not use it: remove the table")
        self.device = resolve_device(config.device)
        if section.base:
            spec = read_member_spec(Path(section.base))
            self.geometry = RefinerConfig.from_spec(spec)
            model = load_refiner_model(Path(section.base), self.geometry)
        else:
            self.geometry = section.refiner_config()
            model = build_refiner_model(self.geometry, seed=config.seed, zero_head=True)
        self.model: torch.nn.Module = model.to(self.device)
        # The member itself cuts the crops, so training sees exactly what inference will.
        self.cropper = Refiner(self.model, self.geometry, name=section.name, device=str(self.device),
                               dtype="float32")
        self.model.train()
        self.train_boxes = self._boxes("train")
        if not self.train_boxes:
            raise RecipeError(f"no truth boxes in {config.data}/train/boxes.jsonl to train a refiner on")
        self.val_boxes = self._boxes("val")
        if section.max_val_boxes:
            self.val_boxes = self.val_boxes[: section.max_val_boxes]
        self._images: dict[str, np.ndarray] = {}
        self._val_batches: list[dict[str, Any]] | None = None

    def _boxes(self, split: str) -> list[tuple[dict[str, Any], Box]]:
        path = Path(self.config.data) / split / "boxes.jsonl"
        if not path.is_file():
            if split == "train":
                raise RecipeError(f"{str(path)!r} not found; run `screen prepare` first")
            logger.warning("no %s; validation metrics are skipped", path)
            return []
        out: list[tuple[dict[str, Any], Box]] = []
        for record in load_records(self.config.data, split, "boxes"):
            rows, cols = int(record["rows"]), int(record["cols"])
            for c0, r0, c1, r1 in record_boxes_px(record):
                x0, x1 = max(c0, 0.0) / cols, min(c1, cols) / cols
                y0, y1 = max(r0, 0.0) / rows, min(r1, rows) / rows
                if x1 > x0 and y1 > y0:
                    out.append((record, Box(x0, y0, x1, y1)))
        return out

    def _image(self, record: dict[str, Any]) -> np.ndarray:
        key = str(record["image"])
        if key in self._images:
            return self._images[key].astype(np.float32)
        image = load_image(self.config.data, record).astype(np.float16)
        if self.section.cache_images:
            self._images[key] = image
        return image.astype(np.float32)

    def _samples(self, items: list[tuple[dict[str, Any], Box]], draws: np.ndarray
                 ) -> dict[str, Any]:
        crops, targets, ious, proposals = [], [], [], []
        s = self.section
        for (record, truth), draw in zip(items, draws):
            image = self._image(record)
            height, width = image.shape
            proposal = proposal_box(truth, draw, s.jitter, s.shift, s.scale)
            inputs, _ = self.cropper.crop_inputs(image, [proposal])
            crops.append(torch.from_numpy(inputs[0]))
            targets.append(torch.from_numpy(target_corrections(
                proposal, truth, height, width, self.geometry.pad_ratio, self.geometry.max_delta)))
            ious.append(proposal.iou(truth))
            proposals.append(proposal)
        return {"crops": torch.stack(crops), "deltas": torch.stack(targets),
                "iou_before": torch.tensor(ious, dtype=torch.float64),
                "items": items, "proposals": proposals}

    # --- engine protocol -------------------------------------------------------------------
    def param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr": optim.lr}]

    def num_batches(self) -> int:
        total = len(self.train_boxes) * self.section.samples_per_box
        return -(-total // self.config.train.batch_size)

    def train_batches(self, generator: torch.Generator) -> Iterable[Any]:
        pool = [i for i in range(len(self.train_boxes)) for _ in range(self.section.samples_per_box)]
        order = [pool[i] for i in torch.randperm(len(pool), generator=generator).tolist()]
        size = self.config.train.batch_size
        for start in range(0, len(order), size):
            items = [self.train_boxes[i] for i in order[start : start + size]]
            draws = torch.rand((len(items), DRAWS), generator=generator, dtype=torch.float64).numpy()
            batch = self._samples(items, draws)
            if self.section.augment:
                flips = torch.rand((len(items), 3), generator=generator)
                batch["crops"], batch["deltas"] = dihedral_crops(batch["crops"], batch["deltas"], flips)
            yield batch

    def _predict(self, crops: torch.Tensor) -> torch.Tensor:
        raw = self.model(crops.to(self.device)).float()
        return self.geometry.max_delta * torch.tanh(raw)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(pred.device)
        if self.section.loss == "l1":
            return F.l1_loss(pred, target)
        return F.smooth_l1_loss(pred, target, beta=self.section.smooth_l1_beta)

    def training_loss(self, batch: dict[str, Any]) -> StepLoss:
        pred = self._predict(batch["crops"])
        loss = self._loss(pred, batch["deltas"])
        mae = float((pred.detach() - batch["deltas"].to(pred.device)).abs().mean())
        return StepLoss(total=loss, parts={"corner_mae": mae})

    def val_batches(self) -> Iterator[dict[str, Any]]:
        """The fixed validation proposals (the same every epoch and every run)."""
        if self._val_batches is None:
            rng = np.random.default_rng(VAL_SEED)
            draws = rng.random((len(self.val_boxes), DRAWS))
            size = self.config.train.eval_batch_size
            self._val_batches = [
                self._samples(self.val_boxes[i : i + size], draws[i : i + size])
                for i in range(0, len(self.val_boxes), size)
            ]
        return iter(self._val_batches)

    def evaluate(self) -> dict[str, float]:
        if not self.val_boxes:
            return {}
        before: list[float] = []
        after: list[float] = []
        loss_sum = 0.0
        for batch in self.val_batches():
            pred = self._predict(batch["crops"])
            loss_sum += float(self._loss(pred, batch["deltas"])) * len(pred)
            before.extend(batch["iou_before"].tolist())
            for (record, truth), proposal, delta in zip(batch["items"], batch["proposals"], pred.cpu().numpy()):
                height, width = int(record["rows"]), int(record["cols"])
                refined = _refined(proposal, delta, height, width, self.geometry.pad_ratio)
                after.append(refined.iou(truth))
        b, a = np.asarray(before), np.asarray(after)
        return {"iou_before": float(b.mean()), "mean_iou": float(a.mean()),
                "iou_gain": float(a.mean() - b.mean()), "improved": float((a > b).mean()),
                "recall_30_before": float((b >= 0.3).mean()), "recall_30": float((a >= 0.3).mean()),
                "val_loss": loss_sum / len(a)}

    def save_member(self, directory: Path) -> None:
        save_refiner(directory, self.model, self.geometry, name=self.section.name)


def _refined(proposal: Box, delta: np.ndarray, height: int, width: int, pad_ratio: float) -> Box:
    window = crop_window(proposal, height, width, pad_ratio)
    return apply_corrections(proposal, window, delta.tolist(), height, width) or proposal


def build_task(config: TrainConfig) -> RefinerTask:
    """Build the model and data of a refiner run (without training it)."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    return RefinerTask(config, config.section("refiner", RefinerSection))


@register_recipe("refiner")
def train_refiner(config: TrainConfig) -> Path:
    """Train a box refiner; returns the best checkpoint directory."""
    result = fit(build_task(config), config)
    if result.best_dir is None:
        raise RecipeError(f"the refiner run in {config.out} produced no checkpoint")
    if not math.isfinite(result.best_metric or math.nan):
        logger.warning("the refiner run never measured %s", config.train.monitor)
    return result.best_dir


__all__ = ["DRAWS", "RefinerSection", "RefinerTask", "build_task", "dihedral_crops", "jitter_box", "proposal_box",
           "target_corrections", "train_refiner"]
