"""The refiner stage in a site config: ``[members.X] refiner = "..."`` corrects X's boxes."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from screen.cli import cli
from screen.site_config import load_site_config
from screen.errors import ConfigError
from screen.nightly.site_members import load_members, member_version


@pytest.fixture(scope="module")
def refiner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ensembles.demo_arch.detr import write_tiny_refiner_checkpoint

    root = tmp_path_factory.mktemp("refiner")
    write_tiny_refiner_checkpoint(root / "refiner", architecture="resnet18", crop_size=32, seed=5)
    return root / "refiner"


def _site(site_writer: Callable[..., Path], tiny_models: Path, where: Path, lines: str) -> Path:
    path = site_writer(where, tiny_models)  # [members.detr] is the file's last table
    path.write_text(path.read_text(encoding="utf-8") + lines, encoding="utf-8")
    return path


def test_a_refined_detector_runs_and_its_version_names_the_refiner(
        site_writer: Callable[..., Path], tiny_models: Path, refiner_dir: Path, small_archive: Path,
        tmp_path: Path) -> None:
    path = _site(site_writer, tiny_models, tmp_path / "site",
                 f'refiner = "{refiner_dir}"\nrefiner_iterations = 2\n')
    site = load_site_config(path)
    detr = site.members[2]
    assert detr.refiner == refiner_dir and detr.refiner_iterations == 2
    assert "+refiner:" in member_version(detr) and member_version(detr).endswith("x2")
    assert "+refiner:" not in member_version(site.members[1])
    members = load_members(site)
    assert type(members[2].member).__name__ == "RefinedMember" and members[2].name == "detr"
    assert members[2].letterbox_size == members[2].spec.image_size  # callers still map its boxes

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(small_archive), "--config", str(path), "--out", str(out),
                                      "--limit", "1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    with open(out / "studies.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["screened"]


@pytest.mark.parametrize("lines, message", [
    ('refiner = "nowhere"\n', "is not a refiner checkpoint"),
    ("refiner_iterations = 2\n", "needs a refiner"),
    ('refiner = "{refiner}"\nrefiner_iterations = 0\n', "positive integer"),
])
def test_bad_refiner_settings_name_the_key(site_writer: Callable[..., Path], tiny_models: Path, refiner_dir: Path,
                                           tmp_path: Path, lines: str, message: str) -> None:
    path = _site(site_writer, tiny_models, tmp_path / "site", lines.replace("{refiner}", str(refiner_dir)))
    with pytest.raises(ConfigError, match=message) as info:
        load_site_config(path)
    assert "[members.detr]" in str(info.value)


def test_a_detector_checkpoint_named_as_refiner_is_refused(site_writer: Callable[..., Path], tiny_models: Path,
                                                          tmp_path: Path) -> None:
    path = _site(site_writer, tiny_models, tmp_path / "site", f'refiner = "{tiny_models / "pg-det"}"\n')
    with pytest.raises(ConfigError, match="not a refiner"):
        load_members(load_site_config(path))
    assert json.loads((tiny_models / "pg-det" / "member.json").read_text())["kind"] == "paligemma-detector"
