"""``screen run`` end to end on tiny members: outputs, idempotence, supersede, identifiers, exit codes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from screen.cli import cli
from screen.site_config import load_site_config
from screen.nightly.ledger import OutputLock
from screen.nightly.runner import RunOptions, run_screen


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def archive(small_archive: Path, tmp_path: Path) -> Path:
    target = tmp_path / "export"
    shutil.copytree(small_archive, target)
    return target


def _study_uids(archive: Path) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in archive.rglob("*.dcm")}


def test_run_writes_one_row_and_one_sr_per_study(archive: Path, site: Path, tmp_path: Path, sr_validator) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out)])
    assert result.exit_code == 0, result.output
    studies = _rows(out / "studies.csv")
    assert {r["study_instance_uid"] for r in studies} == _study_uids(archive)
    assert all(r["status"] == "screened" and r["decision"] in ("positive", "negative") for r in studies)
    assert {"score:pg-cls", "vote:pg-cls", "score:pg-det", "score:detr"} <= set(studies[0])
    srs = sorted((out / "sr").rglob("*.dcm"))
    assert len(srs) == len(studies)
    assert {(out / r["sr_path"]) for r in studies} == set(srs)
    for path in srs[:2]:
        sr_validator(path)
    findings = _rows(out / "findings.csv")
    by_sop = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): pydicom.dcmread(p, stop_before_pixels=True)
              for p in archive.rglob("*.dcm")}
    for f in findings:
        if f["col0"]:
            ds = by_sop[f["sop_instance_uid"]]
            assert 0 <= float(f["col0"]) < float(f["col1"]) <= ds.Columns
            assert 0 <= float(f["row0"]) < float(f["row1"]) <= ds.Rows
    assert (out / "run.json").is_file() and (out / "ledger.sqlite").is_file()
    assert "screened" in result.output


def test_rerun_skips_and_gained_image_supersedes(archive: Path, site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = load_site_config(site)
    first = run_screen(archive, out, config=config)
    before = {r["study_instance_uid"]: r for r in _rows(out / "studies.csv")}
    again = run_screen(archive, out, config=config)
    assert again.counts["screened"] == 0 and again.counts["already-screened"] == first.counts["screened"]
    assert {r["study_instance_uid"]: r["sr_sop_instance_uid"] for r in _rows(out / "studies.csv")} == {
        u: r["sr_sop_instance_uid"] for u, r in before.items()}
    # a study gains an image: copy one file with a new SOP Instance UID
    source = sorted(archive.rglob("*.dcm"))[0]
    ds = pydicom.dcmread(source)
    old_sr_uid = before[str(ds.StudyInstanceUID)]["sr_sop_instance_uid"]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(source.with_name("extra.dcm"))
    third = run_screen(archive, out, config=config)
    assert third.counts["screened"] == 1
    rows = {r["study_instance_uid"]: r for r in _rows(out / "studies.csv")}
    assert len(rows) == len(before)
    new = rows[str(ds.StudyInstanceUID)]
    assert new["sr_sop_instance_uid"] != old_sr_uid and new["n_images"] == str(int(before[str(ds.StudyInstanceUID)]["n_images"]) + 1)
    sr = pydicom.dcmread(out / new["sr_path"])
    predecessors = [item.ReferencedSOPInstanceUID for study in sr.PredecessorDocumentsSequence
                    for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence]
    assert predecessors == [old_sr_uid]
    forced = run_screen(archive, out, config=config, options=RunOptions(force=True))
    assert forced.counts["screened"] == len(before)


def test_dry_run_writes_nothing(archive: Path, site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.count("would screen ") == len(_study_uids(archive))
    assert not out.exists()


def test_limit_and_since(archive: Path, site: Path, tmp_path: Path) -> None:
    config = load_site_config(site)
    limited = run_screen(archive, tmp_path / "a", config=config, options=RunOptions(limit=2))
    assert limited.counts["screened"] == 2
    future = run_screen(archive, tmp_path / "b", config=config, options=RunOptions(since=__import__("datetime").date(2100, 1, 1)))
    assert future.counts["screened"] == 0 and _rows(tmp_path / "b" / "studies.csv") == []


def test_second_run_on_same_out_refuses(archive: Path, site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutputLock(out):
        result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: another screen run is using {out} (pid ")


@pytest.mark.parametrize("mode", ["include", "hash", "omit"])
def test_patient_identifiers_are_configurable(archive: Path, tiny_models: Path, tmp_path: Path, mode: str,
                                              site_writer, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    config = site_writer(tmp_path / "site", tiny_models, output=f'patient_id = "{mode}"')
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    ids = {str(pydicom.dcmread(p, stop_before_pixels=True).PatientID) for p in archive.rglob("*.dcm")}
    names = {str(pydicom.dcmread(p, stop_before_pixels=True).PatientName) for p in archive.rglob("*.dcm")}
    rows = _rows(out / "studies.csv")
    text = (out / "studies.csv").read_text(encoding="utf-8") + (out / "findings.csv").read_text(encoding="utf-8")
    if mode == "include":
        assert {r["patient_id"] for r in rows} <= ids
    elif mode == "hash":
        assert all(len(r["patient_id"]) == 32 for r in rows) and not any(i in text for i in ids)  # 128 bits
    else:
        assert "patient_id" not in rows[0] and not any(i in text for i in ids)
    for name in names:
        assert name not in text and name not in result.output and name not in caplog.text


def test_failed_study_exits_1_and_the_rest_are_done(archive: Path, site: Path, tmp_path: Path) -> None:
    victim = sorted(archive.rglob("*.dcm"))[0]
    victim_study = str(pydicom.dcmread(victim, stop_before_pixels=True).StudyInstanceUID)
    victim.write_bytes(victim.read_bytes()[:-500])
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out)])
    assert result.exit_code == 1, result.output
    rows = {r["study_instance_uid"]: r for r in _rows(out / "studies.csv")}
    assert rows[victim_study]["status"] == "failed"
    assert "truncated-pixel-data" in rows[victim_study]["reason"]
    assert all(r["status"] == "screened" for u, r in rows.items() if u != victim_study)


def test_config_errors_exit_2_naming_the_key(archive: Path, site: Path, tmp_path: Path) -> None:
    text = site.read_text(encoding="utf-8").replace('workers = 1', 'workers = 1\nwokers = 2')
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output == ("Error: unknown key(s) wokers in [run]; valid keys: device, workers, batch_size, "
                             "writers, decode_timeout_s, max_attempts, deadline, priority, emergency_departments\n")
    missing = site.read_text(encoding="utf-8").replace('checkpoint = "', 'checkpoint = "/nowhere')
    bad.write_text(missing, encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "is not a directory" in result.output and "[members.pg-cls]" in result.output


def test_operating_point_naming_another_member_is_refused(archive: Path, site: Path, tmp_path: Path) -> None:
    import json

    op = json.loads((site.parent / "op.json").read_text(encoding="utf-8"))
    op["thresholds"]["pg-xl"] = op["thresholds"].pop("pg-cls")
    bad = tmp_path / "other-op.json"
    bad.write_text(json.dumps(op), encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(tmp_path / "o"),
                                      "--operating-point", str(bad), "--dry-run"])
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and "pg-xl" in result.output


def test_members_load_only_when_something_is_to_be_scored(archive: Path, site: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A night with nothing new, a dry run, or only failed studies loads no model."""
    import screen.nightly.runner as runner

    loads: list[int] = []
    real = runner.load_members

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        loads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "load_members", counting)
    out = tmp_path / "out"
    config = load_site_config(site)
    dry = run_screen(archive, out, config=config, options=RunOptions(dry_run=True))
    assert dry.counts["would-screen"] == len(_study_uids(archive)) and loads == []
    first = run_screen(archive, out, config=config)
    assert first.counts["screened"] == len(_study_uids(archive)) and loads == [1]
    quiet = run_screen(archive, out, config=config)  # nothing new tonight
    assert quiet.counts["screened"] == 0 and loads == [1]
    assert "members" not in quiet.timings and "load-members" not in quiet.timings
    columns = open(out / "studies.csv", encoding="utf-8").readline()  # a loaded-nothing night keeps
    assert "score:pg-cls" in columns and "score:detr" in columns      # every member's columns
    study = sorted(archive.rglob("*.dcm"))[0].parent.parent
    for victim in study.rglob("*.dcm"):  # the only new work: a study none of whose views decode
        victim.write_bytes(victim.read_bytes()[:-500])
    broken = run_screen(archive, out, config=config)
    assert broken.counts["failed"] == 1 and loads == [1]


def test_run_without_an_operating_point_is_refused(archive: Path, site: Path, tmp_path: Path) -> None:
    text = site.read_text(encoding="utf-8").replace('operating_point = "op.json"\n', "")
    untuned = site.with_name("untuned.toml")
    untuned.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(untuned), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output == ("Error: screen run needs an operating point: set operating_point = \"op.json\" "
                             "in the site config or pass --operating-point FILE (make one with screen eval, "
                             "then screen tune)\n")
    assert not (tmp_path / "o").exists()
    tuned = CliRunner().invoke(cli, ["run", str(archive), "--config", str(untuned), "--out", str(tmp_path / "o"),
                                     "--operating-point", str(site.parent / "op.json"), "--dry-run"])
    assert tuned.exit_code == 0, tuned.output


def test_eval_before_any_tuning_uses_member_thresholds(small_archive: Path, site: Path, tmp_path: Path) -> None:
    """A member just imported or trained can be measured: eval needs no operating point."""
    text = site.read_text(encoding="utf-8").replace('operating_point = "op.json"\n', "")
    untuned = site.with_name("untuned.toml")
    untuned.write_text(text, encoding="utf-8")
    labels = small_archive.parent / "labels.csv"
    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["eval", str(small_archive), "--labels", str(labels), "--config",
                                      str(untuned), "--out", str(out), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert ("operating point member-thresholds (no operating point given: each member's own member.json "
            "threshold with the any-vote") in result.output
    assert (out / "predictions.csv").is_file()
    tune = CliRunner().invoke(cli, ["tune", str(out / "predictions.csv"), "--target-recall", "0.5",
                                    "--out", str(tmp_path / "op.json")])
    assert tune.exit_code in (0, 2), tune.output  # the chain works; a 5-study set may be refused
    missing = text.replace("[run]", 'operating_point = "gone.json"\n[run]', 1)
    untuned.write_text(missing, encoding="utf-8")
    gone = CliRunner().invoke(cli, ["eval", str(small_archive), "--labels", str(labels), "--config",
                                    str(untuned), "--out", str(out)])
    assert gone.exit_code == 2 and "gone.json' not found" in gone.output
