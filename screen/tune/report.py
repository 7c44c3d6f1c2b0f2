"""The report of ``screen tune``: a markdown table in the paper's form, ROC/PR plots, and the
provenance the operating point file carries.

Writes into one folder:

- ``report.md``: how the point was guarded (``--guard``), its rule's free parameters, and
  whether the set was too small to show the target; per member (alone, at its own best
  threshold for the same target) and for each fused point (in sample and out of fold),
  model | config | accuracy | precision | recall | F1 in percent with one decimal, as the
  paper tabulates them; then each point's sensitivity, specificity, PPV and NPV with exact
  (Clopper-Pearson) 95 % intervals and F1 with a bootstrap interval; then AUCs.
- ``roc.png`` and ``pr.png``: one curve per member and one per fused point (the fused score of
  :func:`ensembles.fusion.decide_study`: k-th largest threshold-centred score, or the weighted
  mean), the chosen points marked.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from dicom_io.atomic import atomic_write_bytes, atomic_write_text
from ensembles.fusion import VoteRule
from ensembles.operating_point.point import Estimate, OperatingPoint, OutOfFold, Provenance, TuneGuard
from ensembles.types import VoteRuleName
from screen import __version__
from screen.tune.inputs import HIGH_SENSITIVITY, REPORTED, Predictions, TuneSettings
from screen.tune.result import TunedPoint, TuneResult, stability_note
from screen.tune.search import Choice, fused_scores
from train.metrics import Confusion, Interval, confusion, pr_curve, roc_curve_points

__all__ = [
    "PAPER_COLUMNS", "describe_rule", "guard_note", "operating_point_for", "paper_rows",
    "small_note", "write_report",
]

#: What each guard promises, for the report.
_GUARDS = {
    "oof": "Guard `oof`: the way the decision point was chosen reached the target sensitivity "
           "out of fold (chosen on k-1 folds, measured on the held-out one); those figures also "
           "chose it, so confirm on a held-out test split",
    "lower-ci": "Guard `lower-ci`: the exact 95 % lower bound of the decision point's in-sample "
                "sensitivity reaches the target",
    "none": "**Unguarded** (`--guard none`): the decision point was chosen on its in-sample "
            "sensitivity only, which over-states what it finds on new studies; compare the out-"
            "of-fold rows",
}
#: Columns of the paper's results table.
PAPER_COLUMNS = ("Model", "Config", "Accuracy", "Precision", "Recall", "F1")
_LABELS = {"sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV",
           "npv": "NPV", "f1": "F1"}


def _pct(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.1f}"


def describe_rule(rule: VoteRule, thresholds: dict[str, float]) -> str:
    """One line a reader can check against the JSON: rule, weights and thresholds."""
    if rule.rule is VoteRuleName.WEIGHTED_MEAN:
        weights = ", ".join(f"{m} {w:g}" for m, w in (rule.weights or {}).items())
        return f"weighted-mean ({weights}) >= {float(rule.threshold or 0):.4g}"
    cuts = ", ".join(f"{m} >= {t:.4g}" for m, t in thresholds.items())
    return f"{rule.label}; {cuts}"


def guard_note(guard: TuneGuard, in_sample: dict[str, Interval],
               out_of_fold: dict[str, Interval] | None, target: float) -> str:
    """One sentence on what guarded a point (report, CLI and op.json notes)."""
    free = f"{guard.free_parameters} free parameters"
    if guard.fitted_recall is None:
        return f"chosen on in-sample specificity (the guard covers the decision point); {free}"
    oof = None if out_of_fold is None else out_of_fold["sensitivity"].value
    if guard.guard == "oof" and oof is not None:
        return (f"guard oof: out-of-fold sensitivity {oof:.4f} >= target {target:g}, the rule "
                f"fitted in sample to sensitivity >= {guard.fitted_recall:.4f}; {free}")
    sens = in_sample["sensitivity"]
    if guard.guard == "lower-ci":
        return (f"guard lower-ci: in-sample sensitivity {sens.value:.4f}, exact 95 % lower "
                f"bound {sens.low:.4f} >= target {target:g}; {free}")
    held = "" if oof is None else (f"; out-of-fold sensitivity {oof:.4f}"
                                   + (" is below the target" if oof < target else ""))
    return (f"guard none: UNGUARDED, chosen on in-sample sensitivity {sens.value:.4f} "
            f"only{held}; {free}")


def small_note(guard: TuneGuard, target: float) -> str | None:
    """What ``--allow-small`` let through (after "small set: "), or ``None``."""
    if not guard.allowed_small:
        return None
    needed = ("no number is enough" if guard.positives_needed is None
              else f"{guard.positives_needed} needed")
    return (f"{guard.positives} fracture studies, {needed} to show sensitivity >= {target:g} "
            "with an exact 95 % lower bound; tuned anyway (--allow-small)")


def _estimate(interval: Interval, prefix: str = "") -> Estimate | None:
    if math.isnan(interval.value):
        return None
    low = interval.value if math.isnan(interval.low) else min(interval.low, interval.value)
    high = interval.value if math.isnan(interval.high) else max(interval.high, interval.value)
    return Estimate(value=interval.value, ci_low=low, ci_high=high, n=interval.n,
                    method=prefix + interval.method)


def _notes(result_exact: bool, predictions: Predictions, settings: TuneSettings,
           extra: Sequence[str | None]) -> str:
    parts = [f"{predictions.labels.size} studies ({predictions.positives} fracture, "
             f"{predictions.negatives} normal)"]
    if predictions.split is not None:
        parts.append(f"split {predictions.split!r}")
    parts.append(f"rules searched: {', '.join(settings.rules)}")
    parts.append("threshold search exact" if result_exact else
                 f"threshold search capped at {settings.max_combinations} combinations per rule")
    empty = predictions.empty_counts()
    if empty:
        parts.append("empty scores counted as 0.0: " +
                     ", ".join(f"{m} {c}" for m, c in empty.items()))
    parts += [part for part in extra if part]
    return "; ".join(parts)


def operating_point_for(level: str, choice: Choice, in_sample: dict[str, Interval],
                        oof: dict[str, Interval] | None, predictions: Predictions,
                        settings: TuneSettings, exact: bool, guard: TuneGuard,
                        note: str, warnings: Sequence[str] = ()) -> OperatingPoint:
    """The operating point ``screen run`` reads, with the figures and guard as provenance;
    ``warnings`` (:func:`screen.tune.votes.vote_warnings`) join its notes."""
    est = {k: _estimate(in_sample[k]) for k in REPORTED}
    small = small_note(guard, settings.target_recall)
    out_of_fold = None
    if oof is not None:
        prefix = f"{settings.folds}-fold out-of-fold (stratified, seed {settings.seed}), "
        out_of_fold = OutOfFold(folds=settings.folds,
                                **{k: _estimate(oof[k], prefix) for k in REPORTED})
    high_sens = level == HIGH_SENSITIVITY
    provenance = Provenance(
        source_sha256=predictions.sha256,
        tuning_set=None if predictions.source is None else str(predictions.source),
        target_recall=settings.target_recall if high_sens else None,
        sensitivity=est["sensitivity"], specificity=est["specificity"],
        created_by=f"screen tune {__version__}",
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        notes=_notes(exact, predictions, settings,
                     [note, small and f"small set: {small}",
                      *(f"votes: {w}" for w in warnings)]),
        objective=settings.objective if high_sens else "sensitivity",
        target_specificity=None if high_sens else settings.target_specificity,
        ppv=est["ppv"], npv=est["npv"], f1=est["f1"], out_of_fold=out_of_fold, guard=guard,
    )
    return OperatingPoint(thresholds=choice.thresholds, vote=choice.rule, level=level,
                          provenance=provenance)


def _row(model: str, config: str, conf: Confusion) -> list[str]:
    return [model, config, _pct(conf.accuracy), _pct(conf.ppv), _pct(conf.sensitivity),
            _pct(conf.f1)]


def paper_rows(result: TuneResult) -> list[list[str]]:
    """Rows of the paper's table: members alone, then each fused point (in sample, OOF)."""
    labels = result.predictions.labels
    scores = result.predictions.filled()
    members = result.predictions.members
    rows: list[list[str]] = []
    for j, member in enumerate(members):
        choice = result.members_alone.get(member)
        if choice is None:
            continue
        calls = scores[:, j] >= choice.thresholds[member]
        rows.append(_row(member, f"alone, score >= {choice.thresholds[member]:.4g}",
                         confusion(labels, calls)))
    for point in result.points:
        rows.append(_row(f"fused ({point.level})",
                         describe_rule(point.choice.rule, point.choice.thresholds),
                         confusion(labels, point.decisions)))
        if point.oof_decisions is not None:
            k = result.settings.folds
            rows.append(_row(f"fused ({point.level}), out of fold",
                             f"{k}-fold, chosen on {k - 1} folds, measured on the held-out one",
                             confusion(labels, point.oof_decisions)))
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _interval_rows(point: TunedPoint) -> list[list[str]]:
    rows = []
    for key in REPORTED:
        inner = point.in_sample[key]
        row = [_LABELS[key], _pct(inner.value), f"{_pct(inner.low)}-{_pct(inner.high)}"]
        if point.out_of_fold is not None:
            oof = point.out_of_fold[key]
            row += [_pct(oof.value), f"{_pct(oof.low)}-{_pct(oof.high)}"]
        rows.append(row)
    return rows


def _curves(result: TuneResult) -> list[tuple[str, NDArray[np.float64], list[Choice]]]:
    preds = result.predictions
    scores = preds.filled()
    out = [(m, scores[:, j], [result.members_alone[m]] if m in result.members_alone else [])
           for j, m in enumerate(preds.members)]
    for point in result.points:
        fused = fused_scores(scores, preds.members, point.choice.rule, point.choice.thresholds)
        out.append((f"fused ({point.level})", fused, [point.choice]))
    return out


def _plots(result: TuneResult, folder: Path) -> tuple[list[Path], list[list[str]]]:
    from matplotlib.figure import Figure

    labels = result.predictions.labels
    p, n = result.predictions.positives, result.predictions.negatives
    roc_fig, pr_fig = Figure(figsize=(6, 6)), Figure(figsize=(6, 6))
    roc_ax, pr_ax = roc_fig.add_subplot(), pr_fig.add_subplot()
    aucs: list[list[str]] = []
    for i, (name, values, chosen) in enumerate(_curves(result)):
        color = f"C{i % 10}"
        roc, pr = roc_curve_points(labels, values), pr_curve(labels, values)
        aucs.append([name, f"{roc.area:.3f}", f"{pr.area:.3f}"])
        roc_ax.plot(roc.x, roc.y, color=color, label=f"{name} (AUC {roc.area:.3f})")
        pr_ax.plot(pr.x, pr.y, color=color, label=f"{name} (AP {pr.area:.3f})")
        for choice in chosen:
            sens, spec = choice.tp / p, (n - choice.fp) / n
            prec = choice.tp / (choice.tp + choice.fp) if choice.tp + choice.fp else 1.0
            roc_ax.plot([1 - spec], [sens], marker="o", color=color, markersize=8)
            pr_ax.plot([sens], [prec], marker="o", color=color, markersize=8)
    target = result.settings.target_recall
    roc_ax.axhline(target, linestyle=":", color="grey", label=f"target recall {target:g}")
    pr_ax.axvline(target, linestyle=":", color="grey", label=f"target recall {target:g}")
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="lightgrey")
    roc_ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (study level)",
               xlim=(0, 1), ylim=(0, 1.02))
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (study level)",
              xlim=(0, 1), ylim=(0, 1.02))
    written = []
    for fig, ax, name in ((roc_fig, roc_ax, "roc.png"), (pr_fig, pr_ax, "pr.png")):
        ax.legend(loc="lower right" if name == "roc.png" else "lower left", fontsize=7)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        atomic_write_bytes(folder / name, buffer.getvalue())
        written.append(folder / name)
    return written, aucs


def _vote_section(point: TunedPoint) -> list[str]:
    """Each member's votes at ``point`` and what a vote without information does to the rule
    (:mod:`screen.tune.votes`); nothing for ``weighted-mean``."""
    votes = point.votes
    if not votes:
        return []
    lines = ["", f"### {point.level}: member votes", ""]
    lines += _table(["Member", "Threshold", "Yes on fracture studies", "Yes on normal studies", "Vote"],
                    [[v.member, f"{v.threshold:.4g}",
                      f"{v.yes_fracture}/{v.fracture} ({_pct(v.fracture_rate)} %)",
                      f"{v.yes_normal}/{v.normal} ({_pct(v.normal_rate)} %)",
                      v.role or "informative"] for v in votes])
    warnings = point.vote_warnings
    if warnings:
        lines += [""] + [f"- **Warning**: {w}" for w in warnings]
    return lines


def _extra_sections(result: TuneResult) -> list[str]:
    """Calibration (ECE before and after, out of fold) and the per-group points."""
    op = result.decision_point.operating_point
    lines: list[str] = []
    cal = op.calibration
    if cal is not None:
        lines += ["", f"## Calibration ({cal.method})", "",
                  f"Scores are reported as {cal.statement()}; decisions stay on the raw scores. "
                  "Expected calibration error (10 equal-width bins) of the pooled out-of-fold "
                  "scores, each fold calibrated by a map fitted on the others:", ""]
        lines += _table(["Score", "ECE raw", "ECE calibrated"],
                        [[k, f"{cal.ece_before[k]:.3f}", f"{cal.ece_after[k]:.3f}"] for k in cal.ece_after])
    if result.groups:
        lines += ["", f"## Points per {result.settings.group_by}", ""]
        rows = []
        for g in result.groups:
            if g.point is None:
                rows.append([g.value, str(g.positives), str(g.negatives), "global", g.reason])
                continue
            sens = g.point.out_of_fold or g.point.in_sample
            s = sens["sensitivity"]
            rows.append([g.value, str(g.positives), str(g.negatives), f"`{g.point.operating_point.id}`",
                         f"sensitivity {100 * s.value:.1f} [{100 * s.low:.1f}, {100 * s.high:.1f}]"])
        lines += _table(["Group", "Fracture", "Normal", "Point", "Figures / reason"], rows)
    return lines


def write_report(result: TuneResult, folder: str | Path) -> list[Path]:
    """Write ``report.md``, ``roc.png`` and ``pr.png`` into ``folder``; returns their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    preds, settings = result.predictions, result.settings
    plots, aucs = _plots(result, out)
    objective = (f"maximise {settings.objective} subject to sensitivity >= "
                 f"{settings.target_recall:g}")
    lines = [
        "# screen tune report", "",
        f"- Predictions: `{preds.source}` (SHA-256 `{preds.sha256}`)"
        + (f", split `{preds.split}`" if preds.split is not None else ""),
        f"- Studies: {preds.labels.size} ({preds.positives} fracture, {preds.negatives} normal)",
        f"- Decision point: {objective}; rules searched: {', '.join(settings.rules)}",
    ]
    if settings.dual:
        lines.append(f"- High-specificity point: maximise sensitivity subject to specificity "
                     f">= {settings.target_specificity:g}")
    for point in result.points:
        exact = "exact" if point.search.exact else "capped (see op.json notes)"
        lines.append(f"- {point.level}: operating point `{point.operating_point.id}`, "
                     f"{point.search.candidates} candidates scored, search {exact}; "
                     + guard_note(point.guard, point.in_sample, point.out_of_fold,
                                  settings.target_recall))
    lines.append("- " + _GUARDS[settings.guard])
    stability = stability_note(result.stability)
    if stability:
        lines.append(f"- {stability[0].upper()}{stability[1:]}")
    small = small_note(result.decision_point.guard, settings.target_recall)
    if small:
        lines.append(f"- **Small set**: {small}; the figures below cannot show the target")
    empty = preds.empty_counts()
    if empty:
        lines.append("- Empty member scores, counted as 0.0: "
                     + ", ".join(f"{m}: {c}" for m, c in empty.items()))
    lines += ["", "## Results (percent)", ""]
    lines += _table(PAPER_COLUMNS, paper_rows(result))
    for point in result.points:
        lines += ["", f"## {point.level}: figures with 95 % intervals (percent)", "",
                  "Sensitivity, specificity, PPV and NPV: exact (Clopper-Pearson, two-sided) "
                  f"intervals; F1: percentile bootstrap over studies ({settings.n_bootstrap} "
                  "resamples).", ""]
        header = ["Metric", "In sample", "95 % CI"]
        if point.out_of_fold is not None:
            header += ["Out of fold", "95 % CI"]
        lines += _table(header, _interval_rows(point))
        lines += _vote_section(point)
    lines += _extra_sections(result)
    lines += ["", "## Curves", ""]
    lines += _table(["Curve", "ROC AUC", "Average precision"], aucs)
    lines += ["", "![ROC](roc.png)", "", "![Precision-recall](pr.png)", ""]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return [report, *plots]

