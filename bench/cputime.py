"""CPU seconds of this process and every process it started, for the ingest and run benches.

On a shared machine wall time says how busy the others were; CPU seconds say what a stage
costs. Worker processes are children of the ``forkserver`` (a child of this process), which
reaps them, so their time shows in its ``cutime``/``cstime`` (``/proc/PID/stat``) once they
end; a pass is measured as the difference of :func:`tree_cpu` before and after it, after
:func:`settle` has waited for its workers to be reaped. Linux only (``/proc``); elsewhere only
this process's own time and its waited-for children's count.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
T = TypeVar("T")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from the 3rd on (state, ppid, ...)


def _children(pid: int) -> list[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    found = []
    for name in names:
        if name.isdigit():
            fields = _stat(int(name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(name))
    return found


def tree_cpu() -> float:
    """CPU seconds (user + system) of this process, its waited-for children, and each live
    child with the children it has reaped (the forkserver and its ended workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime
    for child in _children(os.getpid()):
        fields = _stat(child)
        if fields is not None:  # utime stime cutime cstime are fields 14-17 (11-14 here)
            total += sum(int(v) for v in fields[11:15]) / _TICK
    return total


def own_cpu() -> float:
    """CPU seconds of this process alone (the main process's share of a pass)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def settle(timeout_s: float = 5.0) -> None:
    """Wait until no child of this process has a live child (workers ended and reaped)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not any(_children(child) for child in _children(os.getpid())):
            return
        time.sleep(0.02)


@dataclass(frozen=True)
class Measured:
    """One pass: its wall seconds, CPU seconds of all processes and of the main one."""

    wall_s: float
    cpu_s: float
    main_cpu_s: float

    def per(self, n: int) -> float:
        """CPU milliseconds per item."""
        return 1000.0 * self.cpu_s / max(n, 1)


def measure(work: Callable[[], T]) -> tuple[T, Measured]:
    """Run ``work`` and measure it (its worker processes included, once reaped)."""
    settle()
    cpu0, main0, wall0 = tree_cpu(), own_cpu(), time.perf_counter()
    result = work()
    wall = time.perf_counter() - wall0
    settle()
    return result, Measured(wall, tree_cpu() - cpu0, own_cpu() - main0)
