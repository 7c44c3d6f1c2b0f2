"""``ray_session``: the run's own local Ray instance (started, loopback only, stopped), and a
clear error without the ``ray`` extra."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest
from click.testing import CliRunner

from screen.cli import cli
from screen.errors import ConfigError
from screen.nightly.ray_engine import require_ray
from screen.site_config import load_site_config


def test_a_run_on_its_own_local_ray_fails_a_bad_file_alone_and_stops_ray(
        tmp_path: Path, tiny_models: Path, site_writer: Any, small_archive: Path) -> None:
    """A run with no Ray running starts a local instance for itself and stops it at the end; a
    file whose header reads and whose pixels do not fails its study with the reason, the rest
    are screened, and the next night on the local engine reads the same ledger."""
    import ray

    if ray.is_initialized():  # another module's instance (should have been shut down)
        ray.shutdown()
    archive = tmp_path / "archive"
    shutil.copytree(small_archive, archive)
    victim = sorted(archive.rglob("*.dcm"))[0]
    dataset = pydicom.dcmread(victim)
    dataset.PixelData = dataset.PixelData[: len(dataset.PixelData) // 3]
    dataset.save_as(victim)
    site = site_writer(tmp_path / "site", tiny_models, extra="[ray]\nlocal_cpus = 2\nmember_cpus = 0.25\n")
    assert load_site_config(site).ray.local_cpus == 2
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out),
                                      "--engine", "ray"])
    assert not ray.is_initialized()  # the run's instance is gone with the run
    assert result.exit_code == 1, result.output  # a failed study: exit 1, the others recorded
    rows = _rows(out / "studies.csv")
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert len(failed) == 1 and "failed to decode" in failed[0]["reason"]
    assert failed[0]["study_instance_uid"] == str(dataset.StudyInstanceUID)
    assert sum(r["status"] == "screened" for r in rows.values()) == len(rows) - 1
    # the same ledger whatever the engine: the next night, on one machine, screens nothing again
    # and tries the failed study again (failing again)
    again = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out)])
    assert again.exit_code == 1, again.output
    assert any(line.split()[:2] == ["already-screened", str(len(rows) - 1)] for line in again.output.splitlines())
    assert _rows(out / "studies.csv")[failed[0]["study_instance_uid"]]["status"] == "failed"


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["study_instance_uid"]: row for row in csv.DictReader(handle)}


def test_without_ray_installed_the_error_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"fracture-screen\[ray\]"):
        require_ray()
