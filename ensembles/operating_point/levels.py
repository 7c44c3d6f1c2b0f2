"""The confidence level of a positive study, from the points of a multi-point file.

The first point of a file (:func:`ensembles.operating_point.op_json.load_points`) decides every
study. Each later point only grades a positive study: its level is that of the strictest point
that also calls it positive (:func:`finding_level`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from ensembles.errors import OperatingPointError
from ensembles.fusion import StudyDecision
from ensembles.operating_point.point import OperatingPoint
from ensembles.types import MemberOutput

__all__ = ["decide_with_levels", "finding_level", "level_name", "level_names"]


def level_name(point: OperatingPoint, index: int) -> str:
    """The name of the ``index``-th point's level (0-based): its ``level``, else ``"point-<i>"``
    counting from 1. The one naming the SR, CSVs, GSPS and page share."""
    return point.level or f"point-{index + 1}"


def finding_level(
    points: Sequence[OperatingPoint], decisions: Sequence[StudyDecision | bool]
) -> str | None:
    """The level of a study: that of the strictest point calling it positive.

    Args:
        points: the file's points, the deciding one first, stricter ones after.
        decisions: each point's decision for the study (a :class:`StudyDecision` or a bool),
            in the same order.

    Returns:
        ``None`` when the deciding point calls the study negative (there is no finding);
        otherwise the ``level`` of the last point that calls it positive (``"point-<i>"``,
        counting from 1, for a point without a level).

    Raises:
        OperatingPointError: no points, or not one decision per point.
    """
    if not points or len(points) != len(decisions):
        raise OperatingPointError(
            f"finding_level needs one decision per point, got {len(decisions)} decision(s) "
            f"for {len(points)} point(s)"
        )
    calls = [bool(d.positive) if isinstance(d, StudyDecision) else bool(d) for d in decisions]
    if not calls[0]:
        return None
    for i in range(len(points) - 1, -1, -1):
        if calls[i]:
            return level_name(points[i], i)
    return None  # pragma: no cover - calls[0] is True


def level_names(points: Sequence[OperatingPoint]) -> list[str]:
    """The levels' names of a multi-point file, most sensitive first (``"point-<i>"`` for a
    point without a level); empty for a single point, whose findings have no level."""
    if len(points) < 2:
        return []
    return [level_name(point, i) for i, point in enumerate(points)]


def decide_with_levels(
    points: Sequence[OperatingPoint],
    outputs: Mapping[Hashable, Mapping[str, MemberOutput]],
    **frames: Any,
) -> tuple[StudyDecision, str | None]:
    """Decide a study with the first point and grade it with all of them.

    ``frames`` (``letterboxed``, ``image_shapes``) go to :meth:`OperatingPoint.decide`.

    Returns:
        The deciding point's :class:`StudyDecision` and :func:`finding_level`'s level.
    """
    if not points:
        raise OperatingPointError("decide_with_levels needs at least one operating point")
    first = points[0].decide(outputs, **frames)
    rest: list[StudyDecision | bool] = (
        [op.decide(outputs, **frames) for op in points[1:]] if first.positive
        else [False] * (len(points) - 1)
    )
    return first, finding_level(points, [first, *rest])
