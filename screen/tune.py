"""``screen tune``: choose the operating point for a target sensitivity, with honest figures.

From a predictions file (one row per study, each member's study score) it

1. searches every member's threshold and the vote rule (:mod:`screen.tune_search`, exact) for
   the point that maximises the objective (precision by default; specificity, F1 or Youden's
   J) subject to study-level sensitivity >= the target;
2. with ``dual``, also the *high-specificity* point: the highest sensitivity subject to
   specificity >= ``target_specificity``, refused unless stricter than the first point;
3. reports sensitivity, specificity, PPV, NPV and F1 at each point with 95 % percentile
   bootstrap intervals over studies (seeded, >= 2,000 resamples), and the same figures
   **out of fold**: stratified k folds, the point chosen on k-1 folds and applied to the
   held-out one, the held-out decisions pooled, so the sensitivity reported is not the
   optimistic one it was chosen on;
4. writes the :class:`~ensembles.operating_point.OperatingPoint` file (one point, or a
   ``points`` file with ``dual``) with provenance: the predictions file's SHA-256, the
   targets, the achieved figures and intervals.

Box settings keep their defaults (``boxes.members`` empty: every member that gives boxes
contributes); a predictions file cannot tell detectors from classifiers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedKFold

from ensembles.op_levels import save_operating_points
from ensembles.operating_point import Estimate, OperatingPoint, OutOfFold, Provenance
from screen import __version__
from screen.errors import ConfigError
from screen.tune_input import Predictions, TuneError, read_predictions
from screen.tune_search import OBJECTIVES, RULE_FAMILIES, Choice, SearchResult, decide, search
from train.metrics import Interval, bootstrap_metrics, confusion

__all__ = [
    "HIGH_SENSITIVITY", "HIGH_SPECIFICITY", "REPORTED", "TunedPoint", "TuneResult",
    "TuneSettings", "decide_predictions", "run_tune", "tune",
]

HIGH_SENSITIVITY, HIGH_SPECIFICITY = "high-sensitivity", "high-specificity"
#: Figures reported (with intervals) at every point.
REPORTED: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "f1")
MIN_BOOTSTRAP = 2000


@dataclass(frozen=True)
class TuneSettings:
    """What ``screen tune`` aims for (each field is a CLI option of the same name).

    Attributes:
        target_recall: study-level sensitivity the decision point must reach, in (0, 1].
        objective: what to maximise under it: precision, specificity, f1 or youden.
        rules: rule families to search: any, k-of-n, weighted-mean.
        dual: also choose a high-specificity point.
        target_specificity: specificity the high-specificity point must reach (``dual``).
        folds: stratified folds of the out-of-fold estimate (0 skips it).
        n_bootstrap: bootstrap resamples per interval (>= 2,000).
        seed: seed of the folds and the bootstrap.
        weight_step: simplex grid step of weighted-mean weights.
        max_combinations: cap on enumerated threshold combinations (see tune_search).
    """

    target_recall: float = 0.9
    objective: str = "precision"
    rules: tuple[str, ...] = RULE_FAMILIES
    dual: bool = False
    target_specificity: float = 0.9
    folds: int = 5
    n_bootstrap: int = MIN_BOOTSTRAP
    seed: int = 0
    weight_step: float = 0.1
    max_combinations: int = 50_000

    def __post_init__(self) -> None:
        t = self.target_recall
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
            raise ConfigError(f"--target-recall must be in (0, 1], e.g. 0.90; got {t!r}")
        s = self.target_specificity
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 1:
            raise ConfigError(f"--target-specificity must be in (0, 1], e.g. 0.90; got {s!r}")
        choices = OBJECTIVES[:4]
        if self.objective not in choices:
            raise ConfigError(
                f"--objective {self.objective!r} is unknown; choose one of {', '.join(choices)}"
            )
        rules = tuple(self.rules)
        bad = [r for r in rules if r not in RULE_FAMILIES]
        if bad or not rules:
            raise ConfigError(f"--rules {','.join(rules)!r} is invalid; give a comma-separated "
                              f"subset of {','.join(RULE_FAMILIES)}")
        object.__setattr__(self, "rules", rules)
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds == 1 \
                or self.folds < 0:
            raise ConfigError(f"--folds must be 0 (skip the out-of-fold estimate) or >= 2, "
                              f"got {self.folds!r}")
        if not isinstance(self.n_bootstrap, int) or self.n_bootstrap < MIN_BOOTSTRAP:
            raise ConfigError(f"--bootstrap must be at least {MIN_BOOTSTRAP} resamples, "
                              f"got {self.n_bootstrap!r}")
        if self.max_combinations < 1:
            raise ConfigError(f"--max-combinations must be >= 1, got {self.max_combinations!r}")
        parts = round(1.0 / self.weight_step) if self.weight_step > 0 else 0
        if parts < 1 or parts > 100 or not math.isclose(parts * self.weight_step, 1.0):
            raise ConfigError(f"--weight-step must divide 1 into at most 100 steps (e.g. 0.1, "
                              f"0.25), got {self.weight_step!r}")


@dataclass(frozen=True)
class TunedPoint:
    """One chosen operating point and its measured figures.

    Attributes:
        level: ``high-sensitivity`` or ``high-specificity``.
        choice: rule, thresholds and tuning-set counts from the search.
        operating_point: what ``screen run`` reads.
        decisions: the point's decision per tuning study.
        in_sample: figures with intervals on the studies it was chosen on.
        out_of_fold: pooled held-out figures (``None`` when folds = 0).
        oof_decisions: pooled held-out decision per study.
        search: the search's summary (exactness, candidates, reachable figures).
    """

    level: str
    choice: Choice
    operating_point: OperatingPoint
    decisions: NDArray[np.bool_]
    in_sample: dict[str, Interval]
    out_of_fold: dict[str, Interval] | None
    oof_decisions: NDArray[np.bool_] | None
    search: SearchResult


@dataclass(frozen=True)
class TuneResult:
    """Everything ``screen tune`` decided and measured; the report is drawn from it."""

    predictions: Predictions
    settings: TuneSettings
    points: tuple[TunedPoint, ...]
    members_alone: dict[str, Choice] = field(default_factory=dict)

    @property
    def decision_point(self) -> TunedPoint:
        """The point that decides (high-sensitivity)."""
        return self.points[0]


def _search(scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str],
            settings: TuneSettings, level: str) -> SearchResult:
    if level == HIGH_SENSITIVITY:
        return search(scores, labels, members, objective=settings.objective,
                      rules=settings.rules, min_recall=settings.target_recall,
                      weight_step=settings.weight_step,
                      max_combinations=settings.max_combinations)
    return search(scores, labels, members, objective="sensitivity", rules=settings.rules,
                  min_specificity=settings.target_specificity, weight_step=settings.weight_step,
                  max_combinations=settings.max_combinations)


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


def _out_of_fold(scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str],
                 settings: TuneSettings, levels: Sequence[str]) -> dict[str, NDArray[np.bool_]]:
    out = {level: np.zeros(labels.size, dtype=bool) for level in levels}
    folds = StratifiedKFold(n_splits=settings.folds, shuffle=True, random_state=settings.seed)
    for i, (train, held) in enumerate(folds.split(scores, labels), start=1):
        for level in levels:
            found = _search(scores[train], labels[train], members, settings, level)
            choice = _require(found, settings, level,
                              f"on the studies outside fold {i} of {settings.folds} ")
            out[level][held] = decide(scores[held], members, choice.rule, choice.thresholds)
    return out


def _estimate(interval: Interval, method: str) -> Estimate | None:
    if math.isnan(interval.value):
        return None
    low = interval.value if math.isnan(interval.low) else min(interval.low, interval.value)
    high = interval.value if math.isnan(interval.high) else max(interval.high, interval.value)
    return Estimate(value=interval.value, ci_low=low, ci_high=high, n=interval.n, method=method)


def _notes(result_exact: bool, predictions: Predictions, settings: TuneSettings) -> str:
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
    return "; ".join(parts)


def _operating_point(level: str, choice: Choice, in_sample: dict[str, Interval],
                     oof: dict[str, Interval] | None, predictions: Predictions,
                     settings: TuneSettings, exact: bool) -> OperatingPoint:
    method = (f"percentile bootstrap over studies ({settings.n_bootstrap} resamples, "
              f"seed {settings.seed})")
    est = {k: _estimate(in_sample[k], method) for k in REPORTED}
    out_of_fold = None
    if oof is not None:
        oof_method = (f"{settings.folds}-fold out-of-fold (stratified, seed {settings.seed}), "
                      + method)
        out_of_fold = OutOfFold(folds=settings.folds,
                                **{k: _estimate(oof[k], oof_method) for k in REPORTED})
    high_sens = level == HIGH_SENSITIVITY
    provenance = Provenance(
        source_sha256=predictions.sha256,
        tuning_set=None if predictions.source is None else str(predictions.source),
        target_recall=settings.target_recall if high_sens else None,
        sensitivity=est["sensitivity"], specificity=est["specificity"],
        created_by=f"screen tune {__version__}",
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        notes=_notes(exact, predictions, settings),
        objective=settings.objective if high_sens else "sensitivity",
        target_specificity=None if high_sens else settings.target_specificity,
        ppv=est["ppv"], npv=est["npv"], f1=est["f1"], out_of_fold=out_of_fold,
    )
    return OperatingPoint(thresholds=choice.thresholds, vote=choice.rule, level=level,
                          provenance=provenance)


def tune(predictions: Predictions, settings: TuneSettings | None = None) -> TuneResult:
    """Choose the operating point(s) for ``settings`` on ``predictions`` and measure them.

    Raises:
        TuneError: no fracture or no normal studies, too few for the folds, a target that no
            point reaches, or a high-specificity point no stricter than the decision point.
    """
    settings = settings or TuneSettings()
    _check_classes(predictions, settings)
    members = predictions.members
    scores, labels = predictions.filled(), predictions.labels
    levels = [HIGH_SENSITIVITY] + ([HIGH_SPECIFICITY] if settings.dual else [])
    found = {level: _search(scores, labels, members, settings, level) for level in levels}
    choices = {level: _require(found[level], settings, level, "") for level in levels}
    if settings.dual:
        n = predictions.negatives
        spec_hs = (n - choices[HIGH_SENSITIVITY].fp) / n
        spec_sp = (n - choices[HIGH_SPECIFICITY].fp) / n
        if spec_sp <= spec_hs:
            raise TuneError(
                f"the high-sensitivity point already has specificity {spec_hs:.4f}, so the "
                f"best point with specificity >= {settings.target_specificity:g} is no stricter "
                f"({spec_sp:.4f}); raise --target-specificity above {spec_hs:.4f} or drop --dual"
            )
    oof = (_out_of_fold(scores, labels, members, settings, levels) if settings.folds else None)
    points = []
    for i, level in enumerate(levels):
        choice = choices[level]
        decisions = decide(scores, members, choice.rule, choice.thresholds)
        seed = settings.seed + i
        in_sample = bootstrap_metrics(labels, decisions, n_resamples=settings.n_bootstrap,
                                      seed=seed, metrics=REPORTED)
        oof_metrics = None
        if oof is not None:
            oof_metrics = bootstrap_metrics(labels, oof[level], n_resamples=settings.n_bootstrap,
                                            seed=seed, metrics=REPORTED)
        op = _operating_point(level, choice, in_sample, oof_metrics, predictions, settings,
                              found[level].exact)
        points.append(TunedPoint(level, choice, op, decisions, in_sample, oof_metrics,
                                 None if oof is None else oof[level], found[level]))
    alone = {}
    for j, member in enumerate(members):
        single = search(scores[:, [j]], labels, [member], objective=settings.objective,
                        rules=("any",), min_recall=settings.target_recall)
        if single.best is not None:
            alone[member] = single.best
    return TuneResult(predictions, settings, tuple(points), alone)


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
    from screen.tune_report import write_report

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
