"""bench.gap_visibility: each fracture's width at the member's input and its contrast, measured on
the redrawn phantom, against an evaluation's image scores."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from dicom_io.phantom.archive import styled_draws
from dicom_io.phantom.config import PhantomConfig
from dicom_io.phantom.varied import STYLE_RANGES, draw_styled
from dicom_io.tables import IMAGE_PREDICTIONS, write_table
from tests.bench.test_bench_smoke import _load
from train.demo import make_phantom

gap_visibility = _load("gap_visibility")

SIZE = (128, 192)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wide")
    make_phantom(folder, studies=8, seed=5, size=SIZE, style="wide")
    return folder


def _evaluation(folder: Path, phantom: Path, score: dict[str, float], drop: str | None = None) -> Path:
    """An image_predictions.csv whose member ``a`` scores each image by ``score[sop]``."""
    rows = []
    for sop, draw in styled_draws(PhantomConfig(n_studies=8, seed=5, size_range=SIZE, style="wide")):
        if sop == drop:
            continue
        rows.append({"study_instance_uid": "1.2", "sop_instance_uid": sop,
                     "label": "fracture" if draw.image.positive else "normal", "status": "scored",
                     "reason": "", "rows": draw.image.pixels.shape[0], "cols": draw.image.pixels.shape[1],
                     "truth_boxes": "[]", "fused_boxes": "[]", "score:a": score.get(sop, 0.0)})
    folder.mkdir(parents=True, exist_ok=True)
    write_table(folder / "image_predictions.csv", IMAGE_PREDICTIONS, rows, [*IMAGE_PREDICTIONS.names, "score:a"])
    return folder


def test_width_scales_with_the_input_and_the_drawn_gap() -> None:
    narrow = dataclasses.replace(STYLE_RANGES["wide"], fracture_width=(2.0, 2.0), bone_width=(0.15, 0.2))
    wide = dataclasses.replace(narrow, fracture_width=(8.0, 8.0))
    widths = {}
    for name, ranges in (("narrow", narrow), ("wide", wide)):
        draw = draw_styled(np.random.default_rng(11), ranges, positive=True, size_range=(384, 512),
                           two_fracture_fraction=0.0)
        at_256 = gap_visibility.measure_gap(draw, 256)
        at_512 = gap_visibility.measure_gap(draw, 512)
        assert at_256 is not None and at_512 is not None
        assert at_512.width == pytest.approx(2 * at_256.width)
        assert at_256.contrast == at_512.contrast > 0
        widths[name] = at_256.width * max(draw.image.pixels.shape) / 256  # back in stored pixels
    assert 1.5 < widths["narrow"] < 5.0 < widths["wide"]
    normal = draw_styled(np.random.default_rng(11), narrow, positive=False, size_range=(384, 512))
    assert gap_visibility.measure_gap(normal, 256) is None


def test_a_member_that_reads_only_wide_gaps_fails_only_the_narrow_quartile(phantom: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    draws = dict(styled_draws(PhantomConfig(n_studies=8, seed=5, size_range=SIZE, style="wide")))
    widths = {sop: gap_visibility.measure_gap(d, 256) for sop, d in draws.items()}
    positive = {sop: m.width for sop, m in widths.items() if m is not None}
    cut = float(np.quantile(list(positive.values()), 0.25))
    # scores 0.9 for a gap wider than the first quartile, else 0.1; normals 0.5
    score = {sop: 0.5 for sop in draws}
    score.update({sop: 0.9 if w > cut else 0.1 for sop, w in positive.items()})
    evaluation = _evaluation(tmp_path / "eval", phantom, score)
    result = gap_visibility.measure(phantom, evaluation, 256)
    lines = gap_visibility.quartile_table(result, "width")
    aucs = [float(line.rsplit("|", 2)[1]) for line in lines[2:]]
    assert aucs == [0.0, 1.0, 1.0, 1.0]
    assert gap_visibility.main([str(phantom), str(evaluation), "--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    assert f"wide seed 5, 8 studies: {len(positive)} positive images" in out
    assert "| width | positive images | a |" in out and "| contrast | positive images | a |" in out
    assert (tmp_path / "out.json").is_file()


def test_an_evaluation_of_another_archive_is_refused(phantom: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    first = next(iter(styled_draws(PhantomConfig(n_studies=8, seed=5, size_range=SIZE, style="wide"))))[0]
    evaluation = _evaluation(tmp_path / "eval", phantom, {}, drop=first)
    assert gap_visibility.main([str(phantom), str(evaluation)]) == 2
    assert "evaluate this very archive" in capsys.readouterr().err
