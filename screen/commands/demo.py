"""``screen train-demo``: train the demo members, choose their operating point, measure them.

One command, seeded end to end, run from the repository root::

    screen train-demo --out sample_data

1. :func:`train.demo.train_demo`: a phantom training archive, ``prepare``, the toy stage (the
   tiny detector on the toy phantom, which the PaliGemma detector starts from), the three tiny
   members (PaliGemma classifier, PaliGemma detector, DETR) trained on the CPU with
   ``train/configs/demo-*.toml``, their checkpoints in ``sample_data/models/<name>/`` and
   ``sample_data/site.toml`` (the detector placing its boxes by the median of 8 decodes under
   the square's symmetries);
2. ``screen eval`` on the validation split and ``screen tune`` on its predictions: the
   operating point ``sample_data/op.json`` (the paper's screening aim: study recall >= 0.90,
   then the best precision);
3. ``screen eval`` on fresh phantom archives from another seed, one per evaluation style (by
   default the training style ``randomised``, in distribution, and ``shifted`` and
   ``shifted-2``, outside it):
   each member's study AUC, precision, recall and F1 with bootstrap intervals, the fused
   ensemble's at the operating point, and the share of true fractures matched by a detector
   box at IoU >= 0.3, side by side in ``sample_data/models/DEMO.md`` and ``demo.json``.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
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


def demo_command(options: "DemoOptions") -> str:
    """The command that makes this demo: :data:`COMMAND` with every option that differs from the
    defaults, ``--set`` overrides included (a demo made with shorter stages says so)."""
    from train.demo import DemoOptions

    default = DemoOptions()
    parts = [COMMAND]
    if options.members != default.members:
        parts.append(f"--members {','.join(options.members)}")
    if options.train_studies != default.train_studies:
        parts.append(f"--train-studies {options.train_studies}")
    if options.eval_studies != default.eval_studies:
        parts.append(f"--eval-studies {options.eval_studies}")
    if options.train_style != default.train_style:
        parts.append(f"--style {options.train_style}")
    if options.eval_styles != default.eval_styles:
        parts.append(f"--eval-styles {','.join(options.eval_styles)}")
    if options.init_from is not None:
        parts.append(f"--init-from {shlex.quote(str(options.init_from))}")
    if options.symmetries != default.symmetries:
        parts.append(f"--symmetries {options.symmetries}")
    if not options.toy_first:
        parts.append("--no-toy-first")
    elif options.toy_studies != default.toy_studies:
        parts.append(f"--toy-studies {options.toy_studies}")
    if not options.refiner:
        parts.append("--no-refiner")
    for member, settings in options.overrides.items():
        parts += [f"--set {shlex.quote(f'{member}:{key}={_override_text(value)}')}" for key, value in settings.items()]
    return " ".join(parts)


def _override_text(value: Any) -> str:
    """A ``--set`` value as :func:`train.train_config.parse_override` reads it back (TOML)."""
    from train.train_config import parse_override

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and parse_override(f"k={value}")[1] == value:
        return value  # a bare word reads back as itself; "true" or "12" must be quoted
    return json.dumps(value)


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


def result_figures(result: "EvalResult", *, bootstrap: int = 0, seed: int = 0) -> dict[str, Any]:
    """The demo's figures from an evaluation: per model the study metrics, per detector boxes.

    With ``bootstrap`` resamples, precision and recall get percentile bootstrap intervals over
    studies (``*_low``/``*_high``; the AUC's come from the evaluation); a detector's box recall
    gets the exact (Clopper-Pearson) interval over true boxes.
    """
    from screen.tune.search import exact_interval
    from train.metrics import bootstrap_metrics

    rows: dict[str, Any] = {}
    for row in result.rows:
        c = row.confusion
        figures = {
            "threshold": _number(row.threshold), "auc": _number(row.auc.value if row.auc else None),
            "auc_low": _number(row.auc.low if row.auc else None),
            "auc_high": _number(row.auc.high if row.auc else None),
            "precision": _number(c.precision), "recall": _number(c.recall), "f1": _number(c.f1),
            "accuracy": _number(c.accuracy), "tp": c.tp, "fp": c.fp, "tn": c.tn, "fn": c.fn,
        }
        if bootstrap and c.n:
            labels = [1] * c.tp + [0] * c.fp + [0] * c.tn + [1] * c.fn
            called = [1] * c.tp + [1] * c.fp + [0] * c.tn + [0] * c.fn
            intervals = bootstrap_metrics(labels, called, n_resamples=bootstrap, seed=seed,
                                          metrics=("precision", "recall"))
            for name, interval in intervals.items():
                figures[f"{name}_low"], figures[f"{name}_high"] = _number(interval.low), _number(interval.high)
        rows[row.name] = figures
    boxes: dict[str, Any] = {}
    for b in result.boxes:
        recall = _number(b.recall_30)
        matched = round(recall * b.n_truth) if recall is not None else 0
        low, high = exact_interval(matched, b.n_truth) if recall is not None else (math.nan, math.nan)
        boxes[b.name] = {"recall_iou_0.3": recall, "recall_low": _number(low), "recall_high": _number(high),
                         "f1_iou_0.5": _number(b.at_50.f1), "mean_iou": _number(b.at_50.mean_iou),
                         "map": _number(b.map), "n_truth": b.n_truth, "n_reported": b.n_reported}
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


def _with_interval(row: dict[str, Any], key: str, low: str, high: str) -> str:
    text = _fmt(row.get(key))
    if row.get(low) is not None and row.get(high) is not None:
        text += f" ({_fmt(row[low])}-{_fmt(row[high])})"
    return text


ABLATION_FILE = "ablation.json"
"""Written by ``python -m bench.detector_ablation --json``; ``DEMO.md`` shows it when it lies
beside the models."""


def ablation_lines(result: dict[str, Any]) -> list[str]:
    """The Markdown table of a detector ablation (:mod:`bench.detector_ablation`)."""
    budget = result.get("budget", {})
    data = f" ({result['data']})" if result.get("data") else ""
    baseline = result.get("baseline")
    start = (f" from the baseline settings ({', '.join(f'`{k} = {v}`' for k, v in baseline.items())}; "
             "the config's before the toy start)") if baseline else ""
    lines = [f"Each row trains `{result.get('config', 'demo-detector.toml')}`{start} with one change, same seed "
             f"and data{data}, {budget.get('steps')} steps of batch {budget.get('batch')} (a shorter budget "
             f"than the demo's); the detector's own boxes (no refiner) on the validation split. "
             f"Measured by `{result.get('command')}`.", "",
             "| variant | change | own boxes matched at IoU >= 0.3: last epoch (best, at step) | study AUC, last epoch |",
             "|---|---|---|---|"]
    for row in result.get("rows", []):
        last, best = row.get("last", {}), row.get("best", {})
        if not last:
            lines.append(f"| {row['name']} | {row['change']} | no figures (exit {row.get('exit')}) | |")
            continue
        lines.append(f"| {row['name']} | {row['change']} | {_fmt(last.get('box_recall'))} "
                     f"({_fmt(best.get('box_recall'))}, {int(best.get('step', 0))}) | {_fmt(last.get('study_auc'))} |")
    return lines


ABLATION_HEADING = "## What made the PaliGemma detector write boxes"
AIMS_LEAD = "Aims (issue 14)"


def with_ablation_section(markdown: str, result: dict[str, Any]) -> str:
    """``DEMO.md`` text with its ablation section replaced by ``result``'s table (or put in
    before the aims paragraph, or at the end, when it has none): what ``bench.detector_ablation
    --demo-md`` writes, the same section :func:`render_demo_report` renders."""
    section = [ABLATION_HEADING, "", *ablation_lines(result), ""]
    lines = markdown.rstrip("\n").split("\n")
    if ABLATION_HEADING in lines:
        start = lines.index(ABLATION_HEADING)
        end = next((i for i in range(start + 1, len(lines))
                    if lines[i].startswith("## ") or lines[i].startswith(AIMS_LEAD)), len(lines))
    else:
        start = end = next((i for i, line in enumerate(lines) if line.startswith(AIMS_LEAD)), len(lines))
        if start == len(lines):
            section = ["", *section]
    return "\n".join(lines[:start] + section + lines[end:]).rstrip("\n") + "\n"


def _training_phantoms(options: "DemoOptions") -> str:
    """The training archive in words: ``the `rods` phantom (seed S, N studies)`` or a mix's parts."""
    phantoms = options.train_phantoms()
    if len(phantoms) == 1:
        return f"the `{options.train_style}` phantom (seed {options.train_seed}, {options.train_studies} studies)"
    parts = " and ".join(f"`{style}` (seed {seed})" for style, seed in phantoms)
    return (f"a mix of {len(phantoms)} phantoms, {parts}, {options.train_studies} studies each, "
            "split by patient together")


def render_demo_report(report: DemoReport, options: "DemoOptions") -> str:
    """``DEMO.md``: how the members were made and what they reached on each fresh phantom set."""
    from train.demo import DEMO_TOY

    sets: dict[str, Any] = report.results.get("eval", {})
    lines = [
        "# Demo members: measured on fresh phantom sets",
        "",
        f"Made by `{demo_command(options)}`: trained on {_training_phantoms(options)}, measured on fresh sets "
        f"of seed {options.eval_seed} "
        f"({options.eval_studies} studies each) drawn in the styles {', '.join(f'`{s}`' for s in sets)} "
        "(sample_data/README.md). Every figure below was measured by that run; nothing is copied "
        "from elsewhere. Intervals are 95 %: AUC, precision and recall by percentile bootstrap over "
        "studies, box recall exact (Clopper-Pearson) over true boxes.",
        "",
        "## Training",
        "",
    ]
    if any(m["name"] == DEMO_TOY.name for m in report.members):
        lines += [f"`{DEMO_TOY.name}` is a lesson, not a member: the tiny detector trained first on the toy "
                  f"phantom ({options.toy_studies} studies, seed {options.toy_seed}: bright shapes on noise, "
                  "a quarter empty), which pg-det starts from. Its best validation figure is on the toy's "
                  "own validation split.", ""]
    lines += ["| stage | recipe | config | starts from | steps | epochs | seconds | best validation |",
              "|---|---|---|---|---|---|---|---|"]
    for m in report.members:
        start = f"`{m['init_from']}`" if m.get("init_from") else "scratch"
        if m.get("init_weights"):
            start += f" (weights {m['init_weights']})"
        lines.append(f"| {m['name']} | {m['recipe']} | `{Path(m['config']).name}` | {start} | {m['steps']} | "
                     f"{m['epochs']} | {m['seconds']} | {m['monitor']} {_fmt(m.get('best'))} |")
    lines += ["", "## Studies", ""]
    for style, figures in sets.items():
        lines.append(f"- `{style}`: {figures.get('n_studies', 0)} studies, {figures.get('n_positive', 0)} "
                     f"with a fracture; operating point `{figures.get('operating_point', '?')}`")
    lines += ["", "| model | set | threshold | study AUC (95% CI) | precision (95% CI) | recall (95% CI) | F1 |",
              "|---|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(n for figures in sets.values() for n in figures.get("models", {})))
    for name in names:
        for style, figures in sets.items():
            row = figures.get("models", {}).get(name)
            if row is None:
                continue
            threshold = "vote" if row["threshold"] is None else _fmt(row["threshold"])
            lines.append(f"| {name} | {style} | {threshold} | {_with_interval(row, 'auc', 'auc_low', 'auc_high')} | "
                         f"{_with_interval(row, 'precision', 'precision_low', 'precision_high')} | "
                         f"{_with_interval(row, 'recall', 'recall_low', 'recall_high')} | {_fmt(row['f1'])} |")
    lines += ["", "## Boxes", ""]
    if options.symmetries > 1 and "pg-det" in options.members:
        lines += [f"pg-det places each box at the median corners of {options.symmetries} decodes under the "
                  f"square's symmetries (`site.toml`: `options = {{ symmetries = {options.symmetries} }}`); "
                  "its rows before the refiner are those boxes, the detector's own.", ""]
    lines += ["| detector | set | true boxes | matched at IoU >= 0.3 (95% CI) | F1 at IoU 0.5 | mean IoU | mAP |",
              "|---|---|---|---|---|---|---|"]
    detectors = list(dict.fromkeys(n for figures in sets.values() for n in figures.get("boxes", {})))
    for name in detectors:
        for style, figures in sets.items():
            row = figures.get("boxes", {}).get(name)
            if row is None:
                continue
            lines.append(f"| {name} | {style} | {row['n_truth']} | "
                         f"{_with_interval(row, 'recall_iou_0.3', 'recall_low', 'recall_high')} | "
                         f"{_fmt(row['f1_iou_0.5'])} | {_fmt(row['mean_iou'])} | {_fmt(row['map'])} |")
    if report.results.get("ablation"):
        lines += ["", ABLATION_HEADING, "", *ablation_lines(report.results["ablation"])]
    lines += ["", f"{AIMS_LEAD}, on the held-out sets (`shifted`; `shifted-2` is the one no choice has "
              "seen): every member's study AUC >= 0.93; the ensemble "
              "at the committed operating point recall >= 0.90 with precision >= 0.70; fused boxes "
              "matched >= 0.70 at IoU >= 0.3; pg-det's own boxes (before the refiner) >= 0.50 at IoU >= 0.3 "
              "on a fresh set with study AUC >= 0.95.", ""]
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
                                             refiner_iterations=opts.refiner_iterations,
                                             symmetries=opts.symmetries))
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

    report.results["eval"] = {}
    for style in opts.eval_styles:
        archive, labels = make_phantom(opts.work_dir / f"eval-phantom-{style}", opts.eval_studies,
                                       opts.eval_seed, opts.phantom_size, style)
        measured = run_eval(archive, opts.work_dir / f"eval-{style}", labels_csv=labels, config_path=site,
                            operating_point=op_path, workers=opts.workers, bootstrap=bootstrap,
                            seed=opts.eval_seed, progress=progress)
        report.results["eval"][style] = result_figures(measured, bootstrap=bootstrap, seed=opts.eval_seed)
    ablation = opts.models_dir / ABLATION_FILE
    if ablation.is_file():
        report.results["ablation"] = json.loads(ablation.read_text(encoding="utf-8"))
    summary = {"command": demo_command(opts), "train_seed": opts.train_seed, "eval_seed": opts.eval_seed,
               "toy_first": opts.trains_toy, "toy_studies": opts.toy_studies, "toy_seed": opts.toy_seed,
               "train_style": opts.train_style, "eval_styles": list(opts.eval_styles),
               "train_phantoms": [{"style": style, "seed": seed} for style, seed in opts.train_phantoms()],
               "train_studies": opts.train_studies, "eval_studies": opts.eval_studies,
               "members": records, **report.results}
    report.files["json"] = opts.models_dir / "demo.json"
    atomic_write_text(report.files["json"], json.dumps(summary, indent=2, sort_keys=True) + "\n")
    report.files["markdown"] = opts.models_dir / "DEMO.md"
    atomic_write_text(report.files["markdown"], render_demo_report(report, opts))
    return report


def summary_lines(report: DemoReport) -> list[str]:
    """The closing lines: each model on each fresh set, then each detector's box recall."""
    sets: dict[str, Any] = report.results.get("eval", {})
    names = [n for figures in sets.values() for n in (*figures.get("models", {}), *figures.get("boxes", {}))]
    width = max([10] + [len(n) for n in names])
    lines = []
    for style, figures in sets.items():
        lines.append(f"{style}: {'model':<{width}} {'AUC':>6} {'precision':>9} {'recall':>7} {'F1':>6}")
        for name, row in figures.get("models", {}).items():
            lines.append(f"{style}: {name:<{width}} {_fmt(row['auc']):>6} {_fmt(row['precision']):>9} "
                         f"{_fmt(row['recall']):>7} {_fmt(row['f1']):>6}")
        for name, row in figures.get("boxes", {}).items():
            lines.append(f"{style}: {name:<{width}} true boxes matched at IoU >= {BOX_IOU}: "
                         f"{_fmt(row['recall_iou_0.3'])}")
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
@click.option("--style", "train_style", default="randomised", show_default=True,
              help="Phantom style of the training archive (rods, randomised or wide; never a measurement "
                   "style such as shifted; sample_data/README.md), "
                   "or a mix joined by '+' (rods+randomised: TRAIN_STUDIES studies of each style, "
                   "each with its own seed, split by patient together).")
@click.option("--eval-styles", default="randomised,shifted,shifted-2", show_default=True,
              help="Comma-separated phantom styles of the fresh evaluation sets, reported side by side.")
@click.option("--init-from", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Fine-tune each member from DIR/<name>/ (e.g. members trained on the rods style first) "
                   "instead of from scratch.")
@click.option("--toy-first/--no-toy-first", default=True, show_default=True,
              help="Train the tiny detector on the toy phantom first and start pg-det from it (from "
                   "scratch its boxes matched at most 0.06 of the validation boxes; DEMO.md's ablation).")
@click.option("--toy-studies", type=click.IntRange(min=4), default=1200, show_default=True,
              help="Studies in the toy stage's toy phantom.")
@click.option("--symmetries", type=click.Choice(["1", "2", "4", "8"]), default="8", show_default=True,
              help="pg-det's boxes in site.toml: the median of this many decodes under the square's symmetries.")
@click.option("--retrain", is_flag=True,
              help="Train every stage again, from the start, even if this demo already wrote it.")
@click.option("--refiner/--no-refiner", default=True, show_default=True,
              help="Train the box refiner stage and put it on the detectors in site.toml.")
@click.option("--set", "overrides", multiple=True, metavar="MEMBER:KEY=VALUE",
              help="Config override for one member, e.g. detr:train.max_steps=2 (repeatable).")
def train_demo_cmd(out: Path, work_dir: Path, members: str, train_studies: int, eval_studies: int,
                   train_style: str, eval_styles: str, init_from: Path | None, toy_first: bool, toy_studies: int,
                   symmetries: str, retrain: bool, refiner: bool, overrides: Sequence[str]) -> None:
    """Train the tiny demo members on a phantom set, tune their operating point and measure them
    on fresh phantom sets from another seed, in and out of the training style (seeded; about 2
    hours on 2 CPU cores)."""
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
    # the folders run_demo uses, so the options are checked against them (an --init-from of the
    # default models folder is fine when --out writes elsewhere)
    options = DemoOptions(models_dir=out / "models", work_dir=work_dir,
                          members=tuple(m.strip() for m in members.split(",") if m.strip()),
                          train_studies=train_studies, eval_studies=eval_studies, retrain=retrain,
                          train_style=train_style, init_from=init_from,
                          eval_styles=tuple(s.strip() for s in eval_styles.split(",") if s.strip()),
                          refiner=refiner, overrides=per_member, toy_first=toy_first, toy_studies=toy_studies,
                          symmetries=int(symmetries))
    report = run_demo(out, work_dir=work_dir, options=options, progress=True)
    for line in summary_lines(report):
        click.echo(line)
    click.echo(f"wrote {report.site_config}, {report.operating_point}, "
               f"{', '.join(str(p) for p in report.files.values())}")
