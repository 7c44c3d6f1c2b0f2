"""The PaliGemma recipes: ``screen train classifier`` and ``screen train detector``.

Both read ``DATA/<split>/<kind>.jsonl`` (``classifier.jsonl``: question prompt, answer
``Fracture``/``Normal``; ``detector.jsonl``: ``Detect Fracture``, answer
``<loc..>x4 Fracture; ...`` or ``Normal``), build the model (:mod:`.paligemma_model`) and hand a
:class:`PaliGemmaTask` to the engine. One prompt per run: when the JSONL mixes prefixes the run
keeps one (``[paligemma] prompt``, else the most common) and warns, since the paper found that
mixing prompts hurts both tasks.

The loss is the sum of the ``[loss]`` switches (:mod:`train.losses`): token CE (optionally with
smoothed loc targets), the decision loss on the first answer token read as the member scores
it, CIoU on soft-argmax boxes, and the SigLIP patch auxiliary losses (overlap, edge distances). Validation scores each
image exactly as the member does at inference (the member class runs on the training model)
and reports F1/precision/recall/accuracy at the member's threshold, image and study AUC, the
validation loss, and for the detector optionally the share of truth boxes matched at IoU 0.3
(:func:`validation_metrics`). The member class (:class:`~ensembles.members.paligemma_classifier.
PaliGemmaClassifier` or :class:`~ensembles.members.paligemma_detector.PaliGemmaDetector`) is
built over the model being trained, so validation F1 is the F1 of the checkpoint the run would
write, at the threshold its ``member.json`` carries; no second scoring implementation can drift
from the real one.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ensembles import symmetry
from ensembles.loc_tokens import NORMAL_TEXT, encode_bin, format_detections, loc_token
from ensembles.members.paligemma_classifier import PaliGemmaClassifier
from ensembles.members.paligemma_inputs import encode_prompts, position_ids_for
from ensembles.members.paligemma_detector import PaliGemmaDetector
from ensembles.preprocess import PreprocessConfig, normalise_square
from ensembles.quant import resolve_device
from ensembles.types import Box
from train import losses
from train.appearance import AppearanceSource
from train.train_config import OptimConfig, TrainConfig
from train.datasets import (
    CLASSIFIER_PROMPT,
    DETECTOR_PROMPT,
    NEGATIVE_ANSWER,
    POSITIVE_ANSWER,
    PaliGemmaTextDataset,
    collate_text,
    read_jsonl,
)
from train.engine import StepLoss, fit, resolve_precision
from train.errors import RecipeError
from train.metrics import confusion_at, roc_auc, study_scores
from train.recipes import register_recipe
from train.recipes.paligemma_model import BuiltModel, build_model, core_model, save_member

logger = logging.getLogger(__name__)

KINDS = {"classifier": "paligemma-classifier", "detector": "paligemma-detector"}
DEFAULT_PROMPTS = {"classifier": CLASSIFIER_PROMPT, "detector": DETECTOR_PROMPT}
DEFAULT_LABELS = {"classifier": (POSITIVE_ANSWER, NEGATIVE_ANSWER), "detector": (POSITIVE_ANSWER,)}
DEFAULT_NAMES = {"classifier": "pg-cls", "detector": "pg-det"}
BOX_MATCH_IOU = 0.3
"""IoU at which a decoded box counts as finding a truth box (the demo's figure)."""
MIXED_PROMPTS_WARNING = (
    "the training JSONL mixes {count} prompts ({shown}); training on {chosen!r} only: the "
    "paper found that mixing prompts in one run hurts both tasks"
)


def choose_prompt(records: Sequence[dict[str, Any]], wanted: str) -> str:
    """The run's one prompt: ``wanted`` if set, else the most common prefix (warning if mixed).

    Raises:
        RecipeError: no record has the wanted prompt, or there are no records.
    """
    counts = Counter(str(r.get("prefix", "")) for r in records)
    if not counts:
        raise RecipeError("the training JSONL has no records; run screen prepare first")
    chosen = wanted or counts.most_common(1)[0][0]
    if chosen not in counts:
        raise RecipeError(
            f"[paligemma] prompt {wanted!r} is not in the training JSONL; its prompts are "
            f"{sorted(counts)}"
        )
    if len(counts) > 1:
        shown = ", ".join(f"{p!r} x{n}" for p, n in counts.most_common())
        warnings.warn(MIXED_PROMPTS_WARNING.format(count=len(counts), shown=shown, chosen=chosen),
                      UserWarning, stacklevel=2)
    return chosen


def detector_answer(boxes: torch.Tensor, label: str) -> str:
    """The loc-token answer that writes ``(n, 4)`` normalised xyxy ``boxes`` (clipped to the
    square), in their order, each with ``label``."""
    return format_detections(
        [(Box.checked(*(min(1.0, max(0.0, v)) for v in b)), label) for b in boxes.tolist()]
    )


def augment_item(item: dict[str, Any], rewrite_suffix: str | None) -> dict[str, Any]:
    """One of the square's eight symmetries, drawn from torch's global RNG (seeded per epoch
    by the engine, so a resumed run draws the same), applied to pixels and boxes alike.

    Args:
        item: a :class:`PaliGemmaTextDataset` item (``pixel_values`` ``(3, S, S)``, ``boxes``
            normalised xyxy in the input frame).
        rewrite_suffix: the box label to rewrite a detector answer with (its loc tokens must
            follow the boxes); ``None`` keeps the suffix (classifier).
    """
    hflip, vflip, transpose = (int(v) for v in torch.randint(0, 2, (3,)).tolist())
    k = transpose * symmetry.TRANSPOSE | hflip * symmetry.HFLIP | vflip * symmetry.VFLIP
    pixels = symmetry.apply_to_pixels(item["pixel_values"], k)
    boxes = symmetry.apply_to_boxes(item["boxes"].clone(), k)
    out = dict(item, pixel_values=pixels.contiguous(), boxes=boxes)
    if rewrite_suffix is not None and len(boxes):
        out["suffix"] = detector_answer(boxes, rewrite_suffix)
    return out


def reading_order(boxes: torch.Tensor) -> torch.Tensor:
    """``(n, 4)`` normalised xyxy boxes sorted top to bottom, then left to right, by the loc
    bins of ``y_min`` then ``x_min`` (the first two tokens the answer writes for each)."""
    boxes = boxes.reshape(-1, 4)
    keys = [(encode_bin(min(1.0, max(0.0, y0))), encode_bin(min(1.0, max(0.0, x0))), index)
            for index, (x0, y0, _, _) in enumerate(boxes.tolist())]
    return boxes[[index for _, _, index in sorted(keys)]]


def ordered_item(item: dict[str, Any], rewrite_suffix: str) -> dict[str, Any]:
    """A detector item whose boxes, and the answer written from them, are in
    :func:`reading_order`."""
    boxes = reading_order(item["boxes"])
    out = dict(item, boxes=boxes)
    if len(boxes):
        out["suffix"] = detector_answer(boxes, rewrite_suffix)
    return out


class _CachedDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Keeps each preprocessed item after its first load (one grey plane when the three
    channels are equal, float32 so a cached epoch sees exactly the bytes a fresh one does),
    so later epochs skip PNG decoding and resizing; augments after the cache when asked, then
    puts a detector answer's boxes in :func:`reading_order` when asked.

    With ``appearance`` (the ``[appearance]`` table's :class:`~train.appearance.AppearanceSource`)
    each item is instead re-rendered from its kept source on every use, preprocessed as
    inference does, and its detector answer rewritten for the zoomed boxes."""

    def __init__(self, inner: PaliGemmaTextDataset, enabled: bool, *, augment: bool = False,
                 rewrite_suffix: str | None = None, reading: bool = False,
                 appearance: AppearanceSource | None = None) -> None:
        self.inner = inner
        self.enabled = enabled
        self.augment = augment
        self.rewrite_suffix = rewrite_suffix
        self.reading = reading
        self.appearance = appearance
        self.cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self._load(index)
        if self.augment:
            item = augment_item(item, self.rewrite_suffix)
        if self.reading and self.rewrite_suffix is not None:
            item = ordered_item(item, self.rewrite_suffix)
        return item

    def _load(self, index: int) -> dict[str, Any]:
        if self.appearance is not None:
            return self._rendered(index)
        if index in self.cache:
            item = dict(self.cache[index])
            pixels = item["pixel_values"]
            item["pixel_values"] = pixels.expand(3, -1, -1).clone() if pixels.ndim == 2 else pixels
            return item
        item = self.inner[index]
        if self.enabled:
            stored = dict(item)
            pixels = item["pixel_values"]
            same = bool(torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[0], pixels[2]))
            stored["pixel_values"] = pixels[0].clone() if same else pixels
            self.cache[index] = stored
        return item

    def _rendered(self, index: int) -> dict[str, Any]:
        """Item ``index`` re-rendered by ``appearance`` (seeded from torch's global RNG, which
        the engine seeds per epoch, so a resumed run draws the same)."""
        assert self.appearance is not None
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        grey, boxes = self.appearance.draw(index, rng)
        item = self.inner.item(self.inner.records[index], normalise_square(grey, self.inner.preprocess),
                               boxes)
        if self.rewrite_suffix is not None and len(boxes):
            item["suffix"] = detector_answer(item["boxes"], self.rewrite_suffix)
        return item


class PaliGemmaTask:
    """What the engine trains for one PaliGemma run (see the module docstring)."""

    def __init__(self, recipe: str, config: TrainConfig, built: BuiltModel, prompt: str) -> None:
        section = config.paligemma
        if section is None:  # pragma: no cover - checked by the recipe
            raise RecipeError("the config has no [paligemma] table")
        self.recipe, self.config, self.section, self.built = recipe, config, section, built
        self.prompt = prompt
        self.step = 0  # the optimizer step, told by the engine (set_step)
        self.processor = built.processor
        self.tokenizer = built.processor.tokenizer
        self.spec = built.spec
        self.device = built.device
        self.preprocess = PreprocessConfig.from_spec(built.spec)
        vision = core_model(built.model).config.vision_config
        self.grid = int(vision.image_size) // int(vision.patch_size)
        self.image_seq_length = int(self.processor.image_seq_length)
        self.loc_ids = torch.tensor(self.tokenizer.convert_tokens_to_ids(
            [loc_token(b) for b in range(1024)]), dtype=torch.long, device=self.device)
        positive, negative = self._decision_ids()
        self.positive_ids = torch.tensor(positive, dtype=torch.long, device=self.device)
        self.negative_ids = torch.tensor(negative, dtype=torch.long, device=self.device)
        modules: dict[str, torch.nn.Module] = {"pg": built.model}
        self.patch_head: losses.PatchHead | None = None
        self.patch_box_head: losses.PatchBoxHead | None = None
        self._patch_tokens: torch.Tensor | None = None
        width = int(vision.hidden_size)
        if config.loss.patch_aux_weight > 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                self.patch_head = losses.PatchHead(width).to(self.device)
            modules["patch_head"] = self.patch_head
        if config.loss.patch_box_weight > 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed + 1)
                self.patch_box_head = losses.PatchBoxHead(width).to(self.device)
            modules["patch_box_head"] = self.patch_box_head
        if self.patch_head is not None or self.patch_box_head is not None:
            core_model(built.model).model.vision_tower.register_forward_hook(self._capture)
        self.model: torch.nn.Module = torch.nn.ModuleDict(modules)
        self.train_set = self._dataset("train", section.cache_images, augment=section.augment)
        if len(self.train_set) == 0:
            raise RecipeError(f"no training records with prompt {prompt!r} in {config.data}")
        self.val_set = self._dataset("val", True, limit=section.max_val_images)

    def _decision_ids(self) -> tuple[list[int], list[int]]:
        def first(text: str) -> int:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if not ids:
                raise RecipeError(f"answer {text!r} tokenizes to nothing")
            return int(ids[0])

        if self.recipe == "classifier":
            if len(self.spec.labels) != 2:
                raise RecipeError(
                    f"the classifier needs labels [positive, negative], got {list(self.spec.labels)}"
                )
            return [first(self.spec.labels[0])], [first(self.spec.labels[1])]
        normal = str(self.spec.options.get("normal", NORMAL_TEXT))
        return self.loc_ids.tolist(), [first(normal)]

    def _capture(self, module: Any, inputs: Any, output: Any) -> None:
        hidden = getattr(output, "last_hidden_state", None)
        self._patch_tokens = hidden if hidden is not None else output[0]

    def _dataset(self, split: str, cache: bool, limit: int = 0, augment: bool = False) -> _CachedDataset:
        jsonl = self.section.jsonl or f"{self.recipe}.jsonl"
        path = Path(self.config.data) / split / jsonl
        records: list[dict[str, Any]] = []
        if path.is_file():
            records = [r for r in read_jsonl(path) if r.get("prefix") == self.prompt]
        elif split == "train":
            raise RecipeError(f"{str(path)!r} not found; run `screen prepare` first")
        else:
            logger.warning("no %s; validation metrics are skipped", path)
        if limit and len(records) > limit:  # spread over the file, which may be sorted by label
            records = records[:: len(records) // limit][:limit]
        inner = PaliGemmaTextDataset(self.config.data, records, self.preprocess)
        rewrite = self.spec.labels[0] if self.recipe == "detector" else None
        look = self.config.appearance
        appearance = (AppearanceSource(Path(self.config.data), inner.records, self.preprocess, look, keep=cache)
                      if split == "train" and look.active else None)
        return _CachedDataset(inner, cache, augment=augment, rewrite_suffix=rewrite,
                              reading=self.section.box_order == "reading", appearance=appearance)

    # --- engine protocol -------------------------------------------------------------------
    def param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        head_lr = optim.head_lr or optim.lr
        fresh: list[torch.nn.Parameter] = []
        rest: list[torch.nn.Parameter] = []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            tail = name.split("multi_modal_projector")[-1]
            is_head = name.startswith(("patch_head.", "patch_box_head.")) or (
                "multi_modal_projector" in name and ".linear." not in tail
            )
            (fresh if is_head else rest).append(param)
        groups = [{"params": rest, "lr": optim.lr}]
        if fresh:
            groups.append({"params": fresh, "lr": head_lr})
        return [g for g in groups if g["params"]]

    def num_batches(self) -> int:
        return -(-len(self.train_set) // self.config.train.batch_size)

    def train_batches(self, generator: torch.Generator) -> Iterable[Any]:
        return torch.utils.data.DataLoader(
            self.train_set, batch_size=self.config.train.batch_size, shuffle=True,
            generator=generator, collate_fn=collate_text, num_workers=self.config.train.num_workers,
        )

    def training_loss(self, batch: dict[str, Any]) -> StepLoss:
        cfg = self.config.loss
        encoded = encode_prompts(self.tokenizer, batch["prefix"], self.image_seq_length,
                                 image_token=self.processor.image_token, suffixes=batch["suffix"])
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        labels = encoded["labels"]
        answer = int((labels != losses.IGNORE_INDEX).sum(dim=1).max())
        keep = answer + 1
        dtype = next(p for p in self.built.model.parameters() if p.is_floating_point()).dtype
        out = self.built.model(
            input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
            token_type_ids=encoded["token_type_ids"],
            position_ids=position_ids_for(encoded["attention_mask"]),
            pixel_values=batch["pixel_values"].to(self.device, dtype=_pixel_dtype(self.built.model, dtype)),
            use_cache=False, logits_to_keep=keep,
        )
        logits = out.logits
        kept_labels = labels[:, -keep:]
        parts: dict[str, torch.Tensor] = {}
        if cfg.token_weight:
            parts["token_loss"] = losses.token_cross_entropy(
                logits, kept_labels, loc_ids=self.loc_ids, loc_sigma=cfg.loc_sigma)
        if cfg.decision != "none" and cfg.decision_weight:
            first = losses.first_answer_positions(kept_labels)
            rows = torch.arange(logits.shape[0], device=logits.device)
            pair = losses.decision_logits(logits[rows, first], self.positive_ids, self.negative_ids)
            parts["decision_loss"] = losses.decision_loss(
                pair, batch["label"].to(self.device), cfg.decision,
                class_weights=cfg.class_weights, gamma=cfg.focal_gamma)
        if cfg.ciou_weight:
            pred, truth = losses.loc_box_predictions(logits, kept_labels, self.loc_ids, cfg.ciou_window)
            parts["ciou_loss"] = losses.ciou_loss(pred, truth)
        tokens, self._patch_tokens = self._patch_tokens, None
        if self.patch_head is not None and tokens is not None:
            targets = losses.patch_targets(batch["boxes"], self.grid)
            patch_logits = self.patch_head(tokens)
            parts["patch_loss"] = losses.patch_loss(patch_logits, targets, cfg.patch_pos_weight)
        if self.patch_box_head is not None and tokens is not None:
            edges, held = losses.patch_box_targets(batch["boxes"], self.grid)
            parts["patch_box_loss"] = losses.patch_box_loss(self.patch_box_head(tokens), edges, held)
        # the schedule shapes training only: validation (eval mode) weighs at full value, so
        # val_loss compares across epochs
        box = cfg.box_factor(self.step) if self.built.model.training else 1.0
        weights = {"token_loss": cfg.token_weight * box, "decision_loss": cfg.decision_weight,
                   "ciou_loss": cfg.ciou_weight * box, "patch_loss": cfg.patch_aux_weight,
                   "patch_box_loss": cfg.patch_box_weight}
        total = sum((weights[k] * v for k, v in parts.items()), logits.sum() * 0.0)
        return StepLoss(total=total, parts={k: float(v.detach()) for k, v in parts.items()})

    def set_step(self, step: int, total: int) -> None:
        """Where training is, for ``[loss] box_ramp_steps`` (:class:`train.engine.StepAware`)."""
        self.step = step

    def member(self) -> PaliGemmaClassifier | PaliGemmaDetector:
        """The member class over the model being trained (how validation scores images)."""
        cls = PaliGemmaClassifier if self.recipe == "classifier" else PaliGemmaDetector
        return cls(self.built.model, self.processor, self.spec,
                   batch_size=self.config.train.eval_batch_size)

    def evaluate(self) -> dict[str, float]:
        return validation_metrics(self)

    def save_member(self, directory: Path) -> None:
        save_member(self.built, directory, self.section.method)


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


def validation_metrics(task: PaliGemmaTask) -> dict[str, float]:
    """Validation metrics of the model as it is now (the engine calls this in eval mode).

    Returns ``{}`` when there is no validation data. Keys: ``f1``, ``precision``, ``recall``,
    ``accuracy``, ``auc`` (image), ``study_auc``, ``val_loss``, ``mean_score``; ``patch_auc``
    (image AUC of the patch head's highest patch logit: is SigLIP learning the fracture?) with
    the patch loss on; for a detector with ``eval_boxes``, ``box_recall`` (share of truth boxes
    matched at IoU >= 0.3) and ``auc_box`` (the mean of the image ``auc`` and ``box_recall``, as
    the DETR recipe's: a monitor that keeps the checkpoint where the decision and the boxes both
    learned).
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
        metrics["auc_box"] = (metrics["auc"] + metrics["box_recall"]) / 2.0
    return metrics


def _pixel_dtype(model: Any, default: torch.dtype) -> torch.dtype:
    try:
        return core_model(model).model.vision_tower.embeddings.patch_embedding.weight.dtype
    except AttributeError:
        return default


def build_task(recipe: str, config: TrainConfig) -> PaliGemmaTask:
    """Build the model and data of a PaliGemma run (without training it)."""
    section = config.paligemma
    if section is None:
        raise RecipeError(
            f"`screen train {recipe}` needs a [paligemma] table in the config (base = ... or "
            "[paligemma.tiny])"
        )
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    jsonl = section.jsonl or f"{recipe}.jsonl"
    train_path = Path(config.data) / "train" / jsonl
    if not train_path.is_file():
        raise RecipeError(f"{str(train_path)!r} not found; run `screen prepare` first")
    prompt = choose_prompt(read_jsonl(train_path), section.prompt)
    device = resolve_device(config.device)
    built = build_model(
        KINDS[recipe], section, out=Path(config.out), device=str(device),
        precision=resolve_precision(config.train.precision, device), seed=config.seed,
        prompt=prompt, labels=DEFAULT_LABELS[recipe], name=DEFAULT_NAMES[recipe],
        gradient_checkpointing=config.train.gradient_checkpointing,
    )
    return PaliGemmaTask(recipe, config, built, prompt)


def _run(recipe: str, config: TrainConfig) -> Path:
    task = build_task(recipe, config)
    result = fit(task, config)
    if result.best_dir is None:
        raise RecipeError(f"the run in {config.out} produced no checkpoint")
    return result.best_dir


@register_recipe("classifier")
def train_classifier(config: TrainConfig) -> Path:
    """Fine-tune a PaliGemma classifier (question prompt, ``Fracture``/``Normal``)."""
    return _run("classifier", config)


@register_recipe("detector")
def train_detector(config: TrainConfig) -> Path:
    """Fine-tune a PaliGemma detector (``Detect Fracture``, loc-token boxes or ``Normal``)."""
    return _run("detector", config)


__all__ = ["PaliGemmaTask", "build_task", "choose_prompt", "train_classifier", "train_detector",
           "validation_metrics"]
