"""After the night: a status file for monitoring systems and a hook that reaches people.

- The status file (``[alerts] status_file``, default ``OUT/screen.prom``) is in Prometheus'
  text exposition format, for node_exporter's textfile collector (or any scraper): the run's
  exit code, studies by status (deferred included), images, positives, durations by phase,
  sends, batch halvings, the monitoring alarm, and when the last successful night ended. It is
  written atomically (a scraper never reads half a file) with ``[output] file_mode``, after every
  run, including a run that stopped with exit 2.
- The hook (``[alerts] command``) runs when a night failed (exit 1 or 2) or raised a monitoring
  alarm: the night's summary as JSON on its standard input, and the path of a private copy of
  it as its last argument. It runs without a shell, with a timeout; its failure is logged and
  never changes the night's exit code.

Nothing here reads a DICOM file: the summary holds counts, UIDs and reasons, never a patient
name, and identifiers in it follow ``[output] patient_id`` like every other output.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from dicom_io.atomic import atomic_write_text

log = logging.getLogger("screen.run")

__all__ = ["DEFAULT_STATUS_FILE", "alarm_of", "run_alert_hook", "status_text", "write_status_file"]

#: The status file's name in ``--out`` when ``[alerts] status_file`` is not set.
DEFAULT_STATUS_FILE = "screen.prom"
_LAST_SUCCESS = "screen_last_success_timestamp_seconds"
#: Study statuses always written (0 when none), so a dashboard's series never disappear.
_STATUSES = ("screened", "already-screened", "failed", "skipped", "out-of-scope", "deferred")


def alarm_of(night: Mapping[str, Any]) -> bool:
    """Whether the night's monitoring part (``"monitor": {"alarm": ...}``) raised an alarm;
    a night without one raised none."""
    monitor = night.get("monitor")
    return bool(monitor.get("alarm")) if isinstance(monitor, Mapping) else False


def _number(value: Any) -> str:
    number = float(value)
    if math.isnan(number):
        return "NaN"
    return repr(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def status_text(night: Mapping[str, Any], *, finished: float, last_success: float | None) -> str:
    """The status file's content for ``night`` (``run.json``'s dict, or the short dict of a night
    that did not run: ``exit_code`` 2 and ``error``).

    Args:
        night: the summary.
        finished: when the run ended (Unix seconds).
        last_success: when the last night with exit 0 ended, this one included (``None``: never).
    """
    lines: list[str] = []

    def metric(name: str, help_text: str, samples: list[tuple[str, Any]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

    counts = night.get("counts") or {}
    metric("screen_run_exit_code", "Exit code of the last screen run (0 ok, 1 some studies failed or need "
           "attention, 2 not run).", [("", night.get("exit_code", 2))])
    metric("screen_run_finished_timestamp_seconds", "When the last screen run ended (Unix time).", [("", finished)])
    if last_success is not None:
        metric(_LAST_SUCCESS, "When the last screen run with exit code 0 ended (Unix time).", [("", last_success)])
    metric("screen_run_studies", "Studies of the last run by status (deferred: left for the next night by "
           "the deadline).", [(f'{{status="{_label(s)}"}}', counts.get(s, 0)) for s in _STATUSES])
    metric("screen_run_images", "Images scored by the last run.", [("", night.get("images", 0))])
    metric("screen_run_positives", "Studies the last run flagged.", [("", night.get("positives", 0))])
    metric("screen_run_needs_attention", "Studies no longer retried that need attention.",
           [("", len(night.get("needs_attention") or []))])
    timings = night.get("timings_s") or {}
    metric("screen_run_duration_seconds", "Seconds the last run spent, by phase (wall: all of it).",
           [(f'{{phase="{_label(str(k))}"}}', v) for k, v in sorted(timings.items())])
    sent = night.get("sent") or {}
    metric("screen_run_sends", "Objects sent to the PACS by the last run, by result.",
           [('{result="sent"}', sent.get("sent", 0)), ('{result="failed"}', sent.get("failed", 0))])
    metric("screen_run_batch_halvings", "Times a member's batch was halved after running out of device memory.",
           [("", len(night.get("batch_halvings") or []))])
    monitor = night.get("monitor")
    alarms = monitor.get("alarms") if isinstance(monitor, Mapping) else None
    metric("screen_monitor_alarm", "1 when the last run's monitoring raised an alarm.", [("", int(alarm_of(night)))])
    metric("screen_monitor_alarms", "Alarms the last run's monitoring raised.",
           [("", len(alarms) if isinstance(alarms, list) else 0)])
    return "\n".join(lines) + "\n"


def previous_success(path: Path) -> float | None:
    """The last successful night's time from an earlier status file (``None`` when unknown)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == _LAST_SUCCESS:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def write_status_file(path: Path, night: Mapping[str, Any], *, finished: float | None = None) -> None:
    """Write the status file atomically (the caller's umask gives it ``[output] file_mode``);
    the last successful night's time is carried over from the earlier file."""
    finished = time.time() if finished is None else finished
    last = finished if night.get("exit_code") == 0 else previous_success(path)
    atomic_write_text(path, status_text(night, finished=finished, last_success=last))


def run_alert_hook(command: tuple[str, ...], night: Mapping[str, Any], *, timeout_s: float) -> bool:
    """Run ``command`` with ``night`` as JSON on stdin and a private copy's path as last argument.

    Returns:
        Whether it ran and exited 0. Never raises: a missing program, a non-zero exit or a
        timeout is a warning in the log (with the exit code, not the hook's output).
    """
    payload = json.dumps(night, indent=2, sort_keys=True, default=str)
    environment = dict(os.environ, SCREEN_EXIT_CODE=str(night.get("exit_code", 2)),
                       SCREEN_ALARM="1" if alarm_of(night) else "0")
    handle, name = tempfile.mkstemp(prefix="fracture-screen-summary-", suffix=".json")  # mode 0600
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(payload)
        done = subprocess.run([*command, name], input=payload.encode(), capture_output=True,
                              timeout=timeout_s, env=environment, check=False)
    except subprocess.TimeoutExpired:
        log.warning("[alerts] command %r did not finish within %g s and was stopped", command[0], timeout_s)
        return False
    except OSError as exc:
        log.warning("[alerts] command %r could not run: %s", command[0], exc.strerror or exc)
        return False
    finally:
        Path(name).unlink(missing_ok=True)
    if done.returncode != 0:
        log.warning("[alerts] command %r exited with %d", command[0], done.returncode)
        return False
    log.info("[alerts] command %r told of the night (exit %s)", command[0], night.get("exit_code"))
    return True
