"""Which knobs make the PaliGemma detector write boxes on the phantom? One knob at a time.

Each variant trains the demo detector (``train/configs/demo-detector.toml`` with the box
settings of :data:`BASELINE`, the ones it had when the table was measured) on the same prepared
phantom data, with the same seed and a shorter budget than the demo (``--steps``), changing one
setting against that baseline; it reads from the run's ``metrics.csv`` the
validation figures of its last epoch and of its best one (by ``box_recall``):

- ``box_recall``: the share of the validation split's true boxes that the detector's *own* boxes
  (no refiner) match at IoU >= 0.3;
- ``study_auc``: the study-level AUC of its image score.

    python -m bench.detector_ablation --data demo-work/data --work /tmp/ablation \\
        --json sample_data/models/ablation.json --demo-md sample_data/models/DEMO.md

Runs go two at a time with one thread each (``--parallel``); a run folder that already finished
is read again rather than trained again (the engine resumes it). ``--demo-md`` replaces the
table in ``DEMO.md``; ``screen train-demo`` puts the table of ``ablation.json`` (when it lies
beside the models) into the ``DEMO.md`` it writes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "train" / "configs" / "demo-detector.toml"


@dataclass(frozen=True)
class Variant:
    """One row of the table: a name, what it changes, and the config overrides that do it."""

    name: str
    change: str
    overrides: Mapping[str, Any]


TOY_DETECTOR = "toy-detector"
"""Stands for the ``--toy-detector`` folder in a variant's overrides."""

#: What every variant starts from: ``demo-detector.toml`` with the box settings it had before
#: this table made the toy start the demo's (from scratch, loc-token weight 0.2, CIoU over all
#: bins, loc sigma 2, chosen by study AUC), so each row keeps its meaning as the config moves on.
BASELINE: Mapping[str, Any] = {"loss.token_weight": 0.2, "loss.ciou_window": 0, "loss.loc_sigma": 2.0,
                               "train.monitor": "study_auc"}

#: The baseline first, then one knob each against it, then the toy's box settings together.
VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", "demo-detector.toml from scratch with its earlier box settings (loc-token weight 0.2, "
            "CIoU over all bins, loc sigma 2)", {}),
    Variant("token-1.0", "loc-token loss weight 1.0 instead of 0.2 (the toy's setting)", {"loss.token_weight": 1.0}),
    Variant("no-ciou", "no CIoU loss", {"loss.ciou_weight": 0.0}),
    Variant("ciou-window-48", "CIoU on the soft-argmax within 48 bins of each corner's mode, not all bins",
            {"loss.ciou_window": 48}),
    Variant("loc-sigma-8", "location targets smoothed over 8 bins instead of 2", {"loss.loc_sigma": 8.0}),
    Variant("canny-0.3", "Canny blend 0.3 (the paper's) instead of 1.0 (edges only)", {"paligemma.canny_blend": 0.3}),
    Variant("no-patch-aux", "no patch auxiliary loss", {"loss.patch_aux_weight": 0.0}),
    Variant("patch-box", "the dense box loss: each SigLIP patch in a box regresses its distances to the box's "
            "edges (weight 1.0)", {"loss.patch_box_weight": 1.0}),
    Variant("reading-order", "a many-box answer written top to bottom, not in the JSONL's order",
            {"paligemma.box_order": "reading"}),
    Variant("learned-positions", "learned (random) position and loc embeddings, not sin-cos",
            {"paligemma.tiny.position_init": "random"}),
    Variant("toy-box-settings", "token weight 1.0, CIoU window 48, loc sigma 8 together (tiny-detector.toml's)",
            {"loss.token_weight": 1.0, "loss.ciou_window": 48, "loss.loc_sigma": 8.0}),
    Variant("box-ramp", "the toy's box settings, their weights ramped from 0.2x to 1x over the first half "
            "(a loss schedule: the decision first)",
            {"loss.token_weight": 1.0, "loss.ciou_window": 48, "loss.loc_sigma": 8.0,
             "loss.box_ramp_steps": "half"}),
    Variant("task-head", "the paper's 256-query cross-attention head between SigLIP and the projector",
            {"paligemma.task_head": 256}),
    Variant("input-320", "320 px input (400 patches of 16 px) instead of 224 px (196)",
            {"paligemma.tiny.image_size": 320}),
    Variant("toy-first", "the toy's box settings, starting from the tiny detector trained on the toy "
            "(bench.learnability's run/best): a curriculum from bright shapes to fractures",
            {"paligemma.base": TOY_DETECTOR, "loss.token_weight": 1.0, "loss.ciou_window": 48,
             "loss.loc_sigma": 8.0}),
    Variant("toy-first-dense", "toy-first with the dense box loss (weight 1.0) and the boxes in reading order "
            "(tiny-detector.toml's settings since 2026-12-07)",
            {"paligemma.base": TOY_DETECTOR, "loss.token_weight": 1.0, "loss.ciou_window": 48,
             "loss.loc_sigma": 8.0, "loss.patch_box_weight": 1.0, "paligemma.box_order": "reading"}),
)
"""``"half"`` stands for half the run's steps and ``TOY_DETECTOR`` for ``--toy-detector`` (both
command-line choices)."""


def resolved_overrides(variant: Variant, steps: int, toy_detector: Path | None = None) -> dict[str, Any]:
    """The variant's config overrides for a run of ``steps`` and the toy detector's folder.

    Raises:
        ValueError: the variant starts from the toy detector and none was given.
    """
    resolved: dict[str, Any] = {}
    for key, value in variant.overrides.items():
        if value == "half":
            value = steps // 2
        elif value == TOY_DETECTOR:
            if toy_detector is None:
                raise ValueError(f"variant {variant.name!r} needs --toy-detector (a bench.learnability run's run/best)")
            value = str(toy_detector)
        resolved[key] = value
    return resolved


def _overrides(variant: Variant, steps: int, batch: int, epoch_steps: int, threads: int,
               toy_detector: Path | None = None) -> list[str]:
    epochs = max(1, math.ceil(steps / epoch_steps))
    sets = {"train.max_steps": steps, "train.batch_size": batch, "train.epoch_steps": epoch_steps,
            "train.epochs": epochs, "train.threads": threads, "train.progress": "off",
            **BASELINE, **resolved_overrides(variant, steps, toy_detector)}
    out: list[str] = []
    for key, value in sets.items():
        out += ["--set", f"{key}={value}"]
    return out


def read_metrics(metrics_csv: Path) -> dict[str, Any]:
    """The last epoch's and the best epoch's (by ``box_recall``) validation figures, and the
    epochs' seconds added up (a finished run read again keeps its training time)."""
    with metrics_csv.open(encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("box_recall") not in (None, "")]
    if not rows:
        return {}

    def pick(row: Mapping[str, str]) -> dict[str, float]:
        return {k: float(row[k]) for k in ("step", "box_recall", "study_auc") if row.get(k) not in (None, "")}

    best = max(rows, key=lambda r: float(r["box_recall"]))
    seconds = sum(float(r["seconds"]) for r in rows if r.get("seconds") not in (None, ""))
    return {"last": pick(rows[-1]), "best": pick(best), "train_seconds": round(seconds, 1)}


def run_variant(variant: Variant, data: Path, work: Path, *, steps: int, batch: int, epoch_steps: int,
                threads: int, config: Path = CONFIG, toy_detector: Path | None = None) -> dict[str, Any]:
    """Train one variant (or read its finished run) and return its row."""
    out = work / variant.name
    command = [sys.executable, "-m", "screen", "train", "detector", "--config", str(config), "--data", str(data),
               "--out", str(out), *_overrides(variant, steps, batch, epoch_steps, threads, toy_detector)]
    started = time.monotonic()
    log = work / f"{variant.name}.log"
    work.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    row: dict[str, Any] = {"name": variant.name, "change": variant.change, "overrides": dict(variant.overrides),
                           "seconds": round(time.monotonic() - started, 1), "exit": code}
    metrics = out / "metrics.csv"
    if metrics.is_file():
        row.update(read_metrics(metrics))
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared phantom data (screen prepare)")
    parser.add_argument("--work", type=Path, required=True, help="run folders and logs")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--toy-detector", type=Path, default=None,
                        help="the toy-trained tiny detector the toy-first variant starts from "
                             "(python -m bench.learnability --out DIR writes DIR/run/best)")
    parser.add_argument("--data-label", default="", help="what DATA is, for the table's lead line")
    parser.add_argument("--demo-md", type=Path, default=None,
                        help="put the table into this DEMO.md (its ablation section, replaced)")
    parser.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epoch-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args(argv)
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    known = {v.name: v for v in VARIANTS}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(known)}")
    for name in wanted:
        try:
            resolved_overrides(known[name], args.steps, args.toy_detector)
        except ValueError as exc:
            parser.error(str(exc))
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        rows = list(pool.map(lambda v: run_variant(known[v], args.data, args.work, steps=args.steps,
                                                    batch=args.batch, epoch_steps=args.epoch_steps,
                                                    threads=args.threads, toy_detector=args.toy_detector),
                             wanted))
    command = (f"python -m bench.detector_ablation --data DATA --work WORK --steps {args.steps} "
               f"--batch {args.batch} --epoch-steps {args.epoch_steps} --threads {args.threads}"
               + (" --toy-detector TOY/run/best" if args.toy_detector else ""))
    result = {"command": command, "config": CONFIG.name, "baseline": dict(BASELINE), "data": args.data_label,
              "budget": {"steps": args.steps, "batch": args.batch, "threads": args.threads}, "rows": rows}
    from screen.commands.demo import ablation_lines, with_ablation_section

    for line in ablation_lines(result):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.demo_md is not None:
        args.demo_md.write_text(with_ablation_section(args.demo_md.read_text(encoding="utf-8"), result),
                                encoding="utf-8")
    return 0 if all(r.get("exit") == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
