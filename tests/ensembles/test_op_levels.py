"""Multi-point operating point files, finding levels, and the tuning figures in provenance."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ensembles.errors import OperatingPointError
from ensembles.operating_point.levels import decide_with_levels, finding_level, level_name, level_names
from ensembles.operating_point.op_json import (
    load_deciding_point,
    load_points,
    points_from_dict,
    save_operating_point,
    save_operating_points,
)
from ensembles.operating_point.point import OperatingPoint, OutOfFold, Provenance
from ensembles.types import MemberOutput

EST = {"value": 0.9, "ci_low": 0.85, "ci_high": 0.95, "n": 100, "method": "bootstrap"}


def _point(level: str | None, cls: float, det: float, **prov: Any) -> OperatingPoint:
    return OperatingPoint(thresholds={"cls": cls, "det": det}, level=level,
                          provenance=Provenance(**prov))


def test_provenance_tuning_figures_round_trip(tmp_path: Path) -> None:
    data = {
        "schema_version": 1, "thresholds": {"cls": 0.3},
        "provenance": {
            "objective": "precision", "target_specificity": 0.9, "ppv": EST, "npv": EST,
            "f1": EST, "out_of_fold": {"folds": 5, "sensitivity": EST, "f1": EST},
        },
    }
    op = OperatingPoint.from_dict(data)
    assert op.provenance.out_of_fold == OutOfFold(
        folds=5, sensitivity=op.provenance.ppv, f1=op.provenance.ppv)
    assert op.provenance.ppv is not None and op.provenance.ppv.n == 100
    loaded = load_deciding_point(save_operating_point(op, tmp_path / "op.json"))
    assert loaded == op
    assert loaded.to_dict()["provenance"]["out_of_fold"] == data["provenance"]["out_of_fold"]
    # unset new keys stay out of the JSON, so older files read back unchanged
    assert "ppv" not in OperatingPoint(thresholds={"a": 0.5}).to_dict()["provenance"]


@pytest.mark.parametrize(
    ("provenance", "message"),
    [
        ({"out_of_fold": {"folds": 1}}, r"'provenance.out_of_fold.folds' must be an integer >= 2"),
        ({"out_of_fold": {"sensitivity": EST}}, "'provenance.out_of_fold.folds' is missing"),
        ({"out_of_fold": {"folds": 5, "auc": EST}}, "out_of_fold has unknown key"),
        ({"ppv": {"value": 0.9}}, "'provenance.ppv.ci_low' is missing"),
        ({"target_specificity": 90}, "'provenance.target_specificity' must be a number in"),
        ({"objective": 3}, "'provenance.objective' must be a string"),
    ],
)
def test_provenance_validation(provenance: dict[str, Any], message: str) -> None:
    with pytest.raises(OperatingPointError, match=message):
        OperatingPoint.from_dict({"schema_version": 1, "thresholds": {"a": 0.5},
                                  "provenance": provenance})


def test_dual_file_round_trip_and_single_loader(tmp_path: Path) -> None:
    sens, spec = _point("high-sensitivity", 0.2, 0.3), _point("high-specificity", 0.6, 0.7)
    path = save_operating_points([sens, spec], tmp_path / "op.json")
    data = json.loads(path.read_text())
    assert sorted(data) == ["points", "schema_version"] and len(data["points"]) == 2
    assert load_points(path) == [sens, spec]
    assert load_deciding_point(path) == sens  # the deciding point
    single = save_operating_points([sens], tmp_path / "one.json")
    assert "points" not in json.loads(single.read_text())
    assert load_points(single) == [sens]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(points=[]), "'points' must be a non-empty list"),
        (lambda d: d.update(extra=1), "multi-point operating point file has unknown key"),
        (lambda d: d.update(schema_version=3), "schema_version 3 is newer"),
        (lambda d: d["points"][1]["thresholds"].update(detr=0.5),
         r"points\[1\] names members \['cls', 'det', 'detr'\] but points\[0\] names"),
        (lambda d: d["points"][1].update(level="high-sensitivity"), "levels must be distinct"),
        (lambda d: d["points"][1].update(level=None), "needs a 'level' name"),
        (lambda d: d["points"][0]["thresholds"].update(cls=2),
         r"points\[0\]: operating point key 'thresholds.cls' must be a number"),
    ],
)
def test_dual_file_validation(tmp_path: Path, change: Any, message: str) -> None:
    data = {"schema_version": 1, "points": [_point("high-sensitivity", 0.2, 0.3).to_dict(),
                                            _point("high-specificity", 0.6, 0.7).to_dict()]}
    bad = copy.deepcopy(data)
    change(bad)
    with pytest.raises(OperatingPointError, match=message):
        points_from_dict(bad)
    file = tmp_path / "op.json"
    file.write_text(json.dumps(bad))
    with pytest.raises(OperatingPointError, match=message) as info:
        load_points(file)
    assert str(file) in str(info.value)


def test_finding_level() -> None:
    points = [_point("high-sensitivity", 0.2, 0.3), _point("high-specificity", 0.6, 0.7)]
    assert finding_level(points, [True, True]) == "high-specificity"
    assert finding_level(points, [True, False]) == "high-sensitivity"
    assert finding_level(points, [False, True]) is None  # the deciding point said negative
    assert finding_level(points[:1], [True]) == "high-sensitivity"
    assert finding_level([_point(None, 0.2, 0.3)], [True]) == "point-1"
    with pytest.raises(OperatingPointError, match=r"one decision per point, got 1 decision\(s\)"):
        finding_level(points, [True])


@pytest.mark.parametrize(
    ("cls", "det", "expected"),
    [(0.1, 0.1, None), (0.25, 0.1, "high-sensitivity"), (0.25, 0.75, "high-specificity")],
)
def test_decide_with_levels(cls: float, det: float, expected: str | None) -> None:
    points = [_point("high-sensitivity", 0.2, 0.3), _point("high-specificity", 0.6, 0.7)]
    outputs = {"img": {"cls": MemberOutput(member="cls", score=cls),
                       "det": MemberOutput(member="det", score=det)}}
    decision, level = decide_with_levels(points, outputs)
    assert decision.positive is (expected is not None) and level == expected


def test_the_one_loader_names_the_file_the_point_and_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(OperatingPointError, match="does not exist; write one with `screen tune` or pass "
                                                  "--operating-point FILE"):
        load_points(tmp_path / "missing.json")
    data = {"schema_version": 1, "points": [_point("high-sensitivity", 0.2, 0.3).to_dict(),
                                            {**_point("high-specificity", 0.6, 0.7).to_dict(), "schema_version": 9}]}
    file = tmp_path / "op.json"
    file.write_text(json.dumps(data))
    with pytest.raises(OperatingPointError) as info:
        load_points(file)
    assert str(info.value) == (f"{file}: points[1]: operating point schema_version 9 is newer than this "
                               "fracture-screen supports (2); upgrade fracture-screen")
    del data["points"][1]["schema_version"]
    file.write_text(json.dumps(data))
    with pytest.raises(OperatingPointError, match=r"points\[1\]: operating point key 'schema_version' is missing"):
        load_points(file)


def test_level_names_are_the_names_findings_get() -> None:
    """One naming: the run's GSPS/page order (``level_names``) uses the names ``finding_level``
    gives, ``point-<i>`` for a point without a level; a single point has no levels."""
    points = [_point(None, 0.2, 0.3), _point("fracture", 0.6, 0.7)]
    assert level_names(points) == ["point-1", "fracture"]
    assert finding_level(points, [True, False]) == level_names(points)[0] == level_name(points[0], 0)
    assert finding_level(points, [True, True]) == level_names(points)[1]
    assert level_names(points[:1]) == []
