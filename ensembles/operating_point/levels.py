"""Several operating points in one file, and the confidence level of a positive study.

``screen tune --dual`` writes two points into one file::

    {
      "schema_version": 1,
      "points": [
        {... "level": "high-sensitivity" ...},   # first: the point that decides
        {... "level": "high-specificity" ...}    # then stricter points, least strict first
      ]
    }

The first point decides every study (so :func:`ensembles.operating_point.point.load_operating_point`
returns it, and a runner that knows nothing of levels behaves as with a single file). Each
later point only grades a positive study: its level is that of the strictest point that also
calls it positive (:func:`finding_level`). Every point must name the same members, since one
ensemble produces the scores they all read.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ensembles.checkpoint import atomic_write_text
from ensembles.errors import OperatingPointError
from ensembles.fusion import StudyDecision
from ensembles.operating_point.point import (
    SCHEMA_VERSION,
    OperatingPoint,
    read_operating_point_json,
    save_operating_point,
)
from ensembles.types import MemberOutput

__all__ = [
    "decide_with_levels", "finding_level", "load_operating_points", "operating_points_from_dict",
    "save_operating_points",
]

_MULTI_KEYS = ("schema_version", "points")


def _check_points(points: Sequence[OperatingPoint]) -> None:
    if not points:
        raise OperatingPointError("an operating point file needs at least one point")
    members = set(points[0].members)
    for i, op in enumerate(points[1:], start=1):
        if set(op.members) != members:
            raise OperatingPointError(
                f"points[{i}] names members {sorted(op.members)} but points[0] names "
                f"{sorted(members)}; every point must threshold the same members"
            )
    levels = [op.level for op in points]
    if len(points) > 1:
        if any(level is None for level in levels):
            raise OperatingPointError(
                "every point of a multi-point file needs a 'level' name, e.g. "
                "'high-sensitivity' and 'high-specificity'"
            )
        if len(set(levels)) != len(levels):
            raise OperatingPointError(f"point levels must be distinct, got {levels}")


def operating_points_from_dict(data: Any) -> list[OperatingPoint]:
    """Validate a parsed file: a single point, or ``{"schema_version", "points": [...]}``."""
    if not isinstance(data, Mapping):
        raise OperatingPointError(f"operating point file must be a JSON object, got {data!r}")
    if "points" not in data:
        return [OperatingPoint.from_dict(data)]
    unknown = sorted(set(data) - set(_MULTI_KEYS))
    if unknown:
        raise OperatingPointError(
            f"a multi-point operating point file has unknown key(s) {', '.join(unknown)}; "
            f"valid keys: {', '.join(_MULTI_KEYS)}"
        )
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise OperatingPointError(
            f"operating point key 'schema_version' must be an integer >= 1, got {version!r}"
        )
    if version > SCHEMA_VERSION:
        raise OperatingPointError(
            f"operating point schema_version {version} is newer than this fracture-screen "
            f"supports ({SCHEMA_VERSION}); upgrade fracture-screen"
        )
    raw = data["points"]
    if not isinstance(raw, list) or not raw:
        raise OperatingPointError(
            f"operating point key 'points' must be a non-empty list of points, got {raw!r}"
        )
    points: list[OperatingPoint] = []
    for i, item in enumerate(raw):
        try:
            points.append(OperatingPoint.from_dict(item))
        except OperatingPointError as exc:
            raise OperatingPointError(f"points[{i}]: {exc}") from None
    _check_points(points)
    return points


def load_operating_points(path: str | Path) -> list[OperatingPoint]:
    """Every point of an operating point file; the first decides (a single file gives one).

    Raises:
        OperatingPointError: the file is missing, not JSON or invalid; the message names the
            file, the point and the key.
    """
    file = Path(path)
    data = read_operating_point_json(file)
    try:
        return operating_points_from_dict(data)
    except OperatingPointError as exc:
        raise OperatingPointError(f"{file}: {exc}") from None


def save_operating_points(points: Sequence[OperatingPoint], path: str | Path) -> Path:
    """Write one point as a plain file, several as a ``points`` file (atomic, sorted JSON)."""
    points = list(points)
    if not all(isinstance(op, OperatingPoint) for op in points):
        raise OperatingPointError("save_operating_points needs OperatingPoint objects")
    _check_points(points)
    if len(points) == 1:
        return save_operating_point(points[0], path)
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    payload = {"schema_version": SCHEMA_VERSION, "points": [op.to_dict() for op in points]}
    atomic_write_text(file, json.dumps(payload, sort_keys=True, indent=2, allow_nan=False) + "\n")
    return file


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
            return points[i].level or f"point-{i + 1}"
    return None  # pragma: no cover - calls[0] is True


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


def load_points(path: str | Path) -> list[OperatingPoint]:
    """The decision point first, then (for a dual file) the stricter high-specificity point.

    Raises:
        OperatingPointError: the file is missing (the message says how to make one) or invalid.
    """
    if not Path(path).is_file():
        raise OperatingPointError(f"operating point {str(path)!r} not found; write one with screen tune "
                                  "or pass --operating-point FILE")
    return load_operating_points(path)


def op_id(point: OperatingPoint) -> str:
    """The point's id (given, or derived from its decision fields)."""
    return point.id or point.content_id()
