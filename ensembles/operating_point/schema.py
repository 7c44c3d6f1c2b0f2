"""The tables every part of ``op.json`` shares: how a problem is worded, a proportion, an
estimate with its interval, and the base of every table built in code.

Split from :mod:`ensembles.operating_point.point` so the point's optional sections
(:mod:`~ensembles.operating_point.calibration`, :mod:`~ensembles.operating_point.reference`)
use them without an import circle.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from ensembles.config_model import CHECK_ERRORS, ConfigModel, Problem, Wording, check, is_predicate, show
from ensembles.errors import OperatingPointError
from ensembles.fusion import VOTE_RULES

__all__ = ["OP_WORDING", "Estimate", "OpTable", "Unit", "op_wording"]

_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_MISSING_HINTS = {"vote.rule": f"; use {', '.join(repr(rule) for rule in VOTE_RULES[:-1])} "
                               f"or {VOTE_RULES[-1]!r}"}


def op_wording(top: str = "operating point (top level)") -> Wording:
    """How ``op.json`` words a problem: ``operating point key 'thresholds.cls' must be ...``.

    A point inside a multi-point file is prefixed ``points[i]: ``; ``top`` names the top table
    in an unknown-key message (a multi-point file passes its own name).
    """

    def split(loc: tuple[str | int, ...]) -> tuple[str, str]:
        prefix = ""
        if len(loc) >= 2 and loc[0] == "points" and isinstance(loc[1], int):
            prefix, loc = f"points[{loc[1]}]: ", loc[2:]
        key = ""
        for part in loc:
            key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else part)
        return prefix, key

    def unknown(problem: Problem) -> str:
        prefix, key = split(problem.loc)
        table = f"operating point {key}" if key else top
        return (f"{prefix}{table} has unknown key(s) {', '.join(problem.keys)}; "
                f"valid keys: {', '.join(problem.valid)}")

    def missing(problem: Problem) -> str:
        prefix, key = split((*problem.loc, *problem.keys))
        return f"{prefix}operating point key {key!r} is missing{_MISSING_HINTS.get(key, '')}"

    def invalid(problem: Problem) -> str:
        prefix, key = split(problem.loc)
        expected = problem.expected
        if problem.type in CHECK_ERRORS:
            if not key:
                return prefix + expected
            if not is_predicate(expected):
                return f"{prefix}operating point key {key!r}: {expected}"
            got = "" if ", got " in expected else f", got {show(problem.value)}"
            return f"{prefix}operating point key {key!r} {expected}{got}"
        if expected == "a table":
            expected = "a JSON object"
        if problem.type in _BOUNDS and isinstance(problem.value, int) \
                and not isinstance(problem.value, bool):
            expected = expected.replace("a number", "an integer", 1)
        return f"{prefix}operating point key {key or '(top level)'!r} must be {expected}, " \
               f"got {show(problem.value)}"

    return Wording(unknown=unknown, invalid=invalid, missing=missing)


OP_WORDING = op_wording()


Unit = Annotated[float, check(lambda v: 0 <= v <= 1, "must be a number in [0, 1]")]
"""A proportion or threshold: a finite number in ``[0, 1]``."""


class OpTable(ConfigModel):
    """A table of ``op.json``: built in code, a problem is an :class:`OperatingPointError`
    worded as reading the file words it."""

    @classmethod
    def code_problems(cls) -> tuple[type[OperatingPointError], Wording]:
        return OperatingPointError, OP_WORDING


class Estimate(OpTable):
    """A proportion measured on the tuning set, with its confidence interval.

    Attributes:
        value: the measured proportion.
        ci_low: lower end of its confidence interval (<= value).
        ci_high: upper end (>= value).
        n: how many studies it was measured on.
        method: how the interval was computed.
    """

    value: Unit
    ci_low: Unit
    ci_high: Unit
    n: int | None = Field(default=None, ge=0)
    method: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "Estimate":
        if not self.ci_low <= self.value <= self.ci_high:
            raise ValueError(
                f"needs ci_low <= value <= ci_high, got {self.ci_low} <= {self.value} <= "
                f"{self.ci_high}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "n": self.n, "method": self.method}


