"""The ``screen tune`` Click command: a thin layer over :func:`screen.tune.tuner.run_tune`."""

from __future__ import annotations

from pathlib import Path

import click

from screen.tune.search import RULE_FAMILIES

__all__ = ["tune_cmd"]


def _split_list(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


@click.command("tune")
@click.argument("predictions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target-recall", type=float, required=True,
              help="Study-level sensitivity the decision point must reach, e.g. 0.90.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Operating point JSON to write (screen run --operating-point reads it).")
@click.option("--objective", type=click.Choice(["precision", "specificity", "f1", "youden"]),
              default="precision", show_default=True,
              help="What to maximise subject to the target recall.")
@click.option("--rules", default=",".join(RULE_FAMILIES), show_default=True,
              help="Vote rules to search, comma-separated.")
@click.option("--dual", is_flag=True,
              help="Also write a high-specificity point (marks a finding's confidence level).")
@click.option("--target-specificity", type=float, default=0.9, show_default=True,
              help="With --dual: specificity the high-specificity point must reach "
                   "(it maximises sensitivity under it).")
@click.option("--folds", type=int, default=5, show_default=True,
              help="Stratified folds of the out-of-fold estimate (0 skips it).")
@click.option("--bootstrap", "n_bootstrap", type=int, default=2000, show_default=True,
              help="Bootstrap resamples per confidence interval (>= 2000).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the folds and the bootstrap.")
@click.option("--max-combinations", type=int, default=50_000, show_default=True,
              help="Threshold combinations enumerated per vote rule before candidates are "
                   "thinned (the report says when); raise it for an exact search on big sets.")
@click.option("--weight-step", type=float, default=0.1, show_default=True,
              help="Grid step of the weighted-mean weights on the simplex.")
@click.option("--guard", type=click.Choice(["oof", "lower-ci", "none"]), default="oof",
              show_default=True,
              help="What the decision point must meet beyond its in-sample sensitivity: oof "
                   "(the target out of fold), lower-ci (the exact 95 % lower bound of in-sample "
                   "sensitivity), or none (in sample only; the report says it is unguarded).")
@click.option("--allow-small", is_flag=True,
              help="Tune even when the set has too few fracture studies to show the target "
                   "(op.json and the report record it).")
@click.option("--calibrate", type=click.Choice(["platt", "isotonic", "none"]), default="platt",
              show_default=True,
              help="Calibration of each member's and the fused score, fitted on the tuning set and "
                   "measured out of fold (ECE before/after); screen run reports calibrated "
                   "probabilities (decisions stay on the raw scores). Platt by default: isotonic "
                   "on a dozen fracture studies makes ties.")
@click.option("--by", "group_by", type=click.Choice(["BodyPartExamined", "Manufacturer",
                                                     "ManufacturerModelName", "Modality"]),
              default=None,
              help="Tune one decision point per value of this header field (groups with enough "
                   "fracture studies); the global point decides the others.")
@click.option("--min-group-positives", type=click.IntRange(min=1), default=None,
              help="With --by: fracture studies a group needs for its own point (default: the "
                   "fewest that can show --target-recall).")
@click.option("--stability", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --guard oof: run the guard again under this many other fold seeds and "
                   "report which rule each chooses (a choice that moves with the folds is one "
                   "among near-equivalent rules).")
@click.option("--members", default=None, metavar="A,B",
              help="Members to tune, comma-separated (default: every score: column).")
@click.option("--split", default=None, help="Tune only on rows with this split value.")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for report.md, roc.png, pr.png (default: <OUT stem>-report).")
def tune_cmd(predictions: Path, target_recall: float, out: Path, objective: str, rules: str,
             dual: bool, target_specificity: float, folds: int, n_bootstrap: int, seed: int,
             max_combinations: int, weight_step: float, guard: str, allow_small: bool,
             members: str | None, split: str | None, report_dir: Path | None, calibrate: str,
             group_by: str | None, min_group_positives: int | None, stability: int) -> None:
    """Choose member thresholds and the vote rule for a target recall from PREDICTIONS
    (the predictions.csv of screen eval); write the operating point and a report."""
    from screen.tune.tuner import TuneSettings, run_tune
    from screen.tune.report import guard_note, small_note
    from screen.tune.result import stability_note

    settings = TuneSettings(
        target_recall=target_recall, objective=objective, rules=_split_list(rules), dual=dual,
        target_specificity=target_specificity, folds=folds, n_bootstrap=n_bootstrap, seed=seed,
        max_combinations=max_combinations, weight_step=weight_step, guard=guard,
        allow_small=allow_small, calibrate=calibrate, group_by=group_by,
        min_group_positives=min_group_positives, stability=stability,
    )
    result, written = run_tune(predictions, out, settings, report_dir=report_dir, split=split,
                               members=_split_list(members) or None)
    for point in result.points:
        op = point.operating_point
        click.echo(f"{point.level}: {op.vote.label}; "
                   + ", ".join(f"{m} >= {t:.4g}" for m, t in op.thresholds.items()))
        for warning in point.vote_warnings:
            click.echo(f"  warning: {warning}")
        click.echo("  " + guard_note(point.guard, point.in_sample, point.out_of_fold,
                                     settings.target_recall))
        for name, source in (("in sample", point.in_sample), ("out of fold", point.out_of_fold)):
            if source is None:
                continue
            figures = ", ".join(
                f"{key} {source[key].value:.3f} [{source[key].low:.3f}, {source[key].high:.3f}]"
                for key in ("sensitivity", "specificity", "ppv", "npv", "f1")
            )
            click.echo(f"  {name}: {figures}")
    fold_seeds = stability_note(result.stability)
    if fold_seeds:
        click.echo(fold_seeds)
    small = small_note(result.decision_point.guard, settings.target_recall)
    if small:
        click.echo(f"warning: small set: {small}")
    deciding = result.decision_point.operating_point
    if deciding.calibration is not None and deciding.calibration.ece_after:
        cal = deciding.calibration
        click.echo(f"calibration ({cal.method}), expected calibration error out of fold, before -> after: "
                   + ", ".join(f"{k} {cal.ece_before[k]:.3f} -> {cal.ece_after[k]:.3f}" for k in cal.ece_after))
    for group in result.groups:
        if group.point is not None:
            gop = group.point.operating_point
            click.echo(f"group {group.value}: {gop.id}; {gop.vote.label}; "
                       + ", ".join(f"{m} >= {t:.4g}" for m, t in gop.thresholds.items()))
        else:
            click.echo(f"group {group.value}: the global point ({group.reason})")
    click.echo(f"wrote {written[0]}")
    click.echo(f"report: {written[1].parent}")
