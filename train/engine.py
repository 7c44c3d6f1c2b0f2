"""The training engine every recipe shares (after torchvision's ``references/detection``).

A recipe builds a :class:`TrainTask` (model, data, loss, validation, how to write the member
checkpoint) and calls :func:`fit`, which owns everything else:

- AdamW over the task's parameter groups; warmup then cosine (or linear/constant) schedule
  sized in optimizer *steps*, never seconds (shared cores make timings lie, docs/stack-notes.md);
- gradient accumulation (``grad_accum`` micro-batches per step; a short last group is scaled
  up so every step sees a mean gradient), gradient clipping, bf16 autocast on CUDA;
- a non-finite loss or gradient stops the run with :class:`NonFiniteLossError` before the
  weights are touched;
- validation under ``torch.inference_mode`` after each epoch; early stopping on the monitored
  metric (validation F1 by default), the best member checkpoint kept in ``out/best``;
- resume from ``out/last`` (trainable weights in safetensors, optimizer and scheduler with
  ``torch.load(weights_only=True)``, progress as JSON). Data order and dropout are seeded per
  epoch from the run's seed, so a resumed run repeats what an uninterrupted one does;
- ``metrics.csv``, ``loss.png``, ``f1.png`` and ``config.json`` in ``out``; progress bars on
  a terminal.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from train.train_config import LoopConfig, OptimConfig, TrainConfig
from train.errors import NonFiniteLossError, TrainError
from train.run_files import (
    METRICS_FILE,
    existing_dir,
    load_last,
    read_trainer_state,
    replace_dir,
    save_last,
    write_config,
    write_curves,
    write_metrics_csv,
)

logger = logging.getLogger(__name__)

CURVE_INTERVAL_S = 60.0
"""Redraw the curve PNGs after an epoch at most this often (always at the end of a run)."""


@dataclass
class StepLoss:
    """A micro-batch's loss: the total to back-propagate and its named parts, for the log."""

    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class TrainTask(Protocol):
    """What a recipe hands to :func:`fit`.

    Attributes:
        model: the module being trained (its ``train()``/``eval()`` are switched by the engine).
    """

    model: torch.nn.Module

    def param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        """Trainable parameters as AdamW groups (``{"params": [...], "lr": ...}``)."""
        ...

    def num_batches(self) -> int:
        """Micro-batches in one pass over the training data."""
        ...

    def train_batches(self, generator: torch.Generator) -> Iterable[Any]:
        """One pass over the training data, shuffled with ``generator``."""
        ...

    def training_loss(self, batch: Any) -> StepLoss:
        """The loss of one micro-batch (the engine handles autocast and accumulation)."""
        ...

    def evaluate(self) -> dict[str, float]:
        """Validation metrics (called in eval mode under ``torch.inference_mode``)."""
        ...

    def save_member(self, directory: Path) -> None:
        """Write the member checkpoint the screener loads into ``directory``."""
        ...


@runtime_checkable
class StepAware(Protocol):
    """A task whose loss depends on where training is (a loss schedule): :func:`fit` tells it
    the optimizer step each micro-batch belongs to, a resumed run included."""

    def set_step(self, step: int, total: int) -> None:
        """``step``: optimizer steps done before this micro-batch; ``total``: steps planned."""
        ...


@dataclass
class FitResult:
    """What a finished :func:`fit` reports."""

    out: Path
    best_dir: Path | None
    best_metric: float | None
    best_epoch: int | None
    epochs_run: int
    global_step: int
    stopped: str
    history: list[dict[str, Any]]


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is ``bf16-mixed`` on CUDA and ``fp32`` elsewhere; other values stay."""
    if precision == "auto":
        return "bf16-mixed" if device.type == "cuda" else "fp32"
    return precision


def planned_steps(loop: LoopConfig, batches_per_pass: int) -> tuple[int, int]:
    """``(steps per epoch, total steps)`` the schedule is sized for."""
    per_epoch = loop.epoch_steps or max(1, math.ceil(batches_per_pass / loop.grad_accum))
    total = per_epoch * loop.epochs
    if loop.max_steps:
        total = min(total, loop.max_steps)
    return per_epoch, max(1, total)


def lr_factor(step: int, total: int, optim: OptimConfig) -> float:
    """Multiplier of each group's lr at optimizer step ``step`` (0-based): linear warmup over
    ``warmup_steps``, then cosine/linear decay to ``min_lr_ratio`` at ``total``, or constant."""
    warmup = optim.warmup_steps
    if warmup and step < warmup:
        return (step + 1) / (warmup + 1)
    if optim.schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    if optim.schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * shape


def _epoch_seed(seed: int, epoch: int, index: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % (2**63 - 1)


def _micro_batches(task: TrainTask, config: TrainConfig, epoch: int) -> Iterator[Any]:
    """The epoch's micro-batches: one pass, or ``epoch_steps * grad_accum`` over fresh passes."""
    wanted = config.train.epoch_steps * config.train.grad_accum
    produced = 0
    pass_index = 0
    while True:
        generator = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch, pass_index))
        empty = True
        for batch in task.train_batches(generator):
            empty = False
            yield batch
            produced += 1
            if wanted and produced >= wanted:
                return
        if not wanted or empty:
            return
        pass_index += 1


def _improved(value: float, best: float | None, mode: str, delta: float) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + delta if mode == "max" else value < best - delta


def _progress_enabled(setting: str) -> bool:
    if setting == "on":
        return True
    if setting == "off":
        return False
    return sys.stderr.isatty()


def _train_epoch(
    task: TrainTask,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    state: dict[str, Any],
    autocast: bool,
    device: torch.device,
) -> dict[str, float]:
    """One epoch of optimizer steps; returns the mean of each loss part over its micro-batches."""
    loop = config.train
    per_epoch, total = planned_steps(loop, task.num_batches())
    expected = per_epoch * loop.grad_accum if loop.epoch_steps else task.num_batches()
    sums: dict[str, float] = {}
    count = 0
    pending = 0
    params = [p for group in optimizer.param_groups for p in group["params"]]
    bar = tqdm(total=expected, desc=f"epoch {epoch + 1}/{loop.epochs}", unit="batch",
               disable=not _progress_enabled(loop.progress), leave=False, dynamic_ncols=True)

    def step() -> None:
        nonlocal pending
        if pending < loop.grad_accum:  # a short last group: make it a mean gradient too
            for param in params:
                if param.grad is not None:
                    param.grad.mul_(loop.grad_accum / pending)
        if config.optim.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if not torch.isfinite(torch.as_tensor(norm)):
            raise NonFiniteLossError(
                f"non-finite gradient norm at epoch {epoch + 1}, step {state['global_step'] + 1}; "
                "lower [optim] lr or check the data"
            )
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["global_step"] += 1
        pending = 0

    step_aware = task if isinstance(task, StepAware) else None
    optimizer.zero_grad(set_to_none=True)
    try:
        for batch in _micro_batches(task, config, epoch):
            if step_aware is not None:
                step_aware.set_step(int(state["global_step"]), total)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = task.training_loss(batch)
            if not torch.isfinite(loss.total.detach()).all():
                raise NonFiniteLossError(
                    f"non-finite loss {float(loss.total.detach())} at epoch {epoch + 1}, step "
                    f"{state['global_step'] + 1} (parts {loss.parts}); lower [optim] lr, check "
                    "the data, or use [train] precision = \"fp32\""
                )
            (loss.total / loop.grad_accum).backward()
            pending += 1
            count += 1
            sums["loss"] = sums.get("loss", 0.0) + float(loss.total.detach())
            for key, value in loss.parts.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / count:.4f}")
            if pending == loop.grad_accum:
                step()
                if loop.max_steps and state["global_step"] >= loop.max_steps:
                    break
        if pending:
            step()
    finally:
        bar.close()
    if count == 0:
        raise TrainError("the training data gave no batches; check the DATA folder's train split")
    return {f"train_{key}": value / count for key, value in sums.items()}


def _evaluate(task: TrainTask, autocast: bool, device: torch.device) -> dict[str, float]:
    task.model.eval()
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                   enabled=autocast):
            metrics = task.evaluate()
    finally:
        task.model.train()
    return {str(k): float(v) for k, v in metrics.items()}


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless module)."""
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def _loop(
    task: TrainTask,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    autocast: bool,
    device: torch.device,
) -> str:
    """The epochs of :func:`fit`; returns why they ended."""
    loop, out = config.train, Path(config.out)
    plotted = time.monotonic()
    for epoch in range(int(state["epoch"]), loop.epochs):
        if loop.max_steps and state["global_step"] >= loop.max_steps:
            return "max_steps"
        torch.manual_seed(_epoch_seed(config.seed, epoch, 999))
        started = time.monotonic()
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update(_train_epoch(task, config, optimizer, scheduler, epoch, state, autocast, device))
        last_epoch = epoch + 1 == loop.epochs or bool(
            loop.max_steps and state["global_step"] >= loop.max_steps
        )
        if (epoch + 1) % loop.eval_every == 0 or last_epoch:
            row.update(_evaluate(task, autocast, device))
        row["step"] = state["global_step"]
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["seconds"] = round(time.monotonic() - started, 3)
        value = row.get(loop.monitor)
        if value is not None and _improved(value, state["best"], loop.monitor_mode, loop.min_delta):
            state.update(best=value, best_epoch=epoch + 1, bad_epochs=0)
            replace_dir(out / "best", task.save_member)
        elif value is not None:
            state["bad_epochs"] += 1
        elif any(not k.startswith("train_") and k not in ("epoch", "step", "lr", "seconds")
                 for k in row):
            raise TrainError(
                f"[train] monitor = {loop.monitor!r} is not among the validation metrics "
                f"{sorted(k for k in row if not k.startswith('train_'))}; pick one of them"
            )
        state["history"].append(row)
        state["epoch"] = epoch + 1
        write_metrics_csv(out / METRICS_FILE, state["history"])
        if time.monotonic() - plotted >= CURVE_INTERVAL_S:
            write_curves(out, state["history"], loop.monitor)
            plotted = time.monotonic()
        save_last(out / "last", task.model, optimizer, scheduler, state)
        logger.info("epoch %d: %s", epoch + 1, _format_row(row))
        if loop.patience and state["bad_epochs"] >= loop.patience:
            return "early_stopping"
        if loop.max_steps and state["global_step"] >= loop.max_steps:
            return "max_steps"
    return "epochs"


def fit(task: TrainTask, config: TrainConfig) -> FitResult:
    """Train ``task`` as ``config`` says; returns where the best member checkpoint is.

    Raises:
        NonFiniteLossError: a loss or gradient became NaN/inf.
        TrainError: the data gave no batches, or ``out/last`` belongs to a different run.
    """
    loop, out = config.train, Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, config.to_dict(), config.source)
    if loop.threads:
        torch.set_num_threads(loop.threads)
    device = model_device(task.model)
    autocast = resolve_precision(loop.precision, device) == "bf16-mixed"
    groups = task.param_groups(config.optim)
    if not any(p.requires_grad for g in groups for p in g["params"]):
        raise TrainError("the task has no trainable parameters; check the recipe's freezing")
    beta1, beta2 = config.optim.betas  # two numbers: checked when the config was read
    optimizer = torch.optim.AdamW(groups, lr=config.optim.lr, betas=(beta1, beta2),
                                  eps=config.optim.eps, weight_decay=config.optim.weight_decay)
    _, total = planned_steps(loop, task.num_batches())
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, config.optim)
    )
    state: dict[str, Any] = {
        "epoch": 0, "global_step": 0, "best": None, "best_epoch": None, "bad_epochs": 0,
        "history": [], "fingerprint": config.fingerprint(), "total_steps": total,
    }
    last = existing_dir(out / "last")
    if loop.resume and last is not None:
        if read_trainer_state(last).get("fingerprint") != state["fingerprint"]:
            raise TrainError(
                f"{str(out / 'last')!r} was written by a run with a different config; use a new "
                "out folder, delete last/, or set [train] resume = false"
            )
        state.update(load_last(last, task.model, optimizer, scheduler))
        if state.get("total_steps") not in (None, total):
            logger.warning(
                "resumed run's schedule re-sized from %s to %d steps ([train] epochs or "
                "max_steps changed)", state["total_steps"], total,
            )
        state["total_steps"] = total
        logger.info("resumed from %s at epoch %d, step %d", last, state["epoch"], state["global_step"])
    task.model.train()
    start_epoch = int(state["epoch"])
    try:
        stopped = _loop(task, config, optimizer, scheduler, state, autocast, device)
    finally:
        if state["history"]:
            write_curves(out, state["history"], loop.monitor)
    if state["best"] is None and state["history"]:
        # No validation metric ever improved (e.g. all NaN): keep the last weights as "best" so
        # the run still yields a loadable member, and say so.
        logger.warning("no epoch improved %s; best/ holds the last epoch", loop.monitor)
        replace_dir(out / "best", task.save_member)
    best_dir = out / "best" if (out / "best").exists() else None
    return FitResult(
        out=out, best_dir=best_dir, best_metric=state["best"], best_epoch=state["best_epoch"],
        epochs_run=int(state["epoch"]) - start_epoch, global_step=int(state["global_step"]),
        stopped=stopped, history=list(state["history"]),
    )


def _format_row(row: Mapping[str, Any]) -> str:
    parts = []
    for key, value in row.items():
        if key == "epoch":
            continue
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)
