"""Training configs: TOML files into typed, validated tables (the project's one config mechanism).

One file describes one run (big_vision's ``get_config()`` files, as TOML, with no string
mini-languages). Top-level keys name the run; tables hold the engine's knobs and the recipe's::

    # screen train classifier --config train/configs/classifier.toml
    schema_version = 1          # optional (absent: 1); a newer one is refused
    data = "data/prepared"      # DATA folder written by `screen prepare`
    out = "runs/classifier"     # run folder: config, metrics.csv, curves, last/, best/
    seed = 0
    device = "auto"             # "auto" (CUDA when present), "cpu", "cuda", "cuda:1"

    [train]     # the loop: batch, accumulation, epochs, early stopping   (LoopConfig)
    [optim]     # AdamW and the warmup + cosine schedule, sized in steps  (OptimConfig)
    [loss]      # token CE, decision-token CE/WCE/focal, CIoU, patch aux   (LossConfig)
    [paligemma] # the PaliGemma recipes (classifier, detector)            (PaliGemmaSection)
    [appearance] # training images re-rendered: zoom, window, gamma, compress, sharpen, blur,
                 # noise
                 # (train.appearance.AppearanceConfig; PaliGemma and DETR recipes)
    [detr], [refiner]           # the other recipes' tables (train.recipes.sections), kept raw in
                                # ``sections`` for their recipe, validated when the file is read

Every table is a :class:`~train.config_base.TrainTable` (a pydantic
:class:`~ensembles.config_model.ConfigModel`): the whole file is validated when it is read
(unknown keys, types, ranges, the allowed words, NaN), and a problem is a
:class:`~train.errors.TrainConfigError` naming the key and what it must be.

Relative paths are resolved against the current directory when the config is loaded (the
example configs are run from the repository root, as their first comment says). Defaults are
the paper's recipe (batch 2, accumulation 8, lr 2e-5 cosine with 2 warmup steps, AdamW with
weight decay 1e-6 and betas 0.9/0.999, bf16 on CUDA, up to 50 epochs with early stopping on
validation F1).
"""

from __future__ import annotations

import json
import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping, TypeVar

from pydantic import BaseModel, Field, model_validator

from ensembles.config_model import ListAsTuple, check
from train.appearance import AppearanceConfig
from train.config_base import Count, NonNegative, Off, Positive, TrainTable, Unit, parse_table
from train.errors import TrainConfigError
from train.recipes.sections import RECIPE_TABLES

__all__ = [
    "DECISION_LOSSES", "LoopConfig", "LossConfig", "METHODS", "OptimConfig", "PRECISIONS",
    "PROGRESS", "PaliGemmaSection", "QUANTIZATIONS", "RECIPE_NAMES", "SCHEDULES", "SCHEMA_VERSION",
    "TrainConfig", "config_from_dict", "load_train_config", "parse_override",
]

T = TypeVar("T", bound=BaseModel)

SCHEMA_VERSION = 1
"""The newest ``schema_version`` a training TOML may declare (absent: 1)."""

Precision = Literal["auto", "bf16-mixed", "bf16", "fp32"]
Schedule = Literal["cosine", "linear", "constant"]
DecisionLoss = Literal["ce", "wce", "focal", "none"]
Method = Literal["full", "qlora"]
Quantization = Literal["8bit", "4bit"]
BoxOrder = Literal["as-prepared", "reading"]
Progress = Literal["auto", "on", "off"]

PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)
DECISION_LOSSES: tuple[str, ...] = typing.get_args(DecisionLoss)
METHODS: tuple[str, ...] = typing.get_args(Method)
QUANTIZATIONS: tuple[str, ...] = typing.get_args(Quantization)
PROGRESS: tuple[str, ...] = typing.get_args(Progress)
MINIMISED_METRICS: tuple[str, ...] = ("val_loss", "loss")
RECIPE_NAMES: tuple[str, ...] = ("classifier", "detector", "detr", "refiner")
"""``screen train``'s recipes (``train.recipes.RECIPE_MODULES``; a test holds them equal)."""

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class LoopConfig(TrainTable):
    """The ``[train]`` table: how the engine loops.

    Attributes:
        batch_size: images per forward pass (the paper: 2).
        grad_accum: micro-batches per optimizer step (the paper: 8, so 16 images a step).
        epochs: most epochs (the paper: up to 50).
        max_steps: stop after this many optimizer steps in all (0: no cap). Size CPU budgets
            with it: steps, not seconds, since shared cores make timings unreliable.
        epoch_steps: optimizer steps that make one "epoch" (validation, checkpoint and a
            metrics row after each); 0 = one pass over the training data.
        patience: epochs without improvement of ``monitor`` before stopping (0: never stop early).
        monitor: validation metric that picks the best checkpoint (``f1``, ``auc``, ``map``,
            ``val_loss``, ...); losses are minimised, everything else maximised.
        min_delta: smallest change of ``monitor`` that counts as an improvement.
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16-mixed``, ``bf16``
            (weights in bf16 too, least memory) or ``fp32``.
        gradient_checkpointing: recompute activations in the backward pass (less memory).
        resume: continue from ``out/last`` when it exists (the config must be the same run).
        progress: progress bars: ``auto`` (on a terminal), ``on`` or ``off``.
        threads: torch CPU threads (0: leave torch's default).
        eval_batch_size: images per forward pass in validation.
        num_workers: DataLoader worker processes (0: load in the main process).
        eval_every: validate every this many epochs (the last epoch always validates).
    """

    TABLE: ClassVar[str] = "train"

    batch_size: Count = 2
    grad_accum: Count = 8
    epochs: Count = 50
    max_steps: Off = 0
    epoch_steps: Off = 0
    patience: Off = 5
    monitor: Annotated[str, check(bool, "must name a validation metric, e.g. 'f1'")] = "f1"
    min_delta: NonNegative = 0.0
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    resume: bool = True
    progress: Progress = "auto"
    threads: Off = 0
    eval_batch_size: Count = 8
    num_workers: Off = 0
    eval_every: Count = 1

    @property
    def monitor_mode(self) -> str:
        """``"min"`` for losses, ``"max"`` for every other metric."""
        return "min" if self.monitor in MINIMISED_METRICS or self.monitor.endswith("loss") else "max"


class OptimConfig(TrainTable):
    """The ``[optim]`` table: AdamW and its learning-rate schedule (sized in optimizer steps).

    Attributes:
        lr: peak learning rate (the paper: 2e-5).
        weight_decay: AdamW weight decay (the paper: 1e-6).
        betas: AdamW betas (the paper: 0.9, 0.999).
        eps: AdamW epsilon.
        warmup_steps: linear warmup from 0 over this many optimizer steps (the paper: 2).
        schedule: ``cosine`` (the paper), ``linear`` decay, or ``constant`` after warmup.
        min_lr_ratio: the schedule's floor as a fraction of ``lr``.
        grad_clip: clip the gradient norm to this (0: no clipping).
        head_lr: learning rate of freshly initialised heads (task head, auxiliary heads); 0 uses
            ``lr``. From-scratch parts often want more than a fine-tune's 2e-5.
    """

    TABLE: ClassVar[str] = "optim"

    lr: Positive = 2e-5
    weight_decay: NonNegative = 1e-6
    betas: Annotated[tuple[float, ...], ListAsTuple,
                     check(lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
                           "must be two numbers in [0, 1)")] = (0.9, 0.999)
    eps: Positive = 1e-8
    warmup_steps: Annotated[int, Field(ge=0)] = 2
    schedule: Schedule = "cosine"
    min_lr_ratio: Unit = 0.0
    grad_clip: Annotated[float, check(lambda v: v >= 0, "must be >= 0 (0 = off)")] = 1.0
    head_lr: Annotated[float, check(lambda v: v >= 0, "must be >= 0 (0 = lr)")] = 0.0


class LossConfig(TrainTable):
    """The ``[loss]`` table: which losses a PaliGemma run adds up, each a switch.

    Attributes:
        token_weight: weight of the token cross-entropy over the whole answer.
        decision: loss on the class decision (the answer's first token, read as the member
            scores it: positive answer or any loc token against ``Normal``): ``ce``, ``wce``
            (``class_weights``), ``focal`` (``focal_gamma``) or ``none``.
        decision_weight: weight of the decision loss.
        class_weights: ``[fracture, normal]`` weights of ``wce``.
        focal_gamma: focusing parameter of ``focal`` (0 gives plain CE).
        ciou_weight: lambda of the CIoU loss on boxes built from the soft-argmax expected
            coordinate of each loc position under teacher forcing (0: off).
        ciou_window: bins either side of each loc position's most likely bin that its
            soft-argmax coordinate is taken over (0: all 1,024). Greedy decoding writes the
            most likely bin; over all bins, the mass far from it pulls the expected coordinate
            towards the image centre, and CIoU teaches the model to push its boxes outwards to
            make up for it (bench.learnability: boxes came out inflated by 3-7 px at 224 px).
        loc_sigma: smoothed location targets: the CE target of a loc position is a Gaussian
            over neighbouring bins with this standard deviation in bins (0: one-hot).
        patch_aux_weight: weight of the auxiliary SigLIP patch loss (a linear head predicts
            whether each patch overlaps a truth box; 0: off). It made a from-scratch tiny
            model learn on the CPU where the token loss alone did not (docs/stack-notes.md).
        patch_pos_weight: BCE weight of positive patches (they are rare).
        patch_box_weight: weight of the dense box auxiliary loss: a linear head on the SigLIP
            patch tokens regresses, for each patch whose centre lies in a truth box, its
            distances to that box's four edges (L1 in patches; 0: off). Training-only, as the
            patch head.
        box_ramp_steps: a loss schedule for the detector's boxes: over the first this many
            optimizer steps the token and CIoU weights rise linearly from ``box_ramp_from`` times
            their value to their value, so the decision learns before the 1,024-way location
            loss dominates the gradient (0: off, the weights hold from the first step).
            Validation's ``val_loss`` weighs them in full, so it compares across epochs.
        box_ramp_from: the share of ``token_weight`` and ``ciou_weight`` at step 0.
    """

    TABLE: ClassVar[str] = "loss"

    token_weight: NonNegative = 1.0
    decision: DecisionLoss = "ce"
    decision_weight: NonNegative = 1.0
    class_weights: Annotated[
        tuple[float, ...], ListAsTuple, check(lambda v: len(v) == 2, "must list 2 values"),
        check(lambda v: all(w > 0 for w in v), "must be two numbers > 0 ([fracture, normal])"),
    ] = (1.0, 1.0)
    focal_gamma: NonNegative = 2.0
    ciou_weight: NonNegative = 0.0
    ciou_window: Annotated[int, Field(ge=0, le=1023)] = 0
    loc_sigma: NonNegative = 0.0
    patch_aux_weight: NonNegative = 0.0
    patch_pos_weight: Positive = 1.0
    patch_box_weight: NonNegative = 0.0
    box_ramp_steps: Annotated[int, Field(ge=0)] = 0
    box_ramp_from: Unit = 0.2

    def box_factor(self, step: int) -> float:
        """The multiplier of ``token_weight`` and ``ciou_weight`` at optimizer step ``step``."""
        if not self.box_ramp_steps or step >= self.box_ramp_steps:
            return 1.0
        return self.box_ramp_from + (1.0 - self.box_ramp_from) * step / self.box_ramp_steps


class PaliGemmaSection(TrainTable):
    """The ``[paligemma]`` table: the classifier and detector recipes.

    Attributes:
        base: the model to start from: a local ``save_pretrained`` PaliGemma directory (a
            member checkpoint or a stock one). Empty with ``tiny`` set: build a random-init
            tiny model (:func:`ensembles.demo_arch.paligemma.build_tiny_paligemma`) from scratch.
        tiny: keyword arguments of ``build_tiny_paligemma`` (``image_size``, ``patch``,
            ``siglip_hidden``, ``siglip_layers``, ``text_hidden``, ``text_layers``,
            ``task_head``, ``text_model``); used only when ``base`` is empty.
        method: ``full`` (language model + projector, last ``siglip_unfreeze`` SigLIP layers)
            or ``qlora`` (quantised language model with LoRA, SigLIP layers and projector in
            full).
        siglip_unfreeze: trainable SigLIP layers counted from the top (the paper: 5; 0 keeps
            SigLIP frozen; -1 trains all of SigLIP including its embeddings: from scratch).
        quantization: ``8bit`` or ``4bit`` (nf4, double quant) base of ``qlora``.
        lora_r: LoRA rank (the paper: 16).
        lora_alpha: LoRA alpha (the paper: 32).
        lora_dropout: LoRA dropout (the paper: 0.05).
        lora_mlp: also put LoRA on the language model's MLP (gate/up/down projections).
        task_head: add the task-attention head with this many queries (0: the base's own
            projector). A head the base lacks starts fresh.
        jsonl: training file name in each split (default ``classifier.jsonl`` or
            ``detector.jsonl`` by recipe).
        prompt: train on this prefix only; empty: the JSONL's prefix (the most common, with a
            warning, when it mixes several: the paper found mixing prompts hurts both tasks).
        labels: ``member.json`` labels (default by recipe: ``Fracture``/``Normal`` answers,
            ``Fracture`` box label).
        name: the member's display name in ``member.json`` (default by recipe).
        threshold: the member's decision threshold in ``member.json``, also used for val F1.
        canny_blend: Canny-edge blend weight (the paper's 0.3; 0 off), as inference does it.
        clahe: CLAHE preprocessing (warns: the paper saw it collapse a model to "Normal").
        cache_images: keep preprocessed training images in memory between epochs.
        augment: random flips and transposition of each training image and its boxes (the
            eight symmetries of the square; the detector's loc-token answer is rewritten to
            match). Multiplies a small training set; off by default (the paper did not).
        box_order: order of the boxes in a detector's training answer: ``as-prepared`` (the
            JSONL's, kept through ``augment``) or ``reading`` (top to bottom, then left to
            right, by the loc bins of ``y_min`` then ``x_min``, after any augmentation), so
            each coordinate of a many-box answer has one target instead of either box's.
        max_val_images: validate on at most this many images (0: all), to bound CPU time.
        eval_boxes: also decode boxes on validation (detector) and report box matching.
    """

    TABLE: ClassVar[str] = "paligemma"

    base: str = ""
    tiny: dict[str, Any] = Field(default_factory=dict)
    method: Method = "full"
    siglip_unfreeze: Annotated[int, check(lambda v: v >= -1,
                                          "must be >= 0 (or -1 for all of SigLIP)")] = 5
    quantization: Quantization = "4bit"
    lora_r: Count = 16
    lora_alpha: Annotated[int, Field(gt=0)] = 32
    lora_dropout: Annotated[float, check(lambda v: 0 <= v < 1, "must be in [0, 1)")] = 0.05
    lora_mlp: bool = False
    task_head: Annotated[int, Field(ge=0)] = 0
    jsonl: str = ""
    prompt: str = ""
    labels: Annotated[tuple[str, ...], ListAsTuple] = ()
    name: str = ""
    threshold: Unit = 0.5
    canny_blend: Unit = 0.0
    clahe: bool = False
    cache_images: bool = True
    augment: bool = False
    box_order: BoxOrder = "as-prepared"
    max_val_images: Annotated[int, Field(ge=0)] = 0
    eval_boxes: bool = False

    @model_validator(mode="after")
    def _has_a_model(self) -> "PaliGemmaSection":
        if not (self.base or self.tiny):
            raise ValueError(
                "needs base = \"<local PaliGemma directory>\" or a [paligemma.tiny] table to "
                "build a model from scratch"
            )
        return self


class TrainConfig(TrainTable):
    """One training run.

    Attributes:
        data: the DATA folder written by ``screen prepare``.
        out: the run folder (config, ``metrics.csv``, curve PNGs, ``last/``, ``best/``).
        recipe: which ``screen train`` recipe (``classifier``, ``detector``, ``detr``,
            ``refiner``); the command line sets it and must agree with the file's.
        seed: seeds the model init, the data order and dropout (per epoch, so resuming repeats
            exactly what an uninterrupted run does).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        schema_version: the file format's version (absent: 1; left out of :meth:`to_dict`).
        train: the ``[train]`` table.
        optim: the ``[optim]`` table.
        loss: the ``[loss]`` table.
        paligemma: the ``[paligemma]`` table (``None`` when the file has none).
        appearance: the ``[appearance]`` table (defaults: off).
        sections: the recipes' tables (``[detr]``, ``[refiner]``), raw (validated when the
            file was read), for the recipe to parse with :meth:`section`.
        source: the TOML file it came from (``None`` when built in code).
    """

    data: Path = Field(strict=False)
    out: Path = Field(strict=False)
    recipe: Annotated[str, check(lambda v: v in ("",) + RECIPE_NAMES,
                                 f"must be one of {', '.join(RECIPE_NAMES)}")] = ""
    seed: int = 0
    device: Annotated[str, check(lambda v: _DEVICE.fullmatch(v) is not None,
                                 "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")] = "auto"
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION, exclude=True)
    train: LoopConfig = Field(default_factory=LoopConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    paligemma: PaliGemmaSection | None = None
    appearance: AppearanceConfig = Field(default_factory=AppearanceConfig)
    sections: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source: Path | None = Field(default=None, strict=False)

    def section(self, name: str, cls: type[T]) -> T:
        """The raw table ``[name]`` parsed as the model ``cls`` (defaults when absent).

        Raises:
            TrainConfigError: the table does not fit ``cls``.
        """
        return parse_table(cls, self.sections.get(name, {}), name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the resolved config (what a run writes as ``config.json``)."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """A stable JSON text of what defines the run (without ``train.resume``/``progress``).

        A resumed run must match this, or it would mix two different trainings.
        """
        data = self.to_dict()
        data.pop("source", None)
        for key in ("resume", "progress", "threads", "num_workers", "max_steps", "epochs",
                    "patience"):
            data["train"].pop(key, None)
        for (table, key), default in _ADDED_KEYS.items():  # a run begun before the key existed
            section = data.get(table) or {}  # [paligemma] is None in a DETR or refiner config
            if section.get(key, default) == default:
                section.pop(key, None)
        if data.get("appearance") == AppearanceConfig().model_dump(mode="json"):
            data.pop("appearance")  # added after runs were fingerprinted; off by default
        return json.dumps(data, sort_keys=True)


#: Keys added after runs were fingerprinted, with their defaults: left out of the fingerprint at
#: their default, so a run begun before a key existed still resumes.
_ADDED_KEYS: dict[tuple[str, str], Any] = {("loss", "ciou_window"): 0, ("loss", "box_ramp_steps"): 0,
                                           ("loss", "box_ramp_from"): 0.2, ("loss", "patch_box_weight"): 0.0,
                                           ("paligemma", "box_order"): "as-prepared"}
_SCALARS = ("data", "out", "recipe", "seed", "device", "schema_version")
_TABLES = ("train", "optim", "loss", "paligemma", "appearance")


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TrainConfigError(f"override {key!r}: {part!r} is not a table")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=3"`` to ``("train.epochs", 3)``; the value is read as TOML, else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise TrainConfigError(f"override must look like section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def _check_top_level(raw: Mapping[str, Any]) -> None:
    """The file's schema version and top-level keys, worded before any table is read."""
    version = raw.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise TrainConfigError(
            f"schema_version {version} is newer than this fracture-screen reads (up to "
            f"{SCHEMA_VERSION}); upgrade fracture-screen to train with this config"
        )
    tables = _TABLES + tuple(RECIPE_TABLES)
    for key in raw:
        if key not in _SCALARS and key not in tables:
            raise TrainConfigError(
                f"unknown top-level key {key!r}; valid keys: {', '.join(sorted(_SCALARS))} "
                f"and tables [{'], ['.join(tables)}]"
            )


def config_from_dict(
    data: Mapping[str, Any],
    *,
    recipe: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    source: Path | None = None,
) -> TrainConfig:
    """Build a :class:`TrainConfig` from parsed TOML (plus dotted ``overrides``), every table
    validated, the recipes' ``[detr]`` and ``[refiner]`` included.

    Raises:
        TrainConfigError: a missing ``data``/``out``, an unknown key, a bad value, a newer
            ``schema_version``, or a ``recipe`` that disagrees with the file's.
    """
    raw: dict[str, Any] = json.loads(json.dumps(dict(data), default=str))
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    if recipe:
        file_recipe = raw.get("recipe")
        if file_recipe and file_recipe != recipe:
            raise TrainConfigError(
                f"the config is for recipe {file_recipe!r} but `screen train {recipe}` was "
                f"asked for; run `screen train {file_recipe}` or fix recipe in the file"
            )
        raw["recipe"] = recipe
    for key in ("data", "out"):
        if not raw.get(key):
            raise TrainConfigError(
                f"the config needs {key} = \"...\" at the top level "
                "(or pass --" + key + " on the command line)"
            )
    _check_top_level(raw)
    sections = {name: raw.pop(name) for name in RECIPE_TABLES if name in raw}
    for name, table in sections.items():
        parse_table(RECIPE_TABLES[name], table, name)  # validated now, parsed again by the recipe
    return parse_table(TrainConfig, {**raw, "sections": sections, "source": source})


def load_train_config(
    path: str | Path,
    *,
    recipe: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Read a TOML training config.

    Args:
        path: the TOML file.
        recipe: the recipe the command line asked for (checked against the file's).
        overrides: ``{"train.epochs": 3, "data": "..."}`` applied on top of the file.

    Raises:
        TrainConfigError: the file is missing or not TOML, or any value is invalid.
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainConfigError(f"training config {str(file)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainConfigError(f"cannot read training config {str(file)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TrainConfigError(f"training config {str(file)!r} is not valid TOML: {exc}") from None
    return config_from_dict(data, recipe=recipe, overrides=overrides, source=file)
