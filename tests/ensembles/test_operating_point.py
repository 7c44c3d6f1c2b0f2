"""OperatingPoint: JSON round trips, ids, validation messages, member checks, applying it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ensembles.errors import OperatingPointError
from ensembles.fusion import BoxSettings, VoteRule
from ensembles.operating_point.op_json import (
    load_deciding_point,
    load_points,
    save_operating_point,
    save_operating_points,
)
from ensembles.operating_point.point import (
    SCHEMA_VERSION,
    OperatingPoint,
    apply_operating_point,
    uniform_operating_point,
)
from ensembles.types import Box, Detection, MemberOutput, VoteRuleName

FULL: dict[str, Any] = {
    "schema_version": 1,
    "id": "site-2025-01",
    "level": "high-sensitivity",
    "thresholds": {"cls": 0.31, "det": 0.22, "detr": 0.4},
    "vote": {"rule": "k-of-n", "k": 2},
    "boxes": {"score_threshold": 0.1, "iou_threshold": 0.5, "scoring": "mean",
              "skip_box_threshold": 0.05, "members": ["det", "detr"], "weights": {"det": 2.0, "detr": 1.0}},
    "provenance": {
        "source_sha256": "a" * 64, "tuning_set": "tune.jsonl", "target_recall": 0.95,
        "sensitivity": {"value": 0.96, "ci_low": 0.93, "ci_high": 0.98, "n": 210, "method": "wilson"},
        "specificity": {"value": 0.7, "ci_low": 0.65, "ci_high": 0.75, "n": None, "method": None},
        "created_by": "screen tune 0.1.0", "created_at": "2025-01-31T02:00:00+00:00", "notes": "x",
    },
}


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    op = OperatingPoint.from_dict(FULL)
    path = save_operating_point(op, tmp_path / "ops" / "op.json")
    loaded = load_deciding_point(path)
    assert loaded == op and loaded.to_dict() == FULL
    assert loaded.vote == VoteRule("k-of-n", k=2)
    assert loaded.boxes.members == ("det", "detr") and loaded.provenance.sensitivity is not None
    assert loaded.provenance.sensitivity.n == 210
    text = path.read_text()
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert sorted(p.name for p in path.parent.iterdir()) == ["op.json"]


def test_minimal_file_gets_defaults_and_a_content_id() -> None:
    op = OperatingPoint.from_dict({"schema_version": 1, "thresholds": {"cls": 0.5}})
    assert op.vote.rule == "any" and op.boxes.scoring == "max" and op.level is None
    assert op.id is not None and op.id.startswith("op-") and len(op.id) == 15
    same = OperatingPoint.from_dict({"schema_version": 1, "thresholds": {"cls": 0.5},
                                     "provenance": {"notes": "different notes"}})
    assert same.id == op.id  # notes do not change decisions
    other = OperatingPoint.from_dict({"schema_version": 1, "thresholds": {"cls": 0.51}})
    assert other.id != op.id


def test_uniform_operating_point() -> None:
    op = uniform_operating_point(["a", "b"], 0.3, level="demo")
    assert op.thresholds == {"a": 0.3, "b": 0.3} and op.members == ("a", "b")
    assert op.vote.rule == "any" and op.level == "demo"


def _with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(FULL)
    keys = path.split(".")
    target = data
    for key in keys[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("schema_version", 3, "schema_version 3 is newer than this fracture-screen supports"),
        ("schema_version", _DELETE, "'schema_version' is missing"),
        ("thresholds", _DELETE, "'thresholds' is missing"),
        ("thresholds", {}, "'thresholds' must map"),
        ("thresholds.cls", 1.2, r"'thresholds.cls' must be a number in \[0, 1\], got 1.2"),
        ("thresholds.cls", "0.3", "'thresholds.cls' must be a number"),
        ("vote", {"rule": "majority"}, "vote rule 'majority' is unknown; choose one of any"),
        ("vote", {"k": 2}, "'vote.rule' is missing"),
        ("vote.k", 4, r"k <= number of members \(3\), got k=4"),
        ("vote", {"rule": "weighted-mean", "weights": {"cls": 1, "det": 1, "detr": 1, "x": 1},
                  "threshold": 0.5}, r"unknown member\(s\) \['x'\]"),
        ("vote", {"rule": "weighted-mean", "weights": {"cls": 1}, "threshold": 0.5}, "lack member"),
        ("vote.extra", 1, "vote has unknown key"),
        ("boxes.scoring", "avg", "box scoring 'avg' is unknown"),
        ("boxes.iou_threshold", -0.1, "iou_threshold must be a number in"),
        ("boxes.members", ["det", "ghost"], r"'boxes.members' names member\(s\) \['ghost'\]"),
        ("boxes.members", "det", "must be a list of member names"),
        ("boxes.weights", {"det": 0}, "> 0"),
        ("provenance.source_sha256", "abc", "64 lower-case hex"),
        ("provenance.created_at", "yesterday", "ISO 8601"),
        ("provenance.target_recall", 95, "target_recall' must be a number in"),
        ("provenance.sensitivity", {"value": 0.9, "ci_low": 0.95, "ci_high": 0.99}, "ci_low <= value"),
        ("provenance.sensitivity", {"value": 0.9}, "'provenance.sensitivity.ci_low' is missing"),
        ("provenance.typo", 1, "provenance has unknown key"),
        ("threshold", 0.5, "unknown key.*threshold"),
        ("level", "", "'level' must be a non-empty string"),
    ],
)
def test_validation_names_key_value_and_fix(tmp_path: Path, path: str, value: Any, message: str) -> None:
    data = _with(path, value)
    with pytest.raises(OperatingPointError, match=message):
        OperatingPoint.from_dict(data)
    file = tmp_path / "op.json"
    file.write_text(json.dumps(data))
    with pytest.raises(OperatingPointError, match=message) as info:
        load_deciding_point(file)
    assert str(file) in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(OperatingPointError, match="does not exist"):
        load_deciding_point(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(OperatingPointError, match="not valid JSON"):
        load_deciding_point(bad)
    bad.write_text('{"schema_version": 1, "thresholds": {"a": NaN}}')
    with pytest.raises(OperatingPointError, match="not valid JSON"):
        load_deciding_point(bad)
    bad.write_text("[1]")
    with pytest.raises(OperatingPointError, match="must be a JSON object"):
        load_deciding_point(bad)


def test_check_members() -> None:
    op = OperatingPoint.from_dict(FULL)
    op.check_members(["detr", "det", "cls"])
    with pytest.raises(OperatingPointError, match=r"needs member\(s\) \['detr'\] that the ensemble lacks"):
        op.check_members(["cls", "det"])
    with pytest.raises(OperatingPointError, match=r"member\(s\) \['refiner'\] have no threshold"):
        op.check_members(["cls", "det", "detr", "refiner"])


def test_apply_operating_point_decides_with_its_rule_and_box_settings() -> None:
    op = OperatingPoint(
        thresholds={"cls": 0.5, "det": 0.3},
        vote=VoteRule("k-of-n", k=2),
        boxes=BoxSettings(score_threshold=0.2, members=("det",)),
    )
    box = Box(0.2, 0.3, 0.4, 0.5)
    outputs = {
        "img": {"cls": MemberOutput("cls", 0.6),
                "det": MemberOutput("det", 0.35, [Detection(box, score=0.35)])},
    }
    decision = apply_operating_point(op, outputs)
    assert decision.positive and decision.rule == "k-of-n(k=2)"
    (finding,) = decision.findings
    assert finding.box == pytest.approx(box) and finding.members == ("det",)
    outputs["img"]["det"] = MemberOutput("det", 0.25)
    assert not op.decide(outputs).positive  # only one of two votes now


def test_save_refuses_other_objects(tmp_path: Path) -> None:
    with pytest.raises(OperatingPointError, match="needs an OperatingPoint"):
        save_operating_point(FULL, tmp_path / "x.json")  # type: ignore[arg-type]


def test_schema_version_constant() -> None:
    assert SCHEMA_VERSION == 2  # 2: calibration, reference, group points (issue 16)


SAMPLE_OP = Path(__file__).resolve().parents[2] / "sample_data" / "op.json"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("vote.typo", 1, "operating point vote has unknown key(s) typo; valid keys: rule, k, weights, threshold"),
        ("vote.weights", 1, "operating point key 'vote.weights' must be a JSON object, got 1"),
        ("provenance.sensitivity.n", "210", "operating point key 'provenance.sensitivity.n' must be an integer, "
                                            "got '210'"),
        ("provenance.sensitivity.n", -1, "operating point key 'provenance.sensitivity.n' must be an integer "
                                         ">= 0, got -1"),
        ("thresholds.det", True, "operating point key 'thresholds.det' must be a number, got True"),
        ("vote.rule", "majority", "operating point key 'vote.rule': vote rule 'majority' is unknown; choose "
                                  "one of any, k-of-n, weighted-mean"),
        ("provenance.guard", {"guard": "maybe", "free_parameters": 3},
         "operating point key 'provenance.guard.guard' must be one of oof, lower-ci, none, got 'maybe'"),
        ("provenance", [], "operating point key 'provenance' must be a JSON object, got []"),
        ("boxes.members", ["det", 3], "operating point key 'boxes.members[1]' must be a string, got 3"),
    ],
)
def test_each_problem_is_one_line_naming_key_value_and_fix(path: str, value: Any, message: str) -> None:
    with pytest.raises(OperatingPointError) as info:
        OperatingPoint.from_dict(_with(path, value))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_nan_is_refused_in_code_as_in_a_file() -> None:
    with pytest.raises(OperatingPointError,
                       match=r"^operating point key 'thresholds.a' must be a finite number, got nan$"):
        OperatingPoint(thresholds={"a": float("nan")})
    with pytest.raises(OperatingPointError, match="must be a finite number, got inf"):
        OperatingPoint.from_dict(_with("provenance.target_recall", float("inf")))


def test_the_vote_rule_is_an_enum_that_reads_and_writes_its_word() -> None:
    op = OperatingPoint.from_dict(FULL)
    assert op.vote.rule is VoteRuleName.K_OF_N and op.to_dict()["vote"] == {"rule": "k-of-n", "k": 2}
    assert VoteRule(VoteRuleName.ANY) == VoteRule("any")


def test_the_committed_sample_loads_and_writes_back_byte_for_byte(tmp_path: Path) -> None:
    points = load_points(SAMPLE_OP)
    assert [p.level for p in points] == ["high-sensitivity"] and points[0].id == points[0].content_id()
    assert load_deciding_point(SAMPLE_OP) == points[0]
    out = save_operating_points(points, tmp_path / "op.json")
    assert out.read_bytes() == SAMPLE_OP.read_bytes()


def test_an_older_point_without_the_tuning_figures_loads() -> None:
    """Files written before ppv/npv/f1, out_of_fold and guard existed read back unchanged."""
    old = copy.deepcopy(FULL)
    loaded = OperatingPoint.from_dict(old)
    assert loaded.provenance.guard is None and loaded.provenance.out_of_fold is None
    assert loaded.to_dict() == old


def test_a_file_must_say_its_schema_version_but_code_gets_the_current_one() -> None:
    with pytest.raises(OperatingPointError, match="^operating point key 'schema_version' is missing$"):
        OperatingPoint.from_dict({"thresholds": {"a": 0.5}})
    assert OperatingPoint(thresholds={"a": 0.5}).schema_version == SCHEMA_VERSION


def test_replace_validates_and_rederives_the_id() -> None:
    op = OperatingPoint.from_dict({"schema_version": 1, "thresholds": {"a": 0.5, "b": 0.5}})
    moved = op.replace(id=None, thresholds={"a": 0.4, "b": 0.5})
    assert moved.id != op.id and moved.id == moved.content_id()
    with pytest.raises(OperatingPointError, match=r"'boxes.members' names member\(s\) \['c'\]"):
        op.replace(boxes=op.boxes.replace(members=("c",)))
