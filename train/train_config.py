"""Training configs: TOML files into typed, validated dataclasses.

One file describes one run (big_vision's ``get_config()`` files, as TOML, with no string
mini-languages). Top-level keys name the run; tables hold the engine's knobs and the recipe's::

    # screen train classifier --config train/configs/classifier.toml
    data = "data/prepared"      # DATA folder written by `screen prepare`
    out = "runs/classifier"     # run folder: config, metrics.csv, curves, last/, best/
    seed = 0
    device = "auto"             # "auto" (CUDA when present), "cpu", "cuda", "cuda:1"

    [train]     # the loop: batch, accumulation, epochs, early stopping   (LoopConfig)
    [optim]     # AdamW and the warmup + cosine schedule, sized in steps  (OptimConfig)
    [loss]      # token CE, decision-token CE/WCE/focal, CIoU, patch aux   (LossConfig)
    [paligemma] # the PaliGemma recipes (classifier, detector)            (PaliGemmaSection)
    [detr], [refiner], ...      # other recipes' tables, parsed by their recipe with
                                # :func:`parse_dataclass` (kept raw in ``sections``)

Relative paths are resolved against the current directory when the config is loaded (the
example configs are run from the repository root, as their first comment says). Defaults are
the paper's recipe (batch 2, accumulation 8, lr 2e-5 cosine with 2 warmup steps, AdamW with
weight decay 1e-6 and betas 0.9/0.999, bf16 on CUDA, up to 50 epochs with early stopping on
validation F1).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

from train.errors import TrainConfigError

T = TypeVar("T")

PRECISIONS: tuple[str, ...] = ("auto", "bf16-mixed", "bf16", "fp32")
SCHEDULES: tuple[str, ...] = ("cosine", "linear", "constant")
DECISION_LOSSES: tuple[str, ...] = ("ce", "wce", "focal", "none")
METHODS: tuple[str, ...] = ("full", "qlora")
QUANTIZATIONS: tuple[str, ...] = ("8bit", "4bit")
PROGRESS: tuple[str, ...] = ("auto", "on", "off")
MINIMISED_METRICS: tuple[str, ...] = ("val_loss", "loss")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise TrainConfigError(message)


@dataclass
class LoopConfig:
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

    batch_size: int = 2
    grad_accum: int = 8
    epochs: int = 50
    max_steps: int = 0
    epoch_steps: int = 0
    patience: int = 5
    monitor: str = "f1"
    min_delta: float = 0.0
    precision: str = "auto"
    gradient_checkpointing: bool = False
    resume: bool = True
    progress: str = "auto"
    threads: int = 0
    eval_batch_size: int = 8
    num_workers: int = 0
    eval_every: int = 1

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "epochs", "eval_batch_size", "eval_every"):
            _check(getattr(self, name) >= 1, f"[train] {name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "epoch_steps", "patience", "threads", "num_workers"):
            _check(
                getattr(self, name) >= 0,
                f"[train] {name} must be >= 0 (0 = off/default), got {getattr(self, name)}",
            )
        _check(bool(self.monitor), "[train] monitor must name a validation metric, e.g. 'f1'")
        _check(self.min_delta >= 0, f"[train] min_delta must be >= 0, got {self.min_delta}")
        _check(
            self.precision in PRECISIONS,
            f"[train] precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
        )
        _check(
            self.progress in PROGRESS,
            f"[train] progress must be one of {', '.join(PROGRESS)}, got {self.progress!r}",
        )

    @property
    def monitor_mode(self) -> str:
        """``"min"`` for losses, ``"max"`` for every other metric."""
        return "min" if self.monitor in MINIMISED_METRICS or self.monitor.endswith("loss") else "max"


@dataclass
class OptimConfig:
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

    lr: float = 2e-5
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 2
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    head_lr: float = 0.0

    def __post_init__(self) -> None:
        _check(self.lr > 0 and math.isfinite(self.lr), f"[optim] lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"[optim] weight_decay must be >= 0, got {self.weight_decay}")
        _check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"[optim] betas must be two numbers in [0, 1), got {list(self.betas)}",
        )
        _check(self.eps > 0, f"[optim] eps must be > 0, got {self.eps}")
        _check(self.warmup_steps >= 0, f"[optim] warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(
            self.schedule in SCHEDULES,
            f"[optim] schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
        )
        _check(
            0 <= self.min_lr_ratio <= 1,
            f"[optim] min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}",
        )
        _check(self.grad_clip >= 0, f"[optim] grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        _check(self.head_lr >= 0, f"[optim] head_lr must be >= 0 (0 = lr), got {self.head_lr}")


@dataclass
class LossConfig:
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
        loc_sigma: smoothed location targets: the CE target of a loc position is a Gaussian
            over neighbouring bins with this standard deviation in bins (0: one-hot).
        patch_aux_weight: weight of the auxiliary SigLIP patch loss (a linear head predicts
            whether each patch overlaps a truth box; 0: off). It made a from-scratch tiny
            model learn on the CPU where the token loss alone did not (STACK-NOTES).
        patch_pos_weight: BCE weight of positive patches (they are rare).
    """

    token_weight: float = 1.0
    decision: str = "ce"
    decision_weight: float = 1.0
    class_weights: tuple[float, float] = (1.0, 1.0)
    focal_gamma: float = 2.0
    ciou_weight: float = 0.0
    loc_sigma: float = 0.0
    patch_aux_weight: float = 0.0
    patch_pos_weight: float = 1.0

    def __post_init__(self) -> None:
        _check(
            self.decision in DECISION_LOSSES,
            f"[loss] decision must be one of {', '.join(DECISION_LOSSES)}, got {self.decision!r}",
        )
        for name in ("token_weight", "decision_weight", "focal_gamma", "ciou_weight",
                     "loc_sigma", "patch_aux_weight"):
            value = getattr(self, name)
            _check(value >= 0 and math.isfinite(value), f"[loss] {name} must be >= 0, got {value}")
        _check(
            len(self.class_weights) == 2 and all(w > 0 for w in self.class_weights),
            f"[loss] class_weights must be two numbers > 0 ([fracture, normal]), "
            f"got {list(self.class_weights)}",
        )
        _check(self.patch_pos_weight > 0, f"[loss] patch_pos_weight must be > 0, got {self.patch_pos_weight}")


@dataclass
class PaliGemmaSection:
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
        max_val_images: validate on at most this many images (0: all), to bound CPU time.
        eval_boxes: also decode boxes on validation (detector) and report box matching.
    """

    base: str = ""
    tiny: dict[str, Any] = field(default_factory=dict)
    method: str = "full"
    siglip_unfreeze: int = 5
    quantization: str = "4bit"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_mlp: bool = False
    task_head: int = 0
    jsonl: str = ""
    prompt: str = ""
    labels: tuple[str, ...] = ()
    name: str = ""
    threshold: float = 0.5
    canny_blend: float = 0.0
    clahe: bool = False
    cache_images: bool = True
    augment: bool = False
    max_val_images: int = 0
    eval_boxes: bool = False

    def __post_init__(self) -> None:
        _check(
            self.method in METHODS,
            f"[paligemma] method must be one of {', '.join(METHODS)}, got {self.method!r}",
        )
        _check(
            self.siglip_unfreeze >= -1,
            f"[paligemma] siglip_unfreeze must be >= 0 (or -1 for all of SigLIP), "
            f"got {self.siglip_unfreeze}",
        )
        _check(
            self.quantization in QUANTIZATIONS,
            f"[paligemma] quantization must be one of {', '.join(QUANTIZATIONS)}, "
            f"got {self.quantization!r}",
        )
        _check(self.lora_r >= 1, f"[paligemma] lora_r must be >= 1, got {self.lora_r}")
        _check(self.lora_alpha > 0, f"[paligemma] lora_alpha must be > 0, got {self.lora_alpha}")
        _check(
            0 <= self.lora_dropout < 1,
            f"[paligemma] lora_dropout must be in [0, 1), got {self.lora_dropout}",
        )
        _check(self.task_head >= 0, f"[paligemma] task_head must be >= 0, got {self.task_head}")
        _check(0 <= self.threshold <= 1, f"[paligemma] threshold must be in [0, 1], got {self.threshold}")
        _check(
            0 <= self.canny_blend <= 1,
            f"[paligemma] canny_blend must be in [0, 1], got {self.canny_blend}",
        )
        _check(self.max_val_images >= 0, f"[paligemma] max_val_images must be >= 0, got {self.max_val_images}")
        _check(
            bool(self.base) or bool(self.tiny),
            "[paligemma] needs base = \"<local PaliGemma directory>\" or a [paligemma.tiny] table "
            "to build a model from scratch",
        )


@dataclass
class TrainConfig:
    """One training run.

    Attributes:
        data: the DATA folder written by ``screen prepare``.
        out: the run folder (config, ``metrics.csv``, curve PNGs, ``last/``, ``best/``).
        recipe: which ``screen train`` recipe (``classifier``, ``detector``, ``detr``,
            ``refiner``); the command line sets it and must agree with the file's.
        seed: seeds the model init, the data order and dropout (per epoch, so resuming repeats
            exactly what an uninterrupted run does).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        train: the ``[train]`` table.
        optim: the ``[optim]`` table.
        loss: the ``[loss]`` table.
        paligemma: the ``[paligemma]`` table (``None`` when the file has none).
        sections: every other table, raw, for its recipe to parse with :func:`parse_dataclass`.
        source: the TOML file it came from (``None`` when built in code).
    """

    data: Path
    out: Path
    recipe: str = ""
    seed: int = 0
    device: str = "auto"
    train: LoopConfig = field(default_factory=LoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    paligemma: PaliGemmaSection | None = None
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: Path | None = None

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        self.out = Path(self.out)
        _check(bool(str(self.device)), "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'")

    def section(self, name: str, cls: type[T]) -> T:
        """The raw table ``[name]`` parsed into the dataclass ``cls`` (defaults when absent)."""
        return parse_dataclass(cls, self.sections.get(name, {}), where=f"[{name}]")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the resolved config (what a run writes as ``config.json``)."""
        return _jsonable(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        """A stable JSON text of what defines the run (without ``train.resume``/``progress``).

        A resumed run must match this, or it would mix two different trainings.
        """
        data = self.to_dict()
        data.pop("source", None)
        for key in ("resume", "progress", "threads", "num_workers", "max_steps", "epochs",
                    "patience"):
            data["train"].pop(key, None)
        return json.dumps(data, sort_keys=True)


_TOP_LEVEL = {"data", "out", "recipe", "seed", "device"}
_TABLES: dict[str, type] = {"train": LoopConfig, "optim": OptimConfig, "loss": LossConfig,
                            "paligemma": PaliGemmaSection}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` (from TOML) as the type ``hint`` says, or a :class:`TrainConfigError`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except TrainConfigError as exc:
                errors.append(str(exc))
        raise TrainConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return parse_dataclass(hint, value, where=where)
    if hint is bool:
        if not isinstance(value, bool):
            raise TrainConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TrainConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TrainConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TrainConfigError(f"{where} must be a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise TrainConfigError(f"{where} must be a path string, got {value!r}")
        return Path(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TrainConfigError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise TrainConfigError(f"{where} must list {len(args)} values, got {list(value)!r}")
        return tuple(_convert(v, a, where) for v, a in zip(value, args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise TrainConfigError(f"{where} must be a list, got {value!r}")
        return [_convert(v, args[0] if args else Any, where) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise TrainConfigError(f"{where} must be a table, got {value!r}")
        return dict(value)
    return value


def parse_dataclass(cls: type[T], data: Mapping[str, Any], *, where: str = "config") -> T:
    """Build the dataclass ``cls`` from a TOML table, checking names and types.

    Every field must have a default (or be present); unknown keys are refused with the list of
    valid ones, so a typo never silently falls back to a default. The dataclass's own
    ``__post_init__`` then checks ranges.

    Raises:
        TrainConfigError: unknown key, wrong type, or a value the dataclass refuses.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"parse_dataclass needs a dataclass, got {cls!r}")
    if not isinstance(data, Mapping):
        raise TrainConfigError(f"{where} must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise TrainConfigError(
            f"{where} has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}"
        )
    kwargs = {key: _convert(value, hints[key], f"{where} {key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise TrainConfigError(f"{where}: {exc}") from None


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


def config_from_dict(
    data: Mapping[str, Any],
    *,
    recipe: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    source: Path | None = None,
) -> TrainConfig:
    """Build a :class:`TrainConfig` from parsed TOML (plus dotted ``overrides``).

    Raises:
        TrainConfigError: a missing ``data``/``out``, an unknown key, a bad value, or a
            ``recipe`` that disagrees with the file's.
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
    kwargs: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if key in _TOP_LEVEL:
            hint = {"data": Path, "out": Path, "recipe": str, "seed": int, "device": str}[key]
            kwargs[key] = _convert(value, hint, key)
        elif key in _TABLES:
            kwargs[key] = parse_dataclass(_TABLES[key], value, where=f"[{key}]")
        elif isinstance(value, dict):
            sections[key] = value
        else:
            raise TrainConfigError(
                f"unknown top-level key {key!r}; valid keys: {', '.join(sorted(_TOP_LEVEL))} "
                f"and tables [{'], ['.join(_TABLES)}] or a recipe's table"
            )
    return TrainConfig(**kwargs, sections=sections, source=source)


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
