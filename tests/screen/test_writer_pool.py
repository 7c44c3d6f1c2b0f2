"""The night's study writers: results in submission order, a study's exception handed back as
its result, a writer process that dies failing only the studies it held."""

from __future__ import annotations

import dataclasses
from functools import partial
from concurrent.futures.process import BrokenProcessPool

from screen.nightly.study_job import StudyJob, write_study
from screen.nightly.writer_pool import InlineWriters, ProcessWriters


def _broken_job(tag: str) -> StudyJob:
    """A job whose writing fails at once (no output settings): its AttributeError is the result."""
    job = StudyJob(**{f.name: None for f in dataclasses.fields(StudyJob)})
    return dataclasses.replace(job, run_id=tag)


def test_a_writer_process_hands_back_each_studys_failure_in_order() -> None:
    writers = ProcessWriters(1, in_flight=2)
    try:
        for key in ("a", "b", "c"):
            writers.submit(key, _broken_job(key))  # the third waits for the first: 2 in flight
        done = writers.finished(wait=True)
    finally:
        writers.close()
    assert [key for key, _ in done] == ["a", "b", "c"]
    assert all(isinstance(result, AttributeError) and "mode_bits" in str(result) for _, result in done)


def test_a_writer_that_dies_fails_its_study_and_a_new_one_takes_the_next() -> None:
    dies = partial(eval, "__import__('os')._exit(1)", {})  # a writer process that exits mid-study
    writers = ProcessWriters(1, func=dies)
    try:
        writers.submit("crash", {})  # type: ignore[arg-type]  # eval's locals
        first = writers.finished(wait=True)
        writers._func = write_study  # the real writer again
        writers.submit("next", _broken_job("next"))
        second = writers.finished(wait=True)
    finally:
        writers.close()
    assert first[0][0] == "crash" and isinstance(first[0][1], BrokenProcessPool)
    assert second[0][0] == "next" and isinstance(second[0][1], AttributeError)  # written (and failed) by a new process


def test_a_full_disk_in_a_writer_process_comes_back_with_its_errno() -> None:
    """The driver stops the night on an environment error (``is_environment_error`` reads the
    errno): it must survive the trip back from the writer process."""
    import errno

    from screen.errors import is_environment_error

    fills_up = partial(eval, "(_ for _ in ()).throw(OSError(28, 'No space left on device'))", {})
    writers = ProcessWriters(1, func=fills_up)
    try:
        writers.submit("full", {})  # type: ignore[arg-type]  # eval's locals
        (key, result), = writers.finished(wait=True)
    finally:
        writers.close()
    assert key == "full" and isinstance(result, OSError) and result.errno == errno.ENOSPC
    assert is_environment_error(result)


def test_inline_writers_run_in_this_process() -> None:
    writers = InlineWriters()
    writers.submit("a", _broken_job("a"))
    (key, result), = writers.finished(wait=False)
    assert key == "a" and isinstance(result, AttributeError)
    assert writers.finished(wait=True) == []
