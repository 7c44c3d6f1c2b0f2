"""``screen run``'s PACS objects: the [output] switches (SR, GSPS, SC, not-screened SR), their
``studies.csv`` columns and ledger records, the IOCM rejection of a re-screened study's results,
and our own objects coming back in a later export.

Kept small (two one-view phantom studies screened once per module, tiny members) so the whole
module adds seconds, not minutes."""

from __future__ import annotations

import csv
import shutil
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pydicom
import pytest

from screen.nightly.ledger import Ledger
from screen.nightly.runner import run_screen
from screen.site_config import load_site_config

ALL_POSITIVE = {"pg-cls": 0.0, "pg-det": 0.0, "detr": 0.0}
DEST = "PACS@pacs.example.org:104"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _objects(out: Path) -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(out / "ledger.sqlite") as db:
        rows = db.execute("SELECT kind, sop_instance_uid, path, withdrawn FROM objects ORDER BY rowid").fetchall()
    return [(str(k), str(u), str(p), w) for k, u, p, w in rows]


def _config(site_writer: Callable[..., Path], tiny_models: Path, folder: Path, output: str = "",
            extra: str = "") -> Any:
    return load_site_config(site_writer(folder, tiny_models, thresholds=ALL_POSITIVE, output=output, extra=extra))


@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path,
             site_writer: Callable[..., Path]) -> tuple[Path, Path]:
    """Two small one-view studies screened once, every study positive, SC on: (archive, out).
    Read-only: tests copy what they change."""
    from dicom_io.phantom import PhantomConfig, write_phantom_archive

    root = tmp_path_factory.mktemp("presentations")
    write_phantom_archive(root / "archive", root / "labels.csv",
                          PhantomConfig(n_studies=2, seed=7, size_range=(96, 112), views_range=(1, 1)))
    config = _config(site_writer, tiny_models, root / "site", output='write_sc = true\npatient_id = "include"')
    summary = run_screen(root / "archive", root / "out", config=config)
    assert summary.exit_code == 0 and summary.counts["screened"] == 2
    return root / "archive", root / "out"


def _copy(screened: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    archive, out = tmp_path / "archive", tmp_path / "out"
    shutil.copytree(screened[0], archive)
    shutil.copytree(screened[1], out)
    return archive, out


def test_switches_write_gsps_and_sc_and_record_each(screened: tuple[Path, Path]) -> None:
    _, out = screened
    rows = _rows(out / "studies.csv")
    findings = _rows(out / "findings.csv")
    assert len(rows) == 2 and all(r["decision"] == "positive" for r in rows)
    objects = _objects(out)
    for row in rows:
        study = row["study_instance_uid"]
        images = {f["sop_instance_uid"] for f in findings if f["study_instance_uid"] == study}
        assert images, "an all-positive operating point gives every study a finding"
        gsps = pydicom.dcmread(out / row["gsps_path"])
        assert str(gsps.SOPInstanceUID) == row["gsps_sop_instance_uid"] and gsps.Modality == "PR"
        assert row["gsps_path"] == f"gsps/{study}/{row['gsps_sop_instance_uid']}.dcm"
        sc_paths, sc_uids = row["sc_paths"].split(";"), row["sc_sop_instance_uids"].split(";")
        assert len(sc_paths) == len(sc_uids) == len(images)  # one SC per image with a finding
        sources = {str(pydicom.dcmread(out / p).SourceImageSequence[0].ReferencedSOPInstanceUID) for p in sc_paths}
        assert sources == images
        assert row["gap_sr_path"] == ""
    kinds = Counter(kind for kind, _, _, _ in objects)
    assert kinds == {"sr": 2, "gsps": 2, "sc": sum(len(r["sc_paths"].split(";")) for r in rows)}
    assert {path for _, _, path, _ in objects} == {p.relative_to(out).as_posix() for p in out.rglob("*.dcm")}
    run = (out / "run.json").read_text(encoding="utf-8")
    assert '"gsps": 2' in run and '"sc": ' in run  # objects_written
    gsps_series = {str(pydicom.dcmread(out / r["gsps_path"]).SeriesInstanceUID) for r in rows}
    assert len(gsps_series) == 1 and pydicom.dcmread(out / rows[0]["gsps_path"]).SeriesNumber == 9902


@pytest.mark.parametrize("policy", ["reject", "keep"])
def test_a_rescreened_study_withdraws_what_a_pacs_stored(screened: tuple[Path, Path], site_writer: Callable[..., Path],
                                                        tiny_models: Path, tmp_path: Path, policy: str) -> None:
    archive, out = _copy(screened, tmp_path)
    config = _config(site_writer, tiny_models, tmp_path / "site", output=f'on_rescreen = "{policy}"')
    before = {r["study_instance_uid"]: r for r in _rows(out / "studies.csv")}
    ledger = Ledger(out)
    try:  # the PACS stored every object of the first night
        for _, uid, _, _ in _objects(out):
            ledger.record_send(uid, DEST, ok=True, status=0, attempts=1)
    finally:
        ledger.close()
    source = sorted(archive.rglob("*.dcm"))[0]  # the study gains an image
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(source.with_name("extra.dcm"))
    study = str(ds.StudyInstanceUID)
    old = before[study]

    again = run_screen(archive, out, config=config)
    assert again.counts["screened"] == 1
    new = {r["study_instance_uid"]: r for r in _rows(out / "studies.csv")}[study]
    assert new["gsps_sop_instance_uid"] not in ("", old["gsps_sop_instance_uid"]) and new["sc_paths"] == ""
    objects = {uid: (kind, path, withdrawn) for kind, uid, path, withdrawn in _objects(out)}
    notes = [(uid, path) for uid, (kind, path, _) in objects.items() if kind == "kos"]
    old_results = {old["sr_sop_instance_uid"], old["gsps_sop_instance_uid"], *old["sc_sop_instance_uids"].split(";")}
    ledger = Ledger(out)
    try:
        unsent = [uid for uid, _, _ in ledger.unsent_objects(DEST)]
    finally:
        ledger.close()
    if policy == "keep":
        assert notes == [] and not (out / "kos").exists()
        assert {objects[uid][2] for uid in old_results} == {"superseded"}
        assert unsent == [new["sr_sop_instance_uid"], new["gsps_sop_instance_uid"]]
        return
    assert len(notes) == 1
    note_uid, note_path = notes[0]
    assert note_path == f"kos/{study}/{note_uid}.dcm"
    kos = pydicom.dcmread(out / note_path)
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113001" and kos.StudyInstanceUID == study
    withdrawn = {i.ReferencedSOPInstanceUID for s in kos.CurrentRequestedProcedureEvidenceSequence
                 for series in s.ReferencedSeriesSequence for i in series.ReferencedSOPSequence}
    assert withdrawn == old_results  # SR, GSPS and SC images a PACS stored
    assert {objects[uid][2] for uid in withdrawn} == {f"rejected:{note_uid}"}
    # the note goes first, then the new results; the withdrawn ones never again
    assert unsent == [note_uid, new["sr_sop_instance_uid"], new["gsps_sop_instance_uid"]]
    assert (out / old["sr_path"]).is_file() and (out / old["gsps_path"]).is_file()  # kept in OUT, recorded


def test_gap_sr_for_out_of_scope_and_failed_studies_once(dataset_factory: Callable[..., Any],
                                                         site_writer: Callable[..., Path], tiny_models: Path,
                                                         tmp_path: Path) -> None:
    archive, out = tmp_path / "export", tmp_path / "out"
    archive.mkdir()
    hand = dataset_factory(BodyPartExamined="HAND", PatientID="PID-H")
    hand.save_as(archive / "hand.dcm", enforce_file_format=True)
    shoulder = dataset_factory(BodyPartExamined="SHOULDER", PatientID="PID-S")
    shoulder.save_as(archive / "shoulder.dcm", enforce_file_format=True)
    (archive / "shoulder.dcm").write_bytes((archive / "shoulder.dcm").read_bytes()[:-300])  # cannot decode
    config = _config(site_writer, tiny_models, tmp_path / "site", output="write_gap_sr = true",
                     extra='[scope]\nbody_parts = ["SHOULDER"]\n')
    first = run_screen(archive, out, config=config)
    rows = {r["study_instance_uid"]: r for r in _rows(out / "studies.csv")}
    assert rows[str(shoulder.StudyInstanceUID)]["status"] == "failed" and first.counts["out-of-scope"] == 1
    for row in rows.values():
        gap = pydicom.dcmread(out / row["gap_sr_path"])
        assert str(gap.SOPInstanceUID) == row["gap_sr_sop_instance_uid"]
        assert gap.StudyInstanceUID == row["study_instance_uid"]
        assert gap.ContentSequence[0].TextValue == f"not screened by AI: {row['reason']}"
        assert row["gsps_path"] == "" and row["sr_path"] == ""
    gaps = sorted(out.glob("gap-sr/*/*.dcm"))
    assert len(gaps) == 2
    again = run_screen(archive, out, config=config)  # the failed study is tried again, and fails again
    assert again.counts["failed"] == 1
    assert sorted(out.glob("gap-sr/*/*.dcm")) == gaps  # no second not-screened SR
    assert {r["study_instance_uid"]: r["gap_sr_path"] for r in _rows(out / "studies.csv")} == {
        u: r["gap_sr_path"] for u, r in rows.items()}
    collided = pydicom.uid.generate_uid()  # a new study of two patients: a collision, failed
    for patient in ("PID-X", "PID-Y"):
        dataset_factory(BodyPartExamined="SHOULDER", PatientID=patient, study_uid=collided).save_as(
            archive / f"{patient}.dcm", enforce_file_format=True)
    run_screen(archive, out, config=config)
    row = {r["study_instance_uid"]: r for r in _rows(out / "studies.csv")}[collided]
    assert row["status"] == "failed" and row["reason"].startswith("uid-collision") and row["gap_sr_path"] == ""
    assert sorted(out.glob("gap-sr/*/*.dcm")) == gaps  # never one in a study of two patients


def test_our_objects_in_a_later_export_are_skipped_not_failed(screened: tuple[Path, Path],
                                                              site_writer: Callable[..., Path], tiny_models: Path,
                                                              tmp_path: Path) -> None:
    archive, out = _copy(screened, tmp_path)
    for folder in ("sr", "gsps", "sc"):
        shutil.copytree(out / folder, archive / f"ours-{folder}")
    later = tmp_path / "later"
    config = _config(site_writer, tiny_models, tmp_path / "site",
                     output='write_gsps = false\npatient_id = "include"')
    run_screen(archive, later, config=config)
    assert {r["study_instance_uid"]: (r["status"], r["n_images"]) for r in _rows(later / "studies.csv")} == {
        r["study_instance_uid"]: (r["status"], r["n_images"]) for r in _rows(out / "studies.csv")}
    ours = [r for r in _rows(later / "scan.csv") if "/ours-" in r["path"]]
    assert len(ours) == sum(1 for _ in out.glob("*/*/*.dcm"))
    assert {(r["outcome"], r["reason"]) for r in ours} == {("skipped", "non-image-object"),
                                                           ("skipped", "secondary-capture")}
    assert not (later / "gsps").exists()  # write_gsps = false
    assert all(r["gsps_path"] == "" for r in _rows(later / "studies.csv"))


def test_a_version_2_ledger_keeps_its_sends_and_a_rebuild_keeps_every_object(
        screened: tuple[Path, Path], site_writer: Callable[..., Path], tiny_models: Path, tmp_path: Path) -> None:
    from screen.nightly.ledger_rebuild import rebuild_ledger

    archive, out = _copy(screened, tmp_path)
    config = _config(site_writer, tiny_models, tmp_path / "site", output='write_sc = true\npatient_id = "include"')
    objects = _objects(out)
    sr_uid = next(uid for kind, uid, _, _ in objects if kind == "sr")
    with sqlite3.connect(out / "ledger.sqlite") as db:  # back to version 2: SRs only, "srs", sends by SR
        db.execute("DELETE FROM objects WHERE kind != 'sr'")
        db.execute("ALTER TABLE objects RENAME TO srs")
        for old, new in (("sop_instance_uid", "sr_sop_instance_uid"), ("path", "sr_path")):
            db.execute(f"ALTER TABLE srs RENAME COLUMN {old} TO {new}")
        db.execute("ALTER TABLE srs DROP COLUMN kind")
        db.execute("ALTER TABLE srs DROP COLUMN withdrawn")
        db.execute("ALTER TABLE sends RENAME COLUMN sop_instance_uid TO sr_sop_instance_uid")
        db.execute("INSERT INTO sends VALUES (?, ?, 1, 0, 1, '', '2026-01-01T00:00:00+00:00')", (sr_uid, DEST))
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    for path in out.glob("gsps/*/*.dcm"):  # GSPS and SC of a version-2 folder would be unknown: gone
        path.unlink()
    for path in out.glob("sc/*/*.dcm"):
        path.unlink()
    assert run_screen(archive, out, config=config).counts["already-screened"] == 2
    ledger = Ledger(out)
    try:
        assert ledger.was_sent(sr_uid) and sr_uid not in {u for u, _, _ in ledger.unsent_objects(DEST)}
    finally:
        ledger.close()
    assert Counter(kind for kind, _, _, _ in _objects(out)) == {"sr": 2}
    assert list(out.glob("ledger.sqlite.v2-backup-*"))

    rebuilt_from = tmp_path / "rebuild"  # a folder with GSPS and SC files whose ledger is lost
    shutil.copytree(screened[1], rebuilt_from)
    (rebuilt_from / "ledger.sqlite").write_bytes(b"not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(str(rebuilt_from / "ledger.sqlite") + suffix).unlink(missing_ok=True)
    result = rebuild_ledger(rebuilt_from)
    assert result.others == Counter(kind for kind, _, _, _ in _objects(screened[1]) if kind != "sr")
    files = sorted(rebuilt_from.rglob("*.dcm"))
    run_screen(archive, rebuilt_from, config=config)  # its orphan sweep must not take them
    assert sorted(rebuilt_from.rglob("*.dcm")) == files
