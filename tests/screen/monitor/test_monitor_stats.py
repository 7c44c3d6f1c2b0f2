"""The monitor's statistics on hand-checked values: PSI, KS (scipy), Holm, binomial tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from screen.monitor.stats import PSI_FLOOR, binomial_band, holm, ks_test, one_sided_below_p, psi

REFERENCE = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]  # one score per decile bin


def test_psi_of_a_sample_with_itself_is_zero() -> None:
    assert psi(REFERENCE, REFERENCE) == pytest.approx(0.0, abs=1e-12)


def test_psi_hand_checked() -> None:
    """Half the recent scores in the lowest decile, half in the highest: each of those two bins
    has r = 0.5 against q = 0.1, the eight others r = PSI_FLOOR (empty) against q = 0.1."""
    recent = [0.01] * 5 + [0.99] * 5
    by_hand = 2 * (0.5 - 0.1) * math.log(0.5 / 0.1) + 8 * (PSI_FLOOR - 0.1) * math.log(PSI_FLOOR / 0.1)
    assert by_hand == pytest.approx(6.808, abs=1e-3)
    assert psi(REFERENCE, recent) == pytest.approx(by_hand, rel=1e-12)
    # a quarter moved one bin up: bins 0..1 and 1..2 exchange shares
    shifted = [0.15, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]  # bin 0 empty, bin 1 doubled
    by_hand = (PSI_FLOOR - 0.1) * math.log(PSI_FLOOR / 0.1) + (0.2 - 0.1) * math.log(0.2 / 0.1)
    assert psi(REFERENCE, shifted) == pytest.approx(by_hand, rel=1e-12)


def test_ks_hand_checked_and_as_scipy() -> None:
    """Empirical CDFs of [.1 .2 .3 .4] and [.35 .45 .5 .6] differ most at 0.3/0.4: 3/4."""
    reference, recent = [0.1, 0.2, 0.3, 0.4], [0.35, 0.45, 0.5, 0.6]
    statistic, p = ks_test(reference, recent)
    assert statistic == pytest.approx(0.75)
    # exact two-sided p for n = m = 4, D = 3/4: 2 * C(8,1)... scipy's exact method
    assert p == pytest.approx(stats.ks_2samp(reference, recent, method="exact").pvalue)
    assert p == pytest.approx(8 / 35)  # 16 of the 70 orderings reach D >= 3/4: hand count
    far = ks_test(np.linspace(0, 0.4, 50), np.linspace(0.6, 1.0, 50))
    assert far[0] == 1.0 and far[1] < 1e-20


def test_holm_adjusts_in_order() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.2, 0.9]) == pytest.approx([0.4, 0.9])


def test_binomial_band_and_one_sided_test() -> None:
    low, high = binomial_band(0.4, 24)
    assert (low, high) == (stats.binom.ppf(0.025, 24, 0.4) / 24, stats.binom.ppf(0.975, 24, 0.4) / 24)
    assert low < 0.4 < high
    # 7 of 10 found against a promise of 0.95: P(X <= 7 | n=10, p=0.95)
    by_hand = sum(math.comb(10, k) * 0.95 ** k * 0.05 ** (10 - k) for k in range(8))
    assert one_sided_below_p(7, 10, 0.95) == pytest.approx(by_hand)
