"""``screen tune --calibrate``: per-member and fused calibration maps, measured out of fold.

Each map is fitted on the tuning set's raw study scores against the truth: Platt (a logistic
regression on the score's logit, two parameters: the default, since an isotonic fit on a dozen
fracture studies is a staircase of a few steps that ties many scores) or isotonic (monotone,
free-form). Its effect is measured where it cannot flatter itself: in the tuner's stratified
folds, each fold's scores calibrated by a map fitted on the other folds, the expected
calibration error (:func:`train.calibration.expected_calibration_error`) of the pooled
held-out scores before and after. The stored map is then fitted on every study.

The fused map calibrates the deciding point's fused study score
(:func:`screen.tune.search.fused_scores`), which becomes the SR's "Certainty of Finding".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from ensembles.operating_point.calibration import FUSED, Calibration, ScoreMap, logit
from train.calibration import expected_calibration_error

__all__ = ["calibrate", "fit_map"]

Splits = Sequence[tuple[NDArray[np.intp], NDArray[np.intp]]]


def fit_map(scores: NDArray[np.float64], labels: NDArray[np.bool_], method: str) -> ScoreMap:
    """One calibration map of ``scores`` (finite, in [0, 1]) against ``labels``.

    A Platt fit whose slope comes out negative (scores that rank fractures lower) is replaced
    by a flat map at the set's fracture share: a calibration never reverses the order.
    """
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if method == "platt":
        if y.all() or not y.any():
            share = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
            return ScoreMap(method="platt", a=0.0, b=float(np.log(share / (1 - share))))
        model = LogisticRegression(C=1e6, max_iter=1000)  # (almost) unpenalised: Platt's fit
        model.fit(logit(x).reshape(-1, 1), y)
        a, b = float(model.coef_[0][0]), float(model.intercept_[0])
        if a < 0:
            share = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
            a, b = 0.0, float(np.log(share / (1 - share)))
        return ScoreMap(method="platt", a=a, b=b)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(x, y.astype(np.float64))
    knots_x = np.asarray(iso.X_thresholds_, dtype=np.float64)
    knots_y = np.asarray(iso.y_thresholds_, dtype=np.float64)
    keep = np.append(np.diff(knots_x) > 0, True)  # strictly increasing x: the last of equal ones
    return ScoreMap(method="isotonic", x=[float(v) for v in knots_x[keep]],
                    y=[float(v) for v in np.maximum.accumulate(knots_y[keep])])


def _out_of_fold(scores: NDArray[np.float64], labels: NDArray[np.bool_], method: str,
                 splits: Splits) -> NDArray[np.float64]:
    out = np.full(scores.shape, np.nan)
    for train, held in splits:
        out[held] = fit_map(scores[train], labels[train], method).apply(scores[held])
    return out


def calibrate(scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str],
              fused: NDArray[np.float64], method: str, splits: Splits) -> Calibration:
    """Fit a map per member (columns of ``scores``) and for ``fused``; measure each out of fold
    on ``splits`` (none: not measured)."""
    columns = {name: scores[:, j] for j, name in enumerate(members)}
    columns[FUSED] = fused
    maps: dict[str, ScoreMap] = {}
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    for name, values in columns.items():
        maps[name] = fit_map(values, labels, method)
        if splits:
            before[name] = expected_calibration_error(values, labels)
            after[name] = expected_calibration_error(_out_of_fold(values, labels, method, splits), labels)
    p = int(labels.sum())
    return Calibration(method=method, members={m: maps[m] for m in members}, fused=maps[FUSED],
                       positives=p, negatives=int(labels.size) - p, folds=len(splits) or None,
                       ece_before=before, ece_after=after)
