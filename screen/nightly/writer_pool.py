"""Where the night's studies are finished (:func:`screen.nightly.study_job.write_study`).

- :class:`ProcessWriters`: ``[run] writers`` forkserver processes (the default, 1): fusion and the
  SR, GSPS, SC and thumbnail writing leave the process that feeds the members;
- :class:`InlineWriters`: the main process itself (``[run] writers = 0``);
- the Ray engine's :class:`screen.nightly.ray_engine.RayWriters`: Ray tasks.

All hand results back in submission order and never touch the ledger: the driver records each
study from its result. A writer's exception comes back as the study's result (the driver fails
that study, or stops the night for a full disk); a writer process that dies fails the studies it
held, and a new one takes the rest.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Protocol

from dicom_io.workers import preload, stop_pool, worker_pool
from screen.nightly.study_job import StudyJob, StudyWritten, write_study

__all__ = ["InlineWriters", "ProcessWriters", "StudyWriters", "Written"]

#: A study's result: what was written, or why not.
Written = StudyWritten | BaseException

preload("screen.nightly.study_job")  # a writer process starts with highdicom and the writers imported


class StudyWriters(Protocol):
    """Finishes studies somewhere and hands their results back in submission order."""

    def submit(self, key: str, job: StudyJob) -> None:
        """Start finishing ``job`` (may wait while too many are in flight)."""

    def finished(self, *, wait: bool) -> list[tuple[str, Written]]:
        """The results ready now, in submission order (``wait``: every one submitted)."""

    def close(self) -> None:
        """Stop; work not handed back is abandoned (its files are swept by the next run)."""


class InlineWriters:
    """Finishes each study in this process, at once."""

    def __init__(self) -> None:
        self._done: list[tuple[str, Written]] = []

    def submit(self, key: str, job: StudyJob) -> None:
        try:
            self._done.append((key, write_study(job)))
        except Exception as exc:  # noqa: BLE001 - handed back as the study's result
            self._done.append((key, exc))

    def finished(self, *, wait: bool) -> list[tuple[str, Written]]:
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        self._done.clear()


class ProcessWriters:
    """Finishes studies in ``workers`` processes, at most ``in_flight`` at a time (``func``: a
    module-level function in place of :func:`write_study`, for tests)."""

    def __init__(self, workers: int, *, in_flight: int | None = None,
                 func: Callable[[StudyJob], StudyWritten] = write_study) -> None:
        self._func = func
        self._workers = workers
        self._limit = in_flight or 4 * workers
        self._pool = worker_pool(workers)
        self._pending: deque[tuple[str, Future[StudyWritten]]] = deque()

    def submit(self, key: str, job: StudyJob) -> None:
        if len(self._pending) >= self._limit:
            self._pending[0][1].exception()  # wait for the oldest; handed back by finished()
        try:
            future = self._pool.submit(self._func, job)
        except BrokenProcessPool:
            self._replace_pool()
            future = self._pool.submit(self._func, job)
        self._pending.append((key, future))

    def finished(self, *, wait: bool) -> list[tuple[str, Written]]:
        done: list[tuple[str, Written]] = []
        while self._pending and (wait or self._pending[0][1].done()):
            key, future = self._pending.popleft()
            try:
                done.append((key, future.result()))
            except BrokenProcessPool as exc:  # the writer died (killed, out of memory): this study fails
                done.append((key, exc))
                self._replace_pool()
            except Exception as exc:  # noqa: BLE001 - the study's own failure
                done.append((key, exc))
        return done

    def _replace_pool(self) -> None:
        """A new pool for the studies still to come; those the dead one held fail as they come back."""
        stop_pool(self._pool, wait=False)
        self._pool = worker_pool(self._workers)

    def close(self) -> None:
        stop_pool(self._pool, wait=not self._pending)
        self._pending.clear()
