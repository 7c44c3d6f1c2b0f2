"""Patient safety: nothing escapes ``--out``, no patient is mixed, no study is half-screened,
nothing is lost or sent by mistake. Each case is built with pydicom in ``tmp_path`` and checked
for its exact outcome; the other studies of the night are always checked to be unaffected.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable

import pydicom
import pytest
from click.testing import CliRunner, Result
from pydicom.uid import generate_uid

from screen.cli import cli
from screen.nightly.ledger import Ledger

SHOULDER = {"BodyPartExamined": "SHOULDER"}
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")  # the bad values are the point


@pytest.fixture
def write_study(dataset_factory: Callable[..., Any]) -> Callable[..., list[Path]]:
    """``write_study(folder, study_uid, views=1, patient="PID-1", **attrs)``: files of one study."""

    def write(folder: Path, study_uid: str | None = None, views: int = 1, patient: str = "PID-1",
              sop_uid: str | None = None, **attrs: Any) -> list[Path]:
        study_uid = study_uid or generate_uid()
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for view in range(views):
            values = {**SHOULDER, "PatientID": patient, **attrs}
            ds = dataset_factory(study_uid=study_uid, sop_uid=sop_uid, **values)
            path = folder / f"view{view}-{len(list(folder.iterdir()))}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        return paths

    return write


def _run(archive: Path, site: Path, out: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out), *args])


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "studies.csv", newline="", encoding="utf-8") as handle:
        return {r["study_instance_uid"]: r for r in csv.DictReader(handle)}


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# -- 1. untrusted values never become paths ------------------------------------------------------

BAD_UIDS = {
    "parent-dirs": "../../escaped", "absolute": "/tmp/escaped-abs", "mixed": "1.2.3/../../x",
    "nul": "1.2.3\x00.4", "too-long": "1." + "2" * 63, "leading-zero": "1.02.3", "empty-part": "1..2",
    "letters": "1.2.abc",
}


@pytest.mark.parametrize("field", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_invalid_uids_never_become_paths(write_study: Callable[..., list[Path]], site: Path, tmp_path: Path,
                                         field: str) -> None:
    """One night holds a good study and one study per kind of bad UID in ``field`` (each its own
    patient): every bad one fails alone with a reason naming the attribute, never its value."""
    archive, out = tmp_path / "export", tmp_path / "out"
    good = write_study(archive / "good")
    victims: dict[str, list[Path]] = {}
    for number, (case, bad_uid) in enumerate(BAD_UIDS.items()):
        folder, patient = archive / f"bad-{case}", f"PID-BAD-{number}"
        if field == "StudyInstanceUID":
            victims[case] = write_study(folder, study_uid=bad_uid, patient=patient)
        elif field == "SOPInstanceUID":
            victims[case] = write_study(folder, sop_uid=bad_uid, patient=patient)
        else:
            victims[case] = write_study(folder, SeriesInstanceUID=bad_uid, patient=patient)
    outside_before = _files(tmp_path.parent) - _files(tmp_path)
    result = _run(archive, site, out)
    assert result.exit_code == 1, result.output
    rows = _rows(out)
    assert len(rows) == len(BAD_UIDS) + 1
    for case, victim in victims.items():
        bad_uid = BAD_UIDS[case]
        victim_uid = str(pydicom.dcmread(victim[0], stop_before_pixels=True).StudyInstanceUID)
        assert rows[victim_uid]["status"] == "failed", case
        assert rows[victim_uid]["reason"].startswith(f"invalid-uid: {field} "), case
        assert bad_uid not in rows[victim_uid]["reason"], case  # the attribute, never its value
    good_uid = str(pydicom.dcmread(good[0], stop_before_pixels=True).StudyInstanceUID)
    assert rows[good_uid]["status"] == "screened"
    assert (_files(tmp_path.parent) - _files(tmp_path)) == outside_before  # nothing written outside
    for path in _files(out):
        assert path.resolve().is_relative_to(out.resolve())
    assert [p.parent.name for p in (out / "sr").rglob("*.dcm")] == [good_uid]
    assert not Path("/tmp/escaped-abs").exists()


# -- 2. identity: one study is one patient -------------------------------------------------------

def test_a_sop_uid_in_two_studies_fails_both_and_nothing_else(write_study: Callable[..., list[Path]],
                                                              dataset_factory: Callable[..., Any], site: Path,
                                                              tmp_path: Path) -> None:
    archive, out = tmp_path / "export", tmp_path / "out"
    first = write_study(archive / "a", views=2)
    shared = str(pydicom.dcmread(first[0]).SOPInstanceUID)
    other = dataset_factory(sop_uid=shared, **SHOULDER, PatientID="PID-2")
    other.save_as(archive / "b.dcm", enforce_file_format=True)
    fine = write_study(archive / "c")
    result = _run(archive, site, out)
    assert result.exit_code == 1, result.output
    rows = _rows(out)
    for uid in (str(pydicom.dcmread(first[0]).StudyInstanceUID), str(other.StudyInstanceUID)):
        assert rows[uid]["status"] == "failed"
        assert rows[uid]["reason"] == "uid-collision: a SOPInstanceUID of the study is also in another study"
        assert rows[uid]["sr_path"] == ""
    assert rows[str(pydicom.dcmread(fine[0]).StudyInstanceUID)]["status"] == "screened"


@pytest.mark.parametrize("second, collides", [
    ({"PatientID": "PID-2"}, True),
    ({"PatientID": "PID-1", "IssuerOfPatientID": "OTHER-HOSPITAL"}, True),
    ({"PatientID": " PID-1 "}, False),  # padding is not another patient
])
def test_one_study_uid_two_patients(write_study: Callable[..., list[Path]], site: Path, tmp_path: Path,
                                    second: dict[str, str], collides: bool) -> None:
    archive, out = tmp_path / "export", tmp_path / "out"
    uid = generate_uid()
    write_study(archive / "a", study_uid=uid)
    write_study(archive / "b", study_uid=uid, **second)
    result = _run(archive, site, out)
    row = _rows(out)[uid]
    if collides:
        assert result.exit_code == 1
        assert row["status"] == "failed"
        assert row["reason"] == ("uid-collision: StudyInstanceUID is used by 2 patients (PatientID/"
                                 "IssuerOfPatientID differ between its instances)")
        assert not (out / "sr").exists() or not list((out / "sr").rglob("*.dcm"))
        assert "PID-2" not in (out / "studies.csv").read_text() and "OTHER-HOSPITAL" not in row["reason"]
    else:
        assert result.exit_code == 0, result.output
        assert row["status"] == "screened" and row["n_images"] == "2"


def test_a_collision_on_a_later_night_fails_the_study_and_keeps_what_was_sent(
        write_study: Callable[..., list[Path]], site: Path, tmp_path: Path) -> None:
    out, uid = tmp_path / "out", generate_uid()
    write_study(tmp_path / "night1", study_uid=uid, patient="PID-A")
    assert _run(tmp_path / "night1", site, out).exit_code == 0
    screened = _rows(out)[uid]
    ledger = Ledger(out)
    ledger.record_send(screened["sr_sop_instance_uid"], "PACS@host:104", ok=True, status=0, attempts=1)
    ledger.close()
    write_study(tmp_path / "night2", study_uid=uid, patient="PID-B")  # tonight's export: another patient
    result = _run(tmp_path / "night2", site, out)
    assert result.exit_code == 1
    assert f"UID collisions found tonight (1): {uid}" in result.output
    row = _rows(out)[uid]
    assert row["status"] == "failed"
    assert row["reason"] == "uid-collision: StudyInstanceUID was screened for another patient on an earlier night"
    assert row["sr_sop_instance_uid"] == screened["sr_sop_instance_uid"]  # the ledger keeps what was sent
    with sqlite3.connect(out / "ledger.sqlite") as db:
        assert db.execute("SELECT ok FROM sends").fetchall() == [(1,)]
    run = json.loads((out / "run.json").read_text())
    assert run["collisions"] == [uid] and run["needs_attention"][0]["study_instance_uid"] == uid
    again = _run(tmp_path / "night2", site, out)  # from then on: failed, listed, not screened
    assert again.exit_code == 1 and "needs attention (1 studies" in again.output
    assert _rows(out)[uid]["status"] == "failed"


def test_a_sop_uid_seen_again_in_another_study_on_a_later_night(write_study: Callable[..., list[Path]],
                                                                dataset_factory: Callable[..., Any], site: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = write_study(tmp_path / "night1")
    sop = str(pydicom.dcmread(first[0]).SOPInstanceUID)
    first_study = str(pydicom.dcmread(first[0]).StudyInstanceUID)
    assert _run(tmp_path / "night1", site, out).exit_code == 0
    (tmp_path / "night2").mkdir()
    intruder = dataset_factory(sop_uid=sop, **SHOULDER)
    intruder.save_as(tmp_path / "night2" / "x.dcm", enforce_file_format=True)
    result = _run(tmp_path / "night2", site, out)
    assert result.exit_code == 1
    rows = _rows(out)
    assert rows[str(intruder.StudyInstanceUID)]["reason"] == (
        "uid-collision: a SOPInstanceUID of the study is also in another study (recorded on an earlier night)")
    assert rows[first_study]["status"] == "failed" and rows[first_study]["reason"].startswith("uid-collision: ")
    assert rows[first_study]["sr_path"]  # its SR stays recorded


# -- 3. whole studies only ---------------------------------------------------------------------

def _cut_before_pixel_data(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"\xe0\x7f\x10\x00")])


def _cut_inside_pixel_data(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("break_view, reason", [
    (_cut_before_pixel_data, "no-pixel-data (1)"),
    (_cut_inside_pixel_data, "truncated-pixel-data (1)"),
    ("too-large", "too-large (1)"),
], ids=["cut-before-pixel-data", "cut-inside-pixel-data", "over-the-size-limit"])
def test_a_study_with_one_unreadable_view_is_failed_never_negative(
        write_study: Callable[..., list[Path]], site_writer: Callable[..., Path], tiny_models: Path,
        tmp_path: Path, break_view: Any, reason: str) -> None:
    archive, out = tmp_path / "export", tmp_path / "out"
    uid = generate_uid()
    views = write_study(archive / "s", study_uid=uid, views=3)
    extra = ""
    if break_view == "too-large":
        big = write_study(archive / "s", study_uid=uid, rows=128, cols=128)[0]
        views.append(big)
        extra = "[selection]\nmax_pixel_bytes = 4000\n"
    else:
        break_view(views[1])
    fine = write_study(archive / "fine")
    site = site_writer(tmp_path / "site", tiny_models, extra=extra)
    result = _run(archive, site, out)
    assert result.exit_code == 1, result.output
    row = _rows(out)[uid]
    assert row["status"] == "failed" and row["decision"] == ""
    assert row["reason"] == f"1 of {len(views)} images unreadable: {reason}"
    assert _rows(out)[str(pydicom.dcmread(fine[0]).StudyInstanceUID)]["status"] == "screened"


def test_non_image_objects_do_not_count_against_a_study(write_study: Callable[..., list[Path]],
                                                        dataset_factory: Callable[..., Any], site: Path,
                                                        tmp_path: Path) -> None:
    archive, out = tmp_path / "export", tmp_path / "out"
    uid = generate_uid()
    write_study(archive / "s", study_uid=uid, views=2)
    sr = dataset_factory(study_uid=uid, modality="SR", sop_class="1.2.840.10008.5.1.4.1.1.88.33",
                         with_pixels=False, **SHOULDER)
    sr.save_as(archive / "s" / "report.dcm", enforce_file_format=True)
    assert _run(archive, site, out).exit_code == 0
    assert _rows(out)[uid]["status"] == "screened" and _rows(out)[uid]["n_images"] == "2"


def test_failed_studies_are_retried_up_to_the_limit_then_need_attention(
        write_study: Callable[..., list[Path]], site_writer: Callable[..., Path], tiny_models: Path,
        tmp_path: Path) -> None:
    archive, out = tmp_path / "export", tmp_path / "out"
    uid = generate_uid()
    _cut_inside_pixel_data(write_study(archive / "s", study_uid=uid)[0])
    site = site_writer(tmp_path / "site", tiny_models)
    site.write_text(site.read_text().replace("batch_size = 4", "batch_size = 4\nmax_attempts = 2"))
    attempts = []
    for _night in range(4):
        result = _run(archive, site, out)
        assert result.exit_code == 1
        with sqlite3.connect(out / "ledger.sqlite") as db:
            attempts.append(db.execute("SELECT attempts FROM studies WHERE study_instance_uid = ?",
                                       (uid,)).fetchone()[0])
    assert attempts == [1, 2, 2, 2]  # tried twice, then held
    assert "needs attention (1 studies no longer retried" in result.output and uid in result.output
    forced = _run(archive, site, out, "--force")
    assert forced.exit_code == 1
    with sqlite3.connect(out / "ledger.sqlite") as db:
        assert db.execute("SELECT attempts FROM studies").fetchone()[0] == 3


# -- 4. intended use: out of scope, never negative ----------------------------------------------

@pytest.mark.parametrize("attrs, scope, reason", [
    ({"BodyPartExamined": "CHEST"}, "", "out-of-scope: BodyPartExamined CHEST is not among the members' "
                                        "body parts (SHOULDER, ARM)"),
    ({"BodyPartExamined": ""}, "", "out-of-scope: a view has no BodyPartExamined (the members' scope is by "
                                   "body part)"),
    ({"PatientAge": "010Y"}, "min_patient_age = 18\n", "out-of-scope: patient younger than 18 years"),
    ({"PatientBirthDate": "1970-01-31"}, "min_patient_age = 18\n",
     "out-of-scope: patient age unknown (no valid PatientAge or PatientBirthDate) and the scope starts at "
     "18 years"),
], ids=["other-body-part", "no-body-part", "too-young", "invalid-birth-date"])
def test_studies_outside_the_intended_use_are_out_of_scope(write_study: Callable[..., list[Path]],
                                                           site_writer: Callable[..., Path], tiny_models: Path,
                                                           tmp_path: Path, attrs: dict[str, str], scope: str,
                                                           reason: str) -> None:
    archive, out = tmp_path / "export", tmp_path / "out"
    uid = generate_uid()
    write_study(archive / "s", study_uid=uid, **attrs)
    site = site_writer(tmp_path / "site", tiny_models, extra=f"[scope]\n{scope}")
    result = _run(archive, site, out)
    assert result.exit_code == 0, result.output
    row = _rows(out)[uid]
    assert (row["status"], row["reason"], row["decision"], row["sr_path"]) == ("out-of-scope", reason, "", "")
    assert "1970-01-31" not in (out / "studies.csv").read_text() + result.output
    widened = site_writer(tmp_path / "site2", tiny_models,
                          extra='[scope]\nbody_parts = []\nrequire_body_part = false\n')
    assert _run(archive, widened, out).exit_code == 0  # a new scope judges the study again
    assert _rows(out)[uid]["status"] == "screened"


# -- 5. the ledger is the folder's memory --------------------------------------------------------

@pytest.fixture
def screened_folder(write_study: Callable[..., list[Path]], site: Path, tmp_path: Path) -> tuple[Path, Path]:
    archive, out = tmp_path / "export", tmp_path / "out"
    for i in range(3):
        write_study(archive / f"s{i}", patient=f"PID-{i}")
    assert _run(archive, site, out).exit_code == 0
    return archive, out


@pytest.mark.parametrize("damage, problem", [
    ("missing", "holds results (studies.csv, findings.csv, run.json, 3 SR file(s)) but no ledger.sqlite"),
    ("empty", "ledger.sqlite is empty and the folder holds results"),
    ("garbage", "ledger.sqlite is not a readable SQLite database"),
    ("half", "ledger.sqlite is "),
    ("foreign", "ledger.sqlite is not a fracture-screen ledger (no meta, runs, studies, findings, objects, sends "
                "table)"),
    ("newer", "was written by a newer fracture-screen (ledger schema 99"),
])
def test_a_lost_or_broken_ledger_never_deletes_results(screened_folder: tuple[Path, Path], site: Path,
                                                       damage: str, problem: str) -> None:
    archive, out = screened_folder
    ledger = out / "ledger.sqlite"
    with sqlite3.connect(ledger) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = ledger.read_bytes()
    if damage == "missing":
        ledger.unlink()
    elif damage == "empty":
        ledger.write_bytes(b"")
    elif damage == "garbage":
        ledger.write_bytes(os.urandom(4096))
    elif damage == "half":
        ledger.write_bytes(data[: len(data) // 2])
    elif damage == "foreign":
        ledger.unlink()
        with sqlite3.connect(ledger) as db:
            db.execute("CREATE TABLE notes (x TEXT)")
    elif damage == "newer":
        with sqlite3.connect(ledger) as db:
            db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = {p: p.read_bytes() for p in _files(out) if p.suffix in (".dcm", ".csv", ".json")}
    result = _run(archive, site, out)
    assert result.exit_code == 2, result.output
    assert problem in result.output
    if damage != "newer":
        assert f"rebuild it from the SRs and CSVs on disk with `screen ledger rebuild {out}`" in result.output
    assert {p: p.read_bytes() for p in _files(out) if p.suffix in (".dcm", ".csv", ".json")} == before


def test_rebuild_keeps_every_result_and_every_patient_id(screened_folder: tuple[Path, Path], site: Path) -> None:
    archive, out = screened_folder
    before = _rows(out)
    srs = sorted(p.relative_to(out) for p in (out / "sr").rglob("*.dcm"))
    (out / "ledger.sqlite").write_bytes(b"not a database at all" * 100)
    for suffix in ("-wal", "-shm"):
        Path(str(out / "ledger.sqlite") + suffix).unlink(missing_ok=True)
    rebuilt = CliRunner().invoke(cli, ["ledger", "rebuild", str(out)])
    assert rebuilt.exit_code == 0, rebuilt.output
    findings = len((out / "findings.csv").read_text().splitlines()) - 1
    assert rebuilt.output.splitlines()[0] == (f"rebuilt {out / 'ledger.sqlite'}: 3 studies (3 screened), 3 SRs, "
                                              f"{findings} findings")
    assert "the unusable ledger is kept as ledger.sqlite.unusable-" in rebuilt.output
    again = _run(archive, site, out)
    assert again.exit_code == 0, again.output
    after = _rows(out)
    assert {u: r["patient_id"] for u, r in after.items()} == {u: r["patient_id"] for u, r in before.items()}
    assert {u: r["sr_sop_instance_uid"] for u, r in after.items()} == {
        u: r["sr_sop_instance_uid"] for u, r in before.items()}
    assert json.loads((out / "run.json").read_text())["counts"] == {"already-screened": 3}
    assert sorted(p.relative_to(out) for p in (out / "sr").rglob("*.dcm")) == srs
    working = CliRunner().invoke(cli, ["ledger", "rebuild", str(out)])
    assert working.exit_code == 2 and "is a working ledger; nothing to rebuild" in working.output


def test_an_older_ledger_is_migrated_after_a_backup(screened_folder: tuple[Path, Path], site: Path) -> None:
    """A version-1 ledger (a salt in meta beside its hashes, no patient keys): migrated in place
    after a backup, the salt gone from the folder, every row kept as it was."""
    archive, out = screened_folder
    before = _rows(out)
    with sqlite3.connect(out / "ledger.sqlite") as db:  # take it back to version 1's layout
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('salt', 'a-version-1-salt')")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        db.execute("DELETE FROM objects WHERE kind != 'sr'")  # version 1 knew SRs only
        db.execute("ALTER TABLE objects RENAME TO srs")
        for old, new in (("sop_instance_uid", "sr_sop_instance_uid"), ("path", "sr_path")):
            db.execute(f"ALTER TABLE srs RENAME COLUMN {old} TO {new}")
        db.execute("ALTER TABLE sends RENAME COLUMN sop_instance_uid TO sr_sop_instance_uid")
        for table, column in (("studies", "patient_key"), ("studies", "attempts"), ("srs", "intended_use"),
                              ("srs", "kind"), ("srs", "withdrawn")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute("DROP TABLE instances")
        db.execute("DROP TABLE run_studies")  # version 4's per-night tables
        db.execute("DROP TABLE run_scores")
    result = _run(archive, site, out)
    assert result.exit_code == 0, result.output
    backups = list(out.glob("ledger.sqlite.v1-backup-*"))
    assert len(backups) == 1
    with sqlite3.connect(backups[0]) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
    with sqlite3.connect(out / "ledger.sqlite") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
        assert db.execute("SELECT count(*) FROM objects WHERE kind = 'sr'").fetchone() == (3,)  # SRs kept
        assert db.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone() is None
        assert db.execute("SELECT count(*) FROM studies").fetchone() == (3,)
    assert _rows(out) == before  # nothing re-screened, every id as it was
    assert not any(b"a-version-1-salt" in p.read_bytes() for p in _files(out))


def test_identifiers_are_keyed_pseudonyms_and_the_key_stays_outside(screened_folder: tuple[Path, Path],
                                                                   site: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    archive, out = screened_folder
    rows = _rows(out)
    assert all(len(r["patient_id"]) == 32 for r in rows.values())  # 128 bits
    assert not any(b"PID-0" in p.read_bytes() for p in _files(out) if p.suffix in (".csv", ".json", ".sqlite"))
    for path in _files(out):  # files with identifiers: owner only by default
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
    scan = (out / "scan.csv").read_text()
    assert str(archive) not in scan and "s0/" not in scan and "path_key" in scan.splitlines()[0]
    monkeypatch.setenv("FRACTURE_SCREEN_SALT", "another key")
    changed = _run(archive, site, out)
    assert changed.exit_code == 2
    assert "was written with another identifier key than this run's" in changed.output
    monkeypatch.delenv("FRACTURE_SCREEN_SALT")
    key_file = tmp_path / "keys" / "id-key"
    key_file.parent.mkdir()
    key_file.write_text("site key\n")
    key_file.chmod(0o644)
    loose = site.with_name("loose.toml")
    loose.write_text(site.read_text() + f'\n[output]\nid_key_file = "{key_file}"\n')
    refused = _run(archive, loose, tmp_path / "out2")
    assert refused.exit_code == 2 and f"id key file {key_file} is readable by others (mode 0644)" in refused.output
    inside = site.with_name("inside.toml")
    inside.write_text(site.read_text() + f'\n[output]\nid_key_file = "{out / "key"}"\n')
    assert "lies inside the output folder" in _run(archive, inside, out).output


def test_a_lost_sr_is_written_again_with_its_uid_and_not_sent_again(screened_folder: tuple[Path, Path],
                                                                   site: Path) -> None:
    archive, out = screened_folder
    uid, row = next(iter(_rows(out).items()))
    ledger = Ledger(out)
    ledger.record_send(row["sr_sop_instance_uid"], "PACS@host:104", ok=True, status=0, attempts=1)
    ledger.close()
    (out / row["sr_path"]).unlink()
    result = _run(archive, site, out)
    assert result.exit_code == 0, result.output
    again = _rows(out)[uid]
    assert again["sr_sop_instance_uid"] == row["sr_sop_instance_uid"] and (out / again["sr_path"]).is_file()
    assert str(pydicom.dcmread(out / again["sr_path"]).SOPInstanceUID) == row["sr_sop_instance_uid"]
    ledger = Ledger(out)
    assert row["sr_sop_instance_uid"] not in {u for u, _ in ledger.unsent_srs("PACS@host:104")}
    ledger.close()


# -- 6. model changes apply to new studies; re-screening is asked for -----------------------------

def test_a_new_operating_point_rescreens_only_when_asked(screened_folder: tuple[Path, Path], site: Path) -> None:
    archive, out = screened_folder
    before = _rows(out)
    op = json.loads((site.parent / "op.json").read_text())
    op["thresholds"]["pg-cls"] = 0.25
    (site.parent / "op.json").write_text(json.dumps(op))
    same = _run(archive, site, out)
    assert same.exit_code == 0 and _rows(out) == before  # the new point applies to new studies
    later = _run(archive, site, out, "--rescreen-since", "2100-01-01")
    assert later.exit_code == 0 and _rows(out) == before
    asked = _run(archive, site, out, "--rescreen-since", "2026-01-01")
    assert asked.exit_code == 0, asked.output
    after = _rows(out)
    assert all(after[u]["model_version"] != before[u]["model_version"] for u in before)
    assert all(after[u]["sr_sop_instance_uid"] != before[u]["sr_sop_instance_uid"] for u in before)
    bad = _run(archive, site, out, "--rescreen-since", "yesterday")
    assert bad.exit_code == 2 and "--rescreen-since 'yesterday' is not a date" in bad.output


# -- 7. demo members never reach a clinic by accident ----------------------------------------------

@pytest.fixture
def demo_site(tiny_models: Path, site_writer: Callable[..., Path], tmp_path: Path) -> Path:
    import shutil

    from ensembles.checkpoint import read_member_spec, write_member_spec

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    spec = read_member_spec(models / "pg-cls")
    write_member_spec(models / "pg-cls", type(spec)(**{**spec.to_dict(), "intended_use": "demo"}))
    return site_writer(tmp_path / "demo-site", models)


def test_demo_results_say_so_and_are_never_sent_without_allow_demo(write_study: Callable[..., list[Path]],
                                                                   demo_site: Path, tmp_path: Path,
                                                                   sr_validator: Any) -> None:
    archive, out = tmp_path / "export", tmp_path / "out"
    write_study(archive / "s")
    refused = _run(archive, demo_site, out, "--send-to", "PACS@127.0.0.1:1")
    assert refused.exit_code == 2
    assert refused.output.startswith("Error: --send-to would send results of demo members (pg-cls: "
                                     "intended_use \"demo\" in member.json) to a PACS")
    assert not out.exists()
    result = _run(archive, demo_site, out)
    assert result.exit_code == 0 and "results of demo members: not clinical results" in result.output
    row = next(iter(_rows(out).values()))
    assert row["intended_use"] == "demo"
    assert json.loads((out / "run.json").read_text())["intended_use"] == "demo"
    sr = pydicom.dcmread(out / row["sr_path"])
    texts = [str(item.TextValue) for item in _text_items(sr)]
    assert "intended-use=demo" in texts
    assert any(t.startswith("DEMONSTRATION ONLY: made by phantom-trained demo models") for t in texts)
    (check,) = sr_validator(out / row["sr_path"], pixelmed=True)  # the notice is valid TID 1500
    assert check.errors == [], check.errors
    assert all("Comment" not in w for w in check.pixelmed_warnings), check.pixelmed_warnings
    ledger = Ledger(out)
    assert ledger.unsent_srs("PACS@host:104") == []  # held back from any later --send-to
    assert len(ledger.unsent_srs("PACS@host:104", allow_demo=True)) == 1
    ledger.close()


def _text_items(ds: Any) -> list[Any]:
    found = []
    for item in ds.get("ContentSequence", []):
        if item.get("ValueType") == "TEXT":
            found.append(item)
        found += _text_items(item)
    return found


def test_a_run_without_config_says_it_uses_the_demo_members(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "sample_data/archive", "--out", str(tmp_path / "o"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert ("no --config: screening with the demo members of sample_data/site.toml (phantom-trained; their "
            "results are not clinical results)") in result.output
