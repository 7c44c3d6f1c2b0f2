"""``screen tune --by FIELD``: one decision point per group of studies, the global one the
fallback.

Studies are grouped by a header field of their first image (``predictions.csv``'s acquisition
columns: ``BodyPartExamined`` -> ``body_part`` ...). A group gets its own point only with at least
``min_group_positives`` fracture studies (default: the fewest that can show the target at all,
:func:`~screen.tune.search.positives_needed`) and enough normal ones for the folds; it is then
tuned exactly as the whole set (same target, objective, guard and folds, so its figures and
their intervals, bootstrap included, are its own). A group that is too small, or whose tuning
finds no point that passes the guard, keeps the global point; the reason is recorded in the
point's notes. ``screen run`` decides each study with its group's point and writes which one
(``operating_point_id``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from screen.tune.inputs import GROUP_COLUMNS, Predictions, TuneError, TuneSettings
from screen.tune.result import GroupOutcome, TuneResult
from screen.tune.search import positives_needed

__all__ = ["GroupOutcome", "tune_groups"]

Tuner = Callable[[Predictions, TuneSettings], TuneResult]


def tune_groups(predictions: Predictions, settings: TuneSettings, tune: Tuner) -> list[GroupOutcome]:
    """Tune one point per group of ``settings.group_by`` (see the module docstring).

    Raises:
        TuneError: the predictions file has no column for the field.
    """
    field = settings.group_by
    if field is None:
        return []
    column = GROUP_COLUMNS[field]
    values = predictions.group_values(column)
    if not any(values):
        raise TuneError(
            f"--by {field} needs the '{column}' column in {predictions.source or 'the predictions'}; "
            "re-run `screen eval` (it writes the acquisition columns) or drop --by")
    needed = settings.min_group_positives or positives_needed(settings.target_recall)
    inner = dataclasses.replace(settings, dual=False, group_by=None, calibrate="none", stability=0)
    out = []
    for value in sorted({v for v in values if v}):
        rows = np.flatnonzero(np.array([v == value for v in values]))
        sub = predictions.subset(rows)
        p, n = sub.positives, sub.negatives
        if needed is None or p < needed:
            out.append(GroupOutcome(value, p, n, None, f"{p} fracture studies, fewer than the "
                                                        f"{needed} a group needs"))
            continue
        if n < max(settings.folds, 1):
            out.append(GroupOutcome(value, p, n, None, f"{n} normal studies, too few for the folds"))
            continue
        try:
            point = tune(sub, inner).decision_point
        except TuneError as exc:
            out.append(GroupOutcome(value, p, n, None, f"no point of its own: {exc}"))
            continue
        out.append(GroupOutcome(value, p, n, point))
    return out
