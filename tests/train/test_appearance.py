"""Appearance augmentation (``[appearance]``): each factor's effect, the boxes it keeps, its
units at the member's input, the config's checks, and the recipes that use it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ensembles.preprocess import PreprocessConfig, to_square
from ensembles.types import ResizeMode
from train.appearance import AppearanceConfig, AppearanceSource, render
from train.errors import TrainConfigError
from train.train_config import config_from_dict

SQUASH = PreprocessConfig(image_size=32)
LETTERBOX = PreprocessConfig(image_size=32, resize=ResizeMode.LETTERBOX)


def _image(rows: int = 120, cols: int = 90, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 0.9, (rows, cols)).astype(np.float32)


def test_defaults_leave_the_image_and_boxes_alone() -> None:
    config = AppearanceConfig()
    assert not config.active
    image, boxes = _image(), np.array([[10.0, 20.0, 40.0, 50.0]])
    out, moved = render(image, boxes, config, SQUASH, np.random.default_rng(0))
    assert np.array_equal(out, image) and np.array_equal(moved, boxes)
    assert not AppearanceConfig(probability=0.0, zoom=(1.0, 2.0)).active
    for changed in ({"zoom": (1.0, 1.2)}, {"window": 0.1}, {"gamma": (0.9, 1.0)}, {"blur": (0.0, 0.5)},
                    {"noise": (0.0, 0.01)}, {"compress": (0.0, 0.5)}, {"sharpen": (0.0, 1.0)}):
        assert AppearanceConfig(**changed).active, changed


def test_zoom_crops_hold_every_box_and_carry_its_pixels() -> None:
    image = _image(200, 160)
    boxes = np.array([[30.0, 40.0, 60.0, 90.0], [70.0, 95.0, 80.0, 110.0]])
    config = AppearanceConfig(zoom=(1.5, 3.0))
    sizes = set()
    for seed in range(30):
        out, moved = render(image, boxes, config, SQUASH, np.random.default_rng(seed))
        rows, cols = out.shape
        sizes.add(out.shape)
        assert rows < 200 and cols < 160  # a crop, never the whole image
        assert (moved[:, :2] >= 0).all() and (moved[:, 2] <= cols).all() and (moved[:, 3] <= rows).all()
        left, top = (boxes - moved)[0, :2]
        assert np.array_equal(out, image[int(top) : int(top) + rows, int(left) : int(left) + cols])
        assert np.allclose(moved[:, 2:] - moved[:, :2], boxes[:, 2:] - boxes[:, :2])
        assert rows / cols == pytest.approx(200 / 160, abs=0.02)  # the aspect is kept
    assert len(sizes) > 5  # the factor is drawn, not fixed


def test_zoom_never_cuts_a_box_it_cannot_hold() -> None:
    """Boxes spread wider than the drawn crop widen the crop instead of being cut."""
    image = _image(100, 100)
    boxes = np.array([[5.0, 5.0, 15.0, 15.0], [85.0, 80.0, 95.0, 96.0]])
    out, moved = render(image, boxes, AppearanceConfig(zoom=(3.0, 3.0)), SQUASH, np.random.default_rng(1))
    assert out.shape[0] >= 91 and out.shape[1] >= 90 and abs(out.shape[0] - out.shape[1]) <= 1
    assert (moved >= 0).all() and (moved[:, [2]] <= out.shape[1]).all() and (moved[:, [3]] <= out.shape[0]).all()


def test_zoom_enlarges_the_box_at_the_members_input() -> None:
    source = AppearanceSource(Path("."), [], LETTERBOX, AppearanceConfig(zoom=(2.0, 2.0)))
    source._store[0] = (np.full((64, 64), 0.5, np.float16), np.array([[30.0, 30.0, 34.0, 34.0]]))
    _, boxes = source.draw(0, np.random.default_rng(0))
    width = float(boxes[0, 2] - boxes[0, 0])
    assert width == pytest.approx(2 * 4 / 64, rel=0.05)


def test_window_and_gamma_keep_the_order_of_grey_levels() -> None:
    ramp = np.tile(np.linspace(0.0, 1.0, 101, dtype=np.float32), (4, 1))
    config = AppearanceConfig(window=0.3, gamma=(0.5, 2.0))
    changed = 0
    for seed in range(20):
        out, _ = render(ramp, np.zeros((0, 4)), config, SQUASH, np.random.default_rng(seed))
        assert (np.diff(out[0]) >= 0).all() and out.min() >= 0.0 and out.max() <= 1.0
        changed += int(not np.allclose(out, ramp, atol=1e-3))
    assert changed == 20


def test_compress_takes_out_large_scale_contrast_and_keeps_the_detail() -> None:
    """A bright disc (a bone) on a dark field with a thin dark line across it (a fracture):
    compression brings the disc nearer the field while the line stays as deep."""
    image = np.full((128, 128), 0.1, np.float32)
    cv2.circle(image, (64, 64), 40, 0.8, -1)
    image[62:65, 34:94] = 0.5
    config = AppearanceConfig(compress=(0.8, 0.8), compress_radius=8.0)
    out, _ = render(image, np.zeros((0, 4)), config, SQUASH, np.random.default_rng(0))
    assert 0.0 <= out.min() and out.max() <= 1.0

    def disc_minus_field(x: np.ndarray) -> float:
        return float(x[40:50, 56:72].mean() - x[2:10, 2:10].mean())

    def line_depth(x: np.ndarray) -> float:
        return float(x[54:58, 56:72].mean() - x[62:65, 56:72].mean())

    before = disc_minus_field(image) / line_depth(image)
    after = disc_minus_field(out) / line_depth(out)
    assert after < 0.8 * before


def test_sharpen_overshoots_at_edges_only() -> None:
    step = np.full((64, 64), 0.3, np.float32)
    step[:, 32:] = 0.7
    config = AppearanceConfig(sharpen=(1.0, 1.0), sharpen_radius=(1.0, 1.0))
    out, _ = render(step, np.zeros((0, 4)), config, SQUASH, np.random.default_rng(0))
    row = out[32]
    assert row[:32].min() < 0.25 and row[32:].max() > 0.75  # dark and bright overshoot at the step
    assert row[:16] == pytest.approx(0.3, abs=1e-4) and row[48:] == pytest.approx(0.7, abs=1e-4)


def _edge_width(square: np.ndarray) -> int:
    """Columns of a left-dark, right-bright step that are neither dark nor bright."""
    row = square[square.shape[0] // 2]
    return int(((row > 0.1) & (row < 0.9)).sum())


@pytest.mark.parametrize("side", [64, 256])
def test_blur_is_in_pixels_of_the_members_input(side: int) -> None:
    """The same blur looks the same at the input whatever the source's size."""
    step = np.zeros((side, side), np.float32)
    step[:, side // 2 :] = 1.0
    config = AppearanceConfig(blur=(2.0, 2.0))
    out, _ = render(step, np.zeros((0, 4)), config, SQUASH, np.random.default_rng(0))
    width = _edge_width(to_square(out, SQUASH))
    assert 4 <= width <= 8, width  # sigma 2 input px: about 2.6 sigma between 10 % and 90 %
    assert _edge_width(to_square(step, SQUASH)) <= 1


@pytest.mark.parametrize("side", [64, 256])
def test_noise_is_measured_at_the_members_input(side: int) -> None:
    flat = np.full((side, side), 0.5, np.float32)
    out, _ = render(flat, np.zeros((0, 4)), AppearanceConfig(noise=(0.05, 0.05)), SQUASH,
                    np.random.default_rng(0))
    assert float(to_square(out, SQUASH).std()) == pytest.approx(0.05, rel=0.2)


def test_probability_is_the_share_of_images_rendered_anew() -> None:
    image = _image()
    config = AppearanceConfig(probability=0.5, gamma=(0.5, 0.6))
    rng = np.random.default_rng(0)
    changed = sum(not np.array_equal(render(image, np.zeros((0, 4)), config, SQUASH, rng)[0], image)
                  for _ in range(200))
    assert 70 <= changed <= 130


def test_kept_source_is_reduced_once_and_boxes_follow(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    image = np.zeros((300, 150), np.uint16)
    image[100:200, 50:100] = 65535
    cv2.imwrite(str(tmp_path / "images" / "a.png"), image)
    record = {"image": "images/a.png", "rows": 300, "cols": 150, "boxes_px": [[50, 100, 100, 200]]}
    source = AppearanceSource(tmp_path, [record], SQUASH, AppearanceConfig(zoom=(1.0, 1.5)))
    kept, boxes = source.source(0)
    assert kept.shape == (64, 32)  # long side 2 x 32
    assert np.allclose(boxes, [[50 * 32 / 150, 100 * 64 / 300, 100 * 32 / 150, 200 * 64 / 300]])
    x0, y0, x1, y1 = (round(v) for v in boxes[0])
    assert float(kept[y0:y1, x0:x1].mean()) > 0.95 and float(kept.mean()) < 0.5
    assert source.source(0)[0] is not source.source(0)[0]  # callers get their own copy
    fresh = AppearanceSource(tmp_path, [record], SQUASH, AppearanceConfig(zoom=(1.0, 1.5)), keep=False)
    again, again_boxes = fresh.source(0)
    assert not fresh._store and np.array_equal(again, kept) and np.array_equal(again_boxes, boxes)


@pytest.mark.parametrize("table, message", [
    ({"zoom": [0.5, 1.0]}, "zoom must be >= 1"),
    ({"zoom": [2.0, 1.5]}, "low <= high"),
    ({"gamma": [0.0, 1.0]}, "gamma must be > 0"),
    ({"window": 0.5}, r"window must be in \[0, 0.5\)"),
    ({"blur": [-1.0, 0.0]}, "blur must be >= 0"),
    ({"compress": [0.0, 1.5]}, r"compress must be within \[0, 1\]"),
    ({"sharpen": [-0.5, 1.0]}, "sharpen must be >= 0"),
    ({"sharpen_radius": [0.0, 1.0]}, "sharpen_radius must be > 0"),
    ({"compress_radius": 0}, "compress_radius"),
    ({"probability": 1.5}, "probability"),
    ({"zoom": [1.0]}, "zoom"),
    ({"shear": 0.1}, "unknown key"),
])
def test_bad_appearance_tables_are_refused(table: dict[str, Any], message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        config_from_dict({"data": "d", "out": "o", "appearance": table})


def test_the_table_off_keeps_old_runs_resumable() -> None:
    plain = config_from_dict({"data": "d", "out": "o"})
    assert "appearance" not in json.loads(plain.fingerprint())
    on = config_from_dict({"data": "d", "out": "o", "appearance": {"zoom": [1.0, 1.3]}})
    assert json.loads(on.fingerprint())["appearance"]["zoom"] == [1.0, 1.3]
