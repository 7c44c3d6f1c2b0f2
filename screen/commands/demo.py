"""``screen train-demo``: train the demo members, choose their operating point, measure them.

One command, seeded end to end, run from the repository root::

    screen train-demo --out sample_data

1. :func:`train.demo.train_demo`: a phantom training archive, ``prepare``, the three tiny
   members (PaliGemma classifier, PaliGemma detector, DETR) trained on the CPU with
   ``train/configs/demo-*.toml``, their checkpoints in ``sample_data/models/<name>/`` and
   ``sample_data/site.toml``;
2. ``screen eval`` on the validation split and ``screen tune`` on its predictions: the
   operating point ``sample_data/op.json`` (the paper's screening aim: study recall >= 0.90,
   then the best precision);
3. ``screen eval`` on a fresh phantom archive from another seed: each member's study AUC,
   precision, recall and F1, the fused ensemble's at the operating point, and the share of true
   fractures matched by a detector box at IoU >= 0.3, written to ``sample_data/models/DEMO.md``
   and ``demo.json``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import click

from dicom_io.atomic import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover - typing only
    from train.demo import DemoOptions
    from train.evaluate import EvalResult

logger = logging.getLogger(__name__)

COMMAND = "screen train-demo --out sample_data"
TARGET_RECALL = 0.90
BOX_IOU = 0.3
BOX_MEMBER_FLOOR = 0.25
"""A detector places boxes in the ensemble's findings only if, on the validation split, its
(refined) boxes matched at least this share of the true boxes at IoU >= :data:`BOX_IOU`; a
detector below it still votes at image level."""


@dataclass
class DemoReport:
    """What the demo trained and measured."""

    site_config: Path
    operating_point: Path
    members: list[dict[str, Any]]
    results: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def result_figures(result: "EvalResult") -> dict[str, Any]:
    """The demo's figures from an evaluation: per model the study metrics, per detector boxes."""
    rows: dict[str, Any] = {}
    for row in result.rows:
        c = row.confusion
        rows[row.name] = {
            "threshold": _number(row.threshold), "auc": _number(row.auc.value if row.auc else None),
            "auc_low": _number(row.auc.low if row.auc else None),
            "auc_high": _number(row.auc.high if row.auc else None),
            "precision": _number(c.precision), "recall": _number(c.recall), "f1": _number(c.f1),
            "accuracy": _number(c.accuracy), "tp": c.tp, "fp": c.fp, "tn": c.tn, "fn": c.fn,
        }
    boxes = {b.name: {"recall_iou_0.3": _number(b.recall_30), "f1_iou_0.5": _number(b.at_50.f1),
                      "mean_iou": _number(b.at_50.mean_iou), "map": _number(b.map),
                      "n_truth": b.n_truth, "n_reported": b.n_reported} for b in result.boxes}
    return {"n_studies": result.n_studies, "n_positive": result.n_positive, "n_images": result.n_images,
            "failed_studies": result.failed_studies, "operating_point": result.operating_point_id,
            "models": rows, "boxes": boxes}


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def choose_box_members(validation: dict[str, Any], detectors: Sequence[str],
                       floor: float = BOX_MEMBER_FLOOR) -> list[str]:
    """The detectors whose validation boxes are worth fusing (see :data:`BOX_MEMBER_FLOOR`)."""
    boxes = validation.get("boxes", {})
    return [name for name in detectors
            if (boxes.get(name, {}).get("recall_iou_0.3") or 0.0) >= floor]


def _restrict_box_members(op_path: Path, chosen: list[str], detectors: Sequence[str]) -> None:
    """Rewrite the tuned point so only ``chosen`` detectors' boxes are fused (and say why)."""
    from ensembles.operating_point.op_json import load_deciding_point, save_operating_point

    if not chosen:
        logger.warning("no detector matched %.0f%% of the validation boxes; every detector's boxes "
                       "stay in the findings", 100 * BOX_MEMBER_FLOOR)
        return
    if set(chosen) == set(detectors):
        return
    op = load_deciding_point(op_path)
    left_out = [d for d in detectors if d not in chosen]
    note = (f"boxes.members: {', '.join(chosen)}; {', '.join(left_out)} left out of box fusion "
            f"(validation boxes matched below {BOX_MEMBER_FLOOR:.2f} of true boxes at IoU >= {BOX_IOU}); "
            "they still vote at image level")
    notes = "; ".join(n for n in (op.provenance.notes, note) if n)
    save_operating_point(op.replace(
        id=None, boxes=op.boxes.replace(members=tuple(chosen)),
        provenance=op.provenance.replace(notes=notes)), op_path)


def render_demo_report(report: DemoReport, options: "DemoOptions") -> str:
    """``DEMO.md``: how the members were made and what they reached on the fresh phantom set."""
    fresh = report.results.get("fresh", {})
    lines = [
        "# Demo members: measured on a fresh phantom set",
        "",
        f"Made by `{COMMAND}` (training seed {options.train_seed}, {options.train_studies} studies; "
        f"evaluation seed {options.eval_seed}, {options.eval_studies} studies). Every figure below "
        "was measured by that run; nothing is copied from elsewhere.",
        "",
        "## Training",
        "",
        "| member | recipe | config | steps | epochs | seconds | best validation |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in report.members:
        lines.append(f"| {m['name']} | {m['recipe']} | `{Path(m['config']).name}` | {m['steps']} | "
                     f"{m['epochs']} | {m['seconds']} | {m['monitor']} {_fmt(m.get('best'))} |")
    lines += ["", f"## Fresh phantom set ({fresh.get('n_studies', 0)} studies, "
                  f"{fresh.get('n_positive', 0)} with a fracture; operating point "
                  f"`{fresh.get('operating_point', '?')}`)", "",
              "| model | threshold | study AUC (95% CI) | precision | recall | F1 |", "|---|---|---|---|---|---|"]
    for name, row in fresh.get("models", {}).items():
        auc = _fmt(row["auc"])
        if row["auc_low"] is not None and row["auc_high"] is not None:
            auc += f" ({_fmt(row['auc_low'])}-{_fmt(row['auc_high'])})"
        threshold = "vote" if row["threshold"] is None else _fmt(row["threshold"])
        lines.append(f"| {name} | {threshold} | {auc} | {_fmt(row['precision'])} | "
                     f"{_fmt(row['recall'])} | {_fmt(row['f1'])} |")
    lines += ["", "| detector | true boxes | matched at IoU >= 0.3 | F1 at IoU 0.5 | mean IoU | mAP |",
              "|---|---|---|---|---|---|"]
    for name, row in fresh.get("boxes", {}).items():
        lines.append(f"| {name} | {row['n_truth']} | {_fmt(row['recall_iou_0.3'])} | "
                     f"{_fmt(row['f1_iou_0.5'])} | {_fmt(row['mean_iou'])} | {_fmt(row['map'])} |")
    lines += ["", "Aims (issue 4): every member's study AUC >= 0.90; the ensemble at recall >= 0.90 "
              "with precision >= 0.60; the best detector matching >= 0.50 of true boxes at IoU >= 0.3.",
              ""]
    return "\n".join(lines)


def run_demo(
    out: Path = Path("sample_data"),
    *,
    work_dir: Path = Path("demo-work"),
    options: "DemoOptions | None" = None,
    bootstrap: int = 2000,
    tune_folds: int = 5,
    tune_guard: str = "oof",
    allow_small: bool = False,
    progress: bool = False,
) -> DemoReport:
    """The whole demo (see the module docstring); callable without Click.

    Args:
        out: the folder that receives ``models/``, ``site.toml`` and ``op.json``.
        work_dir: scratch folder (archives, prepared data, runs, evaluations).
        options: demo options; ``models_dir`` and ``work_dir`` are set from ``out``/``work_dir``.
        bootstrap: bootstrap resamples of the AUC intervals (0: none).
        tune_folds: out-of-fold folds of the tuning estimate (0: skip; needs a guard other
            than ``oof``).
        tune_guard: ``screen tune --guard`` (the tuned point must hold out of fold by default).
        allow_small: ``screen tune --allow-small`` (a smoke run's tiny validation split).
        progress: show progress bars.
    """
    import dataclasses

    from ensembles.operating_point.op_json import save_operating_point
    from ensembles.operating_point.point import uniform_operating_point
    from screen.commands.eval import run_eval
    from screen.tune.tuner import TuneSettings, run_tune
    from train.demo import DETECTOR_MEMBERS, DemoOptions, make_phantom, site_config_text, train_demo

    out = Path(out)
    base = options or DemoOptions()
    opts = dataclasses.replace(base, models_dir=out / "models", work_dir=Path(work_dir))
    data, records = train_demo(opts)
    site = out / "site.toml"
    op_path = out / "op.json"
    atomic_write_text(site, site_config_text(opts.selected(), opts.models_dir, out, refiner=opts.refiner,
                                             refiner_iterations=opts.refiner_iterations))
    report = DemoReport(site_config=site, operating_point=op_path, members=records)

    # the validation predictions only feed tuning: score them under a plain any-vote point, so a
    # stale op.json from an earlier demo can never get in the way
    untuned = save_operating_point(
        uniform_operating_point([m.name for m in opts.selected()], 0.5, level="untuned"),
        opts.work_dir / "untuned-op.json")
    val = run_eval(data, opts.work_dir / "eval-val", config_path=site, operating_point=untuned,
                   split="val", workers=opts.workers, bootstrap=0, progress=progress)
    report.results["validation"] = result_figures(val)
    settings = TuneSettings(target_recall=TARGET_RECALL, objective="precision",
                            folds=tune_folds, seed=opts.train_seed, guard=tune_guard, allow_small=allow_small)
    run_tune(val.files["predictions"], op_path, settings,
             report_dir=opts.work_dir / "tune-report")
    detectors = [m.name for m in opts.selected() if m.name in DETECTOR_MEMBERS]
    _restrict_box_members(op_path, choose_box_members(report.results["validation"], detectors), detectors)

    archive, labels = make_phantom(opts.work_dir / "eval-phantom", opts.eval_studies, opts.eval_seed,
                                   opts.phantom_size)
    fresh = run_eval(archive, opts.work_dir / "eval-fresh", labels_csv=labels, config_path=site,
                     operating_point=op_path, workers=opts.workers, bootstrap=bootstrap,
                     seed=opts.eval_seed, progress=progress)
    report.results["fresh"] = result_figures(fresh)
    summary = {"command": COMMAND, "train_seed": opts.train_seed, "eval_seed": opts.eval_seed,
               "train_studies": opts.train_studies, "eval_studies": opts.eval_studies,
               "members": records, **report.results}
    report.files["json"] = opts.models_dir / "demo.json"
    atomic_write_text(report.files["json"], json.dumps(summary, indent=2, sort_keys=True) + "\n")
    report.files["markdown"] = opts.models_dir / "DEMO.md"
    atomic_write_text(report.files["markdown"], render_demo_report(report, opts))
    return report


def summary_lines(report: DemoReport) -> list[str]:
    """The closing lines: each model on the fresh set, then each detector's box recall."""
    fresh = report.results.get("fresh", {})
    width = max([10] + [len(n) for n in fresh.get("models", {})] + [len(n) for n in fresh.get("boxes", {})])
    lines = [f"{'model':<{width}} {'AUC':>6} {'precision':>9} {'recall':>7} {'F1':>6}"]
    for name, row in fresh.get("models", {}).items():
        lines.append(f"{name:<{width}} {_fmt(row['auc']):>6} {_fmt(row['precision']):>9} "
                     f"{_fmt(row['recall']):>7} {_fmt(row['f1']):>6}")
    for name, row in fresh.get("boxes", {}).items():
        lines.append(f"{name:<{width}} true boxes matched at IoU >= {BOX_IOU}: {_fmt(row['recall_iou_0.3'])}")
    return lines


@click.command("train-demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("sample_data"),
              show_default=True, help="Folder receiving models/, site.toml and op.json.")
@click.option("--work", "work_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo-work"), show_default=True,
              help="Scratch folder: archives, prepared data, run folders (metrics, curves), evaluations.")
@click.option("--members", default="pg-cls,pg-det,detr", show_default=True,
              help="Comma-separated demo members to train.")
@click.option("--train-studies", type=click.IntRange(min=4), default=800, show_default=True)
@click.option("--eval-studies", type=click.IntRange(min=4), default=300, show_default=True)
@click.option("--retrain", is_flag=True, help="Train members again even if this demo already wrote them.")
@click.option("--refiner/--no-refiner", default=True, show_default=True,
              help="Train the box refiner stage and put it on the detectors in site.toml.")
@click.option("--set", "overrides", multiple=True, metavar="MEMBER:KEY=VALUE",
              help="Config override for one member, e.g. detr:train.max_steps=2 (repeatable).")
def train_demo_cmd(out: Path, work_dir: Path, members: str, train_studies: int, eval_studies: int,
                   retrain: bool, refiner: bool, overrides: Sequence[str]) -> None:
    """Train the tiny demo members on a phantom set, tune their operating point and measure them
    on a fresh phantom set from another seed (seeded; about 2 hours on 2 CPU cores)."""
    from train.demo import DemoError, DemoOptions
    from train.train_config import parse_override

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("openjpeg").setLevel(logging.WARNING)  # one INFO line per encoded tile

    per_member: dict[str, dict[str, Any]] = {}
    for text in overrides:
        member, sep, rest = text.partition(":")
        if not sep:
            raise DemoError(f"--set must look like MEMBER:KEY=VALUE (e.g. detr:train.max_steps=2), got {text!r}")
        key, value = parse_override(rest)
        per_member.setdefault(member, {})[key] = value
    options = DemoOptions(members=tuple(m.strip() for m in members.split(",") if m.strip()),
                          train_studies=train_studies, eval_studies=eval_studies, retrain=retrain,
                          refiner=refiner, overrides=per_member)
    report = run_demo(out, work_dir=work_dir, options=options, progress=True)
    for line in summary_lines(report):
        click.echo(line)
    click.echo(f"wrote {report.site_config}, {report.operating_point}, "
               f"{', '.join(str(p) for p in report.files.values())}")
