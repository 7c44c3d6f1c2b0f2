"""run_tasks with chunk_size > 1: outcomes stay per item, and a chunk's crash, hang or
unpicklable result is charged to its culprit alone (``builtins.eval`` items, as in
test_workers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_io.discover import discover
from dicom_io.scan import INDEX_CHUNK, IndexTask, index_one, scan_archive
from dicom_io.select import SelectionRules
from dicom_io.workers import run_tasks

TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def warm_forkserver() -> None:
    assert [o.result for o in run_tasks(eval, ["0"])] == [0]


@pytest.mark.parametrize("workers", [1, 2])
def test_chunks_keep_order_and_per_item_failures(workers: int) -> None:
    items = [f"{i} * 2" for i in range(10)] + ["1 / 0", "7"]
    outcomes = list(run_tasks(eval, items, workers=workers, chunk_size=4, prefetch=5))
    assert [o.item for o in outcomes] == items
    assert [o.result for o in outcomes] == [i * 2 for i in range(10)] + [None, 7]
    failure = outcomes[10].failure
    assert failure is not None and failure.reason == "error" and "ZeroDivisionError" in failure.message


@pytest.mark.parametrize("workers", [1, 2])
def test_a_crash_in_a_chunk_marks_only_the_culprit(workers: int) -> None:
    items = ["1", "2", "__import__('os')._exit(3)", "4", "5", "6", "7"]
    outcomes = list(run_tasks(eval, items, workers=workers, chunk_size=3))
    assert [o.item for o in outcomes] == items
    assert [o.result for o in outcomes] == [1, 2, None, 4, 5, 6, 7]
    failure = outcomes[2].failure
    assert failure is not None
    assert (failure.reason, failure.message) == ("worker-crashed", "the worker process died on this file")


@pytest.mark.usefixtures("warm_forkserver")
def test_a_hang_in_a_chunk_times_out_alone() -> None:
    items = ["1", "__import__('time').sleep(60)", "3", "4"]
    outcomes = list(run_tasks(eval, items, workers=1, chunk_size=3, timeout_s=TIMEOUT_S))
    assert [o.result for o in outcomes] == [1, None, 3, 4]
    failure = outcomes[1].failure
    assert failure is not None
    assert (failure.reason, failure.message) == ("timeout", f"took longer than {TIMEOUT_S} s")


def test_an_unpicklable_result_in_a_chunk_fails_alone() -> None:
    outcomes = list(run_tasks(eval, ["1", "lambda: 0", "3"], workers=1, chunk_size=3))
    assert [o.result for o in outcomes] == [1, None, 3]
    failure = outcomes[1].failure
    assert failure is not None and failure.reason == "error" and failure.message.startswith("PicklingError: ")


def test_chunk_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^chunk_size must be at least 1, got 0$"):
        next(run_tasks(eval, ["1"], chunk_size=0))


def test_index_one_is_a_plain_function_of_its_task(write_dicom, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What a worker (or a Ray task) runs: read and select one file, in this process too."""
    write_dicom("a.dcm")
    write_dicom("sr.dcm", with_pixels=False)
    found = {f.path.name: f for f in discover(tmp_path).found}
    image = index_one(IndexTask(found["a.dcm"], SelectionRules()))
    assert image.refusal is None and image.selection is not None and image.selection.selected
    report = index_one(IndexTask(found["sr.dcm"], SelectionRules()))
    assert report.selection is not None and report.selection.reason == "no-pixel-data"
    assert report.instance.has_pixel_data is False


def test_scan_rows_are_the_same_with_one_and_two_workers(write_dicom, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """More files than a chunk: the rows do not depend on how the files were shared out."""
    for index in range(INDEX_CHUNK + 5):
        write_dicom(f"f{index:03d}.dcm", InstanceNumber=index)
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    one, two = scan_archive(tmp_path, workers=1), scan_archive(tmp_path, workers=2)
    assert [r.as_dict() for r in one.rows] == [r.as_dict() for r in two.rows]
    assert len(one.selected) == INDEX_CHUNK + 5
