"""Smoke tests of the ingest bench, the per-stage costs and the throughput model (issue 18):
they run at tiny size and report; nothing here asserts on a timing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # ``bench`` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from bench.cputime import measure  # noqa: E402
from bench.ingest import measure_ingest, report, write_small_archive  # noqa: E402
from bench.throughput import ASSUMED_GPU_RATES, format_projection, member_rates, project  # noqa: E402
from dicom_io.workers import run_tasks  # noqa: E402

COSTS = {"files": 12.0, "images": 10.0, "studies": 5.0, "index": 1.0, "decode": 40.0, "rest": 20.0,
         "ledger": 5.0}


def test_worker_cpu_is_counted_once_the_workers_are_reaped() -> None:
    """The point of bench/cputime.py: CPU spent in a worker process shows in the pass."""
    _, cost = measure(lambda: list(run_tasks(eval, ["sum(range(3_000_000))"] * 2, workers=1)))
    assert cost.cpu_s - cost.main_cpu_s >= 0.05, cost  # the sums ran in the worker


def test_ingest_bench_runs_every_pass_and_reports_the_ratios(tmp_path: Path) -> None:
    archive = write_small_archive(tmp_path / "small", 6)
    stages = measure_ingest(archive, repeat=1, workers=(1,))
    names = [s.name for s in stages]
    assert names == ["header-plain", "index-1", "pixel-plain", "decode-here", "decode-1"]
    assert all(s.items == 6 and s.cost.cpu_s > 0 for s in stages)
    text = report(stages)
    assert "index-1 per core" in text and "decode-1 per core" in text and "pipeline steps" in text


def test_projection_names_the_smallest_limit() -> None:
    one = project(COSTS, {"a": 10.0, "b": 10.0}, nodes=1, cores=16, gpus=1)
    assert one.gpu_images_s == pytest.approx(5.0)  # two members share the card in turn
    assert one.cpu_images_s == pytest.approx(16 * 1000.0 / (1.0 * 12 / 10 + 40.0 + 20.0))
    assert one.driver_images_s == pytest.approx(200.0)
    assert one.bottleneck == "gpu" and one.studies_per_hour == pytest.approx(3600 * 5.0 / 2)
    many = project(COSTS, {"a": 10.0, "b": 10.0}, nodes=100, cores=16, gpus=1)
    assert many.bottleneck == "driver" and many.studies_per_hour == pytest.approx(3600 * 200.0 / 2)
    starved = project(COSTS, {"a": 1e6}, nodes=1, cores=1, gpus=8)
    assert starved.bottleneck == "cpu"
    with pytest.raises(ValueError, match="at least one member rate"):
        project(COSTS, {}, nodes=1, cores=1, gpus=1)


def test_projection_says_which_rates_are_assumed() -> None:
    rates, assumed = member_rates({"cls": "paligemma-classifier", "det": "detr"}, {"det": 33.0})
    assert rates == {"cls": ASSUMED_GPU_RATES["paligemma-classifier"], "det": 33.0} and assumed == ["cls"]
    text = format_projection(COSTS, rates, assumed, [project(COSTS, rates, nodes=2, cores=16, gpus=1)], 16, 1)
    assert "(assumed)" in text and "(given)" in text and "measured here" in text
    assert text.splitlines()[-1].split()[0] == "2"


def test_stage_costs_of_a_tiny_night(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from bench.run import format_costs, stage_costs
    from screen.site_config import load_site_config

    archive = write_small_archive(tmp_path / "small", 2)
    costs = stage_costs(archive, load_site_config(None), members=False)
    assert (costs["files"], costs["images"], costs["studies"]) == (2.0, 2.0, 1.0)
    assert costs["decode"] > 0 and costs["members"] > 0 and costs["rest"] > 0
    assert costs["ledger-wall"] > 0 and costs["ledger"] > 0
    assert "rest (fusion, writers, ledger)" in format_costs(costs)
