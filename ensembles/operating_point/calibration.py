"""Calibrated certainty: a monotone map from a member's (or the fused) score to a probability.

``screen tune --calibrate platt|isotonic`` fits one map per member and one for the fused score
on the tuning set (its out-of-fold loop measures the expected calibration error before and
after) and stores them in ``op.json`` (``calibration``); ``screen run`` applies them to the
scores it *reports* (``studies.csv`` scores, the SR's "Certainty of Finding"). Decisions are
never taken on calibrated scores: the thresholds were tuned on the raw scale, so a study is
flagged exactly as without calibration (a Platt map is strictly increasing, but an isotonic one
has flat steps that would merge scores on both sides of a threshold).

The probabilities hold under the tuning set's case mix (its share of fracture studies,
:attr:`Calibration.positives`); at a site with another prevalence they are shifted.

Layout (``calibration`` of a point)::

    {"method": "platt", "positives": 51, "negatives": 61, "folds": 5,
     "members": {"pg-cls": {"method": "platt", "a": 1.7, "b": -0.2}, ...},
     "fused": {"method": "platt", "a": 2.1, "b": -1.0},
     "ece_before": {"pg-cls": 0.21, "fused": 0.18}, "ece_after": {"pg-cls": 0.05, ...}}

An isotonic map is ``{"method": "isotonic", "x": [...], "y": [...]}``: knots with ``x``
increasing and ``y`` non-decreasing, linear between them and flat outside.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from ensembles.config_model import check
from ensembles.operating_point.schema import OpTable, Unit

__all__ = ["CALIBRATION_METHODS", "FUSED", "Calibration", "ScoreMap", "logit"]

#: How ``screen tune --calibrate`` fits a map.
CALIBRATION_METHODS: tuple[str, ...] = ("platt", "isotonic")
#: The key of the fused score beside the members' names (calibration, reference, ledger).
FUSED = "fused"
_EPS = 1e-6

Method = Annotated[str, check(lambda v: v in CALIBRATION_METHODS,
                              f"must be one of {', '.join(CALIBRATION_METHODS)}")]


def logit(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """``log(s / (1 - s))`` with ``s`` clipped to ``[1e-6, 1 - 1e-6]`` (Platt's input)."""
    clipped = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.asarray(np.log(clipped / (1.0 - clipped)), dtype=np.float64)


class ScoreMap(OpTable):
    """One score's calibration map.

    Attributes:
        method: ``platt`` or ``isotonic``.
        a: Platt slope on the score's logit (>= 0: the map never reverses the order).
        b: Platt intercept: ``p = 1 / (1 + exp(-(a * logit(s) + b)))``.
        x: isotonic knots' scores (increasing).
        y: isotonic knots' probabilities (non-decreasing).
    """

    method: Method
    a: float | None = Field(default=None, ge=0)
    b: float | None = None
    x: list[Unit] | None = None
    y: list[Unit] | None = None

    @model_validator(mode="after")
    def _complete(self) -> "ScoreMap":
        if self.method == "platt":
            if self.a is None or self.b is None or self.x is not None or self.y is not None:
                raise ValueError("a platt map needs 'a' and 'b' (and no 'x'/'y'), e.g. "
                                 '{"method": "platt", "a": 1.5, "b": -0.3}')
            return self
        if self.x is None or self.y is None or self.a is not None or self.b is not None:
            raise ValueError("an isotonic map needs 'x' and 'y' (and no 'a'/'b')")
        if not self.x or len(self.x) != len(self.y):
            raise ValueError(f"an isotonic map needs as many 'y' as 'x' values (at least one), got "
                             f"{len(self.x)} and {len(self.y)}")
        if any(b <= a for a, b in zip(self.x, self.x[1:])):
            raise ValueError("an isotonic map's 'x' must be strictly increasing")
        if any(b < a for a, b in zip(self.y, self.y[1:])):
            raise ValueError("an isotonic map's 'y' must be non-decreasing")
        return self

    def apply(self, scores: NDArray[np.float64]) -> NDArray[np.float64]:
        """The calibrated probabilities of ``scores`` (same shape; NaN stays NaN)."""
        values = np.asarray(scores, dtype=np.float64)
        if self.method == "platt":
            z = float(self.a or 0.0) * logit(values) + float(self.b or 0.0)
            out = 1.0 / (1.0 + np.exp(-z))
        else:
            out = np.interp(values, np.asarray(self.x), np.asarray(self.y))
        return np.asarray(np.where(np.isnan(values), np.nan, np.clip(out, 0.0, 1.0)), dtype=np.float64)

    def apply_one(self, score: float) -> float:
        """:meth:`apply` on one score."""
        return float(self.apply(np.array([score]))[0])

    def to_dict(self) -> dict[str, Any]:
        if self.method == "platt":
            return {"method": self.method, "a": self.a, "b": self.b}
        return {"method": self.method, "x": list(self.x or []), "y": list(self.y or [])}


class Calibration(OpTable):
    """Per-member (and fused) calibration of an operating point.

    Attributes:
        method: how the maps were fitted (``platt`` or ``isotonic``).
        members: ``{member: map}``; a member without one reports its raw score.
        fused: the fused study score's map (the SR's certainty), if fitted.
        positives: fracture studies of the tuning set (the case mix the probabilities hold for).
        negatives: normal studies of the tuning set.
        folds: folds of the out-of-fold measurement (``None``: not measured).
        ece_before: expected calibration error of the raw scores, out of fold, per member and
            ``fused``.
        ece_after: the same for the calibrated scores.
    """

    method: Method
    members: dict[str, ScoreMap]
    fused: ScoreMap | None = None
    positives: int = Field(ge=0)
    negatives: int = Field(ge=0)
    folds: int | None = Field(default=None, ge=2)
    ece_before: dict[str, Unit] = Field(default_factory=dict)
    ece_after: dict[str, Unit] = Field(default_factory=dict)

    @property
    def prevalence(self) -> float:
        """The tuning set's share of fracture studies."""
        total = self.positives + self.negatives
        return self.positives / total if total else math.nan

    def statement(self) -> str:
        """What a calibrated score means, for the SR and the CSV's readers."""
        return (f"calibrated probability ({self.method}) under the tuning set's case mix "
                f"({100 * self.prevalence:.0f} % fracture studies)")

    def member_score(self, member: str, score: float | None) -> float | None:
        """``member``'s calibrated score (raw when it has no map; ``None`` stays ``None``)."""
        if score is None or member not in self.members:
            return score
        return self.members[member].apply_one(score)

    def fused_score(self, score: float) -> float:
        """The fused study score's calibrated probability (raw without a fused map)."""
        return score if self.fused is None else self.fused.apply_one(score)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method, "members": {m: c.to_dict() for m, c in self.members.items()},
            "positives": self.positives, "negatives": self.negatives,
        }
        if self.fused is not None:
            out["fused"] = self.fused.to_dict()
        if self.folds is not None:
            out["folds"] = self.folds
        if self.ece_before:
            out["ece_before"] = dict(self.ece_before)
        if self.ece_after:
            out["ece_after"] = dict(self.ece_after)
        return out
