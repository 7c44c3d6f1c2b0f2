"""The guards of ``screen tune`` measured the way they matter: tune on many small sets drawn from
a known score model, then measure each chosen point's recall on a large fresh sample of the
same model. A guard is only worth its name if the point it lets through finds the target share
of new fractures more often than the unguarded one does."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from screen.tune.tuner import TuneSettings, tune
from screen.tune.inputs import Predictions, TuneError
from screen.tune.search import decide

MEMBERS = ("a", "b")
TARGET = 0.8
FRACTURE, NORMAL = 24, 36  # 24/24 has an exact lower bound of 0.858, so lower-ci can pass
SETS = 100
FRESH = 100_000
GUARDS = ("none", "oof", "lower-ci")


def _draw(rng: np.random.Generator, fracture: int, normal: int
          ) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Two members, independent given the truth: fracture scores beta(3, 2), normal beta(2, 3)
    (study AUC 0.758 each and 0.837 for their mean, by Monte Carlo with 200,000 per class)."""
    y = np.arange(fracture + normal) < fracture
    scores = np.where(y[:, None], rng.beta(3, 2, (y.size, len(MEMBERS))),
                      rng.beta(2, 3, (y.size, len(MEMBERS))))
    return y, scores


def test_guarded_points_meet_the_target_on_fresh_studies_more_often() -> None:
    rng = np.random.default_rng(20240611)
    _, fresh = _draw(rng, FRESH, 0)  # fresh fracture studies: recall is all that is measured
    met = {guard: 0 for guard in GUARDS}
    chosen = {guard: 0 for guard in GUARDS}
    for i in range(SETS):
        y, scores = _draw(rng, FRACTURE, NORMAL)
        preds = Predictions(tuple(f"2.25.{j}" for j in range(y.size)), y, MEMBERS, scores)
        for guard in GUARDS:
            settings = TuneSettings(target_recall=TARGET, guard=guard, folds=3, seed=i)
            try:
                point = tune(preds, settings).decision_point
            except TuneError:
                continue  # refused: nothing is deployed, so nothing can miss the target
            chosen[guard] += 1
            recall = decide(fresh, MEMBERS, point.choice.rule, point.choice.thresholds).mean()
            met[guard] += int(recall >= TARGET)
    share = {guard: met[guard] / chosen[guard] for guard in GUARDS}
    # Measured with this seed: none 16/100 (0.16), oof 50/100 (0.50), lower-ci 98/100 (0.98);
    # nothing refused. Seeded, so the test is deterministic; the margins are also wide enough
    # to hold for other seeds: each is at least 2 binomial standard errors from the measured
    # share (none 3.8, oof vs none 2.3 taking the two as independent, which they are not,
    # lower-ci 5.7).
    assert chosen == {"none": SETS, "oof": SETS, "lower-ci": SETS}
    # the problem is real: an in-sample point usually finds fewer than the target
    assert share["none"] <= 0.3
    # oof aims the out-of-fold estimate (unbiased for the way of choosing) at the target, so
    # about half its points meet it: far more than the unguarded ones
    assert share["oof"] >= share["none"] + 0.2
    # lower-ci promises 95 %; selection spends a little of it, 0.9 is what the issue asks for
    assert share["lower-ci"] >= 0.9
