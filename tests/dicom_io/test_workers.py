"""run_tasks: order kept, exceptions become failures, a crashing or hanging file is isolated.

The task function is ``builtins.eval`` over expression strings, so each item chooses its own
behaviour (return, raise, kill its worker, hang) while staying picklable for the workers.
"""

from __future__ import annotations

import pytest

from dicom_io.workers import run_tasks


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_order_and_exceptions_are_failures(workers: int) -> None:
    items = [f"{i} * 2" for i in range(10)] + ["1 / 0"]
    outcomes = list(run_tasks(eval, items, workers=workers, prefetch=3))
    assert [o.item for o in outcomes] == items
    assert [o.result for o in outcomes[:10]] == [i * 2 for i in range(10)]
    failure = outcomes[-1].failure
    assert failure is not None and failure.reason == "error" and "ZeroDivisionError" in failure.message


def test_a_worker_crash_marks_only_the_culprit() -> None:
    items = ["1", "2", "__import__('os')._exit(3)", "4", "5"]
    outcomes = list(run_tasks(eval, items, workers=2))
    assert [o.item for o in outcomes] == items
    assert [o.result for o in outcomes] == [1, 2, None, 4, 5]
    failure = outcomes[2].failure
    assert failure is not None and failure.reason == "worker-crashed"


def test_a_hanging_task_times_out_and_the_rest_complete() -> None:
    items = ["1", "__import__('time').sleep(60)", "3"]
    outcomes = list(run_tasks(eval, items, workers=2, timeout_s=2.0))
    assert [o.result for o in outcomes] == [1, None, 3]
    failure = outcomes[1].failure
    assert failure is not None and failure.reason == "timeout"
