"""Calibrated certainty: on scores with a known miscalibration the ECE falls, the maps are
monotone, they round-trip through op.json, and they never change a decision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from dicom_io.tables import PREDICTIONS, write_table
from ensembles.operating_point.calibration import FUSED, Calibration, ScoreMap
from ensembles.operating_point.op_json import load_deciding_point, load_points
from ensembles.errors import OperatingPointError
from screen.tune.calibrate import calibrate, fit_map
from screen.tune.tuner import TuneSettings, decide_predictions, read_predictions, run_tune
from train.calibration import expected_calibration_error, reliability_bins


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True probabilities p ~ U(0.05, 0.95), labels drawn from them, and scores that push p
    towards 0 and 1 (the logit tripled): a known, strong miscalibration."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, n)
    labels = rng.random(n) < p
    logit = np.log(p / (1 - p))
    return 1 / (1 + np.exp(-3 * logit)), labels


def test_ece_hand_checked() -> None:
    scores = np.array([0.05, 0.15, 0.95, 0.85])  # bins [0, .1): 0.05 vs 0/1; [.1, .2): .15 vs 1/1; ...
    labels = np.array([False, True, True, False])
    bins = reliability_bins(scores, labels)
    assert [(b.count, b.mean_score, b.observed) for b in bins] == [(1, 0.05, 0.0), (1, 0.15, 1.0),
                                                                     (1, 0.85, 0.0), (1, 0.95, 1.0)]
    assert expected_calibration_error(scores, labels) == pytest.approx((0.05 + 0.85 + 0.85 + 0.05) / 4)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_ece_falls_out_of_fold_and_maps_are_monotone(method: str) -> None:
    scores, labels = _overconfident(600, seed=0)
    splits = list(StratifiedKFold(5, shuffle=True, random_state=0).split(scores, labels))
    found = calibrate(scores.reshape(-1, 1), labels, ["m"], scores, method, splits)
    assert found.ece_before["m"] > 0.1
    assert found.ece_after["m"] < found.ece_before["m"] / 2
    grid = np.linspace(0, 1, 501)
    for mapped in (found.members["m"].apply(grid), found.fused.apply(grid) if found.fused else grid):
        assert np.all(np.diff(mapped) >= 0)
        assert mapped.min() >= 0 and mapped.max() <= 1
    if method == "platt":
        assert np.all(np.diff(found.members["m"].apply(grid)) > 0)  # strictly: no ties


def test_platt_never_reverses_the_order() -> None:
    scores, labels = _overconfident(200, seed=1)
    reversed_map = fit_map(scores, ~labels, "platt")
    assert reversed_map.a == 0.0  # a flat map at the set's share, not a decreasing one
    assert reversed_map.apply_one(0.9) == pytest.approx(float((~labels).mean()), abs=1e-9)


def test_bad_maps_are_refused_naming_the_key() -> None:
    with pytest.raises(OperatingPointError, match="platt map needs 'a' and 'b'"):
        ScoreMap(method="platt", a=1.0)
    with pytest.raises(OperatingPointError, match="'x' must be strictly increasing"):
        ScoreMap(method="isotonic", x=[0.5, 0.5], y=[0.1, 0.2])
    with pytest.raises(OperatingPointError, match="must be one of platt, isotonic"):
        ScoreMap(method="beta", a=1.0, b=0.0)


def _predictions(path: Path, n: int = 200) -> Path:
    scores, labels = _overconfident(n, seed=2)
    rng = np.random.default_rng(3)
    other = np.clip(scores + rng.normal(0, 0.1, n), 0, 1)
    rows = [{"study_instance_uid": f"1.2.{i}", "label": "fracture" if y else "normal", "n_images": 1,
             "score:a": float(s), "score:b": float(o)} for i, (s, o, y) in enumerate(zip(scores, other, labels))]
    return write_table(path, PREDICTIONS, rows, ["study_instance_uid", "label", "n_images", "score:a", "score:b"])


def test_tune_stores_calibration_that_round_trips_and_leaves_decisions_alone(tmp_path: Path) -> None:
    source = _predictions(tmp_path / "predictions.csv")
    raw, _ = run_tune(source, tmp_path / "raw.json", TuneSettings(target_recall=0.9, calibrate="none"))
    cal, _ = run_tune(source, tmp_path / "op.json", TuneSettings(target_recall=0.9, calibrate="platt"))
    point = load_deciding_point(tmp_path / "op.json")
    assert point == cal.decision_point.operating_point and point.schema_version == 2
    assert isinstance(point.calibration, Calibration) and set(point.calibration.members) == {"a", "b"}
    assert set(point.calibration.ece_after) == {"a", "b", FUSED}
    assert point.calibration.ece_after["a"] < point.calibration.ece_before["a"]
    assert "calibrated probability (platt) under the tuning set's case mix" in point.calibration.statement()
    assert load_deciding_point(tmp_path / "raw.json").calibration is None
    # same thresholds, same vote, same decisions: calibration only changes what is reported
    assert dict(point.thresholds) == dict(raw.decision_point.operating_point.thresholds)
    predictions = read_predictions(source)
    assert np.array_equal(decide_predictions(point, predictions), decide_predictions(
        raw.decision_point.operating_point, predictions))
    assert point.calibration.member_score("a", None) is None
    assert point.calibration.member_score("unknown", 0.3) == 0.3


def test_an_old_op_json_still_loads(tmp_path: Path) -> None:
    """The committed sample file was written as schema 1: it loads unchanged, id included."""
    sample = Path(__file__).resolve().parents[2] / "sample_data" / "op.json"
    legacy = tmp_path / "v1.json"
    import json

    data = json.loads(sample.read_text())
    for key in ("calibration", "reference", "group_by", "group_points"):
        data.pop(key, None)
    data["schema_version"] = 1
    data.pop("id", None)
    legacy.write_text(json.dumps(data))
    point = load_points(legacy)[0]
    assert point.schema_version == 1 and point.calibration is None and point.reference is None
    assert point.to_dict() == {**data, "id": point.id, "level": data.get("level")}
