"""``screen tune --by``: a point per group with enough fracture studies, the global point for
the others; decisions follow each study's group's point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from dicom_io.tables import PREDICTIONS, write_table
from ensembles.operating_point.op_json import load_deciding_point
from screen.cli import cli
from screen.tune.search import decide
from screen.tune.tuner import TuneSettings, decide_predictions, read_predictions, run_tune

COLUMNS = ["study_instance_uid", "label", "n_images", "score:a", "score:b", "manufacturer", "model",
           "body_part", "modality"]


def _predictions(path: Path) -> Path:
    """ARM: 150 studies, scores separate well at a high threshold; SHOULDER: 60 studies with only
    a dozen fractures (too few for a point of its own); scores of SHOULDER run lower."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(210):
        part = "ARM" if i < 150 else "SHOULDER"
        fracture = rng.random() < (0.45 if part == "ARM" else 0.2)
        centre = (0.75 if fracture else 0.35) if part == "ARM" else (0.5 if fracture else 0.2)
        rows.append({"study_instance_uid": f"1.2.{i}", "label": "fracture" if fracture else "normal",
                     "n_images": 1, "score:a": float(np.clip(rng.normal(centre, 0.12), 0, 1)),
                     "score:b": float(np.clip(rng.normal(centre, 0.15), 0, 1)), "manufacturer": "ACME",
                     "model": "DX-1", "body_part": part, "modality": "DX"})
    return write_table(path, PREDICTIONS, rows, COLUMNS)


def test_small_group_falls_back_and_decisions_follow_the_group_point(tmp_path: Path) -> None:
    source = _predictions(tmp_path / "predictions.csv")
    result, _ = run_tune(source, tmp_path / "op.json", TuneSettings(target_recall=0.9, group_by="BodyPartExamined",
                                                                     calibrate="none"))
    groups = {g.value: g for g in result.groups}
    assert groups["ARM"].point is not None and groups["ARM"].positives >= 36
    assert groups["SHOULDER"].point is None and groups["SHOULDER"].positives < 36
    assert "fewer than the 36 a group needs" in groups["SHOULDER"].reason
    point = load_deciding_point(tmp_path / "op.json")
    assert point.group_by == "BodyPartExamined" and set(point.group_points) == {"ARM"}
    arm = point.group_points["ARM"]
    assert arm.id != point.id and dict(arm.thresholds) != dict(point.thresholds)
    assert point.for_group("SHOULDER") is point and point.for_group(None) is point
    assert point.for_group("ARM") is arm
    # the group's figures (and bootstrap interval) are its own: measured on its 150 studies
    assert arm.provenance.sensitivity is not None and arm.provenance.sensitivity.n == groups["ARM"].positives
    assert arm.provenance.f1 is not None and arm.provenance.f1.n == 150
    predictions = read_predictions(source)
    parts = predictions.group_values("body_part")
    filled = predictions.filled()
    for i, part in enumerate(parts):
        chosen = point.for_group(part)
        expected = decide(filled[[i]], predictions.members, chosen.vote, dict(chosen.thresholds))[0]
        assert bool(expected) == bool(decide(filled[[i]], predictions.members, (arm if part == "ARM" else point).vote,
                                             dict((arm if part == "ARM" else point).thresholds))[0])
    arm_rows = np.array([p == "ARM" for p in parts])
    assert np.array_equal(decide_predictions(arm, predictions)[arm_rows], groups["ARM"].point.decisions)
    # a minimum nobody reaches: every study keeps the global point
    strict, _ = run_tune(source, tmp_path / "strict.json", TuneSettings(
        target_recall=0.9, group_by="BodyPartExamined", min_group_positives=1000, calibrate="none"))
    assert all(g.point is None for g in strict.groups)
    assert load_deciding_point(tmp_path / "strict.json").group_points == {}


def test_cli_by_needs_the_column(tmp_path: Path) -> None:
    source = tmp_path / "p.csv"
    rows = [{"study_instance_uid": f"1.{i}", "label": "fracture" if i % 2 else "normal", "n_images": 1,
             "score:a": (i % 2) * 0.5 + 0.25} for i in range(80)]
    write_table(source, PREDICTIONS, rows, ["study_instance_uid", "label", "n_images", "score:a"])
    result = CliRunner().invoke(cli, ["tune", str(source), "--target-recall", "0.9", "--out",
                                      str(tmp_path / "op.json"), "--by", "BodyPartExamined"])
    assert result.exit_code == 2
    assert "--by BodyPartExamined needs the 'body_part' column" in result.output
