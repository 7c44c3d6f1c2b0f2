"""What a training run leaves in its folder, apart from the weights the recipe writes.

- ``config.json``: the resolved config (and ``config.toml``, a copy of the file it came from);
- ``metrics.csv``: one row per epoch (train losses, learning rate, validation metrics);
- ``loss.png`` and ``f1.png``: the loss curves and the validation metric curves;
- ``last/``: the resume point: trainable weights (safetensors), optimizer and scheduler state
  (``torch.save``, read back with ``weights_only=True``), the trainer's progress (JSON);
- ``best/``: the best checkpoint so far, in the member format the screener loads.

Folders are replaced whole: written beside the target, then renamed over it, so a run killed
at any moment leaves either the old folder or the new one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file

from dicom_io.tables import TRAINING_METRICS, write_table
from ensembles.checkpoint import atomic_write_text
from train.errors import TrainError

WEIGHTS_FILE = "weights.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
TRAINER_FILE = "trainer.json"
METRICS_FILE = "metrics.csv"


def replace_dir(target: Path, write: Callable[[Path], Any]) -> Path:
    """Fill a fresh folder with ``write(folder)`` and swap it in place of ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        write(tmp)
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def existing_dir(target: Path) -> Path | None:
    """``target``, or the ``.old`` copy a run killed mid-swap left, or ``None``."""
    if (Path(target) / TRAINER_FILE).is_file():
        return Path(target)
    old = Path(target).with_name(f".{Path(target).name}.old")
    return old if (old / TRAINER_FILE).is_file() else None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a resume needs: trainable parameters and floating-point buffers.

    Frozen parameters are rebuilt from the same base and seed when the run restarts, so they
    are not written (for a 10B QLoRA run that is the difference between megabytes and 10 GB).
    """
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name in trainable or (name in buffers and tensor.is_floating_point()):
            state[name] = tensor.detach().to("cpu").contiguous().clone()
    return state


def save_last(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer: Mapping[str, Any],
) -> Path:
    """Write the resume point ``directory`` (replaced whole)."""

    def write(folder: Path) -> None:
        save_file(trainable_state(model), str(folder / WEIGHTS_FILE))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
            folder / OPTIMIZER_FILE,
        )
        (folder / TRAINER_FILE).write_text(
            json.dumps(trainer, indent=2, sort_keys=True, allow_nan=True), encoding="utf-8"
        )

    return replace_dir(directory, write)


def load_last(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> dict[str, Any]:
    """Restore model, optimizer and scheduler from ``directory``; returns the trainer state.

    Raises:
        TrainError: a trainable parameter is missing from the saved weights (the run's model
            changed since it was saved).
    """
    state = load_file(str(directory / WEIGHTS_FILE))
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    missing = [name for name in trainable if name not in state]
    if missing:
        raise TrainError(
            f"cannot resume from {str(directory)!r}: it lacks trainable weights "
            f"{', '.join(missing[:5])}; the model differs from the saved run (delete "
            "last/ or set [train] resume = false to start over)"
        )
    model.load_state_dict(state, strict=False)
    saved = torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return read_trainer_state(directory)


def read_trainer_state(directory: Path) -> dict[str, Any]:
    """The progress JSON of a resume point (epoch, step, best metric, history, fingerprint)."""
    trainer: dict[str, Any] = json.loads((directory / TRAINER_FILE).read_text(encoding="utf-8"))
    return trainer


def write_config(out: Path, config_dict: Mapping[str, Any], source: Path | None) -> None:
    """``config.json`` (resolved) and ``config.toml`` (the file as written), atomically."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
    if source is not None and Path(source).is_file():
        atomic_write_text(out / "config.toml", Path(source).read_text(encoding="utf-8"))


def _columns(history: Sequence[Mapping[str, Any]]) -> list[str]:
    first = ["epoch", "step", "lr", "seconds"]
    rest: list[str] = []
    for row in history:
        for key in row:
            if key not in first and key not in rest:
                rest.append(key)
    train_keys = sorted(k for k in rest if k.startswith("train_"))
    val_keys = sorted(k for k in rest if not k.startswith("train_"))
    return first + train_keys + val_keys


def write_metrics_csv(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """One row per epoch (:data:`dicom_io.tables.TRAINING_METRICS`); empty cells where an epoch
    did not measure a column."""
    write_table(path, TRAINING_METRICS, history, _columns(history))


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in history:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(float(row["epoch"]))
            ys.append(float(value))
    return xs, ys


def write_curves(out: Path, history: Sequence[Mapping[str, Any]], monitor: str) -> list[Path]:
    """``loss.png`` (every loss column) and ``f1.png`` (F1, the monitored metric and the other
    validation metrics in ``[0, 1]``) against the epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    columns = _columns(history)[4:]
    loss_keys = [k for k in columns if k.endswith("loss")]
    metric_keys = [
        k for k in columns
        if not k.endswith("loss") and not k.startswith("train_")
        and all(0.0 <= v <= 1.0 for v in _series(history, k)[1])
    ]
    written = []
    for name, keys, label in (
        ("loss.png", loss_keys, "loss"),
        ("f1.png", _ordered(metric_keys, ["f1", monitor]), "validation metric"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for key in keys:
            xs, ys = _series(history, key)
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, label=key,
                        linewidth=2.0 if key in ("f1", monitor) else 1.0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        target = out / name
        fig.tight_layout()
        fig.savefig(target)
        plt.close(fig)
        written.append(target)
    return written


def _ordered(keys: Iterable[str], first: Sequence[str]) -> list[str]:
    keys = list(keys)
    head = [k for k in dict.fromkeys(first) if k in keys]
    return head + [k for k in keys if k not in head]
