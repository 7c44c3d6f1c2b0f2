"""run_tasks: order kept, exceptions become failures, a crashing or hanging file is isolated.

The task function is ``builtins.eval`` over expression strings, so each item chooses its own
behaviour (return, raise, kill its worker, hang) while staying picklable for the workers.
Crashes and hangs are checked with 1 worker too: tasks never run in the test process, so
a crash cannot take pytest down and a hang becomes a ``timeout``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from dicom_io.pixels import PixelPolicy
from dicom_io.decode import DecodeTask, decode_one
from dicom_io.workers import Outcome, run_tasks

#: The timeout for hanging tasks. Its clock also covers starting a worker, so it is kept well
#: above that (about 0.01 s, or up to 1 s on a loaded machine for a cold forkserver, which the
#: ``warm_forkserver`` fixture starts beforehand).
TIMEOUT_S = 2.0

#: Far above any timeout used here: a run still going by then hangs (the bug), not slow.
HANG_S = 60.0


@pytest.fixture(scope="module")
def warm_forkserver() -> None:
    """Start the forkserver (it imports pydicom and numpy) before the timeout tests."""
    assert [o.result for o in run_tasks(eval, ["0"])] == [0]


def _run_unless_hung(fifo: Path, func: Callable[[Any], Any], items: list[Any], **kwargs: Any
                     ) -> tuple[list[Outcome[Any, Any]], float]:
    """``list(run_tasks(...))`` and its seconds; fails instead of hanging if a read of ``fifo``
    blocks this process (a writer is then opened, which releases the reader)."""
    outcomes: list[Outcome[Any, Any]] = []
    start = time.monotonic()
    runner = threading.Thread(target=lambda: outcomes.extend(run_tasks(func, items, **kwargs)), daemon=True)
    runner.start()
    runner.join(HANG_S)
    if runner.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        runner.join(5)
        pytest.fail(f"run_tasks hung on the FIFO for {HANG_S} s instead of timing it out")
    return outcomes, time.monotonic() - start


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_order_and_exceptions_are_failures(workers: int) -> None:
    items = [f"{i} * 2" for i in range(10)] + ["1 / 0"]
    outcomes = list(run_tasks(eval, items, workers=workers, prefetch=3))
    assert [o.item for o in outcomes] == items
    assert [o.result for o in outcomes[:10]] == [i * 2 for i in range(10)]
    failure = outcomes[-1].failure
    assert failure is not None and failure.reason == "error" and "ZeroDivisionError" in failure.message


@pytest.mark.parametrize(("item", "message"), [
    # what a Rust decoder raises: pyo3's PanicException derives from BaseException, pickles not
    ("exec('class PanicException(BaseException): pass\\nraise PanicException(\\'unwrap on None\\')')",
     "PanicException: unwrap on None"),
    ("__import__('sys').exit(4)", "SystemExit: 4"),
    ("lambda: 0", "PicklingError: "),  # a result that cannot come back from the worker
], ids=["unpicklable-base-exception", "system-exit", "unpicklable-result"])
def test_what_a_worker_cannot_send_back_is_a_failure_not_a_crash_of_the_run(item: str, message: str) -> None:
    outcomes = list(run_tasks(eval, ["1", item, "3"], workers=1))
    assert [o.result for o in outcomes] == [1, None, 3]
    failure = outcomes[1].failure
    assert failure is not None and failure.reason == "error" and failure.message.startswith(message)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("crash", [
    "__import__('os')._exit(3)",
    "__import__('os').kill(__import__('os').getpid(), __import__('signal').SIGSEGV)",
], ids=["exit", "segfault"])
def test_a_worker_crash_marks_only_the_culprit(workers: int, crash: str) -> None:
    items = ["1", "2", crash, "4", "5"]
    outcomes = list(run_tasks(eval, items, workers=workers))
    assert [o.item for o in outcomes] == items
    assert [o.result for o in outcomes] == [1, 2, None, 4, 5]
    assert [o.failure for o in outcomes[:2] + outcomes[3:]] == [None] * 4
    failure = outcomes[2].failure
    assert failure is not None
    assert (failure.reason, failure.message) == ("worker-crashed", "the worker process died on this file")


@pytest.mark.usefixtures("warm_forkserver")
@pytest.mark.parametrize("workers", [1, 2])
def test_a_hanging_task_times_out_and_the_rest_complete(workers: int) -> None:
    items = ["1", "__import__('time').sleep(60)", "3"]
    outcomes = list(run_tasks(eval, items, workers=workers, timeout_s=TIMEOUT_S))
    assert [o.result for o in outcomes] == [1, None, 3]
    failure = outcomes[1].failure
    assert failure is not None
    assert (failure.reason, failure.message) == ("timeout", f"took longer than {TIMEOUT_S} s")


@pytest.mark.usefixtures("warm_forkserver")
@pytest.mark.parametrize("workers", [1, 2])
def test_a_fifo_that_blocks_open_times_out_and_the_rest_complete(workers: int, tmp_path: Path) -> None:
    fifo = tmp_path / "swapped.dcm"
    os.mkfifo(fifo)
    items = ["1", f"open({str(fifo)!r}, 'rb').read()", "3", "4"]
    outcomes, seconds = _run_unless_hung(fifo, eval, items, workers=workers, timeout_s=TIMEOUT_S)
    assert [o.item for o in outcomes] == items
    assert [o.result for o in outcomes] == [1, None, 3, 4]
    assert [o.failure for o in outcomes[:1] + outcomes[2:]] == [None] * 3
    failure = outcomes[1].failure
    assert failure is not None
    assert (failure.reason, failure.message) == ("timeout", f"took longer than {TIMEOUT_S} s")
    assert seconds < 30, "roughly the timeout, not a hang (generous for a loaded machine)"


@pytest.mark.usefixtures("warm_forkserver")
def test_a_fifo_swapped_in_for_a_dicom_file_does_not_stop_decoding(
    write_dicom: Callable[..., Path], tmp_path: Path
) -> None:
    """The nightly case: a scanned ``.dcm`` is replaced by a FIFO before it is decoded."""
    paths = [write_dicom("a.dcm"), tmp_path / "b.dcm", write_dicom("c.dcm")]
    os.mkfifo(paths[1])
    tasks = [DecodeTask(path, PixelPolicy()) for path in paths]
    outcomes, _ = _run_unless_hung(paths[1], decode_one, tasks, workers=1, timeout_s=TIMEOUT_S)
    assert [o.item.path for o in outcomes] == paths
    assert [o.failure.reason if o.failure else None for o in outcomes] == [None, "timeout", None]
    assert outcomes[0].result is not None and outcomes[0].result.pixels.shape == (32, 24)
    assert outcomes[2].result is not None and outcomes[2].result.pixels.shape == (32, 24)


def test_no_workers_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^workers must be at least 1 \(tasks always run in worker processes\), got 0$"):
        next(run_tasks(eval, ["1"], workers=0))
