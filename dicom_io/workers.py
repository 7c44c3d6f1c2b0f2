"""Run per-file work (header reads, pixel decoding) in worker processes, robustly.

Workers come from a ``forkserver`` context: each is forked from a clean server process that
has imported only :mod:`dicom_io`, never from a parent that may hold torch threads or a GPU.
Results come back in input order with a bounded number of items in flight, so a consumer
(the model loop) runs while the next images decode.

A file must never stop the run: an exception becomes a :class:`TaskFailure` with the
error's reason code; a worker that dies (a decoder crash) or a task that exceeds
``timeout_s`` is charged to the files in flight, the pool is replaced, and those files are
retried once each alone, so only the culprit is marked failed (``worker-crashed`` or
``timeout``).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from dicom_io.errors import DicomIOError

T = TypeVar("T")
R = TypeVar("R")

#: Modules a forkserver worker imports once, before any task arrives.
_PRELOAD = ["dicom_io.index", "dicom_io.pixels", "dicom_io.select"]


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
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
        return None, TaskFailure("error", f"{type(exc).__name__}: {exc}")


def default_workers() -> int:
    """Worker count when none is given: the CPUs this process may use, at most 8."""
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, min(8, os.cpu_count() or 1))


def _new_pool(workers: int) -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def run_tasks(
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 1,
    prefetch: int | None = None,
    timeout_s: float | None = 300.0,
) -> Iterator[Outcome[T, R]]:
    """Apply a picklable ``func`` to every item, yielding outcomes in input order.

    Args:
        func: a module-level function (it is pickled to the workers).
        items: the inputs, consumed lazily.
        workers: processes to use; 1 runs in this process (no pool, no timeout).
        prefetch: items in flight at once (default ``4 * workers``); bounds memory when
            results are large (decoded images).
        timeout_s: seconds one item may take once it is the oldest in flight; ``None`` waits
            forever.
    """
    if workers <= 1:
        for item in items:
            result, failure = _call(func, item)
            yield Outcome(item, result, failure)
        return
    window = prefetch or 4 * workers
    pool = _new_pool(workers)
    pending: deque[tuple[T, Future[tuple[R | None, TaskFailure | None]]]] = deque()
    source = iter(items)
    try:
        while True:
            while len(pending) < window:
                try:
                    item = next(source)
                except StopIteration:
                    break
                pending.append((item, pool.submit(_call, func, item)))
            if not pending:
                return
            item, future = pending[0]
            try:
                result, failure = future.result(timeout=timeout_s)
            except (BrokenProcessPool, FutureTimeout) as exc:
                timed_out = isinstance(exc, FutureTimeout)
                in_flight = [it for it, _ in pending]
                pending.clear()
                _kill(pool)
                yield from _retry_alone(func, in_flight, timeout_s, first_timed_out=timed_out)
                pool = _new_pool(workers)
                continue
            pending.popleft()
            yield Outcome(item, result, failure)
    finally:
        _kill(pool)


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
            result, failure = pool.submit(_call, func, item).result(timeout=timeout_s)
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
