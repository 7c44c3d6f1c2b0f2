"""train.metrics: hand-computed confusion metrics, full curves, seeded bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from train.metrics import (
    METRIC_NAMES,
    Confusion,
    bootstrap_auc,
    bootstrap_auc_difference,
    bootstrap_counts,
    bootstrap_metrics,
    confusion,
    confusion_at,
    percentile_interval,
    pr_curve,
    roc_auc,
    roc_curve_points,
)


def test_hand_computed_metrics() -> None:
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    pred = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    conf = confusion(labels, pred)
    assert (conf.tp, conf.fp, conf.tn, conf.fn) == (3, 1, 5, 1)
    assert conf.sensitivity == pytest.approx(3 / 4)
    assert conf.specificity == pytest.approx(5 / 6)
    assert conf.ppv == pytest.approx(3 / 4)
    assert conf.npv == pytest.approx(5 / 6)
    assert conf.accuracy == pytest.approx(8 / 10)
    assert conf.f1 == pytest.approx(6 / 8)
    assert conf.youden_j == pytest.approx(3 / 4 + 5 / 6 - 1)
    assert conf.metric("recall") == conf.sensitivity and conf.metric("precision") == conf.ppv
    d = conf.to_dict()
    assert set(METRIC_NAMES) <= set(d) and d["tp"] == 3


def test_metrics_agree_with_sklearn() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(300) < 0.4
    pred = rng.random(300) < 0.5
    conf = confusion(labels, pred)
    assert conf.sensitivity == pytest.approx(recall_score(labels, pred))
    assert conf.ppv == pytest.approx(precision_score(labels, pred))
    assert conf.f1 == pytest.approx(f1_score(labels, pred))
    assert conf.specificity == pytest.approx(recall_score(~labels, ~pred))


def test_undefined_metrics_are_nan_and_bad_input_is_refused() -> None:
    conf = confusion([1, 0], [0, 0])
    assert math.isnan(conf.ppv) and conf.npv == 0.5
    with pytest.raises(ValueError, match="tp must be an integer >= 0, got -1"):
        Confusion(-1, 0, 0, 0)
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        conf.metric("auc")
    with pytest.raises(ValueError, match="labels must be booleans or 0/1"):
        confusion([2, 0], [1, 0])
    with pytest.raises(ValueError, match=r"predicted must have the labels' shape \(2,\)"):
        confusion([1, 0], [1, 0, 1])


def test_threshold_is_inclusive() -> None:
    conf = confusion_at([1, 1, 0, 0], [0.5, 0.4, 0.5, 0.1], 0.5)
    assert (conf.tp, conf.fp, conf.tn, conf.fn) == (1, 1, 1, 1)


def test_roc_keeps_every_threshold_and_matches_sklearn_auc() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.5
    scores = np.round(rng.random(200) * 0.5 + labels * 0.3, 2)
    curve = roc_curve_points(labels, scores)
    # one point per distinct score (+ the (0, 0) start): nothing was dropped
    assert curve.thresholds.size == np.unique(scores).size + 1
    for t, x, y in zip(curve.thresholds[1:], curve.x[1:], curve.y[1:]):
        conf = confusion_at(labels, scores, float(t))
        assert (x, y) == pytest.approx((1 - conf.specificity, conf.sensitivity))
    assert curve.area == pytest.approx(roc_auc_score(labels, scores))
    assert roc_auc(labels, scores) == curve.area
    pr = pr_curve(labels, scores)
    for t, r, p in zip(pr.thresholds, pr.x[:-1], pr.y[:-1]):
        conf = confusion_at(labels, scores, float(t))
        assert (r, p) == pytest.approx((conf.sensitivity, conf.ppv))
    with pytest.raises(ValueError, match="needs positive and negative studies"):
        roc_auc([1, 1], [0.1, 0.2])


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random(400) < 0.3
    pred = np.where(labels, rng.random(400) < 0.9, rng.random(400) < 0.2)
    a = bootstrap_metrics(labels, pred, n_resamples=2000, seed=7)
    b = bootstrap_metrics(labels, pred, n_resamples=2000, seed=7)
    c = bootstrap_metrics(labels, pred, n_resamples=2000, seed=8)
    assert a == b and a["sensitivity"] != c["sensitivity"]
    conf = confusion(labels, pred)
    sens = a["sensitivity"]
    assert sens.value == conf.sensitivity and sens.n == conf.positives
    assert sens.low < sens.value < sens.high
    # the normal-approximation half-width is close to the percentile one at this size
    se = math.sqrt(sens.value * (1 - sens.value) / conf.positives)
    assert (sens.high - sens.low) / 2 == pytest.approx(1.96 * se, rel=0.25)
    for name in METRIC_NAMES:
        assert a[name].low <= a[name].value <= a[name].high, name


def test_bootstrap_counts_are_multinomial_over_cells() -> None:
    conf = Confusion(tp=30, fp=10, tn=50, fn=10)
    cells = bootstrap_counts(conf, 5000, seed=0)
    assert cells.shape == (5000, 4) and (cells.sum(axis=1) == 100).all()
    assert cells.mean(axis=0) == pytest.approx([30, 10, 50, 10], rel=0.03)
    assert percentile_interval([np.nan, np.nan]) != percentile_interval([1.0])


def test_bootstrap_auc_matches_weighted_sklearn_for_one_resample() -> None:
    rng = np.random.default_rng(5)
    labels = rng.random(120) < 0.4
    scores = np.round(rng.random(120) + 0.5 * labels, 1)  # many ties
    interval = bootstrap_auc(labels, scores, n_resamples=1, seed=11)
    weights = np.random.default_rng(11).multinomial(120, np.full(120, 1 / 120))
    expected = roc_auc_score(labels, scores, sample_weight=weights)
    assert interval.low == pytest.approx(expected) and interval.high == pytest.approx(expected)
    full = bootstrap_auc(labels, scores, n_resamples=2000, seed=0)
    assert full.low < full.value < full.high and full.value == roc_auc(labels, scores)


def test_paired_auc_difference_draws_the_same_studies_for_both_scores() -> None:
    rng = np.random.default_rng(6)
    labels = rng.random(150) < 0.4
    before = np.round(rng.random(150) + 0.3 * labels, 1)
    after = np.round(before + 0.4 * labels * rng.random(150), 1)  # better, ties in both
    one = bootstrap_auc_difference(labels, before, after, n_resamples=1, seed=11)
    weights = np.random.default_rng(11).multinomial(150, np.full(150, 1 / 150))
    expected = (roc_auc_score(labels, after, sample_weight=weights)
                - roc_auc_score(labels, before, sample_weight=weights))
    assert one.low == pytest.approx(expected) and one.high == pytest.approx(expected)
    full = bootstrap_auc_difference(labels, before, after, n_resamples=2000, seed=0)
    assert full.value == pytest.approx(roc_auc(labels, after) - roc_auc(labels, before)) and full.value > 0
    assert full.low < full.value < full.high
    # paired: narrower than the difference of two separate intervals would suggest
    a, b = bootstrap_auc(labels, before, seed=0), bootstrap_auc(labels, after, seed=1)
    assert full.high - full.low < (a.high - a.low) + (b.high - b.low)
    same = bootstrap_auc_difference(labels, before, before, n_resamples=200)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)


def test_study_scores_take_the_max_image_score_and_any_positive_label() -> None:
    from train.metrics import study_scores

    labels, scores = study_scores(["b", "a", "b", "a"], [0, 0, 1, 0], [0.2, 0.7, 0.1, 0.3])
    assert (labels, scores) == ([0, 1], [0.7, 0.2])  # studies sorted: a, b
