"""``kill -9`` a real ``screen run`` at several points, rerun, and check nothing is lost or doubled.

After each kill and a rerun: every study is in ``studies.csv`` exactly once, no temporary file
is left, every SR and GSPS on disk is one the ledger names (no orphan, no second GSPS of a
resumed study), and every SR parses whole.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest

from screen.site_config import load_site_config
from screen.nightly.runner import run_screen


def _screened(ledger: Path) -> int:
    if not ledger.exists():
        return -1
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM studies WHERE status = 'screened'").fetchone()[0])
    except sqlite3.Error:
        return -1


def _kill_when(command: list[str], out: Path, committed: int, extra_delay_s: float) -> None:
    """Start a run; SIGKILL it once the ledger has ``committed`` screened studies (+ a delay)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if committed == 0 and (out / ".screen.lock").exists():
                break
            if committed > 0 and _screened(out / "ledger.sqlite") >= committed:
                break
            time.sleep(0.02)
        time.sleep(extra_delay_s)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.parametrize("committed, delay", [(0, 0.0), (1, 0.0), (2, 0.15)], ids=["at-start", "after-1", "mid-study-3"])
def test_kill_then_rerun_leaves_each_study_once(small_archive: Path, tiny_models: Path, site_writer: Any,
                                                 tmp_path: Path, committed: int, delay: float) -> None:
    site = site_writer(tmp_path / "site", tiny_models, run="writers = 1")  # the writer process is killed too
    archive = tmp_path / "export"
    shutil.copytree(small_archive, archive)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "screen", "run", str(archive), "--config", str(site), "--out", str(out),
               "--batch-size", "1", "--workers", "1"]
    _kill_when(command, out, committed, delay)
    summary = run_screen(archive, out, config=load_site_config(site))
    assert summary.exit_code == 0

    with open(out / "studies.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    uids = [r["study_instance_uid"] for r in rows]
    expected = {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in archive.rglob("*.dcm")}
    assert sorted(uids) == sorted(expected)  # each study exactly once
    assert all(r["status"] == "screened" for r in rows)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    with sqlite3.connect(out / "ledger.sqlite") as db:
        named = {row[0] for row in db.execute("SELECT path FROM objects WHERE kind = 'sr'")}
        gsps_named = [row[0] for row in db.execute("SELECT path FROM objects WHERE kind = 'gsps'")]
    on_disk = {p.relative_to(out).as_posix() for p in (out / "sr").rglob("*") if p.is_file()}
    assert on_disk == named  # no orphan SR, no missing SR
    gsps_on_disk = sorted(p.relative_to(out).as_posix() for p in out.glob("gsps/*/*") if p.is_file())
    assert gsps_on_disk == sorted(gsps_named)  # a resumed study has one GSPS, never a second
    assert {r["gsps_path"] for r in rows if r["gsps_path"]} == set(gsps_named)
    assert len({p.rsplit("/", 2)[1] for p in gsps_named}) == len(gsps_named)  # one per study
    assert {r["sr_path"] for r in rows} <= on_disk
    for path in on_disk:
        assert pydicom.dcmread(out / path).StudyInstanceUID in expected  # every SR is whole
