"""CPU throughput of each ensemble member at batch 1 and batch 16, with tiny random-init members.

Run from the repository root::

    HF_HUB_OFFLINE=1 python -m bench.members            # full run, a few minutes on 2 cores
    HF_HUB_OFFLINE=1 python -m bench.members --quick    # smoke run, seconds
    python -m bench.members --members detr --json out.json

What it does: writes tiny checkpoints of each member kind into a temporary directory with the
project's own factories (:mod:`ensembles.demo_arch.paligemma` for PaliGemma, :mod:`ensembles.demo_arch.detr` for
DETR), loads each through the registry (``create_member``, the screener's path) once per batch
size, warms up on one batch, then times ``predict`` over the same images ``repeats`` times and
keeps the best run. It prints images/s at batch 1 and batch 16 and their ratio, all measured in
this one run, plus ``torch.get_num_threads()``. The issue aims for a ratio of at least 4; this
script reports it and never asserts on timings.

The PaliGemma detector is benched twice: ``score-only`` (threshold 1: the first step only, the
common case on a screening night where most studies are normal) and ``decode-all`` (threshold
0: every image also decodes its boxes with the grammar forced into the box branch).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BATCH_SIZES: tuple[int, int] = (1, 16)


@dataclass(frozen=True)
class BenchCase:
    """One member configuration to bench.

    Attributes:
        name: row label.
        kind: registry kind.
        needs: modules that must be importable for this case (else it is skipped, with why).
        write: ``write(directory)`` writes a tiny checkpoint of this kind.
    """

    name: str
    kind: str
    needs: tuple[str, ...]
    write: Callable[[Path], Any]


@dataclass
class BenchResult:
    """Throughput of one case; ``skipped`` says why a case did not run."""

    name: str
    kind: str
    images: int
    images_per_s: dict[int, float] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def ratio(self) -> float | None:
        """images/s at batch 16 over images/s at batch 1 (``None`` when not measured)."""
        low, high = self.images_per_s.get(BATCH_SIZES[0]), self.images_per_s.get(BATCH_SIZES[1])
        if not low or not high:
            return None
        return high / low


def _write_detr(directory: Path) -> Any:
    from ensembles.demo_arch.detr import write_tiny_detr_checkpoint

    return write_tiny_detr_checkpoint(directory)  # its own 128 px letterbox


def _write_paligemma(kind: str, threshold: float) -> Callable[[Path], Any]:
    def write(directory: Path) -> Any:
        from ensembles.demo_arch.paligemma import write_tiny_paligemma_checkpoint

        return write_tiny_paligemma_checkpoint(
            directory, kind=kind, threshold=threshold, text_model="gemma2"
        )

    return write


CASES: tuple[BenchCase, ...] = (
    BenchCase("detr", "detr", ("ensembles.members.detr", "ensembles.demo_arch.detr"), _write_detr),
    BenchCase(
        "paligemma-classifier",
        "paligemma-classifier",
        ("ensembles.members.paligemma_classifier", "ensembles.demo_arch.paligemma"),
        _write_paligemma("paligemma-classifier", 0.5),
    ),
    BenchCase(
        "paligemma-detector score-only",
        "paligemma-detector",
        ("ensembles.members.paligemma_detector", "ensembles.demo_arch.paligemma"),
        _write_paligemma("paligemma-detector", 1.0),
    ),
    BenchCase(
        "paligemma-detector decode-all",
        "paligemma-detector",
        ("ensembles.members.paligemma_detector", "ensembles.demo_arch.paligemma"),
        _write_paligemma("paligemma-detector", 0.0),
    ),
)


def synthetic_radiographs(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` float32 grey images in ``[0, 1]`` of a few radiograph-like shapes."""
    rng = np.random.default_rng(seed)
    shapes = [(320, 256), (256, 320), (300, 300), (400, 240)]
    images = []
    for index in range(count):
        height, width = shapes[index % len(shapes)]
        ramp = np.linspace(0.2, 0.8, width, dtype=np.float32)[None, :]
        noise = rng.normal(0.0, 0.1, (height, width)).astype(np.float32)
        images.append(np.clip(ramp + noise, 0.0, 1.0))
    return images


def _missing(needs: Sequence[str]) -> list[str]:
    missing = []
    for name in needs:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


def time_member(member: Any, images: Sequence[np.ndarray], batch: int, repeats: int) -> float:
    """Best wall time of ``member.predict(images)`` over ``repeats`` runs, after a warm-up."""
    member.predict(list(images[:batch]))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = member.predict(list(images))
        best = min(best, time.perf_counter() - start)
        if len(outputs) != len(images):
            raise RuntimeError(
                f"{member.name}: predict returned {len(outputs)} outputs for {len(images)} images"
            )
    return best


def run_case(
    case: BenchCase, images: Sequence[np.ndarray], workdir: Path, repeats: int
) -> BenchResult:
    """Write the case's tiny checkpoint, then time it at each batch size."""
    from ensembles.registry import create_member

    result = BenchResult(case.name, case.kind, len(images))
    missing = _missing(case.needs)
    if missing:
        result.skipped = f"not available yet: {', '.join(missing)}"
        return result
    directory = workdir / case.name.replace(" ", "_")
    case.write(directory)
    for batch in BATCH_SIZES:
        member = create_member(case.kind, directory, batch_size=batch)
        seconds = time_member(member, images, batch, repeats)
        result.seconds[batch] = seconds
        result.images_per_s[batch] = len(images) / seconds
    return result


def run_bench(
    names: Sequence[str] | None = None,
    *,
    images: int = 48,
    repeats: int = 3,
    workdir: Path | None = None,
) -> list[BenchResult]:
    """Bench the named cases (all by default) on the same ``images`` synthetic radiographs."""
    selected = [c for c in CASES if names is None or c.name in names or c.kind in names]
    if names is not None and not selected:
        valid = ", ".join(sorted({c.name for c in CASES} | {c.kind for c in CASES}))
        raise SystemExit(f"no bench case matches {list(names)}; valid: {valid}")
    pictures = synthetic_radiographs(images)
    with tempfile.TemporaryDirectory(prefix="bench-members-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        return [run_case(case, pictures, root, repeats) for case in selected]


def format_table(results: Sequence[BenchResult], threads: int) -> str:
    """A plain-text table of the results (one line per case)."""
    low, high = BATCH_SIZES
    lines = [
        f"torch threads: {threads}   images per run: {results[0].images if results else 0}",
        f"{'member':<32}{f'b{low} img/s':>12}{f'b{high} img/s':>12}{'ratio':>8}  note",
    ]
    for r in results:
        if r.skipped:
            lines.append(f"{r.name:<32}{'-':>12}{'-':>12}{'-':>8}  skipped: {r.skipped}")
            continue
        ratio = r.ratio
        note = "" if ratio is None or ratio >= 4 else "below the 4x aim"
        lines.append(
            f"{r.name:<32}{r.images_per_s[low]:>12.2f}{r.images_per_s[high]:>12.2f}"
            f"{ratio if ratio is not None else float('nan'):>8.2f}  {note}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.members", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="16 images, 1 repeat (smoke run)")
    parser.add_argument("--images", type=int, default=48, help="images per timed run (>= 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per batch size")
    parser.add_argument(
        "--members", default=None, help="comma-separated case names or kinds (default: all)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    images, repeats = (16, 1) if args.quick else (args.images, args.repeats)
    if images < BATCH_SIZES[1] or repeats < 1:
        parser.error(f"--images must be >= {BATCH_SIZES[1]} and --repeats >= 1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.members.split(",")] if args.members else None
    results = run_bench(names, images=images, repeats=repeats)
    threads = torch.get_num_threads()
    print(format_table(results, threads))
    if args.json:
        payload = {
            "threads": threads,
            "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "results": [{**asdict(r), "ratio": r.ratio} for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
