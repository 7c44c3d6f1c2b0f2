"""The monitoring reference: what the tuning set looked like, for ``screen monitor`` to compare
the nights with.

``screen tune`` stores it in ``op.json`` (``reference`` of the deciding point)::

    {"n_studies": 112, "positives": 51, "negatives": 61, "quantiles": false,
     "scores": {"pg-cls": [0.01, 0.02, ...], "fused": [...]},   # sorted raw study scores
     "flag_rate": {"value": 0.47, "ci_low": 0.38, "ci_high": 0.57, "n": 112, "method": "..."},
     "mix": [{"manufacturer": "ACME", "model": "DX-1", "body_part": "SHOULDER",
              "modality": "DX", "studies": 60}, ...]}

``scores`` keeps every study's raw score (the same scale as the scores ``screen run`` records in
the ledger), rounded to 6 digits, so a Kolmogorov-Smirnov test and the PSI are computed on the
sample itself; a tuning set above :data:`MAX_REFERENCE_SCORES` studies keeps that many evenly
spaced quantiles instead (``quantiles: true``). The flag rate is the deciding point's on the
tuning set, with its exact interval: it compares with a night only where the case mix is alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, field_validator

from ensembles.operating_point.schema import Estimate, OpTable, Unit

__all__ = ["DEVICE_FIELDS", "MAX_REFERENCE_SCORES", "DeviceMix", "Reference", "reference_scores"]

#: Most scores kept per member; above it, evenly spaced quantiles.
MAX_REFERENCE_SCORES = 2001
#: The acquisition fields of a study the reference counts (header keyword -> key here).
DEVICE_FIELDS: dict[str, str] = {"Manufacturer": "manufacturer", "ManufacturerModelName": "model",
                                 "BodyPartExamined": "body_part", "Modality": "modality"}


def reference_scores(scores: NDArray[np.float64]) -> tuple[list[float], bool]:
    """Sorted finite scores rounded to 6 digits, or :data:`MAX_REFERENCE_SCORES` quantiles of
    them; the flag says which."""
    values = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    if values.size > MAX_REFERENCE_SCORES:
        values = np.quantile(values, np.linspace(0.0, 1.0, MAX_REFERENCE_SCORES))
        return [round(float(v), 6) for v in values], True
    return [round(float(v), 6) for v in values], False


class DeviceMix(OpTable):
    """How many tuning studies came from one acquisition device and body part.

    Attributes:
        manufacturer: Manufacturer ("" when absent).
        model: ManufacturerModelName.
        body_part: BodyPartExamined (upper case).
        modality: Modality.
        studies: studies with these values.
    """

    manufacturer: str = ""
    model: str = ""
    body_part: str = ""
    modality: str = ""
    studies: int = Field(ge=1)

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in type(self).model_fields}


class Reference(OpTable):
    """The tuning set as monitoring needs it (see the module docstring).

    Attributes:
        n_studies: studies of the tuning set.
        positives: fracture studies among them.
        negatives: normal studies among them.
        scores: per member and ``fused``: the sorted raw study scores (or quantiles).
        quantiles: ``scores`` are evenly spaced quantiles, not the sample.
        flag_rate: share of tuning studies the deciding point flags, with its exact interval.
        mix: studies per (manufacturer, model, body part, modality); empty when the
            predictions file had no such columns.
    """

    n_studies: int = Field(ge=1)
    positives: int = Field(ge=0)
    negatives: int = Field(ge=0)
    scores: dict[str, list[Unit]]
    quantiles: bool = False
    flag_rate: Estimate
    mix: list[DeviceMix] = Field(default_factory=list)

    @field_validator("scores")
    @classmethod
    def _sorted(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for name, values in value.items():
            if not values:
                raise ValueError(f"scores of {name!r} must hold at least one score")
            if any(b < a for a, b in zip(values, values[1:])):
                raise ValueError(f"scores of {name!r} must be sorted in increasing order")
        return value

    def sample(self, name: str) -> NDArray[np.float64] | None:
        """``name``'s reference scores (``None`` when the reference has none)."""
        values = self.scores.get(name)
        return None if values is None else np.asarray(values, dtype=np.float64)

    def seen(self, key: str) -> set[str]:
        """Values of a :class:`DeviceMix` field (``manufacturer``, ``body_part`` ...) in tuning."""
        return {str(getattr(m, key)) for m in self.mix}

    def seen_devices(self) -> set[tuple[str, str]]:
        """``(manufacturer, model)`` pairs seen in tuning."""
        return {(m.manufacturer, m.model) for m in self.mix}

    def to_dict(self) -> dict[str, Any]:
        return {"n_studies": self.n_studies, "positives": self.positives, "negatives": self.negatives,
                "scores": {k: list(v) for k, v in self.scores.items()}, "quantiles": self.quantiles,
                "flag_rate": self.flag_rate.to_dict(), "mix": [m.to_dict() for m in self.mix]}
