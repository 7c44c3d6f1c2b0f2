"""The statistics of ``screen monitor``: PSI, the two-sample KS test, binomial tests and bands,
and Holm's correction for the number of checks.

Scores are study scores in [0, 1]. The PSI bins are the reference's deciles (edges at its
quantiles, repeated edges merged, the outer ones opened to -inf/+inf); an empty bin counts as
:data:`PSI_FLOOR` of its sample so the index stays finite. The KS test is scipy's
``ks_2samp`` (exact p-value for small samples); exact binomial intervals are
:func:`screen.tune.search.exact_interval` (Clopper-Pearson); the flag rate is compared with the
tuning set's by Fisher's exact test (both are samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from screen.tune.search import exact_interval

__all__ = ["PSI_BINS", "PSI_FLOOR", "binomial_band", "binomial_p", "exact_interval", "holm", "ks_test",
           "one_sided_below_p", "psi"]

PSI_BINS = 10
PSI_FLOOR = 1e-4


def _bin_edges(reference: NDArray[np.float64], bins: int) -> NDArray[np.float64]:
    inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.concatenate(([-np.inf], inner, [np.inf]))


def psi(reference: Sequence[float] | NDArray[np.float64], recent: Sequence[float] | NDArray[np.float64],
        bins: int = PSI_BINS) -> float:
    """Population stability index ``sum((r - q) * ln(r / q))`` of ``recent`` (shares ``r``)
    against ``reference`` (shares ``q``) over the reference's quantile bins.

    Raises:
        ValueError: an empty sample.
    """
    ref = np.asarray(reference, dtype=np.float64)
    new = np.asarray(recent, dtype=np.float64)
    if ref.size == 0 or new.size == 0:
        raise ValueError("psi needs two non-empty samples")
    edges = _bin_edges(ref, bins)
    # right-closed bins (a, b]: a value equal to an edge falls in the bin the edge closes
    q = _shares(ref, edges)
    r = _shares(new, edges)
    q, r = np.maximum(q, PSI_FLOOR), np.maximum(r, PSI_FLOOR)
    return float(np.sum((r - q) * np.log(r / q)))


def _shares(values: NDArray[np.float64], edges: NDArray[np.float64]) -> NDArray[np.float64]:
    index = np.searchsorted(edges[1:-1], values, side="left")  # bin i holds (edge_i, edge_i+1]
    counts = np.bincount(index, minlength=edges.size - 1)
    return np.asarray(counts / values.size, dtype=np.float64)


def ks_test(reference: Sequence[float] | NDArray[np.float64],
            recent: Sequence[float] | NDArray[np.float64]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and two-sided p-value (``scipy.stats.ks_2samp``)."""
    result = stats.ks_2samp(np.asarray(reference, dtype=np.float64), np.asarray(recent, dtype=np.float64))
    return float(result.statistic), float(result.pvalue)


def binomial_p(successes: int, trials: int, rate: float) -> float:
    """Two-sided exact binomial test of ``successes / trials`` against ``rate``."""
    if trials == 0:
        return 1.0
    return float(stats.binomtest(successes, trials, min(max(rate, 0.0), 1.0)).pvalue)


def two_proportions_p(successes: int, trials: int, reference_successes: int, reference_trials: int) -> float:
    """Two-sided Fisher exact test that two shares differ (the reference is a sample too: a
    binomial test against its estimate as if it were exact would alarm far too often)."""
    if trials == 0 or reference_trials == 0:
        return 1.0
    table = [[successes, trials - successes], [reference_successes, reference_trials - reference_successes]]
    return float(stats.fisher_exact(table).pvalue)


def one_sided_below_p(successes: int, trials: int, promise: float) -> float:
    """Exact one-sided p-value that the true rate is below ``promise``: ``P(X <= successes)``."""
    if trials == 0:
        return 1.0
    return float(stats.binom.cdf(successes, trials, min(max(promise, 0.0), 1.0)))


def binomial_band(rate: float, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` range of the share a night of ``trials`` studies shows when its true
    rate is ``rate`` (the band of the flag rate plot)."""
    if trials == 0:
        return (math.nan, math.nan)
    tail = (1.0 - level) / 2
    low = stats.binom.ppf(tail, trials, rate) / trials
    high = stats.binom.ppf(1.0 - tail, trials, rate) / trials
    return float(low), float(high)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order): compare each with the family's alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
