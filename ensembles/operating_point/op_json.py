"""The ``op.json`` file: one point, or several; its one loader and its writers.

A file holds one point (:class:`~ensembles.operating_point.point.OperatingPoint`'s layout) or,
as ``screen tune --dual`` writes it, several::

    {
      "schema_version": 1,
      "points": [
        {... "level": "high-sensitivity" ...},   # first: the point that decides
        {... "level": "high-specificity" ...}    # then stricter points, least strict first
      ]
    }

:func:`load_points` is the one loader: it returns the file's points, the deciding one first
(a single-point file gives a list of one), so a runner that knows nothing of levels uses
``points[0]`` (:func:`load_deciding_point`) and behaves as with a single file. Every point must
name the same members, since one ensemble produces the scores they all read; the points of a
multi-point file each need a distinct ``level``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from ensembles.checkpoint import atomic_write_text
from ensembles.config_model import ConfigModel, Wording, parse_model
from ensembles.errors import OperatingPointError
from ensembles.operating_point.point import (
    SCHEMA_VERSION,
    OperatingPoint,
    check_schema_version,
    op_wording,
)

__all__ = [
    "PointsFile", "load_deciding_point", "load_points", "points_from_dict",
    "save_operating_point", "save_operating_points",
]

_MULTI_WORDING = op_wording(top="a multi-point operating point file")


def _check_points(points: Sequence[OperatingPoint]) -> None:
    """Raise ``ValueError`` unless the points fit in one file (same members, distinct levels)."""
    if not points:
        raise ValueError("an operating point file needs at least one point")
    members = set(points[0].members)
    for i, op in enumerate(points[1:], start=1):
        if set(op.members) != members:
            raise ValueError(
                f"points[{i}] names members {sorted(op.members)} but points[0] names "
                f"{sorted(members)}; every point must threshold the same members"
            )
    levels = [op.level for op in points]
    if len(points) > 1:
        if any(level is None for level in levels):
            raise ValueError(
                "every point of a multi-point file needs a 'level' name, e.g. "
                "'high-sensitivity' and 'high-specificity'"
            )
        if len(set(levels)) != len(levels):
            raise ValueError(f"point levels must be distinct, got {levels}")


class PointsFile(ConfigModel):
    """A multi-point ``op.json``: ``{"schema_version": 1, "points": [point, ...]}``.

    Attributes:
        schema_version: layout version of the file (1 .. :data:`SCHEMA_VERSION`).
        points: the deciding point first, then stricter ones (same members, distinct levels).
    """

    schema_version: int = Field(ge=1, le=SCHEMA_VERSION)
    points: list[OperatingPoint]

    @classmethod
    def code_problems(cls) -> tuple[type[OperatingPointError], Wording]:
        return OperatingPointError, _MULTI_WORDING

    @field_validator("points", mode="before")
    @classmethod
    def _some_points(cls, value: Any) -> Any:
        if not isinstance(value, list) or not value:
            raise ValueError(f"must be a non-empty list of points, got {value!r}")
        return value

    @model_validator(mode="after")
    def _points_fit(self) -> "PointsFile":
        _check_points(self.points)
        return self


def points_from_dict(data: Any) -> list[OperatingPoint]:
    """Validate a parsed file: a single point, or ``{"schema_version", "points": [...]}``.

    Raises:
        OperatingPointError: not an object, a newer schema, or an invalid point or key (the
            message names the point and the key).
    """
    if not isinstance(data, Mapping):
        raise OperatingPointError(f"operating point file must be a JSON object, got {data!r}")
    if "points" not in data:
        return [OperatingPoint.from_dict(data)]
    check_schema_version(data)
    raw = data["points"]
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        check_schema_version(item, f"points[{i}]: ")
    return list(parse_model(PointsFile, data, error=OperatingPointError,
                            wording=_MULTI_WORDING).points)


def load_points(path: str | Path) -> list[OperatingPoint]:
    """The one loader: every point of an operating point file, the deciding point first.

    Raises:
        OperatingPointError: the file is missing (the message says how to make one), not JSON
            or invalid; the message names the file, the point and the key.
    """
    file = Path(path)
    data = _read_json(file)
    try:
        return points_from_dict(data)
    except OperatingPointError as exc:
        raise OperatingPointError(f"{file}: {exc}") from None


def load_deciding_point(path: str | Path) -> OperatingPoint:
    """The point that decides: the first of :func:`load_points`."""
    return load_points(path)[0]


def _read_json(file: Path) -> Any:
    """The parsed JSON of an operating point file (``NaN``/``Infinity`` refused)."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OperatingPointError(
            f"operating point file {str(file)!r} does not exist; write one with `screen tune` "
            "or pass --operating-point FILE"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OperatingPointError(f"cannot read operating point {str(file)!r}: {exc}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise OperatingPointError(
            f"operating point {str(file)!r} is not valid JSON: {exc}"
        ) from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def save_operating_point(op: OperatingPoint, path: str | Path) -> Path:
    """Write ``op`` as sorted, indented JSON atomically; returns the path."""
    if not isinstance(op, OperatingPoint):
        raise OperatingPointError(
            f"save_operating_point needs an OperatingPoint, got {type(op).__name__}"
        )
    return _write(op.to_dict(), path)


def save_operating_points(points: Sequence[OperatingPoint], path: str | Path) -> Path:
    """Write one point as a plain file, several as a ``points`` file (atomic, sorted JSON)."""
    points = list(points)
    if not all(isinstance(op, OperatingPoint) for op in points):
        raise OperatingPointError("save_operating_points needs OperatingPoint objects")
    try:
        _check_points(points)
    except ValueError as exc:
        raise OperatingPointError(str(exc)) from None
    if len(points) == 1:
        return save_operating_point(points[0], path)
    return _write({"schema_version": SCHEMA_VERSION, "points": [op.to_dict() for op in points]},
                  path)


def _write(payload: dict[str, Any], path: str | Path) -> Path:
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(file, json.dumps(payload, sort_keys=True, indent=2, allow_nan=False) + "\n")
    return file
