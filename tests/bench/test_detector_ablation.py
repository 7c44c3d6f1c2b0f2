"""The detector ablation bench: each variant is a valid change of its baseline, and its
table reads a run's metrics as the engine writes them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from screen.commands.demo import ablation_lines
from tests.bench.test_bench_smoke import _load
from train.train_config import load_train_config

bench = _load("detector_ablation")


def _get(config: Any, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


@pytest.mark.parametrize("variant", bench.VARIANTS, ids=lambda v: v.name)
def test_each_variant_changes_exactly_what_it_says(variant: Any) -> None:
    base = load_train_config(bench.CONFIG, recipe="detector", overrides=dict(bench.BASELINE))
    overrides = bench.resolved_overrides(variant, 600, Path("/toy/run/best"))
    changed = load_train_config(bench.CONFIG, recipe="detector", overrides={**bench.BASELINE, **overrides})
    for key, value in overrides.items():
        assert _get(changed, key) == value
        assert _get(base, key) != value, f"{variant.name}: {key} is already {value!r} in the baseline"
    assert variant.overrides or variant.name == "baseline"
    # every run starts from the baseline: the table keeps its meaning as the committed config moves on
    sets = bench._overrides(variant, 600, 16, 100, 1, Path("/toy/run/best"))
    pairs = dict(item.split("=", 1) for item in sets[1::2])
    for key, value in bench.BASELINE.items():
        assert key in pairs and (key in overrides or pairs[key] == str(value))


def test_the_baseline_is_not_the_committed_config() -> None:
    """The committed config moved on (the toy start's box settings); the baseline pins the old."""
    committed = load_train_config(bench.CONFIG, recipe="detector")
    assert any(_get(committed, key) != value for key, value in bench.BASELINE.items())


def test_placeholders_resolve_and_the_toy_first_variant_needs_its_detector() -> None:
    known = {v.name: v for v in bench.VARIANTS}
    assert bench.resolved_overrides(known["box-ramp"], 600)["loss.box_ramp_steps"] == 300
    assert bench.resolved_overrides(known["toy-first"], 600, Path("/t/run/best"))["paligemma.base"] == "/t/run/best"
    with pytest.raises(ValueError, match="needs --toy-detector"):
        bench.resolved_overrides(known["toy-first"], 600)
    with pytest.raises(SystemExit):  # refused before any training starts
        bench.main(["--data", "d", "--work", "w", "--variants", "toy-first"])


def test_the_table_reads_the_last_and_the_best_epoch(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.csv"
    with metrics.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "step", "seconds", "study_auc", "box_recall"])
        writer.writeheader()
        writer.writerows([{"epoch": 1, "step": 100, "seconds": 10.5, "study_auc": 0.6, "box_recall": 0.10},
                          {"epoch": 2, "step": 200, "seconds": 9.0, "study_auc": 0.7, "box_recall": 0.40},
                          {"epoch": 3, "step": 300, "seconds": 9.5, "study_auc": 0.8, "box_recall": 0.30}])
    read = bench.read_metrics(metrics)
    assert read == {"last": {"step": 300.0, "box_recall": 0.3, "study_auc": 0.8},
                    "best": {"step": 200.0, "box_recall": 0.4, "study_auc": 0.7}, "train_seconds": 29.0}
    result = {"command": "python -m bench.detector_ablation --steps 300", "budget": {"steps": 300, "batch": 16},
              "rows": [{"name": "baseline", "change": "the baseline", **read},
                       {"name": "no-ciou", "change": "no CIoU loss", "exit": 1}]}
    lines = ablation_lines(result)
    assert "| baseline | the baseline | 0.300 (0.400, 200) | 0.800 |" in lines
    assert "| no-ciou | no CIoU loss | no figures (exit 1) | |" in lines
    assert "300 steps of batch 16" in lines[0] and "same seed and data," in lines[0]
    assert "and data (the rods phantom), 300" in ablation_lines({**result, "data": "the rods phantom"})[0]


def test_the_demo_md_section_is_put_in_once_and_replaced() -> None:
    """``--demo-md``: the ablation section goes in before the aims paragraph; a second run
    replaces it rather than adding another; the rest of DEMO.md is left as it was."""
    from screen.commands.demo import ABLATION_HEADING, with_ablation_section

    demo = "# Demo\n\n## Boxes\n\n| a |\n\nAims (issue 14), on the set.\n"
    first = {"command": "c1", "budget": {"steps": 300, "batch": 16},
             "rows": [{"name": "committed", "change": "as committed", "exit": 1}]}
    second = {"command": "c2", "budget": {"steps": 600, "batch": 16},
              "rows": [{"name": "no-ciou", "change": "no CIoU loss", "exit": 1}]}
    once = with_ablation_section(demo, first)
    assert once.index("## Boxes") < once.index(ABLATION_HEADING) < once.index("Aims (issue 14)")
    assert "| committed |" in once and once.endswith("Aims (issue 14), on the set.\n")
    twice = with_ablation_section(once, second)
    assert twice.count(ABLATION_HEADING) == 1 and "| committed |" not in twice and "| no-ciou |" in twice
    assert "600 steps" in twice
    assert twice[:twice.index(ABLATION_HEADING)] + twice[twice.index("Aims (issue 14)"):] == demo
    bare = with_ablation_section("# Demo\n", first)
    assert bare.startswith("# Demo\n\n" + ABLATION_HEADING)
