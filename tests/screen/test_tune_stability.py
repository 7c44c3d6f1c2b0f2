"""screen tune --stability: the oof guard run again under other fold seeds, each seed's rule
reported, so a choice that moves with the folds is seen as one among near-equivalent rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from screen.commands.tune import tune_cmd
from screen.errors import ConfigError
from screen.tune.inputs import Predictions, TuneError, TuneSettings
from screen.tune.result import stability_note
from screen.tune.tuner import tune


def _set(members: int, seed: int = 3) -> Predictions:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(60, dtype=bool), np.zeros(90, dtype=bool)]
    scores = np.clip(rng.normal(0.35, 0.18, (y.size, members)) + 0.3 * y[:, None]
                     * rng.random((y.size, members)), 0.0, 1.0).round(3)
    return Predictions(study_uids=tuple(str(i) for i in range(y.size)), labels=y,
                       members=tuple("abc"[:members]), scores=scores)


SETTINGS = TuneSettings(target_recall=0.8, allow_small=True, calibrate="none", seed=0)


def _alone(predictions: Predictions, seed: int) -> str:
    try:
        result = tune(predictions, dataclasses.replace(SETTINGS, seed=seed))
    except TuneError:
        return "none passes"
    return result.decision_point.choice.rule.label


def test_each_seed_reports_what_tuning_with_that_seed_chooses() -> None:
    predictions = _set(3)
    result = tune(predictions, dataclasses.replace(SETTINGS, stability=3))
    assert [seed for seed, _ in result.stability] == [0, 1, 2, 3]
    assert result.stability[0][1] == result.decision_point.choice.rule.label
    for seed, label in result.stability[1:]:
        assert label == _alone(predictions, seed)
    # the check changes nothing of the point itself
    plain = tune(predictions, SETTINGS)
    assert plain.stability == ()
    assert plain.decision_point.operating_point.thresholds == \
        result.decision_point.operating_point.thresholds


def test_the_note_says_whether_the_rule_moved() -> None:
    assert stability_note(()) is None
    same = stability_note(((0, "any"), (1, "any"), (2, "any")))
    assert same == "fold-seed check: seed 0 (tuned): any; seed 1: any, seed 2: any; the same rule under every seed"
    moved = stability_note(((5, "any"), (6, "weighted-mean"), (7, "any"), (8, "none passes")))
    assert moved is not None
    assert "seed 6: weighted-mean, seed 7: any, seed 8: none passes" in moved
    assert "the chosen rule under 2 of 4 seeds: which rule the guard picks depends on the folds" in moved


def test_one_member_has_one_rule_under_every_seed() -> None:
    result = tune(_set(1), dataclasses.replace(SETTINGS, stability=2))
    assert [label for _, label in result.stability] == ["any", "any", "any"]


@pytest.mark.parametrize("change", [{"guard": "lower-ci"}, {"guard": "none"}, {"folds": 0}, {"stability": -1}])
def test_stability_needs_the_oof_guard(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="--stability"):
        dataclasses.replace(SETTINGS, **{"stability": 2, **change})


def test_cli_prints_the_check_and_the_report_holds_it(tmp_path: Path) -> None:
    predictions = _set(3)
    path = tmp_path / "predictions.csv"
    rows = ["study_instance_uid,label,n_images,score:a,score:b,score:c"]
    rows += [f"1.2.3.{i},{'fracture' if y else 'normal'},1," + ",".join(map(str, predictions.scores[i]))
             for i, y in enumerate(predictions.labels)]
    path.write_text("\n".join(rows) + "\n")
    out = CliRunner().invoke(tune_cmd, [str(path), "--target-recall", "0.8", "--allow-small", "--calibrate",
                                        "none", "--stability", "2", "--out", str(tmp_path / "op.json")])
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if x.startswith("fold-seed check: seed 0 (tuned): "))
    assert "seed 1: " in line and "seed 2: " in line
    report = (tmp_path / "op-report" / "report.md").read_text()
    assert "- Fold-seed check: seed 0 (tuned): " in report
