"""Running it for real: the deadline and the next night, the status file, the alerts hook, the
out-of-memory record, the root warning. Time is a fake clock, never a real wait."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from click.testing import CliRunner

import screen.nightly.runner as runner
from screen.cli import cli
from screen.commands.run import summary_table
from screen.nightly.alerts import status_text, write_status_file
from screen.nightly.deadline import Deadline
from screen.nightly.runner import RunOptions, run_screen


def _metrics(path: Path) -> dict[str, float]:
    """The status file's samples (``name{labels}`` -> value); it must parse as the text format."""
    samples: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP screen_", "# TYPE screen_")), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def _fake_clock(*times: datetime) -> Callable[[], datetime]:
    """Each call the next time; the last one after that."""
    queue: Iterator[datetime] = iter(times)
    last = times[-1]

    def now() -> datetime:
        return next(queue, last)

    return now


def _ledger_summaries(out: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(out / "ledger.sqlite") as db:
        return [json.loads(row[0]) for row in db.execute("SELECT summary_json FROM runs ORDER BY started_at")]


def _detr_site(folder: Path, models: Path) -> Path:
    """A site whose one member is the tiny DETR (the cheapest to run twice)."""
    folder.mkdir(parents=True)
    op = {"schema_version": 1, "thresholds": {"detr": 0.5}, "vote": {"rule": "any"},
          "boxes": {"score_threshold": 0.0, "iou_threshold": 0.55, "scoring": "max", "skip_box_threshold": 0.0,
                    "members": ["detr"], "weights": None}}
    (folder / "op.json").write_text(json.dumps(op), encoding="utf-8")
    (folder / "site.toml").write_text(
        'operating_point = "op.json"\n[run]\ndevice = "cpu"\nworkers = 1\nbatch_size = 4\n'
        f'[members.detr]\nkind = "detr"\ncheckpoint = "{models / "detr"}"\n', encoding="utf-8")
    return folder / "site.toml"


def test_deadline_defers_the_rest_and_the_next_night_screens_it(small_archive: Path, tiny_models: Path,
                                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    site = _detr_site(tmp_path / "site", tiny_models)
    start = datetime(2026, 12, 7, 5, 0)
    # parse at 05:00; the first study starts at 05:10; at the second it is 05:31: past 05:30
    clock = _fake_clock(start, start + timedelta(minutes=10), start + timedelta(minutes=31))
    night1 = run_screen(small_archive, out, config_path=site, options=RunOptions(deadline="05:30"), clock=clock)
    assert night1.exit_code == 0 and night1.counts["screened"] == 1 and len(night1.deferred) == 4
    assert night1.counts["deferred"] == 4 and night1.deadline == "05:30"
    table = summary_table(night1)
    assert "deferred                   4" in table and "deadline 05:30 reached: 4 studies left" in table
    screened = json.loads((out / "run.json").read_text())
    assert screened["deferred"] == night1.deferred and screened["counts"]["deferred"] == 4
    assert _ledger_summaries(out)[0]["deferred"] == night1.deferred
    rows = (out / "studies.csv").read_text().splitlines()
    assert len(rows) == 2  # header and the one study screened: the deferred are not done
    newest_first = runner.order_plans(runner.plan_studies(runner.scan_archive(small_archive)))  # the default
    assert night1.deferred == [p.study_instance_uid for p in newest_first[1:]]  # the newest was screened
    status = _metrics(out / "screen.prom")
    assert status['screen_run_studies{status="deferred"}'] == 4 and status["screen_run_exit_code"] == 0
    assert status["screen_last_success_timestamp_seconds"] == status["screen_run_finished_timestamp_seconds"]

    # the next night, without a deadline, with a GPU that holds 1 image of DETR at a time
    load = runner.load_members

    def tight_members(*args: Any, **kwargs: Any) -> Any:
        loaded = load(*args, **kwargs)
        for member in loaded:
            if member.name == "detr":
                model = member.member.model
                forward = model.forward

                @functools.wraps(forward)
                def tight(*a: Any, _forward: Any = forward, **k: Any) -> Any:
                    if k["pixel_values"].shape[0] > 1:
                        import torch

                        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
                    return _forward(*a, **k)

                model.forward = tight
        return loaded

    monkeypatch.setattr(runner, "load_members", tight_members)
    night2 = run_screen(small_archive, out, config_path=site, clock=lambda: start + timedelta(days=1))
    assert night2.exit_code == 0 and night2.deferred == [] and "deferred" not in night2.counts
    assert night2.counts["screened"] == 4 and night2.counts["already-screened"] == 1
    assert [(h["member"], h["from"], h["to"]) for h in night2.batch_halvings] == [("detr", 4, 2), ("detr", 2, 1)]
    assert json.loads((out / "run.json").read_text())["batch_halvings"] == night2.batch_halvings
    assert _ledger_summaries(out)[1]["batch_halvings"] == night2.batch_halvings
    assert "out of device memory: member detr batch 4 -> 2" in summary_table(night2)
    assert _metrics(out / "screen.prom")["screen_run_batch_halvings"] == 2
    assert len((out / "studies.csv").read_text().splitlines()) == 6


def test_deadline_earlier_than_now_is_tomorrow() -> None:
    evening = datetime(2026, 12, 6, 22, 0)
    assert Deadline.parse("06:30", clock=lambda: evening).at == datetime(2026, 12, 7, 6, 30)
    assert Deadline.parse("23:15", clock=lambda: evening).at == datetime(2026, 12, 6, 23, 15)
    assert not Deadline.parse("23:15", clock=lambda: evening).passed()


def test_a_bad_deadline_is_a_usage_error(small_archive: Path, site: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", str(small_archive), "--config", str(site), "--out", str(tmp_path / "o"),
                                      "--deadline", "25:00"])
    assert result.exit_code == 2
    assert result.output.endswith("Error: --deadline '25:00' is not a local time; use HH:MM, 24-hour (e.g. 06:30)\n")
    assert not (tmp_path / "o").exists()


@pytest.fixture
def hook(tmp_path: Path) -> tuple[Path, Path]:
    """An ``[alerts] command`` that keeps its stdin, its last argument's content and SCREEN_ALARM."""
    told = tmp_path / "told"
    script = tmp_path / "hook.sh"
    script.write_text(f'#!/bin/sh\ncat > {told}.stdin\nfor last; do :; done\ncp "$last" {told}.file\necho "$SCREEN_ALARM" > {told}.alarm\n'
                      'exit "${HOOK_EXIT:-0}"\n')
    script.chmod(0o755)
    return script, told


def _broken_archive(small_archive: Path, tmp_path: Path) -> Path:
    """The sample studies with every file cut short: each study fails before any model loads."""
    archive = tmp_path / "broken"
    shutil.copytree(small_archive, archive)
    for path in archive.rglob("*.dcm"):
        path.write_bytes(path.read_bytes()[:-500])
    return archive


def test_a_failed_night_writes_its_status_and_tells_the_hook(small_archive: Path, tiny_models: Path, tmp_path: Path,
                                                             site_writer: Any, hook: tuple[Path, Path]) -> None:
    script, told = hook
    status = tmp_path / "textfile" / "screen.prom"
    site = site_writer(tmp_path / "site", tiny_models,
                       extra=f'\n[alerts]\nstatus_file = "{status}"\ncommand = "{script} --from screen"\n')
    write_status_file(status, {"exit_code": 0, "counts": {}}, finished=1_700_000_000.0)  # an earlier good night
    result = CliRunner().invoke(cli, ["run", str(_broken_archive(small_archive, tmp_path)), "--config", str(site),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    metrics = _metrics(status)
    assert metrics["screen_run_exit_code"] == 1 and metrics['screen_run_studies{status="failed"}'] == 5
    assert metrics['screen_run_studies{status="screened"}'] == 0 and metrics["screen_monitor_alarm"] == 0
    assert metrics["screen_last_success_timestamp_seconds"] == 1_700_000_000  # carried over, not this night
    assert oct(status.stat().st_mode & 0o777) == "0o600"  # [output] file_mode
    night = json.loads(Path(f"{told}.stdin").read_text())
    assert night["exit_code"] == 1 and night["counts"]["failed"] == 5
    assert json.loads(Path(f"{told}.file").read_text()) == night
    assert Path(f"{told}.alarm").read_text().strip() == "0"
    assert not (tmp_path / "out" / "screen.prom").exists()  # the configured file only


def test_a_hook_that_fails_never_fails_the_night(small_archive: Path, tiny_models: Path, tmp_path: Path,
                                                 site_writer: Any, hook: tuple[Path, Path],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    script, told = hook
    monkeypatch.setenv("HOOK_EXIT", "7")
    site = site_writer(tmp_path / "site", tiny_models, extra=f'\n[alerts]\ncommand = ["{script}"]\n')
    with caplog.at_level(logging.WARNING, logger="screen.run"):
        summary = run_screen(_broken_archive(small_archive, tmp_path), tmp_path / "out", config_path=site)
    assert summary.exit_code == 1  # as without a hook
    assert Path(f"{told}.stdin").is_file()
    assert f"[alerts] command '{script}' exited with 7" in caplog.text


def _skipped_only_archive(tmp_path: Path, write_dicom: Any) -> Path:
    """One study with nothing to screen (an MR image): a night that loads no model."""
    write_dicom("quiet/mr.dcm", modality="MR")
    return tmp_path / "quiet"


def test_an_alarmed_night_sets_the_alarm_and_tells_the_hook(tiny_models: Path, tmp_path: Path, site_writer: Any,
                                                            write_dicom: Any, hook: tuple[Path, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitoring part of run.json (``monitor.alarm``) is what the status file and hook read."""
    script, told = hook
    site = site_writer(tmp_path / "site", tiny_models, extra=f'\n[alerts]\ncommand = "{script}"\n')
    write = runner.write_run_json

    def with_alarm(path: Path, payload: dict[str, Any]) -> None:
        write(path, payload | {"monitor": {"alarm": True, "alarms": ["flag rate 0.41 above 0.30"]}})

    monkeypatch.setattr(runner, "write_run_json", with_alarm)
    out = tmp_path / "out"
    summary = run_screen(_skipped_only_archive(tmp_path, write_dicom), out, config_path=site)
    assert summary.exit_code == 0
    metrics = _metrics(out / "screen.prom")
    assert metrics["screen_monitor_alarm"] == 1 and metrics["screen_monitor_alarms"] == 1
    assert metrics["screen_run_exit_code"] == 0 and metrics['screen_run_studies{status="skipped"}'] == 1
    assert Path(f"{told}.alarm").read_text().strip() == "1"
    assert json.loads(Path(f"{told}.stdin").read_text())["monitor"]["alarm"] is True


def test_a_good_night_tells_no_one(tiny_models: Path, tmp_path: Path, site_writer: Any, write_dicom: Any,
                                   hook: tuple[Path, Path]) -> None:
    script, told = hook
    site = site_writer(tmp_path / "site", tiny_models, extra=f'\n[alerts]\ncommand = "{script}"\n')
    out = tmp_path / "out"
    assert run_screen(_skipped_only_archive(tmp_path, write_dicom), out, config_path=site).exit_code == 0
    assert not Path(f"{told}.stdin").exists()
    metrics = _metrics(out / "screen.prom")
    assert metrics["screen_monitor_alarm"] == 0 and metrics["screen_run_exit_code"] == 0
    assert metrics["screen_last_success_timestamp_seconds"] > 0
    assert metrics['screen_run_duration_seconds{phase="wall"}'] > 0


def test_a_night_that_did_not_run_is_in_a_configured_status_file(tmp_path: Path) -> None:
    text = status_text({"exit_code": 2, "error": "site config not found"}, finished=1_800_000_000.0,
                       last_success=1_700_000_000.0)
    assert "screen_run_exit_code 2\n" in text and "screen_last_success_timestamp_seconds 1700000000\n" in text
    assert 'screen_run_studies{status="screened"} 0\n' in text


@pytest.mark.parametrize("uid,warned", [(0, 1), (1000, 0)])
def test_running_as_root_warns_once(tiny_models: Path, tmp_path: Path, site_writer: Any, write_dicom: Any,
                                    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                    uid: int, warned: int) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: uid)
    site = site_writer(tmp_path / "site", tiny_models)
    with caplog.at_level(logging.WARNING, logger="screen.run"):
        run_screen(_skipped_only_archive(tmp_path, write_dicom), tmp_path / "out", config_path=site)
    assert [r.getMessage() for r in caplog.records].count(
        'running as root: run screen as a service user with read access to the archive and write access to --out '
        '(README: "Running it every night"; deploy/ has systemd units)') == warned


# -- the site config's new keys ------------------------------------------------------------------

def _config(tables: dict[str, Any]) -> Any:
    import tomllib

    from screen.site_config import DEFAULT_CONFIG, parse_site_config

    data = tomllib.loads(DEFAULT_CONFIG.read_text(encoding="utf-8")) | tables
    return parse_site_config(data, DEFAULT_CONFIG.parent)


@pytest.mark.parametrize("tables,message", [
    ({"run": {"deadline": "6:30"}}, '[run].deadline must be a local time "HH:MM" (24-hour, e.g. "06:30"), got \'6:30\''),
    ({"run": {"priority": "urgent"}}, "[run].priority must be one of newest, oldest, tag:RequestedProcedurePriority, "
                                      "got 'urgent'"),
    ({"alerts": {"command": "notify 'unbalanced"}}, "[alerts].command must be a command line with balanced quotes, "
                                                    "or a list of arguments, got \"notify 'unbalanced\""),
    ({"send": {"tls": True, "cert_file": __file__}}, "[send] cert_file and key_file go together: give both (the "
                                                     "client certificate and its key) or neither"),
    ({"send": {"ca_file": __file__}}, "[send] ca_file, cert_file and key_file are used only with tls = true; add it"),
    ({"send": {"calling_ae": "A\\B"}}, "[send].calling_ae must be an AE title: 1 to 16 ASCII characters, no "
                                      "backslash, got 'A\\\\B'"),
])
def test_operations_keys_are_checked_when_the_file_is_read(tables: dict[str, Any], message: str) -> None:
    from screen.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        _config(tables)
    assert str(caught.value) == message


def test_operations_keys_are_read() -> None:
    config = _config({"run": {"deadline": "06:30", "priority": "tag:RequestedProcedurePriority",
                              "emergency_departments": ["ED"]},
                      "alerts": {"command": "page --to 'on call'", "status_file": "s.prom"},
                      "send": {"tls": True, "ca_file": __file__, "verify": False}})
    assert (config.run.deadline, config.run.priority, config.run.emergency_departments) == (
        "06:30", "tag:RequestedProcedurePriority", ("ED",))
    assert config.alerts.command == ("page", "--to", "on call")
    from screen.errors import ConfigError
    from screen.site_config import DEFAULT_CONFIG

    assert config.alerts.status_file == DEFAULT_CONFIG.parent / "s.prom"
    with pytest.raises(ConfigError, match=r"^\[send\] cannot use the TLS files \(ca_file '.*test_night_operations.py'\)"):
        runner._tls(config.send)  # this file is no PEM: refused before any work, naming the file
    assert runner._tls(_config({}).send) is None  # no tls = true: plain TCP
