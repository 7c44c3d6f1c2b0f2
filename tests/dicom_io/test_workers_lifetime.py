"""Workers and the forkserver never outlive the process that runs ``run_tasks``, even one
killed with ``kill -9`` (which runs no cleanup at all).

Each test starts a small script in a subprocess, records the processes below it, kills the
script with SIGKILL, then watches ``/proc`` until every recorded process is gone. A process
counts as gone once it no longer exists, is a zombie (it has exited and holds no memory; only
the reaping is left, and that is PID 1's job), or its PID now belongs to another process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

ROOT = Path(__file__).resolve().parents[2]

#: Runs slow tasks on two workers; each task writes ``<dir>/<its pid>`` holding its parent's
#: pid (the forkserver), then sleeps far longer than the test lasts.
RUN_SLOW_TASKS = """
import sys
from dicom_io.workers import run_tasks

task = ("(open(%r + '/' + str(__import__('os').getpid()), 'w').write(str(__import__('os').getppid())),"
        " __import__('time').sleep(600))") % sys.argv[1]
list(run_tasks(eval, [task] * 4, workers=2, timeout_s=None))
"""

#: Starts a grandchild that arms only the portable watchdog (no prctl), prints its pid, sleeps.
START_WATCHED_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import time; from dicom_io.workers import _start_watchdog; _start_watchdog();"
    " print('armed', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
assert child.stdout is not None and child.stdout.readline() == "armed\\n"
print(child.pid, flush=True)
time.sleep(600)
"""


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, start time)`` of a process, or ``None`` when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    return fields[0], int(fields[1]), int(fields[19])


def _descendants(root: int) -> set[int]:
    """Every process whose chain of parents leads to ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        stat = _stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _survivors(started: dict[int, int], within_s: float) -> dict[int, str]:
    """Wait up to ``within_s`` for the processes (pid -> start time) to go; the ones left."""
    deadline = time.monotonic() + within_s
    while True:
        left: dict[int, str] = {}
        for pid, start in started.items():
            stat = _stat(pid)
            if stat is not None and stat[0] != "Z" and stat[2] == start:
                left[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _start_times(pids: set[int]) -> dict[int, int]:
    stats = {pid: _stat(pid) for pid in pids}
    return {pid: stat[2] for pid, stat in stats.items() if stat is not None}


def _kill_all(started: dict[int, int]) -> None:
    """Clean up after a failed test: SIGKILL what is left of the processes it started."""
    for pid in _survivors(started, within_s=0):
        os.kill(pid, signal.SIGKILL)


@contextmanager
def _all_gone_after_kill_9(script: subprocess.Popen[str]) -> Iterator[dict[int, int]]:
    """Yields a dict for the processes (pid -> start time) that must end with ``script``;
    at the end ``kill -9``s the script and asserts they are all gone within 10 s."""
    started: dict[int, int] = {}
    try:
        yield started
    finally:
        script.kill()
        script.wait()
        left = _survivors(started, within_s=10)
        _kill_all(started)
    assert left == {}, f"still running 10 s after kill -9 of the script that started them: {left}"


def test_kill_9_of_the_parent_takes_down_workers_and_forkserver(tmp_path: Path) -> None:
    script = subprocess.Popen([sys.executable, "-c", RUN_SLOW_TASKS, str(tmp_path)], cwd=ROOT, text=True)
    with _all_gone_after_kill_9(script) as started:
        deadline = time.monotonic() + 60  # a cold forkserver imports pydicom and numpy
        while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
            assert script.poll() is None, "the script stopped before its tasks ran"
            time.sleep(0.05)
        time.sleep(0.2)  # let both workers finish writing
        workers = {int(p.name): int(p.read_text()) for p in tmp_path.iterdir()}
        assert len(workers) == 2, workers
        forkservers = set(workers.values())
        assert len(forkservers) == 1 and script.pid not in forkservers, "workers come from one forkserver"
        tree = _descendants(script.pid)  # also the resource tracker
        assert set(workers) | forkservers <= tree
        started.update(_start_times(tree))


def test_the_portable_watchdog_alone_ends_an_orphaned_process() -> None:
    """Without prctl (macOS, or a failed call) a process still exits once its parent is gone."""
    script = subprocess.Popen([sys.executable, "-c", START_WATCHED_CHILD], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    with _all_gone_after_kill_9(script) as started:
        assert script.stdout is not None
        started.update(_start_times({int(script.stdout.readline())}))
        assert started, "the watched child is already gone before its parent was killed"
