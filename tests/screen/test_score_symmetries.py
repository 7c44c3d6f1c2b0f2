"""``[members.X] score_symmetries``: the member's image score is the mean over symmetries."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from ensembles.symmetry import ORDER, apply_to_image
from screen.cli import cli
from screen.nightly.site_members import load_members, member_version, model_key
from screen.site_config import load_site_config


@pytest.fixture(scope="module")
def refiner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ensembles.demo_arch.detr import write_tiny_refiner_checkpoint

    root = tmp_path_factory.mktemp("refiner")
    write_tiny_refiner_checkpoint(root / "refiner", architecture="resnet18", crop_size=32, seed=5)
    return root / "refiner"


def _site(site_writer: Callable[..., Path], tiny_models: Path, where: Path, detr_lines: str,
          pg_det_lines: str = "") -> Path:
    path = site_writer(where, tiny_models)  # [members.detr] is the file's last table
    text = path.read_text(encoding="utf-8")
    if pg_det_lines:
        text = text.replace("[members.detr]", f"{pg_det_lines}\n[members.detr]")
        assert pg_det_lines in text
    path.write_text(text + detr_lines, encoding="utf-8")
    return path


def test_scores_are_averaged_inside_the_refiner_and_the_version_says_so(
        site_writer: Callable[..., Path], tiny_models: Path, refiner_dir: Path, tmp_path: Path) -> None:
    plain = load_site_config(_site(site_writer, tiny_models, tmp_path / "plain", f'refiner = "{refiner_dir}"\n'))
    site = load_site_config(_site(site_writer, tiny_models, tmp_path / "sym",
                                  f'refiner = "{refiner_dir}"\nscore_symmetries = 4\n'))
    detr = site.members[2]
    assert member_version(detr) == member_version(plain.members[2]).replace("+refiner:", "+sym4+refiner:")
    assert model_key(site, "op") != model_key(plain, "op")  # the ledger tells the nights apart
    loaded = load_members(site)[2]
    assert type(loaded.member).__name__ == "RefinedMember"  # boxes refined once, on the original image
    assert type(loaded.member.member).__name__ == "SymmetryScoredMember" and loaded.name == "detr"

    inner = loaded.member.member.member
    rng = np.random.default_rng(7)
    images = [rng.random((70, 50), dtype=np.float32), rng.random((64, 64), dtype=np.float32)]
    outputs = loaded.member.predict(images)
    for image, output in zip(images, outputs):
        expected = [inner.predict([apply_to_image(image, k)])[0].score for k in ORDER[:4]]
        assert output.score == pytest.approx(float(np.mean(expected)), abs=1e-5)
        assert output.extras["symmetry_scores"] == pytest.approx(expected, abs=1e-5)
        assert "proposals" in output.extras  # the refiner saw the member's boxes


def test_a_night_with_score_symmetries_screens_and_records_the_mean(
        site_writer: Callable[..., Path], tiny_models: Path, small_archive: Path, tmp_path: Path) -> None:
    path = _site(site_writer, tiny_models, tmp_path / "site", "score_symmetries = 2\n",
                 pg_det_lines="score_symmetries = 8")
    site = load_site_config(path)
    assert [m.score_symmetries for m in site.members] == [1, 8, 2]
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(small_archive), "--config", str(path), "--out", str(out),
                                      "--limit", "1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    with open(out / "studies.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["screened"]
