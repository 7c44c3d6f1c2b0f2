"""Run per-file work (header reads, pixel decoding) in worker processes, robustly.

Workers come from a ``forkserver`` context: each is forked from a clean server process that
has imported only :mod:`dicom_io`, never from a parent that may hold torch threads or a GPU.
Results come back in input order with a bounded number of items in flight, so a consumer
(the model loop) runs while the next images decode.

A file must never stop the run: an exception becomes a :class:`TaskFailure` with the
error's reason code; a worker that dies (a decoder crash) or a task that exceeds
``timeout_s`` is charged to the files in flight, the pool is replaced, and those files are
retried once each alone, so only the culprit is marked failed (``worker-crashed`` or
``timeout``). Every task runs in a worker, whatever the worker count: a read that blocks
forever (a FIFO swapped in for a file) can only be stopped by killing the process stuck in
it, since a thread cannot be killed, and a decoder crash must not take the run down.
Cheap items (header reads) travel in chunks (``chunk_size``): one round trip for many files,
outcomes still one per item, and a chunk that crashes or hangs has its items tried again alone.

Workers and the forkserver never outlive the process that started them, even one killed
with ``kill -9``: the forkserver polls for its parent's death and exits, and each worker
has Linux kill it when the forkserver dies (``PR_SET_PDEATHSIG``) and polls for both the
forkserver's and the main process's death itself (every platform).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from dicom_io.errors import DicomIOError

T = TypeVar("T")
R = TypeVar("R")

#: Modules a forkserver worker imports once, before any task arrives. This module comes first:
#: importing it in the forkserver starts the forkserver's watchdog (see the end of the module).
_PRELOAD = ["dicom_io.workers", "dicom_io.index", "dicom_io.pixels", "dicom_io.select"]

#: How often a worker or the forkserver checks that the processes it serves are still alive.
_WATCH_INTERVAL_S = 0.5

#: ``prctl`` option from ``<linux/prctl.h>``: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1

#: How the forkserver's command line starts (``multiprocessing.forkserver.ensure_running``).
_FORKSERVER_COMMAND = "from multiprocessing.forkserver import main;"


@dataclass(frozen=True)
class TaskFailure:
    """Why one item's task produced no result."""

    reason: str
    message: str


@dataclass(frozen=True)
class Outcome(Generic[T, R]):
    """One item and either its result or its failure."""

    item: T
    result: R | None
    failure: TaskFailure | None


def _call(func: Callable[[T], R], item: T) -> tuple[R | None, TaskFailure | None]:
    """Run ``func(item)``, turning any exception into a failure record (runs in the worker)."""
    try:
        return func(item), None
    except DicomIOError as exc:
        return None, TaskFailure(exc.reason, str(exc))
    except MemoryError:
        return None, TaskFailure("out-of-memory", "ran out of memory")
    except BaseException as exc:  # noqa: BLE001 - one bad file must not stop the run
        # BaseException too: a Rust decoder's pyo3 PanicException derives from it (and does
        # not pickle, so it would come back as a PicklingError that stops the run).
        return None, _error(exc)


def _call_chunk(func: Callable[[T], R], items: list[T]) -> list[tuple[R | None, TaskFailure | None]]:
    """:func:`_call` over a chunk of items, in the worker (one pickled round trip for all)."""
    return [_call(func, item) for item in items]


def _error(exc: BaseException) -> TaskFailure:
    return TaskFailure("error", f"{type(exc).__name__}: {exc}")


def _result(future: Future[tuple[R | None, TaskFailure | None]], timeout_s: float | None
            ) -> tuple[R | None, TaskFailure | None]:
    """A task's result or failure; a dead worker or a timeout is raised for the pool to handle."""
    try:
        return future.result(timeout=timeout_s)
    except (BrokenProcessPool, FutureTimeout):
        raise
    except Exception as exc:  # noqa: BLE001 - the result could not come back (it does not pickle)
        return None, _error(exc)


def default_workers() -> int:
    """Worker count when none is given: the CPUs this process may use, at most 8."""
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, min(8, os.cpu_count() or 1))


# -- lifetime: nothing outlives the main process -------------------------------------------------


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by another user
        return True
    return True


def _watch(parent: int, main: int | None) -> None:
    """Exit this process as soon as its parent is gone (it was re-parented) or ``main`` is."""
    while os.getppid() == parent and (main is None or _is_alive(main)):
        time.sleep(_WATCH_INTERVAL_S)
    os._exit(1)


def _start_watchdog(main: int | None = None) -> None:
    """End this process within about 0.5 s of its parent's (or ``main``'s) death, on any OS.

    A daemon thread polls ``os.getppid()``: a process whose parent dies is re-parented (to
    PID 1 or a subreaper), so a change means the parent is gone, and no reused PID can hide
    it. ``main`` is checked by PID, for a worker whose parent (the forkserver) outlives main.
    """
    watchdog = threading.Thread(target=_watch, args=(os.getppid(), main), name="dicom-io-watchdog", daemon=True)
    try:
        watchdog.start()
    except RuntimeError:  # pragma: no cover - no thread left; the run itself matters more
        pass


def _die_with_parent() -> None:
    """Have Linux SIGKILL this process the moment its parent dies (does nothing elsewhere).

    The signal follows the parent *thread* that forked this process, so it is only used in
    workers, whose parent (the forkserver) forks from its single thread. The forkserver
    itself relies on its watchdog: whichever thread of the main process happened to start
    it may end long before the main process does.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        pass  # the watchdog still applies


def _init_worker(main: int) -> None:
    """First thing in every worker: die with the forkserver and with the main process."""
    _die_with_parent()
    _start_watchdog(main)


def _in_forkserver() -> bool:
    """True in the forkserver process, where :data:`_PRELOAD` is imported (its workers
    inherit the imported module, so this runs once there)."""
    argv = getattr(sys, "orig_argv", [])
    return len(argv) >= 2 and argv[-2] == "-c" and argv[-1].startswith(_FORKSERVER_COMMAND)


# -- the pool ---------------------------------------------------------------------------------


def preload(*modules: str) -> None:
    """Have the forkserver import ``modules`` too (before it starts: the workers of every pool
    then start with them imported; once it runs, each worker imports them at first use).
    The night's study writer adds its module so a writer process starts in milliseconds."""
    _PRELOAD.extend(m for m in modules if m not in _PRELOAD)


def _new_pool(workers: int) -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(_PRELOAD))
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(os.getpid(),))


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` forkserver processes that die with this process (see the module
    docstring), for work that is not a stream of items (the night's study writer). Shut it
    down with :func:`stop_pool`.

    Raises:
        ValueError: ``workers`` is below 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers!r}")
    return _new_pool(workers)


def stop_pool(pool: ProcessPoolExecutor, *, wait: bool = True) -> None:
    """Shut ``pool`` down: after its work (``wait``), or at once, killing its processes."""
    if wait:
        pool.shutdown(wait=True)
    else:
        _kill(pool)


def run_tasks(
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 1,
    prefetch: int | None = None,
    timeout_s: float | None = 300.0,
    chunk_size: int = 1,
) -> Iterator[Outcome[T, R]]:
    """Apply a picklable ``func`` to every item, yielding outcomes in input order.

    Args:
        func: a module-level function (it is pickled to the workers).
        items: the inputs, consumed lazily.
        workers: worker processes to use, at least 1. Tasks never run in this process, so
            ``timeout_s`` and crash isolation hold with 1 worker too, for the price of a pool
            start per run and a pickled round trip per task.
        prefetch: items in flight at once (default ``4 * workers * chunk_size``); bounds memory
            when results are large (decoded images).
        timeout_s: seconds one task may take once it is the oldest in flight; ``None`` waits
            forever. The clock also covers starting its worker: milliseconds, but the first
            call in a process starts the forkserver too (under a second; it imports pydicom).
        chunk_size: items sent to a worker as one task (for cheap items, such as header reads,
            whose round trip would cost as much as the work). Outcomes stay per item; a chunk
            that crashes its worker or exceeds ``timeout_s`` has each of its items run again
            alone with the full timeout, so the culprit alone is marked (a hanging item then
            takes up to twice ``timeout_s``).

    Raises:
        ValueError: ``workers`` or ``chunk_size`` is below 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1 (tasks always run in worker processes), got {workers!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size!r}")
    window = max(1, -(-(prefetch or 4 * workers * chunk_size) // chunk_size))  # chunks in flight
    pool = _new_pool(workers)
    pending: deque[tuple[list[T], Future[Any]]] = deque()
    source = iter(items)
    try:
        while True:
            while len(pending) < window:
                chunk = list(islice(source, chunk_size))
                if not chunk:
                    break
                if chunk_size == 1:
                    pending.append((chunk, pool.submit(_call, func, chunk[0])))
                else:
                    pending.append((chunk, pool.submit(_call_chunk, func, chunk)))
            if not pending:
                return
            chunk, future = pending[0]
            try:
                done = _chunk_result(future, timeout_s) if chunk_size > 1 else [_result(future, timeout_s)]
            except (BrokenProcessPool, FutureTimeout) as exc:
                # one item timing out alone is the culprit; a chunk's items are tried again
                timed_out = isinstance(exc, FutureTimeout) and len(chunk) == 1
                in_flight = [it for its, _ in pending for it in its]
                pending.clear()
                _kill(pool)
                yield from _retry_alone(func, in_flight, timeout_s, first_timed_out=timed_out)
                pool = _new_pool(workers)
                continue
            pending.popleft()
            if done is None:  # the chunk's results could not come back: find which item's
                yield from _retry_alone(func, chunk, timeout_s, first_timed_out=False)
                continue
            for item, (result, failure) in zip(chunk, done):
                yield Outcome(item, result, failure)
    finally:
        _kill(pool)


def _chunk_result(future: Future[Any], timeout_s: float | None) -> list[tuple[Any, TaskFailure | None]] | None:
    """The per-item results of a chunk, or ``None`` when they could not come back (one of them
    does not pickle)."""
    try:
        return list(future.result(timeout=timeout_s))
    except (BrokenProcessPool, FutureTimeout):
        raise
    except Exception:  # noqa: BLE001 - a result that does not pickle: each item is tried alone
        return None


def _retry_alone(
    func: Callable[[T], R], items: list[T], timeout_s: float | None, *, first_timed_out: bool
) -> Iterator[Outcome[T, R]]:
    """Re-run each item of a failed batch in its own one-worker pool, to find the culprit."""
    for index, item in enumerate(items):
        if index == 0 and first_timed_out:
            yield Outcome(item, None, TaskFailure("timeout", f"took longer than {timeout_s} s"))
            continue
        pool = _new_pool(1)
        try:
            result, failure = _result(pool.submit(_call, func, item), timeout_s)
            yield Outcome(item, result, failure)
        except BrokenProcessPool:
            yield Outcome(item, None, TaskFailure("worker-crashed", "the worker process died on this file"))
        except FutureTimeout:
            yield Outcome(item, None, TaskFailure("timeout", f"took longer than {timeout_s} s"))
        finally:
            _kill(pool)


def _kill(pool: ProcessPoolExecutor) -> None:
    """Shut a pool down without waiting for stuck workers."""
    processes: dict[Any, Any] = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


if _in_forkserver():
    _start_watchdog()  # the forkserver exits once the main process (its parent) is gone
