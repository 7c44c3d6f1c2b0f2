"""Reading the operating point(s) a run uses: one point, or a dual (sensitivity, specificity) pair."""

from __future__ import annotations

from pathlib import Path

from ensembles.op_levels import load_operating_points
from ensembles.operating_point import OperatingPoint
from screen.errors import ConfigError


def load_points(path: Path) -> list[OperatingPoint]:
    """The decision point first, then (for a dual file) the stricter high-specificity point."""
    if not Path(path).is_file():
        raise ConfigError(f"operating point {str(path)!r} not found; write one with screen tune or pass --operating-point FILE")
    return load_operating_points(path)


def op_id(point: OperatingPoint) -> str:
    """The point's id (given, or derived from its decision fields)."""
    return point.id or point.content_id()
