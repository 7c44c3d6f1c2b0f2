"""Hardening of the nightly job: spreadsheet formulas, private files, header values kept out of
logs, errors of the machine as one line, and never a traceback."""

from __future__ import annotations

import csv
import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner
from pydicom.uid import generate_uid

from screen.cli import cli

PROJECT = Path(__file__).resolve().parents[2]


def _study(dataset_factory: Callable[..., Any], folder: Path, **attrs: Any) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    ds = dataset_factory(study_uid=uid, BodyPartExamined="SHOULDER", **attrs)
    ds.save_as(folder / f"{len(list(folder.iterdir()))}.dcm", enforce_file_format=True)
    return uid


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_spreadsheet_formulas_in_headers_are_neutralised(dataset_factory: Callable[..., Any], tiny_models: Path,
                                                         site_writer: Callable[..., Path], tmp_path: Path) -> None:
    archive, out = tmp_path / "export", tmp_path / "out"
    for value in ("=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)"):
        _study(dataset_factory, archive / value.strip("=+-@|'/!() ")[:6], AccessionNumber=value[:16],
               PatientID=value[:16])
    site = site_writer(tmp_path / "site", tiny_models, output='patient_id = "include"')
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _rows(out / "studies.csv")
    assert sorted(r["accession_number"] for r in rows) == sorted(
        "'" + v[:16] for v in ("=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)"))
    assert all(r["patient_id"].startswith("'") for r in rows)
    for name in ("studies.csv", "findings.csv", "scan.csv"):
        for row in _rows(out / name):
            for cell in row.values():
                assert not (cell or "").startswith(("=", "+", "@", "\t", "\r")), (name, cell)


def test_files_holding_identifiers_are_private_and_the_mode_is_configurable(
        dataset_factory: Callable[..., Any], tiny_models: Path, site_writer: Callable[..., Path],
        tmp_path: Path) -> None:
    archive = tmp_path / "export"
    _study(dataset_factory, archive / "a")
    for mode, site_output in ((0o600, ""), (0o640, 'file_mode = "0640"')):
        out = tmp_path / f"out-{mode:o}"
        site = site_writer(tmp_path / f"site-{mode:o}", tiny_models, output=site_output)
        assert CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out)]).exit_code == 0
        for path in (p for p in out.rglob("*") if p.is_file()):
            assert path.stat().st_mode & 0o777 == mode, (path, oct(path.stat().st_mode))
    key = Path(os.environ["XDG_CONFIG_HOME"]) / "fracture-screen" / "id-key"
    assert key.stat().st_mode & 0o777 == 0o600  # made on first use, private
    bad = site_writer(tmp_path / "site-bad", tiny_models, output='file_mode = "0644"')
    refused = CliRunner().invoke(cli, ["run", str(archive), "--config", str(bad), "--out", str(tmp_path / "o")])
    assert refused.exit_code == 2 and "[output].file_mode must be octal like" in refused.output


def test_header_values_stay_out_of_the_log(dataset_factory: Callable[..., Any], tiny_models: Path,
                                           site_writer: Callable[..., Path], tmp_path: Path) -> None:
    """A malformed birth date and a path-like UID: the run goes on and the log quotes neither."""
    archive, out = tmp_path / "export", tmp_path / "out"
    _study(dataset_factory, archive / "a", PatientBirthDate="1970-01-31", StudyTime="25:61")
    bad = dataset_factory(study_uid="1.2.3/../../evil", BodyPartExamined="SHOULDER")
    bad.save_as(archive / "evil.dcm", enforce_file_format=True)
    site = site_writer(tmp_path / "site", tiny_models)
    done = subprocess.run([sys.executable, "-m", "screen", "run", str(archive), "--config", str(site), "--out",
                           str(out)], capture_output=True, text=True, timeout=300, cwd=PROJECT,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 1, done.stderr  # the evil study failed; the other was screened
    log = done.stdout + done.stderr
    for value in ("1970-01-31", "25:61", "evil", "TEST^SECRET", "PID-1"):
        assert value not in log, value
    assert "Traceback" not in log
    statuses = sorted(r["status"] for r in _rows(out / "studies.csv"))
    assert statuses == ["failed", "screened"]
    assert "1970-01-31" not in (out / "ledger.sqlite").read_bytes().decode("latin-1")


def test_a_full_disk_mid_run_is_one_line_and_nothing_done_is_lost(dataset_factory: Callable[..., Any],
                                                                  tiny_models: Path, site_writer: Callable[..., Path],
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import screen.nightly.writers

    archive, out = tmp_path / "export", tmp_path / "out"
    uids = [_study(dataset_factory, archive / f"s{i}") for i in range(4)]
    site = site_writer(tmp_path / "site", tiny_models, run="writers = 0")  # the patch below is this process's
    real, calls = screen.nightly.writers.write_sr, []

    def filling_up(ds: Any, path: Path) -> Path:  # the disk fills at the third study's SR
        calls.extend([path] if path.relative_to(out).parts[0] == "sr" else [])
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(ds, path)

    monkeypatch.setattr(screen.nightly.writers, "write_sr", filling_up)
    full = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out), "--batch-size", "1"])
    assert full.exit_code == 1
    assert full.output.splitlines()[-1] == (
        f"Error: cannot write to {out}: No space left on device (ENOSPC); the 2 studies screened before it are "
        "recorded. Make the folder writable by this user and free space, then run again (finished studies are "
        "not screened again)")
    monkeypatch.setattr(screen.nightly.writers, "write_sr", real)
    again = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out)])
    assert again.exit_code == 0, again.output
    rows = {r["study_instance_uid"]: r["status"] for r in _rows(out / "studies.csv")}
    assert rows == {uid: "screened" for uid in uids}
    assert "already-screened" in again.output and "screened                   2" in again.output


def test_an_unwritable_output_folder_is_one_line(dataset_factory: Callable[..., Any], site: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import screen.nightly.ledger

    archive = tmp_path / "export"
    _study(dataset_factory, archive / "a")

    def read_only(*args: Any, **kwargs: Any) -> int:
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(screen.nightly.ledger.os, "open", read_only)
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output == (f"Error: cannot write to {tmp_path / 'out'}: Read-only file system (EROFS); nothing "
                             "was lost. Make the folder writable by this user and free space, then run again "
                             "(finished studies are not screened again)\n")


def test_an_unexpected_error_is_one_line_and_a_private_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import screen.commands.scan

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a message quoting PID-123")

    monkeypatch.setattr(screen.commands.scan, "run_scan", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    result = CliRunner().invoke(cli, ["scan", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.startswith("Error: unexpected RuntimeError: a bug in fracture-screen, not in your data or "
                                    "config; the details are in ")
    assert "Traceback" not in result.output and "PID-123" not in result.output
    (report,) = tmp_path.glob("fracture-screen-crash-*.txt")
    assert report.stat().st_mode & 0o777 == 0o600 and "PID-123" in report.read_text()


def test_any_command_reports_an_unwritable_place_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import screen.commands.scan

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/scan-out/scan.csv")

    monkeypatch.setattr(screen.commands.scan, "write_scan_csv", denied)
    result = CliRunner().invoke(cli, ["scan", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output == ("Error: cannot write /srv/scan-out/scan.csv: Permission denied (EACCES); make it "
                             "writable by this user and free space, then run the command again\n")
