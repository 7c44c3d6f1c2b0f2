"""TOML training configs into typed, validated tables: defaults, validation, overrides."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from ensembles.config_model import ConfigModel
from train.config_base import parse_table
from train.recipes.sections import RECIPE_TABLES, REFINER_LOSSES, DetrSection
from train.train_config import (
    DECISION_LOSSES,
    METHODS,
    PRECISIONS,
    PROGRESS,
    QUANTIZATIONS,
    RECIPE_NAMES,
    SCHEDULES,
    SCHEMA_VERSION,
    LoopConfig,
    config_from_dict,
    load_train_config,
    parse_override,
)
from train.errors import TrainConfigError

REPO = Path(__file__).resolve().parents[2]
BASE = {"data": "d", "out": "o", "paligemma": {"base": "models/x"}}


@pytest.mark.parametrize("name", ["classifier", "detector"])
def test_example_configs_load_with_the_papers_defaults(name: str) -> None:
    path = REPO / "train" / "configs" / f"{name}.toml"
    text = path.read_text()
    assert f"screen train {name} --config train/configs/{name}.toml" in text
    config = load_train_config(path, recipe=name)
    assert config.recipe == name and config.source == path
    assert (config.train.batch_size, config.train.grad_accum, config.train.epochs) == (2, 8, 50)
    assert config.train.monitor == "f1" and config.train.precision == "auto"
    assert config.optim.lr == 2e-5 and config.optim.warmup_steps == 2
    assert config.optim.schedule == "cosine" and config.optim.weight_decay == 1e-6
    assert config.optim.betas == (0.9, 0.999)
    assert config.paligemma is not None and config.paligemma.siglip_unfreeze == 5
    assert (config.paligemma.lora_r, config.paligemma.lora_alpha, config.paligemma.lora_dropout) == (16, 32, 0.05)


@pytest.mark.parametrize("name, recipe", [("tiny-classifier", "classifier"), ("tiny-detector", "detector")])
def test_tiny_cpu_configs_load(name: str, recipe: str) -> None:
    path = REPO / "train" / "configs" / f"{name}.toml"
    if not path.is_file():
        pytest.skip(f"{path.name} not written")
    assert f"screen train {recipe} --config train/configs/{name}.toml" in path.read_text()
    config = load_train_config(path, recipe=recipe)
    assert config.paligemma is not None and config.paligemma.tiny
    assert config.paligemma.siglip_unfreeze == -1 and config.device == "cpu"


def test_every_demo_config_loads_with_its_section_and_names_its_command() -> None:
    from train.demo import DEMO_MEMBERS, DEMO_REFINER
    from train.recipes.detr import DetrSection
    from train.recipes.refiner import RefinerSection

    for member in DEMO_MEMBERS + (DEMO_REFINER,):
        path = REPO / "train" / "configs" / member.config
        assert f"screen train {member.recipe} --config train/configs/{member.config}" in path.read_text()
        config = load_train_config(path, recipe=member.recipe)
        assert config.device == "cpu" and config.train.max_steps > 0
        if member.recipe == "detr":
            assert config.section("detr", DetrSection).name == member.name
        elif member.recipe == "refiner":
            section = config.section("refiner", RefinerSection)
            assert section.name == member.name and section.refiner_config().pad_ratio >= section.shift
        else:
            assert config.paligemma is not None and config.paligemma.name == member.name


def test_defaults_are_the_paper_recipe() -> None:
    config = config_from_dict(BASE)
    assert config.train.batch_size == 2 and config.train.grad_accum == 8
    assert config.optim.lr == 2e-5 and config.loss.decision == "ce"
    assert config.paligemma is not None and config.paligemma.method == "full"
    assert config.paligemma.quantization == "4bit"
    assert config.train.monitor_mode == "max"
    assert LoopConfig(monitor="val_loss").monitor_mode == "min"


def test_unknown_key_names_it_and_the_valid_keys() -> None:
    with pytest.raises(TrainConfigError) as info:
        config_from_dict({**BASE, "train": {"epoch": 3}})
    message = str(info.value)
    assert "[train] has unknown key(s) epoch" in message and "epochs" in message


def test_wrong_types_and_ranges_are_refused() -> None:
    with pytest.raises(TrainConfigError, match=r"\[train\] batch_size must be an integer, got 'two'"):
        config_from_dict({**BASE, "train": {"batch_size": "two"}})
    with pytest.raises(TrainConfigError, match=r"\[optim\] lr must be > 0"):
        config_from_dict({**BASE, "optim": {"lr": -1.0}})
    with pytest.raises(TrainConfigError, match="decision must be one of ce, wce, focal, none"):
        config_from_dict({**BASE, "loss": {"decision": "hinge"}})
    with pytest.raises(TrainConfigError, match=r"class_weights must list 2 values"):
        config_from_dict({**BASE, "loss": {"class_weights": [1.0]}})
    with pytest.raises(TrainConfigError, match="siglip_unfreeze must be >= 0"):
        config_from_dict({**BASE, "paligemma": {"base": "x", "siglip_unfreeze": -2}})
    with pytest.raises(TrainConfigError, match="needs base"):
        config_from_dict({**BASE, "paligemma": {}})
    with pytest.raises(TrainConfigError, match="unknown top-level key 'epochs'"):
        config_from_dict({**BASE, "epochs": 3})


def test_missing_data_or_out() -> None:
    with pytest.raises(TrainConfigError, match="needs out"):
        config_from_dict({"data": "d"})


def test_overrides_and_recipe_check(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('recipe = "classifier"\ndata = "d"\nout = "o"\n[paligemma]\nbase = "b"\n')
    overrides = dict(parse_override(t) for t in ["train.epochs=3", "optim.lr=1e-3",
                                                   "paligemma.prompt=Detect Fracture"])
    config = load_train_config(path, recipe="classifier", overrides=overrides)
    assert config.train.epochs == 3 and config.optim.lr == 1e-3
    assert config.paligemma is not None and config.paligemma.prompt == "Detect Fracture"
    with pytest.raises(TrainConfigError, match="screen train classifier"):
        load_train_config(path, recipe="detector")
    with pytest.raises(TrainConfigError, match="section.key=value"):
        parse_override("novalue")
    with pytest.raises(TrainConfigError, match="does not exist"):
        load_train_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("data = \n")
    with pytest.raises(TrainConfigError, match="not valid TOML"):
        load_train_config(bad)


class _DetrLike(ConfigModel):
    backbone: str = "resnet18"
    num_queries: int = 20
    image_size: int = 256


def test_recipe_tables_parse_with_parse_table() -> None:
    config = config_from_dict({"data": "d", "out": "o", "detr": {"num_queries": 5}})
    section = config.section("detr", _DetrLike)
    assert section == _DetrLike(num_queries=5)
    assert config.section("refiner", _DetrLike) == _DetrLike()
    with pytest.raises(TrainConfigError, match=r"\[detr\] has unknown key\(s\) queries"):
        parse_table(_DetrLike, {"queries": 3}, "detr")


def test_fingerprint_ignores_what_a_resume_may_change() -> None:
    a = config_from_dict({**BASE, "train": {"epochs": 2, "resume": True}})
    b = config_from_dict({**BASE, "train": {"epochs": 9, "resume": False, "progress": "off"}})
    c = config_from_dict({**BASE, "optim": {"lr": 1e-4}})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert a.to_dict()["data"] == "d"


# --- every kind of problem keeps its wording -------------------------------------------------

TABLES = {"train": "batch_size", "optim": "lr", "loss": "decision", "paligemma": "base",
          "detr": "num_queries", "refiner": "jitter"}


def _refused(data: dict[str, Any]) -> str:
    with pytest.raises(TrainConfigError) as info:
        config_from_dict(data)
    return str(info.value)


def _with(table: str, key: str, value: Any) -> dict[str, Any]:
    """BASE with ``[table] key = value`` (``table`` empty: a top-level key)."""
    if not table:
        return {**BASE, key: value}
    current = dict(BASE.get(table, {})) if isinstance(BASE.get(table), dict) else {}
    return {**BASE, table: {**current, key: value}}


def test_an_unknown_top_level_key_lists_the_valid_keys_and_tables() -> None:
    assert _refused({**BASE, "epochs": 3}) == (
        "unknown top-level key 'epochs'; valid keys: data, device, out, recipe, schema_version, "
        "seed and tables [train], [optim], [loss], [paligemma], [appearance], [detr], [refiner]")
    assert "unknown top-level key 'trian'" in _refused({**BASE, "trian": {"epochs": 3}})  # a table too


@pytest.mark.parametrize("table", sorted(TABLES))
def test_an_unknown_key_in_each_table_names_it_and_the_valid_keys(table: str) -> None:
    message = _refused(_with(table, "bogus", 1))
    prefix = f"[{table}] has unknown key(s) bogus; valid keys: "
    assert message.startswith(prefix), message
    assert TABLES[table] in message.removeprefix(prefix).split(", ")


@pytest.mark.parametrize("table, key, value, expected", [
    ("train", "batch_size", "two", "[train] batch_size must be an integer, got 'two'"),
    ("train", "epochs", 2.5, "[train] epochs must be an integer, got 2.5"),
    ("train", "resume", 1, "[train] resume must be true or false, got 1"),
    ("optim", "lr", "fast", "[optim] lr must be a number, got 'fast'"),
    ("optim", "betas", 0.9, "[optim] betas must be a list, got 0.9"),
    ("loss", "class_weights", [1.0, "x"], "[loss] class_weights[1] must be a number, got 'x'"),
    ("paligemma", "prompt", 3, "[paligemma] prompt must be a string, got 3"),
    ("paligemma", "tiny", 3, "[paligemma.tiny] must be a table, got 3"),
    ("detr", "labels", ["fracture", 3], "[detr] labels[1] must be a string, got 3"),
    ("refiner", "augment", "yes", "[refiner] augment must be true or false, got 'yes'"),
    ("", "seed", "0", "seed must be an integer, got '0'"),
    ("", "data", 3, "data must be a path string, got 3"),
])
def test_a_wrong_type_names_the_key_what_it_must_be_and_the_value(
        table: str, key: str, value: Any, expected: str) -> None:
    assert _refused(_with(table, key, value)) == expected


@pytest.mark.parametrize("table, key, value, expected", [
    ("optim", "lr", 0.0, "[optim] lr must be > 0, got 0.0"),
    ("optim", "warmup_steps", -1, "[optim] warmup_steps must be >= 0, got -1"),
    ("optim", "weight_decay", -1e-6, "[optim] weight_decay must be >= 0, got -1e-06"),
    ("optim", "betas", [0.9, 1.0], "[optim] betas must be two numbers in [0, 1), got [0.9, 1.0]"),
    ("train", "batch_size", 0, "[train] batch_size must be >= 1, got 0"),
    ("train", "grad_accum", 0, "[train] grad_accum must be >= 1, got 0"),
    ("train", "max_steps", -1, "[train] max_steps must be >= 0 (0 = off/default), got -1"),
    ("loss", "focal_gamma", -0.5, "[loss] focal_gamma must be >= 0, got -0.5"),
    ("loss", "class_weights", [1.0], "[loss] class_weights must list 2 values, got [1.0]"),
    ("paligemma", "lora_dropout", 1.0, "[paligemma] lora_dropout must be in [0, 1), got 1.0"),
    ("paligemma", "siglip_unfreeze", -2,
     "[paligemma] siglip_unfreeze must be >= 0 (or -1 for all of SigLIP), got -2"),
    ("paligemma", "threshold", 1.5, "[paligemma] threshold must be in [0, 1], got 1.5"),
    ("detr", "top_k", 0, "[detr] top_k must be >= 1, got 0"),
    ("detr", "image_size", 16, "[detr] image_size must be >= 32, got 16"),
    ("detr", "d_model", 30, "[detr] attention_heads (8) must divide d_model (30), "
                            "e.g. d_model = 128 with attention_heads = 4"),
    ("refiner", "jitter", 0.0, "[refiner] jitter must be in (0, 1], got 0.0"),
    ("", "schema_version", 0, "schema_version must be >= 1, got 0"),
])
def test_a_value_out_of_range_says_the_range(table: str, key: str, value: Any, expected: str) -> None:
    assert _refused(_with(table, key, value)) == expected


@pytest.mark.parametrize("table, key", [
    ("optim", "lr"), ("optim", "eps"), ("train", "min_delta"), ("loss", "focal_gamma"),
    ("paligemma", "lora_dropout"), ("detr", "eos_coefficient"), ("refiner", "pad_ratio"),
])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_and_infinity_are_refused(table: str, key: str, value: float) -> None:
    assert _refused(_with(table, key, value)) == f"[{table}] {key} must be a finite number, got {value}"


@pytest.mark.parametrize("table, key, words", [
    ("train", "precision", PRECISIONS), ("train", "progress", PROGRESS),
    ("optim", "schedule", SCHEDULES), ("loss", "decision", DECISION_LOSSES),
    ("paligemma", "method", METHODS), ("paligemma", "quantization", QUANTIZATIONS),
    ("refiner", "loss", REFINER_LOSSES), ("", "recipe", RECIPE_NAMES),
])
def test_a_word_outside_its_choices_lists_the_valid_words(
        table: str, key: str, words: tuple[str, ...]) -> None:
    where = f"[{table}] {key}" if table else key
    assert _refused(_with(table, key, "bogus")) == (
        f"{where} must be one of {', '.join(words)}, got 'bogus'")


def test_recipe_names_are_the_commands_recipes() -> None:
    from train.recipes import recipe_names

    assert sorted(RECIPE_NAMES) == recipe_names()


def test_a_table_built_in_code_fails_as_reading_it_does() -> None:
    message = _refused(_with("train", "batch_size", 0))
    with pytest.raises(TrainConfigError) as info:
        LoopConfig(batch_size=0)
    assert str(info.value) == message
    with pytest.raises(TrainConfigError, match=r"^\[detr\] threshold must be in \[0, 1\], got 1.5$"):
        DetrSection(threshold=1.5)


# --- schema version ----------------------------------------------------------------------------

def test_a_file_without_schema_version_is_version_1_and_loads_unchanged(tmp_path: Path) -> None:
    old = tmp_path / "old.toml"
    old.write_text('recipe = "classifier"\ndata = "d"\nout = "o"\n[paligemma]\nbase = "b"\n')
    stamped = tmp_path / "stamped.toml"
    stamped.write_text("schema_version = 1\n" + old.read_text())
    config = load_train_config(old, recipe="classifier")
    assert config.schema_version == SCHEMA_VERSION == 1
    assert load_train_config(stamped).fingerprint() == config.fingerprint()
    assert "schema_version" not in config.to_dict()  # runs written before it resume unchanged


def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.toml"
    newer.write_text(f'schema_version = {SCHEMA_VERSION + 1}\ndata = "d"\nout = "o"\n')
    with pytest.raises(TrainConfigError) as info:
        load_train_config(newer)
    assert str(info.value) == (
        f"schema_version {SCHEMA_VERSION + 1} is newer than this fracture-screen reads (up to "
        f"{SCHEMA_VERSION}); upgrade fracture-screen to train with this config")


# --- committed configs and the command line ----------------------------------------------------

@pytest.mark.parametrize("path", sorted((REPO / "train" / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_committed_config_loads_whole(path: Path) -> None:
    config = load_train_config(path, overrides={"data": "d", "out": "o"})
    assert config.recipe in RECIPE_NAMES and config.source == path
    assert f"screen train {config.recipe} --config train/configs/{path.name}" in path.read_text()
    if config.recipe in RECIPE_TABLES:
        assert isinstance(config.section(config.recipe, RECIPE_TABLES[config.recipe]),
                          RECIPE_TABLES[config.recipe])
    else:
        assert config.paligemma is not None


def test_screen_train_with_a_bad_config_exits_2_with_one_error_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from screen.cli import cli

    bad = tmp_path / "bad.toml"
    bad.write_text('recipe = "detr"\ndata = "d"\nout = "o"\n[detr]\nthreshold = nan\n')
    result = CliRunner().invoke(cli, ["train", "detr", "--config", str(bad)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == ["Error: [detr] threshold must be a finite number, got nan"]


def test_a_key_added_later_leaves_the_fingerprint_alone_at_its_default() -> None:
    """``loss.ciou_window`` came after runs were fingerprinted: at its default a config keeps the
    fingerprint it had before (such a run still resumes); set, it makes another run."""
    plain = config_from_dict(BASE)
    assert "ciou_window" not in plain.fingerprint()
    assert config_from_dict({**BASE, "loss": {"ciou_window": 0}}).fingerprint() == plain.fingerprint()
    assert config_from_dict({**BASE, "loss": {"ciou_window": 32}}).fingerprint() != plain.fingerprint()
    for key, value in (("box_ramp_steps", 500), ("box_ramp_from", 0.5), ("patch_box_weight", 1.0)):
        assert key not in plain.fingerprint()
        assert config_from_dict({**BASE, "loss": {key: value}}).fingerprint() != plain.fingerprint()
    assert "box_order" not in plain.fingerprint()
    reading = config_from_dict({**BASE, "paligemma": {"base": "models/x", "box_order": "reading"}})
    assert reading.fingerprint() != plain.fingerprint()
    # a config without the table the key lives in (DETR has no [paligemma]) fingerprints too
    detr = config_from_dict({"recipe": "detr", "data": "d", "out": "o"})
    assert detr.paligemma is None and "box_order" not in detr.fingerprint()


def test_box_ramp_raises_the_box_weights_linearly_then_holds() -> None:
    """``[loss] box_ramp_steps``: the token and CIoU weights' factor rises from ``box_ramp_from``
    at step 0 to 1 at the last ramp step and stays there; 0 steps is no schedule."""
    ramp = config_from_dict({**BASE, "loss": {"box_ramp_steps": 100, "box_ramp_from": 0.2}}).loss
    assert [ramp.box_factor(s) for s in (0, 50, 100, 5000)] == pytest.approx([0.2, 0.6, 1.0, 1.0])
    assert config_from_dict(BASE).loss.box_factor(0) == 1.0
    with pytest.raises(TrainConfigError, match="box_ramp_from"):
        config_from_dict({**BASE, "loss": {"box_ramp_from": 1.5}})
    with pytest.raises(TrainConfigError, match="box_ramp_steps"):
        config_from_dict({**BASE, "loss": {"box_ramp_steps": -1}})
