"""The embedded default: ``screen run sample_data/archive`` with no config runs the committed members."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner

from screen.cli import cli
from screen.config import DEFAULT_CONFIG, PROJECT_ROOT

ARCHIVE = PROJECT_ROOT / "sample_data" / "archive"


def test_default_config_loads_and_dry_run_lists_every_study(tmp_path: Path) -> None:
    assert DEFAULT_CONFIG.is_file()
    result = CliRunner().invoke(cli, ["run", str(ARCHIVE), "--out", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.count("would screen ") == 24  # the sample archive's studies
    assert not (tmp_path / "out").exists()


def test_default_run_screens_with_the_committed_members(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(ARCHIVE), "--out", str(out), "--limit", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    with open(out / "studies.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(r["status"] == "screened" for r in rows)
    assert {"score:pg-cls", "score:pg-det", "score:detr"} <= set(rows[0])
    assert len(list((out / "sr").rglob("*.dcm"))) == 2
