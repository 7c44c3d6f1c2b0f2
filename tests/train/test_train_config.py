"""TOML training configs into typed dataclasses: defaults, validation, overrides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from train.train_config import (
    LoopConfig,
    config_from_dict,
    load_train_config,
    parse_dataclass,
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


@dataclass
class _DetrLike:
    backbone: str = "resnet18"
    num_queries: int = 20
    image_size: int = 256


def test_recipe_tables_parse_with_parse_dataclass() -> None:
    config = config_from_dict({"data": "d", "out": "o", "detr": {"num_queries": 5}})
    section = config.section("detr", _DetrLike)
    assert section == _DetrLike(num_queries=5)
    assert config.section("refiner", _DetrLike) == _DetrLike()
    with pytest.raises(TrainConfigError, match=r"\[detr\] has unknown key\(s\) queries"):
        parse_dataclass(_DetrLike, {"queries": 3}, where="[detr]")


def test_fingerprint_ignores_what_a_resume_may_change() -> None:
    a = config_from_dict({**BASE, "train": {"epochs": 2, "resume": True}})
    b = config_from_dict({**BASE, "train": {"epochs": 9, "resume": False, "progress": "off"}})
    c = config_from_dict({**BASE, "optim": {"lr": 1e-4}})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert a.to_dict()["data"] == "d"
