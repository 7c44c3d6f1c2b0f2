"""``screen monitor`` on a ledger written by hand: drift and no drift, pooling, unseen devices,
failures, the reads, the exit codes, and the ledger's v3 -> v4 migration."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ensembles.operating_point.calibration import FUSED
from ensembles.operating_point.op_json import save_operating_point
from ensembles.operating_point.point import OperatingPoint
from ensembles.operating_point.reference import DeviceMix, Reference
from ensembles.operating_point.schema import Estimate
from screen.cli import cli
from screen.monitor.checks import evaluate, gather
from screen.nightly.ledger import Ledger, RunStudy
from screen.site_config import MonitorSettings

MEMBERS = ("pg-cls", "pg-det", "detr")
SETTINGS = MonitorSettings(min_studies=40, nights=7)
DEVICE = ("Fracture-Screen Phantom", "Phantom DX", "SHOULDER", "DX")


def _reference(rng: np.random.Generator, n: int = 120) -> Reference:
    scores = {m: sorted(round(float(v), 6) for v in rng.beta(2, 5, n)) for m in (*MEMBERS, FUSED)}
    return Reference(n_studies=n, positives=n // 2, negatives=n - n // 2, scores=scores,
                     flag_rate=Estimate(value=0.4, ci_low=0.31, ci_high=0.49, n=n),
                     mix=[DeviceMix(manufacturer=DEVICE[0], model=DEVICE[1], body_part=DEVICE[2],
                                    modality=DEVICE[3], studies=n)])


def _point(reference: Reference) -> OperatingPoint:
    return OperatingPoint(thresholds={m: 0.5 for m in MEMBERS}, reference=reference,
                          provenance={"sensitivity": {"value": 0.95, "ci_low": 0.9, "ci_high": 0.98},
                                      "specificity": {"value": 0.8, "ci_low": 0.7, "ci_high": 0.88}})


def _night(ledger: Ledger, run_id: str, rng: np.random.Generator, n: int, *, a: float = 2, b: float = 5,
           flag_rate: float = 0.4, device: tuple[str, str, str, str] = DEVICE, failed: int = 0,
           day: int = 1) -> None:
    ledger._db.execute("INSERT INTO runs(run_id, started_at, status) VALUES (?, ?, 'ok')",
                       (run_id, f"2026-11-{day:02d}T02:00:00+00:00"))
    for i in range(n + failed):
        uid = f"1.2.3.{day}.{i}"
        status = "failed" if i >= n else "screened"
        night = RunStudy(status=status, flagged=None if status == "failed" else bool(rng.random() < flag_rate),
                         operating_point_id="op-x", manufacturer=device[0], model=device[1], body_part=device[2],
                         modality=device[3],
                         scores={} if status == "failed" else {m: float(rng.beta(a, b)) for m in (*MEMBERS, FUSED)})
        ledger.record_study(row={"study_instance_uid": uid, "status": status, "decision": "positive"
                                 if night.flagged else "negative"}, content_hash="h", model_key="k",
                            run_id=run_id, night=night)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    found = Ledger(tmp_path / "out")
    found.bind_key(b"k" * 32)
    return found


def test_no_alarm_without_drift_and_an_alarm_with_it(ledger: Ledger) -> None:
    rng = np.random.default_rng(1)
    reference = _reference(rng)
    for day in range(1, 4):
        _night(ledger, f"run-{day}", rng, 24, day=day)
    runs, rows = gather(ledger, nights=2, min_studies=SETTINGS.min_studies)
    assert [r["run_id"] for r in runs] == ["run-3", "run-2"]  # two nights hold 48 >= 40 studies
    calm = evaluate(runs, rows, reference, SETTINGS)
    assert not calm.alarm, calm.alarms
    assert {c.name for c in calm.checks} >= {"score:pg-cls", "score:fused", "flag-rate", "failures", "devices"}
    _night(ledger, "run-4", rng, 24, a=8, b=2, flag_rate=0.8, day=4)  # scores and flags moved
    _night(ledger, "run-5", rng, 24, a=8, b=2, flag_rate=0.8, day=5)
    runs, rows = gather(ledger, nights=2, min_studies=SETTINGS.min_studies)
    drift = evaluate(runs, rows, reference, SETTINGS)
    assert drift.alarm
    names = {a.split(":")[0] + (":" + a.split(":")[1] if a.startswith("score:") else "") for a in drift.alarms}
    assert {"score:pg-cls", "score:fused", "flag-rate"} <= names
    data = drift.to_dict()
    assert data["alarm"] is True and data["sufficient"] is True and len(data["runs"]) == 2


def test_too_few_studies_are_pooled_then_reported_insufficient(ledger: Ledger) -> None:
    rng = np.random.default_rng(2)
    reference = _reference(rng)
    for day in (1, 2):
        _night(ledger, f"run-{day}", rng, 12, day=day)
    runs, rows = gather(ledger, nights=1, min_studies=20)
    assert [r["run_id"] for r in runs] == ["run-2", "run-1"]  # pooled back to reach 20
    _night(ledger, "run-3", rng, 10, a=8, b=2, day=3)
    runs, rows = gather(ledger, nights=1, min_studies=500)
    report = evaluate(runs, rows, reference, MonitorSettings(min_studies=500))
    assert not report.sufficient and not report.alarm
    assert {c.status for c in report.checks if c.name.startswith("score:")} == {"insufficient"}


def test_unseen_device_body_part_and_failures_alarm(ledger: Ledger) -> None:
    rng = np.random.default_rng(3)
    reference = _reference(rng)
    _night(ledger, "run-1", rng, 40, device=("OtherVendor", "X-9", "WRIST", "DX"), failed=4)
    report = evaluate(*gather(ledger, nights=1, min_studies=40), reference, SETTINGS)
    alarms = {a.split(":")[0] for a in report.alarms}
    assert {"devices", "body-parts", "failures"} <= alarms, report.alarms
    assert "OtherVendor X-9 (40)" in next(a for a in report.alarms if a.startswith("devices"))
    quiet = evaluate(*gather(ledger, nights=1, min_studies=40), reference,
                     MonitorSettings(min_studies=40, alarm_on_unseen=False, max_failure_rate=0.2))
    assert not {"devices", "body-parts", "failures"} & {a.split(":")[0] for a in quiet.alarms}


def _write_reads(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("study_instance_uid,fracture,read_date\n" + "".join(f"{u},{f},{d}\n" for u, f, d in rows))
    return path


def test_reads_realised_sensitivity_against_hand_counts_and_the_promise(ledger: Ledger, tmp_path: Path) -> None:
    from screen.monitor.reads import match_reads, read_reads

    rng = np.random.default_rng(4)
    point = _point(_reference(rng))
    ledger._db.execute("INSERT INTO runs(run_id, started_at, status) VALUES ('r', '2026-11-01', 'ok')")
    flagged = {f"1.2.9.{i}": i % 4 != 0 for i in range(40)}  # 30 flagged, 10 not
    for uid, positive in flagged.items():
        ledger.record_study(row={"study_instance_uid": uid, "status": "screened",
                                 "decision": "positive" if positive else "negative"}, content_hash="h",
                            model_key="k", run_id="r")
    # reads: the 20 first studies are fractures (i = 0..19: 15 flagged, 5 missed), the rest normal
    reads = [(uid, "yes" if i < 20 else "no", "2026-11-02" if i % 2 else "2026-11-10")
             for i, uid in enumerate(flagged)] + [("1.2.404", "yes", "2026-11-02")]
    found = match_reads(ledger, read_reads(_write_reads(tmp_path / "reads.csv", reads)), point)
    assert (found.pooled.tp, found.pooled.positives) == (15, 20)
    assert (found.pooled.tn, found.pooled.negatives) == (5, 20)  # i = 20..39: 15 flagged normals
    assert found.unmatched == 1
    assert [w.period for w in found.weeks] == ["2026-W45", "2026-W46"]  # 2026-11-02 is the Monday of week 45
    assert sum(w.positives for w in found.weeks) == 20
    report = evaluate([], [], point.reference or _reference(rng), SETTINGS, reads=found)
    sens = next(c for c in report.checks if c.name == "sensitivity")
    assert sens.alarm and sens.figures["value"] == 0.75 and sens.figures["promise"] == 0.95
    kept = match_reads(ledger, read_reads(_write_reads(tmp_path / "kept.csv", [
        (uid, "yes" if positive else "no", "2026-11-02") for uid, positive in flagged.items()])), point)
    calm = evaluate([], [], point.reference or _reference(rng), SETTINGS, reads=kept)
    assert not any(c.alarm for c in calm.checks if c.name in ("sensitivity", "specificity"))


def test_cli_exit_codes_and_files(ledger: Ledger, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    reference = _reference(rng)
    op = save_operating_point(_point(reference), tmp_path / "op.json")
    for day in (1, 2):
        _night(ledger, f"run-{day}", rng, 120, day=day)
    ledger.close()
    out = tmp_path / "out"
    calm = CliRunner().invoke(cli, ["monitor", str(out), "--reference", str(op), "--nights", "2"])
    assert calm.exit_code == 0, calm.output
    assert "within bounds" in calm.output
    assert json.loads((out / "monitor.json").read_text())["alarm"] is False
    page = (out / "monitor.html").read_text()
    assert "data:image/png;base64," in page and "Content-Security-Policy" in page
    again = Ledger(out)
    _night(again, "run-3", rng, 120, a=8, b=2, day=3)
    again.close()
    alarm = CliRunner().invoke(cli, ["monitor", str(out), "--reference", str(op), "--nights", "1",
                                     "--json", str(tmp_path / "m.json")])
    assert alarm.exit_code == 3, alarm.output
    assert "ALARM" in alarm.output and json.loads((tmp_path / "m.json").read_text())["alarm"] is True
    old = save_operating_point(OperatingPoint(thresholds={m: 0.5 for m in MEMBERS}), tmp_path / "old.json")
    usage = CliRunner().invoke(cli, ["monitor", str(out), "--reference", str(old)])
    assert usage.exit_code == 2
    assert "has no monitoring reference" in usage.output
    empty = tmp_path / "empty"
    empty.mkdir()
    none = CliRunner().invoke(cli, ["monitor", str(empty), "--reference", str(op)])
    assert none.exit_code == 2 and "has no ledger.sqlite" in none.output


def test_a_version_3_ledger_migrates_to_4_keeping_its_rows(ledger: Ledger, tmp_path: Path) -> None:
    ledger._db.execute("INSERT INTO runs(run_id, started_at, status) VALUES ('r', '2026-11-01', 'ok')")
    ledger.record_study(row={"study_instance_uid": "1.2.3", "status": "screened"}, content_hash="h",
                        model_key="k", run_id="r")
    ledger.close()
    path = tmp_path / "out" / "ledger.sqlite"
    with closing(sqlite3.connect(path)) as db, db:  # back to version 3 (committed, closed): no per-run tables
        db.execute("DROP TABLE run_studies")
        db.execute("DROP TABLE run_scores")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    migrated = Ledger(tmp_path / "out")
    try:
        assert migrated.backup is not None and migrated.backup.name.startswith("ledger.sqlite.v3-backup-")
        assert migrated.get_meta("schema_version") == "4"
        assert [r["study_instance_uid"] for r in migrated.study_rows()] == ["1.2.3"]
        assert migrated.run_studies(["r"]) == []  # nights before the migration have no per-run rows
        migrated.record_study(row={"study_instance_uid": "1.2.4", "status": "screened"}, content_hash="h",
                              model_key="k", run_id="r", night=RunStudy("screened", True, "op-x", scores={"a": 0.5}))
        assert migrated.run_studies(["r"])[0]["scores"] == {"a": 0.5}
    finally:
        migrated.close()
    with closing(sqlite3.connect(migrated.backup)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)


def test_the_committed_op_json_carries_the_reference_and_calibration() -> None:
    from ensembles.operating_point.op_json import load_deciding_point

    point = load_deciding_point(Path(__file__).resolve().parents[3] / "sample_data" / "op.json")
    reference = point.reference
    assert reference is not None and reference.n_studies == sum(m.studies for m in reference.mix)
    assert set(reference.scores) == {*MEMBERS, FUSED} and not reference.quantiles
    assert reference.seen("body_part") == {"ARM", "SHOULDER"}
    assert reference.flag_rate.ci_low <= reference.flag_rate.value <= reference.flag_rate.ci_high
    assert point.calibration is not None and set(point.calibration.members) == set(MEMBERS)
    assert set(point.calibration.ece_after) == {*MEMBERS, FUSED}
