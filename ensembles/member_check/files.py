"""What a checkpoint folder holds on disk: safetensors weights (headers only) and pickles.

Reading a safetensors header costs a few kilobytes whatever the model's size, so the shapes of a
20 GB checkpoint can be compared with its config before anything is loaded. Pickle weights
(``pytorch_model.bin`` and friends) are never loaded: unpickling runs code from the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from ensembles.errors import CheckpointError

if TYPE_CHECKING:
    from ensembles.member_check.report import CheckReport

PICKLE_SUFFIXES: tuple[str, ...] = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
"""Weight files in Python's pickle format (``torch.save``); never loaded or copied."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's shape and dtype as its safetensors header states them."""

    shape: tuple[int, ...]
    dtype: str


def safetensors_files(directory: Path, stem: str = "model") -> list[Path]:
    """The safetensors files of ``stem`` in ``directory`` (one file, or an index's shards).

    Returns:
        The files, or an empty list when there are none.

    Raises:
        CheckpointError: an index names shards that are missing or is not valid JSON.
    """
    index = directory / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted({str(v) for v in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"cannot read {str(index)!r}: {exc}") from None
        missing = [name for name in names
                   if Path(name).name != name or not (directory / name).is_file()]
        if missing:
            raise CheckpointError(
                f"{str(index)!r} names shard(s) that are not in the folder: {', '.join(missing[:3])}"
            )
        return [directory / name for name in names]
    single = directory / f"{stem}.safetensors"
    return [single] if single.is_file() else []


def pickle_files(directory: Path) -> list[Path]:
    """Pickle-format weight files directly in ``directory``."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)


def tensor_headers(files: list[Path]) -> dict[str, TensorInfo]:
    """Every tensor's shape and dtype from the safetensors headers (no tensor data is read).

    Raises:
        CheckpointError: a file is not valid safetensors.
    """
    from safetensors import safe_open

    found: dict[str, TensorInfo] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="np") as handle:
                for key in handle.keys():
                    part = handle.get_slice(key)
                    found[key] = TensorInfo(tuple(int(n) for n in part.get_shape()),
                                            str(part.get_dtype()))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {exc}") from None
    return found


def check_weight_files(report: "CheckReport", weights_dir: Path) -> list[Path] | None:
    """The ``files`` check: ``config.json`` and safetensors weights (pickles never loaded).

    Returns:
        The safetensors files, or ``None`` (the failure is in ``report``).
    """
    if not (weights_dir / "config.json").is_file():
        report.failed("files", f"{str(weights_dir)!r} has no config.json; write the model with save_pretrained")
        return None
    try:
        shards = safetensors_files(weights_dir)
    except CheckpointError as exc:
        report.failed("files", str(exc))
        return None
    pickles = pickle_files(weights_dir)
    if not shards:
        found = f" (found {', '.join(p.name for p in pickles)}: pickle, never loaded)" if pickles else ""
        report.failed("files", f"{str(weights_dir)!r} has no safetensors weights{found}; re-save the model "
                               "with save_pretrained(..., safe_serialization=True)")
        return None
    ignored = f"; ignored pickle files: {', '.join(p.name for p in pickles)}" if pickles else ""
    report.passed("files", f"{len(shards)} safetensors file(s) in {weights_dir.name}{ignored}")
    return shards
