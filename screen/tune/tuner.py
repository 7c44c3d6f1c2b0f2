"""``screen tune``: choose the operating point for a target sensitivity, with honest figures.

From a predictions file (one row per study, each member's study score) it

1. refuses a set with too few fracture studies to show the target at all (even ``n/n`` has an
   exact lower bound below it; :func:`positives_needed` says how many would do) unless
   ``allow_small``;
2. searches every member's threshold and the vote rule (:mod:`screen.tune.search`, exact) for
   the point that maximises the objective (precision by default; specificity, F1 or Youden's
   J) subject to study-level sensitivity >= the target, **guarded** against over-fitting
   (see *Guards* below): by default only a way of choosing the point whose out-of-fold
   sensitivity meets the target qualifies, and the rule with fewer free parameters wins a tie;
3. with ``dual``, also the *high-specificity* point: the highest sensitivity subject to
   specificity >= ``target_specificity``, refused unless stricter than the first point;
4. reports sensitivity, specificity, PPV and NPV at each point with exact (Clopper-Pearson)
   95 % intervals and F1 with a percentile bootstrap (seeded, >= 2,000 resamples), and the
   same figures **out of fold**: stratified k folds, the point chosen on k-1 folds and applied
   to the held-out one, the held-out decisions pooled;
5. writes the :class:`~ensembles.operating_point.point.OperatingPoint` file (one point, or a
   ``points`` file with ``dual``) with provenance: the predictions file's SHA-256, the
   targets, the guard, the achieved figures and intervals.

Guards (``--guard``):

- ``oof`` (default): each rule family (``any``; ``k-of-n`` with k >= 2; ``weighted-mean``) is
  cross-validated as a way of choosing: fitted on k-1 folds to an in-sample sensitivity
  (the target first, then each ``j / positives`` above it: a margin), applied to the held-out
  fold, the held-out decisions pooled. Only ways whose pooled out-of-fold sensitivity meets
  the target qualify; the smallest margin at which any qualifies is taken (a larger one only
  trades precision for recall already shown), and among its qualifying families the best
  out-of-fold objective, then fewer false positives, then fewer free parameters
  (:func:`~screen.tune.search.free_parameters`) wins. The family is then fitted on every
  study at that margin. Its out-of-fold figures also chose it, so they are not an
  independent estimate: confirm on a held-out test split.
- ``lower-ci``: the rule must find enough fractures in sample that the exact 95 % lower
  bound of its sensitivity meets the target; best in-sample objective, then fewer false
  positives, then fewer free parameters.
- ``none``: today's in-sample search over every family at once; the report and op.json say
  the point is unguarded.

Box settings keep their defaults (``boxes.members`` empty: every member that gives boxes
contributes); a predictions file cannot tell detectors from classifiers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedKFold

from ensembles.operating_point.op_json import save_operating_points
from ensembles.operating_point.point import OperatingPoint, TuneGuard
from ensembles.types import VoteRuleName
from screen.tune.inputs import (
    GROUP_COLUMNS, GUARDS, HIGH_SENSITIVITY, HIGH_SPECIFICITY, REPORTED, Predictions, TuneError, TuneSettings,
    read_predictions,
)
from screen.tune.report import guard_note, operating_point_for
from screen.tune.calibrate import calibrate
from screen.tune.groups import tune_groups
from screen.tune.reference import build_reference
from screen.tune.result import GroupOutcome, TunedPoint, TuneResult
from screen.tune.votes import member_votes, vote_warnings
from screen.tune.search import (
    LEVEL, Choice, SearchResult, decide, exact_interval, free_parameters, fused_scores, min_tp_for,
    min_tp_shown, objective_value, positives_needed, search,
)
from train.metrics import Interval, bootstrap_metrics, confusion

__all__ = [
    "EXACT_METHOD", "GUARDS", "HIGH_SENSITIVITY", "HIGH_SPECIFICITY", "REPORTED", "Procedure",
    "TunedPoint", "TuneResult", "TuneSettings", "decide_predictions", "exact_metrics",
    "fitted_levels", "run_tune", "tune",
]

EXACT_METHOD = "Clopper-Pearson exact, two-sided 95 %"
#: Most in-sample sensitivities guard ``oof`` fits a rule to (the target and up to 11 above).
MAX_FITTED_LEVELS = 12
_EXACT = {"sensitivity": ("tp", "fn"), "specificity": ("tn", "fp"), "ppv": ("tp", "fp"),
          "npv": ("tn", "fn")}


@dataclass(frozen=True)
class Procedure:
    """One way of choosing the decision point: what is searched and what it is fitted to.

    Attributes:
        rules: rule families given to :func:`~screen.tune.search.search` (one per procedure
            under guards ``oof`` and ``lower-ci``; all of them together under ``none``).
        ks: vote counts to try (``None``: what ``rules`` implies).
        fitted_recall: the in-sample sensitivity the search must reach.
    """

    rules: tuple[str, ...]
    ks: tuple[int, ...] | None
    fitted_recall: float


@dataclass(frozen=True)
class _Guarded:
    """The decision point a guard let through: how, the search on every study, its pooled
    held-out decisions (``None`` with folds 0)."""

    procedure: Procedure
    found: SearchResult
    oof_decisions: NDArray[np.bool_] | None


Splits = list[tuple[NDArray[np.intp], NDArray[np.intp]]]
Chooser = Callable[[NDArray[np.float64], NDArray[np.bool_], str], Choice]


def exact_metrics(labels: NDArray[np.bool_], decisions: NDArray[np.bool_], *, n_bootstrap: int,
                  seed: int) -> dict[str, Interval]:
    """:data:`REPORTED` figures: sensitivity, specificity, PPV and NPV with exact
    (Clopper-Pearson) 95 % intervals; F1, not a binomial proportion, with the percentile
    bootstrap over studies."""
    conf = confusion(labels, decisions)
    out: dict[str, Interval] = {}
    for key in REPORTED:
        if key not in _EXACT:
            out.update(bootstrap_metrics(labels, decisions, n_resamples=n_bootstrap, seed=seed,
                                         metrics=(key,)))
            continue
        hit, miss = (getattr(conf, cell) for cell in _EXACT[key])
        low, high = exact_interval(hit, hit + miss)
        out[key] = Interval(value=conf.metric(key), low=low, high=high, level=LEVEL,
                            n=hit + miss, method=EXACT_METHOD)
    return out


def fitted_levels(target: float, positives: int, cap: int = MAX_FITTED_LEVELS) -> list[float]:
    """In-sample sensitivities guard ``oof`` fits a rule to: the target, then every
    ``j / positives`` above it (at most ``cap`` in all, spread evenly, 1.0 always kept)."""
    start = min_tp_for(target, positives)
    above = [j / positives for j in range(start, positives + 1) if j / positives > target]
    if len(above) > cap - 1:
        keep = np.unique(np.round(np.linspace(0, len(above) - 1, cap - 1)).astype(int))
        above = [above[int(i)] for i in keep]
    return [target] + above


def _search_specific(scores: NDArray[np.float64], labels: NDArray[np.bool_],
                     members: Sequence[str], settings: TuneSettings) -> SearchResult:
    return search(scores, labels, members, objective="sensitivity", rules=settings.rules,
                  min_specificity=settings.target_specificity, weight_step=settings.weight_step,
                  max_combinations=settings.max_combinations)


def _fit(scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str],
         settings: TuneSettings, procedure: Procedure) -> SearchResult:
    return search(scores, labels, members, objective=settings.objective, rules=procedure.rules,
                  ks=procedure.ks, min_recall=procedure.fitted_recall,
                  weight_step=settings.weight_step, max_combinations=settings.max_combinations)


def _require(result: SearchResult, settings: TuneSettings, level: str, where: str) -> Choice:
    if result.best is not None:
        return result.best
    rules = ", ".join(settings.rules)
    if level == HIGH_SENSITIVITY:
        raise TuneError(
            f"no operating point reaches sensitivity >= {settings.target_recall:g} {where}with "
            f"rules {rules}; the best reachable is {result.max_recall:.4f}; lower "
            "--target-recall or add rules (--rules any,k-of-n,weighted-mean)"
        )
    raise TuneError(
        f"no operating point reaches specificity >= {settings.target_specificity:g} {where}with "
        f"rules {rules}; the best reachable is {result.max_specificity:.4f}; lower "
        "--target-specificity"
    )


def _chooser(members: Sequence[str], settings: TuneSettings, level: str,
             procedure: Procedure | None = None) -> Chooser:
    """Chooses a point on the training folds: ``procedure`` (high-sensitivity) or the
    high-specificity search."""
    def choose(scores: NDArray[np.float64], labels: NDArray[np.bool_], where: str) -> Choice:
        found = (_search_specific(scores, labels, members, settings) if procedure is None
                 else _fit(scores, labels, members, settings, procedure))
        return _require(found, settings, level, where)
    return choose


def _held_out(scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str],
              splits: Splits, choose: Chooser) -> NDArray[np.bool_]:
    """Pooled held-out decisions: each fold decided by the point chosen on the others."""
    out = np.zeros(labels.size, dtype=bool)
    for i, (train, held) in enumerate(splits, start=1):
        choice = choose(scores[train], labels[train],
                        f"on the studies outside fold {i} of {len(splits)} ")
        out[held] = decide(scores[held], members, choice.rule, choice.thresholds)
    return out


def _families(settings: TuneSettings, n_members: int, fitted: float) -> list[Procedure]:
    """One procedure per rule family searched (``k-of-n`` keeps k = 1 only without ``any``)."""
    rules = settings.rules
    out = []
    if VoteRuleName.ANY in rules:
        out.append(Procedure((VoteRuleName.ANY,), (1,), fitted))
    ks = tuple(range(2 if VoteRuleName.ANY in rules else 1, n_members + 1))
    if VoteRuleName.K_OF_N in rules and ks:
        out.append(Procedure((VoteRuleName.K_OF_N,), ks, fitted))
    if VoteRuleName.WEIGHTED_MEAN in rules:
        out.append(Procedure((VoteRuleName.WEIGHTED_MEAN,), (), fitted))
    return out


def _rank(settings: TuneSettings, labels: NDArray[np.bool_], tp: int, fp: int,
          found: SearchResult, order: int) -> tuple[float, int, int, int]:
    """Higher is better: the objective at ``tp``/``fp``, fewer false positives, fewer free
    parameters of the rule ``found`` on every study, then the family order."""
    p, n = int(labels.sum()), int(labels.size - labels.sum())
    value = float(objective_value(settings.objective, np.array(tp), np.array(fp), p, n))
    best = _require(found, settings, HIGH_SENSITIVITY, "")
    return value, -fp, -free_parameters(best.rule, len(best.thresholds)), -order


def _with_oof(scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str],
              settings: TuneSettings, splits: Splits, procedure: Procedure,
              found: SearchResult) -> _Guarded:
    oof = (_held_out(scores, labels, members, splits,
                     _chooser(members, settings, HIGH_SENSITIVITY, procedure))
           if splits else None)
    return _Guarded(procedure, found, oof)


def _unguarded(scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str],
               settings: TuneSettings, splits: Splits) -> _Guarded:
    procedure = Procedure(settings.rules, None, settings.target_recall)
    found = _fit(scores, labels, members, settings, procedure)
    _require(found, settings, HIGH_SENSITIVITY, "")
    return _with_oof(scores, labels, members, settings, splits, procedure, found)


def _reached(scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str],
             settings: TuneSettings) -> int:
    """True positives of the unguarded point (what ``--guard none`` would take), for refusals."""
    found = _fit(scores, labels, members, settings,
                 Procedure(settings.rules, None, settings.target_recall))
    return found.best.tp if found.best else 0


def _guard_lower_ci(scores: NDArray[np.float64], labels: NDArray[np.bool_],
                    members: Sequence[str], settings: TuneSettings, splits: Splits) -> _Guarded:
    p, target = int(labels.sum()), settings.target_recall
    need = min_tp_shown(target, p)
    if need is None:
        tp = _reached(scores, labels, members, settings)
        raise TuneError(
            f"no operating point shows sensitivity >= {target:g} at the lower bound of its "
            f"exact 95 % interval (--guard lower-ci): in sample the best point reaches "
            f"{tp / p:.4f} ({tp}/{p} fracture studies), and even {p}/{p} has a lower bound of "
            f"{exact_interval(p, p)[0]:.4f}; add fracture studies, lower --target-recall, or "
            "give --guard oof (or --guard none, knowingly)"
        )
    ranked = []
    for order, procedure in enumerate(_families(settings, len(members), need / p)):
        found = _fit(scores, labels, members, settings, procedure)
        choice = _require(found, settings, HIGH_SENSITIVITY, "")
        ranked.append((_rank(settings, labels, choice.tp, choice.fp, found, order), procedure,
                       found))
    _, procedure, found = max(ranked, key=lambda c: c[0])
    return _with_oof(scores, labels, members, settings, splits, procedure, found)


def _guard_oof(scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str],
               settings: TuneSettings, splits: Splits) -> _Guarded:
    p, target = int(labels.sum()), settings.target_recall
    need, most, tried = min_tp_for(target, p), 0, 0
    for fitted in fitted_levels(target, p):
        passing = []
        for order, procedure in enumerate(_families(settings, len(members), fitted)):
            oof = _held_out(scores, labels, members, splits,
                            _chooser(members, settings, HIGH_SENSITIVITY, procedure))
            tp, fp = int((oof & labels).sum()), int((oof & ~labels).sum())
            most, tried = max(most, tp), tried + 1
            if tp >= need:
                found = _fit(scores, labels, members, settings, procedure)
                passing.append((_rank(settings, labels, tp, fp, found, order),
                                _Guarded(procedure, found, oof)))
        if passing:
            return max(passing, key=lambda c: c[0])[1]
    tp = _reached(scores, labels, members, settings)
    raise TuneError(
        f"no operating point reaches sensitivity >= {target:g} out of fold (--guard oof, "
        f"{len(splits)} folds): in sample the best point reaches {tp / p:.4f} ({tp}/{p} fracture "
        f"studies), out of fold at most {most / p:.4f} ({most}/{p}) over {tried} ways of "
        "choosing it; add fracture studies, lower --target-recall, or give --guard none to "
        "accept the in-sample figure knowingly"
    )


_GUARD_FUNCTIONS = {"oof": _guard_oof, "lower-ci": _guard_lower_ci, "none": _unguarded}


def _check_classes(predictions: Predictions, settings: TuneSettings) -> None:
    p, n = predictions.positives, predictions.negatives
    source = predictions.source or "the predictions"
    if p == 0 or n == 0:
        missing = "fracture" if p == 0 else "normal"
        raise TuneError(
            f"{source} has no {missing} studies ({p} fracture, {n} normal); sensitivity and "
            "specificity need both: tune on a labelled set with fracture and normal studies"
        )
    if settings.folds and min(p, n) < settings.folds:
        raise TuneError(
            f"--folds {settings.folds} needs at least {settings.folds} fracture and "
            f"{settings.folds} normal studies, {source} has {p} and {n}; lower --folds "
            "(>= 2) or give --folds 0 to skip the out-of-fold estimate"
        )


def _check_size(predictions: Predictions, settings: TuneSettings) -> int | None:
    """Refuse a set whose every fracture study found could not show the target, unless
    ``allow_small``; returns how many fracture studies would do."""
    needed = positives_needed(settings.target_recall)
    p, target = predictions.positives, settings.target_recall
    if (needed is not None and p >= needed) or settings.allow_small:
        return needed
    source = predictions.source or "the predictions"
    if needed is None:
        enough = "no number is enough for a target of 1 (n/n always has a lower bound below 1)"
        fix = "lower --target-recall below 1"
    else:
        enough = f"{needed} are needed (the fewest n whose n/n has a lower bound >= {target:g})"
        fix = "add fracture studies, lower --target-recall"
    raise TuneError(
        f"{source} has {p} fracture studies, too few to show sensitivity >= {target:g}: even "
        f"{p}/{p} found has an exact 95 % lower bound of {exact_interval(p, p)[0]:.4f} "
        f"(two-sided Clopper-Pearson), and {enough}; {fix}, or give --allow-small to tune "
        "anyway (op.json and the report record it)"
    )


def _point(index: int, level: str, found: SearchResult, oof: NDArray[np.bool_] | None,
           guard: TuneGuard, predictions: Predictions, settings: TuneSettings) -> TunedPoint:
    """Measure a chosen point in sample and out of fold and build its operating point."""
    choice = _require(found, settings, level, "")
    labels = predictions.labels
    decisions = decide(predictions.filled(), predictions.members, choice.rule, choice.thresholds)
    seed = settings.seed + index
    in_sample = exact_metrics(labels, decisions, n_bootstrap=settings.n_bootstrap, seed=seed)
    oof_metrics = (None if oof is None else
                   exact_metrics(labels, oof, n_bootstrap=settings.n_bootstrap, seed=seed))
    note = guard_note(guard, in_sample, oof_metrics, settings.target_recall)
    votes = member_votes(predictions.filled(), labels, predictions.members, choice.rule,
                         choice.thresholds)
    op = operating_point_for(level, choice, in_sample, oof_metrics, predictions, settings,
                             found.exact, guard, note, vote_warnings(votes, choice.rule))
    return TunedPoint(level, choice, op, decisions, in_sample, oof_metrics, oof, found, guard,
                      votes)


def _fold_splits(labels: NDArray[np.bool_], folds: int, seed: int) -> Splits:
    """The stratified, shuffled folds of ``seed`` (none for ``folds`` 0)."""
    if not folds:
        return []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(labels.size), labels))


def tune(predictions: Predictions, settings: TuneSettings | None = None) -> TuneResult:
    """Choose the operating point(s) for ``settings`` on ``predictions`` and measure them.

    Raises:
        TuneError: no fracture or no normal studies, too few for the folds, too few fracture
            studies to show the target (without ``allow_small``), no point that passes the
            guard, a target that no point reaches, or a high-specificity point no stricter
            than the decision point.
    """
    settings = settings or TuneSettings()
    _check_classes(predictions, settings)
    needed = _check_size(predictions, settings)
    members = predictions.members
    scores, labels = predictions.filled(), predictions.labels
    splits = _fold_splits(labels, settings.folds, settings.seed)
    guarded = _GUARD_FUNCTIONS[settings.guard](scores, labels, members, settings, splits)
    p = predictions.positives
    small = needed is None or p < needed
    guard = TuneGuard(settings.guard, free_parameters=0, fitted_recall=None, positives=p,
                      positives_needed=needed, allowed_small=small)
    sens = _require(guarded.found, settings, HIGH_SENSITIVITY, "")
    entries = [(HIGH_SENSITIVITY, guarded.found, guarded.oof_decisions,
                guard.replace(free_parameters=free_parameters(sens.rule, len(members)),
                              fitted_recall=guarded.procedure.fitted_recall))]
    if settings.dual:
        found = _search_specific(scores, labels, members, settings)
        spec = _require(found, settings, HIGH_SPECIFICITY, "")
        n = predictions.negatives
        spec_hs, spec_sp = (n - sens.fp) / n, (n - spec.fp) / n
        if spec_sp <= spec_hs:
            raise TuneError(
                f"the high-sensitivity point already has specificity {spec_hs:.4f}, so the "
                f"best point with specificity >= {settings.target_specificity:g} is no stricter "
                f"({spec_sp:.4f}); raise --target-specificity above {spec_hs:.4f} or drop --dual"
            )
        oof = (_held_out(scores, labels, members, splits,
                         _chooser(members, settings, HIGH_SPECIFICITY)) if splits else None)
        entries.append((HIGH_SPECIFICITY, found, oof,
                        guard.replace(guard="none",
                                      free_parameters=free_parameters(spec.rule, len(members)))))
    points = [_point(i, level, found, oof, g, predictions, settings)
              for i, (level, found, oof, g) in enumerate(entries)]
    stability = (((settings.seed, sens.rule.label),
                  *_stability(scores, labels, members, settings)) if settings.stability else ())
    groups = tuple(tune_groups(predictions, settings, tune))
    points[0] = _monitored(points[0], predictions, settings, splits, groups)
    alone = {}
    for j, member in enumerate(members):
        single = search(scores[:, [j]], labels, [member], objective=settings.objective,
                        rules=(VoteRuleName.ANY,), min_recall=settings.target_recall)
        if single.best is not None:
            alone[member] = single.best
    return TuneResult(predictions, settings, tuple(points), alone, needed, groups, stability)


def _stability(scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str],
               settings: TuneSettings) -> list[tuple[int, str]]:
    """The rule the ``oof`` guard chooses under each of ``settings.stability`` other fold seeds."""
    out = []
    for seed in range(settings.seed + 1, settings.seed + 1 + settings.stability):
        try:
            found = _guard_oof(scores, labels, members, settings,
                               _fold_splits(labels, settings.folds, seed)).found
            out.append((seed, _require(found, settings, HIGH_SENSITIVITY, "").rule.label))
        except TuneError:
            out.append((seed, "none passes"))
    return out


def _monitored(point: TunedPoint, predictions: Predictions, settings: TuneSettings, splits: Splits,
               groups: tuple[GroupOutcome, ...]) -> TunedPoint:
    """The deciding point with what schema 2 adds: the group points, the monitoring reference
    and the calibration maps (measured on the tuner's folds). With group points, the reference's
    flag rate and fused scores, and the fused map, are those of the policy ``screen run``
    applies: each study decided by its group's point."""
    members = predictions.members
    op = point.operating_point
    own = {g.value: g.point.operating_point.replace(reference=None) for g in groups if g.point is not None}
    filled = predictions.filled()
    decisions = point.decisions.copy()
    fused = fused_scores(filled, members, point.choice.rule, point.choice.thresholds)
    if settings.group_by is not None:
        values = np.array(predictions.group_values(GROUP_COLUMNS[settings.group_by]))
        for value, group_point in own.items():
            rows = values == value
            decisions[rows] = decide(filled[rows], members, group_point.vote, dict(group_point.thresholds))
            fused[rows] = fused_scores(filled[rows], members, group_point.vote, dict(group_point.thresholds))
    updates: dict[str, Any] = {"reference": build_reference(predictions, decisions, fused)}
    if settings.calibrate != "none":
        updates["calibration"] = calibrate(filled, predictions.labels, members, fused, settings.calibrate, splits)
    if settings.group_by is not None:
        fallback = [f"{g.value} ({g.reason})" for g in groups if g.point is None]
        note = (f"group_by {settings.group_by}: own points for {', '.join(sorted(own)) or 'no group'}"
                + (f"; the global point decides {'; '.join(fallback)}" if fallback else ""))
        updates.update(group_by=settings.group_by, group_points=own,
                       provenance=op.provenance.replace(notes="; ".join(n for n in (op.provenance.notes, note) if n)))
    return dataclasses.replace(point, operating_point=op.replace(id=None, **updates))


def decide_predictions(op: OperatingPoint, predictions: Predictions) -> NDArray[np.bool_]:
    """``op``'s decision for every study of ``predictions`` (what ``OperatingPoint.decide``
    gives on the same study scores; empty scores count as 0.0).

    Raises:
        TuneError: the file lacks a member ``op`` thresholds.
    """
    lacking = [m for m in op.members if m not in predictions.members]
    if lacking:
        raise TuneError(
            f"operating point {op.id} needs member(s) {lacking} that the predictions file "
            f"lacks (it has: {', '.join(predictions.members)}); run `screen eval` with them"
        )
    return decide(predictions.filled(op.members), op.members, op.vote, dict(op.thresholds))


def _check_counts(point: TunedPoint, labels: NDArray[np.bool_]) -> None:
    """Internal consistency: the decisions give the counts the search reported."""
    conf = confusion(labels, point.decisions)
    if (conf.tp, conf.fp) != (point.choice.tp, point.choice.fp):  # pragma: no cover
        raise TuneError(f"internal error: {point.level} decisions give TP/FP {conf.tp}/{conf.fp},"
                        f" the search reported {point.choice.tp}/{point.choice.fp}")


def run_tune(
    predictions_path: str | Path,
    out: str | Path,
    settings: TuneSettings | None = None,
    *,
    report_dir: str | Path | None = None,
    split: str | None = None,
    members: Sequence[str] | None = None,
) -> tuple[TuneResult, list[Path]]:
    """Read, tune, write the operating point file and the report; the CLI's whole job.

    Args:
        predictions_path: the predictions CSV of ``screen eval``.
        out: the operating point JSON to write.
        settings: targets and search options.
        report_dir: folder of the report (default: ``<out stem>-report`` beside ``out``).
        split: tune only on rows of this ``split``.
        members: members to tune (default every ``score:`` column).

    Returns:
        The result and the paths written (the JSON first).
    """
    from screen.tune.report import write_report

    predictions = read_predictions(predictions_path, split=split, members=members)
    result = tune(predictions, settings)
    for point in result.points:
        _check_counts(point, predictions.labels)
    out_path = Path(out)
    written = [save_operating_points([p.operating_point for p in result.points], out_path)]
    folder = Path(report_dir) if report_dir is not None else \
        out_path.with_name(f"{out_path.stem}-report")
    written += write_report(result, folder)
    return result, written
