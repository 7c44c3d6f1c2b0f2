"""The training engine on a toy task: schedule, accumulation, overfit, stopping, resume, files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable

import pytest
import torch
from safetensors.torch import load_file

from train.train_config import LoopConfig, OptimConfig, config_from_dict
from train.engine import StepLoss, fit, lr_factor, planned_steps
from train.errors import NonFiniteLossError, TrainError


class ToyTask:
    """Logistic regression with a dropout layer on 24 separable points (fast, deterministic)."""

    def __init__(self, *, shuffle: bool = True, poison_after: int | None = None,
                 f1_values: list[float] | None = None, metric: str = "f1") -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(24, 4, generator=gen)
        self.y = (self.x[:, 0] + 0.5 * self.x[:, 1] > 0).long()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.model = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(4, 2))
        self.shuffle = shuffle
        self.batch_size = 4
        self.poison_after = poison_after
        self.calls = 0
        self.f1_values = list(f1_values or [])
        self.metric = metric
        self.saved: list[dict[str, torch.Tensor]] = []

    def param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters()), "lr": optim.lr}]

    def num_batches(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def train_batches(self, generator: torch.Generator) -> Iterable[Any]:
        order = torch.randperm(len(self.x), generator=generator) if self.shuffle else torch.arange(len(self.x))
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.x[index], self.y[index]

    def training_loss(self, batch: Any) -> StepLoss:
        self.calls += 1
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        if self.poison_after is not None and self.calls > self.poison_after:
            loss = loss * float("nan")
        return StepLoss(loss, {"ce": float(loss.detach())})

    def evaluate(self) -> dict[str, float]:
        assert torch.is_inference_mode_enabled() and not self.model.training
        if self.f1_values:
            return {self.metric: self.f1_values.pop(0)}
        accuracy = float((self.model(self.x).argmax(1) == self.y).float().mean())
        return {self.metric: accuracy, "val_loss": float(torch.nn.functional.cross_entropy(self.model(self.x), self.y))}

    def save_member(self, directory: Path) -> None:
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.saved.append(state)
        torch.save(state, directory / "weights.pt")


def _config(tmp_path: Path, **train: Any) -> Any:
    loop = {"batch_size": 4, "grad_accum": 1, "epochs": 3, "progress": "off", "patience": 0, **train}
    optim = {"lr": 0.5, "warmup_steps": 0, "schedule": "constant", "grad_clip": 0.0}
    return config_from_dict({"data": str(tmp_path), "out": str(tmp_path / "run"), "train": loop,
                             "optim": optim})


def test_lr_schedule_warmup_then_cosine() -> None:
    optim = OptimConfig(lr=1.0, warmup_steps=2, schedule="cosine")
    assert lr_factor(0, 10, optim) == pytest.approx(1 / 3)
    assert lr_factor(1, 10, optim) == pytest.approx(2 / 3)
    assert lr_factor(2, 10, optim) == pytest.approx(1.0)
    assert lr_factor(6, 10, optim) == pytest.approx(0.5)  # half-way through the 8 decay steps
    assert lr_factor(10, 10, optim) == pytest.approx(0.0, abs=1e-12)
    floor = OptimConfig(lr=1.0, warmup_steps=0, schedule="linear", min_lr_ratio=0.1)
    assert lr_factor(5, 10, floor) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(3, 10, OptimConfig(warmup_steps=0, schedule="constant")) == 1.0


def test_planned_steps_by_steps_not_seconds() -> None:
    assert planned_steps(LoopConfig(grad_accum=8, epochs=50), 100) == (13, 650)
    assert planned_steps(LoopConfig(grad_accum=2, epochs=10, epoch_steps=5), 3) == (5, 50)
    assert planned_steps(LoopConfig(grad_accum=1, epochs=10, max_steps=7), 100) == (100, 7)


def test_overfit_loss_falls_and_files_are_written(tmp_path: Path) -> None:
    task = ToyTask()
    task.model[0].p = 0.0
    result = fit(task, _config(tmp_path, epochs=8))
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.history[-1]["f1"] >= 0.9
    out = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "loss.png", "f1.png", "last/weights.safetensors",
                 "last/optimizer.pt", "last/trainer.json", "best/weights.pt"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 8 and rows[0]["epoch"] == "1" and "train_ce" in rows[0] and "f1" in rows[0]
    assert float(rows[-1]["train_loss"]) == pytest.approx(losses[-1], rel=1e-4)
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 8
    saved = torch.load(out / "last" / "optimizer.pt", weights_only=True)
    assert set(saved) == {"optimizer", "scheduler"}
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert result.global_step == 8 * 6 and result.stopped == "epochs"


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path: Path) -> None:
    big, small = ToyTask(shuffle=False), ToyTask(shuffle=False)
    small.batch_size = 2
    big.model[0].p = small.model[0].p = 0.0  # no dropout: the two must agree exactly
    fit(big, _config(tmp_path / "a", epochs=1, grad_accum=1))
    fit(small, _config(tmp_path / "b", epochs=1, grad_accum=2))
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_short_last_accumulation_group_is_a_mean(tmp_path: Path) -> None:
    # 6 batches with grad_accum 4: steps of 4 and 2 micro-batches
    task = ToyTask()
    result = fit(task, _config(tmp_path, epochs=1, grad_accum=4))
    assert result.global_step == 2


def test_non_finite_loss_stops_the_run(tmp_path: Path) -> None:
    task = ToyTask(poison_after=8)
    with pytest.raises(NonFiniteLossError, match="non-finite loss nan at epoch 2"):
        fit(task, _config(tmp_path))
    trainer = json.loads((tmp_path / "run" / "last" / "trainer.json").read_text())
    assert trainer["epoch"] == 1  # the poisoned epoch was never saved


def test_early_stopping_keeps_the_best_checkpoint(tmp_path: Path) -> None:
    task = ToyTask(f1_values=[0.4, 0.8, 0.7, 0.6, 0.9])
    result = fit(task, _config(tmp_path, epochs=5, patience=2))
    assert result.stopped == "early_stopping" and result.best_epoch == 2
    assert result.best_metric == pytest.approx(0.8) and len(result.history) == 4
    best = torch.load(tmp_path / "run" / "best" / "weights.pt", weights_only=True)
    assert torch.equal(best["1.weight"], task.saved[-1]["1.weight"])
    assert len(task.saved) == 2  # epochs 1 and 2 improved


def test_monitor_minimises_losses(tmp_path: Path) -> None:
    task = ToyTask(f1_values=[0.5, 0.3, 0.4], metric="val_loss")
    result = fit(task, _config(tmp_path, epochs=3, monitor="val_loss"))
    assert result.best_epoch == 2 and result.best_metric == pytest.approx(0.3)


def test_unknown_monitor_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="monitor = 'map' is not among the validation metrics"):
        fit(ToyTask(), _config(tmp_path, monitor="map"))


class Crash(Exception):
    """Stands for a killed process."""


def test_resumed_run_continues_where_it_stopped(tmp_path: Path) -> None:
    def config(out: str) -> Any:
        cfg = _config(tmp_path / out, epochs=4)
        return cfg.replace(optim=cfg.optim.replace(schedule="cosine", warmup_steps=3))

    straight = ToyTask()
    full = fit(straight, config("straight"))
    first = ToyTask()
    passes = first.train_batches

    def crash_in_epoch_3(generator: torch.Generator) -> Iterable[Any]:
        crash_in_epoch_3.calls += 1  # type: ignore[attr-defined]
        for index, batch in enumerate(passes(generator)):
            if crash_in_epoch_3.calls == 3 and index == 2:  # type: ignore[attr-defined]
                raise Crash
            yield batch

    crash_in_epoch_3.calls = 0  # type: ignore[attr-defined]
    first.train_batches = crash_in_epoch_3  # type: ignore[method-assign]
    with pytest.raises(Crash):
        fit(first, config("resumed"))
    second = ToyTask()  # a fresh process: new model, same config
    rest = fit(second, config("resumed"))
    assert rest.epochs_run == 2 and rest.global_step == full.global_step
    for a, b in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert [r["train_loss"] for r in rest.history] == pytest.approx([r["train_loss"] for r in full.history])
    assert [r["lr"] for r in rest.history] == pytest.approx([r["lr"] for r in full.history])
    weights = load_file(str(tmp_path / "resumed" / "run" / "last" / "weights.safetensors"))
    assert set(weights) == {"1.weight", "1.bias"}


def test_resume_refuses_a_different_run(tmp_path: Path) -> None:
    fit(ToyTask(), _config(tmp_path, epochs=1))
    changed = _config(tmp_path, epochs=2)
    changed = changed.replace(optim=changed.optim.replace(lr=0.1))  # configs are frozen
    with pytest.raises(TrainError, match="different config"):
        fit(ToyTask(), changed)
    changed = changed.replace(train=changed.train.replace(resume=False))
    assert fit(ToyTask(), changed).epochs_run == 2


def test_max_steps_and_epoch_steps(tmp_path: Path) -> None:
    result = fit(ToyTask(), _config(tmp_path, epochs=10, epoch_steps=4, max_steps=10))
    assert result.global_step == 10 and result.stopped == "max_steps"
    assert [row["step"] for row in result.history] == [4, 8, 10]


class StepTask(ToyTask):
    """A toy task that records the step the engine tells it before each micro-batch."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list[tuple[int, int]] = []

    def set_step(self, step: int, total: int) -> None:
        self.told.append((step, total))


def test_a_step_aware_task_is_told_each_micro_batch_its_optimizer_step(tmp_path: Path) -> None:
    """``StepAware`` tasks (a loss schedule) learn the optimizer step of every micro-batch:
    with accumulation 2, two micro-batches share a step; a resumed run goes on counting."""
    task = StepTask()
    fit(task, _config(tmp_path / "a", epochs=2, grad_accum=2))
    # 6 micro-batches per pass, 3 steps per epoch; a micro-batch is told the steps done before it
    assert task.told == [(s, 6) for s in (0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5)]
    assert not hasattr(ToyTask(), "set_step")  # tasks without it are left alone (ToyTask above)
    first = StepTask()
    fit(first, _config(tmp_path / "b", epochs=1))
    again = StepTask()
    fit(again, _config(tmp_path / "b", epochs=2))  # resumes after epoch 1
    assert [s for s, _ in first.told] == [0, 1, 2, 3, 4, 5]
    assert [s for s, _ in again.told] == [6, 7, 8, 9, 10, 11]
