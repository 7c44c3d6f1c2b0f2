"""``screen scan``: exit codes, scan.csv columns, summary, entry points."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from dicom_io.scan import SCAN_COLUMNS
from screen.cli import cli


def test_scan_writes_one_row_per_file_and_a_summary(write_dicom, tmp_path: Path) -> None:
    write_dicom("arc/a.dcm", modality="CR")
    write_dicom("arc/b.dcm", modality="MR", sop_class="1.2.840.10008.5.1.4.1.1.4")
    (tmp_path / "arc" / "bad.dcm").write_bytes(b"not dicom at all" * 20)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["scan", str(tmp_path / "arc"), "--out", str(out), "--decode"])
    assert result.exit_code == 0, result.output
    with open(out / "scan.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0].keys()) == SCAN_COLUMNS
    got = {Path(r["path"]).name: (r["outcome"], r["reason"]) for r in rows}
    assert got == {"a.dcm": ("selected", ""), "b.dcm": ("skipped", "modality"), "bad.dcm": ("failed", "not-dicom")}
    assert "selected: 1 images in 1 series of 1 studies" in result.output
    assert "TEST^SECRET" not in result.output and "PID-1" not in result.output
    assert "TEST^SECRET" not in (out / "scan.csv").read_text(encoding="utf-8")


def test_scan_usage_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["scan", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    workers = runner.invoke(cli, ["scan", str(tmp_path), "--workers", "0"])
    assert workers.exit_code == 2 and "--workers" in workers.output


def test_python_dash_m_and_console_scripts() -> None:
    result = subprocess.run([sys.executable, "-m", "screen", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "scan" in result.stdout
    for name in ("screen", "fracture-screen"):
        script = Path(sys.executable).parent / name
        if script.exists():  # installed with pip install -e .
            done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
            assert done.returncode == 0 and "fracture-screen" in done.stdout


def test_phantom_command_regenerates_identical_bytes(tmp_path: Path) -> None:
    runner = CliRunner()
    outputs = []
    for name in ("a", "b"):
        result = runner.invoke(cli, ["phantom", str(tmp_path / name / "archive"), "--labels",
                                     str(tmp_path / name / "labels.csv"), "--studies", "2", "--seed", "7"])
        assert result.exit_code == 0, result.output
        assert "wrote" in result.output and "2 studies" in result.output
        files = sorted((tmp_path / name / "archive").rglob("*.dcm"))
        outputs.append([f.read_bytes() for f in files] + [(tmp_path / name / "labels.csv").read_bytes()])
    assert outputs[0] == outputs[1]
    again = runner.invoke(cli, ["phantom", str(tmp_path / "a" / "archive"), "--labels", str(tmp_path / "x.csv"), "--studies", "2"])
    assert again.exit_code == 2 and again.output.startswith("Error: output folder") and "--overwrite" in again.output
