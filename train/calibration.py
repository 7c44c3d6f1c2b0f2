"""How well scores are calibrated: reliability bins and the expected calibration error (ECE).

A score is *calibrated* when, among studies scored about ``p``, a share ``p`` has a fracture.
The ECE is the weighted mean gap between each bin's mean score and its share of fractures
(equal-width bins over ``[0, 1]``, empty bins left out). ``screen tune --calibrate`` measures it
out of fold before and after its calibration maps; ``screen eval`` reports it and draws the
reliability diagram.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["DEFAULT_BINS", "ReliabilityBin", "expected_calibration_error", "plot_reliability",
           "reliability_bins"]

DEFAULT_BINS = 10


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram.

    Attributes:
        low: the bin's lower edge.
        high: its upper edge (the last bin includes 1.0).
        count: scores in it.
        mean_score: their mean.
        observed: the share of them that are fracture studies.
    """

    low: float
    high: float
    count: int
    mean_score: float
    observed: float


def reliability_bins(scores: NDArray[np.float64], labels: NDArray[np.bool_],
                     bins: int = DEFAULT_BINS) -> list[ReliabilityBin]:
    """Non-empty equal-width bins of ``scores`` (NaN scores left out) with their observed rate."""
    values = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(labels, dtype=bool)
    keep = np.isfinite(values)
    values, truth = values[keep], truth[keep]
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(values, edges[1:-1], right=False), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            out.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), int(mask.sum()),
                                      float(values[mask].mean()), float(truth[mask].mean())))
    return out


def expected_calibration_error(scores: NDArray[np.float64], labels: NDArray[np.bool_],
                               bins: int = DEFAULT_BINS) -> float:
    """``sum(count / n * |mean score - observed|)`` over :func:`reliability_bins` (NaN: no score)."""
    found = reliability_bins(scores, labels, bins)
    total = sum(b.count for b in found)
    if not total:
        return float("nan")
    return float(sum(b.count / total * abs(b.mean_score - b.observed) for b in found))


def plot_reliability(curves: dict[str, list[ReliabilityBin]], path: Path, title: str) -> Path:
    """Draw reliability diagrams (observed share against mean score per bin, one line per
    curve, the diagonal for perfect calibration) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.8), dpi=100)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, found in curves.items():
        ax.plot([b.mean_score for b in found], [b.observed for b in found], marker="o", label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean score in bin")
    ax.set_ylabel("share of fracture studies")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
