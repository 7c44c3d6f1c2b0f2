"""The night's monitoring end to end on tiny members: ``screen eval`` and ``screen tune`` make the
reference (with calibration and per-group points), ``screen run`` applies them and records the
night's part in run.json; a fresh night from the same generator raises no alarm, a night from
a device the tuning set never saw does, and ``screen monitor`` exits 3 on it."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from dicom_io.phantom import PhantomConfig, write_phantom_archive
from dicom_io.sr import read_sr
from ensembles.operating_point.op_json import load_deciding_point
from screen.cli import cli
from screen.tune.search import decide


def _phantom(root: Path, seed: int) -> tuple[Path, Path]:
    config = PhantomConfig(n_studies=8, seed=seed, size_range=(96, 128), views_range=(1, 1))
    write_phantom_archive(root / "archive", root / "labels.csv", config)
    return root / "archive", root / "labels.csv"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> tuple[Path, Path]:
    """A site whose op.json was tuned on the tiny members' scores of one phantom set."""
    from tests.screen.conftest import write_site

    root = tmp_path_factory.mktemp("monitor-run")
    site = write_site(root / "site", tiny_models, extra="[monitor]\nmin_studies = 6\n")
    archive, labels = _phantom(root / "tuning", seed=31)
    runner = CliRunner()
    evaluated = runner.invoke(cli, ["eval", str(archive), "--labels", str(labels), "--config", str(site),
                                    "--out", str(root / "eval"), "--bootstrap", "0"])
    assert evaluated.exit_code == 0, evaluated.output
    predictions = root / "eval" / "predictions.csv"
    assert {"manufacturer", "model", "body_part", "modality"} <= set(_rows(predictions)[0])
    tuned = runner.invoke(cli, ["tune", str(predictions), "--target-recall", "0.5", "--guard", "none",
                                "--folds", "0", "--allow-small", "--by", "BodyPartExamined",
                                "--min-group-positives", "1", "--out", str(root / "site" / "op.json")])
    assert tuned.exit_code == 0, tuned.output
    return site, root


def test_fresh_night_no_alarm_new_device_alarm(tuned: tuple[Path, Path], tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    site, root = tuned
    point = load_deciding_point(root / "site" / "op.json")
    assert point.reference is not None and point.calibration is not None and point.group_by == "BodyPartExamined"
    fresh, _ = _phantom(tmp_path / "fresh", seed=32)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(fresh), "--config", str(site), "--out", str(out)])
    assert result.exit_code == 0, result.output
    night = json.loads((out / "run.json").read_text())["monitor"]
    assert night["alarm"] is False, night["alarms"]
    assert night["screened"] == 8 and night["sufficient"] is True

    # decisions and the point each study used: its group's where one was tuned
    studies = _rows(out / "studies.csv")
    by_part = {p: q.id for p, q in point.group_points.items()}
    with closing(sqlite3.connect(out / "ledger.sqlite")) as db:  # closed: no WAL files left behind
        parts = dict(db.execute("SELECT study_instance_uid, body_part FROM run_studies").fetchall())
        raw = {(u, m): s for u, m, s in db.execute("SELECT study_instance_uid, member, score FROM run_scores")}
    for row in studies:
        uid = row["study_instance_uid"]
        assert row["operating_point_id"] == by_part.get(parts[uid], point.id)
        chosen = point.for_group(parts[uid])
        scores = np.array([[raw[(uid, m)] for m in chosen.members]])
        decided = decide(scores, chosen.members, chosen.vote, dict(chosen.thresholds))[0]
        assert (row["decision"] == "positive") == bool(decided)  # the group's point, on the raw scores
        assert float(row["score:pg-cls"]) == pytest.approx(point.calibration.member_score("pg-cls", raw[(uid, "pg-cls")]))
        assert float(row["fused_score"]) == pytest.approx(point.calibration.fused_score(raw[(uid, "fused")]))
    sr = read_sr(out / studies[0]["sr_path"])  # the SR says what its certainty is, and which point
    assert sr.algorithm.parameters["certainty"].startswith("calibrated probability (platt) under the tuning "
                                                           "set's case mix")
    assert sr.algorithm.operating_point_id == studies[0]["operating_point_id"]
    assert sr.score == pytest.approx(float(studies[0]["fused_score"]))

    other = tmp_path / "other"
    shutil.copytree(_phantom(tmp_path / "device", seed=33)[0], other)
    for path in other.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.Manufacturer, ds.ManufacturerModelName = "OtherVendor", "X-9"
        ds.save_as(path)
    caplog.clear()
    result = CliRunner().invoke(cli, ["run", str(other), "--config", str(site), "--out", str(out)])
    assert result.exit_code == 0, result.output  # an alarm never fails the night
    night = json.loads((out / "run.json").read_text())["monitor"]
    assert night["alarm"] is True
    assert any(a.startswith("devices: devices never seen in tuning: OtherVendor X-9") for a in night["alarms"])
    warnings = [r for r in caplog.records if "monitoring alarm" in r.getMessage()]
    assert len(warnings) == 1
    monitor = CliRunner().invoke(cli, ["monitor", str(out), "--config", str(site), "--nights", "1"])
    assert monitor.exit_code == 3, monitor.output
    assert (out / "monitor.html").is_file()
