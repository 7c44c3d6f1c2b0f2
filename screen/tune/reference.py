"""The monitoring reference ``screen tune`` stores in ``op.json`` (see
:mod:`ensembles.operating_point.reference`): each member's and the fused raw study scores of
the tuning set, the deciding point's flag rate with its exact interval, and the mix of
acquisition devices and body parts the set held."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ensembles.operating_point.calibration import FUSED
from ensembles.operating_point.reference import DeviceMix, Reference, reference_scores
from ensembles.operating_point.schema import Estimate
from screen.tune.inputs import Predictions
from screen.tune.search import exact_interval

__all__ = ["FLAG_RATE_METHOD", "build_reference"]

FLAG_RATE_METHOD = "Clopper-Pearson exact, two-sided 95 %"


def build_reference(predictions: Predictions, decisions: NDArray[np.bool_],
                    fused: NDArray[np.float64]) -> Reference:
    """The reference of the deciding point whose tuning-set ``decisions`` and ``fused`` study
    scores are given (raw scores: empty member cells are left out, not counted as 0)."""
    scores: dict[str, list[float]] = {}
    quantiles = False
    columns: Sequence[tuple[str, NDArray[np.float64]]] = [
        *((m, predictions.scores[:, j]) for j, m in enumerate(predictions.members)), (FUSED, fused)]
    for name, values in columns:
        kept, thinned = reference_scores(values)
        if kept:
            scores[name] = kept
            quantiles = quantiles or thinned
    n = int(decisions.size)
    flagged = int(decisions.sum())
    low, high = exact_interval(flagged, n)
    mix = Counter(
        (row.get("manufacturer", ""), row.get("model", ""), row.get("body_part", ""), row.get("modality", ""))
        for row in predictions.acquisition if any(row.values()))
    return Reference(
        n_studies=n, positives=predictions.positives, negatives=predictions.negatives, scores=scores,
        quantiles=quantiles,
        flag_rate=Estimate(value=flagged / n, ci_low=min(low, flagged / n), ci_high=max(high, flagged / n),
                           n=n, method=FLAG_RATE_METHOD),
        mix=[DeviceMix(manufacturer=a, model=b, body_part=c, modality=d, studies=k)
             for (a, b, c, d), k in sorted(mix.items())],
    )
