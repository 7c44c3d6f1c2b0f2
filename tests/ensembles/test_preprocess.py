"""Preprocessing: the resize convention, Canny blend, CLAHE opt-in, normalisation, validation."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from ensembles.checkpoint import MemberSpec
from ensembles.errors import EnsembleError
from ensembles.preprocess import (
    PreprocessConfig,
    PreprocessError,
    letterbox_geometry,
    preprocess_batch,
    preprocess_image,
    to_square,
)


def _rng_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w)).astype(np.float32)


def test_squash_constant_image_normalises_to_known_value() -> None:
    out = preprocess_image(np.full((37, 91), 0.8, np.float32), PreprocessConfig(image_size=32))
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out, (0.8 - 0.5) / 0.5, atol=1e-6)


@pytest.mark.parametrize(
    ("h", "w", "s", "expected"),
    [
        (100, 50, 64, (64, 32, 0, 16)),
        (30, 60, 64, (32, 64, 16, 0)),
        (3, 5, 4, (2, 4, 1, 0)),  # s=0.8: round(2.4)=2, pad_top=(4-2)//2
        (5, 8, 4, (2, 4, 1, 0)),  # round(2.5) is 2 with Python's round
        (7, 3, 10, (10, 4, 0, 3)),  # enlarging: s=10/7, round(4.29)=4, pad_left=(10-4)//2
        (10, 10, 10, (10, 10, 0, 0)),
    ],
)
def test_letterbox_geometry_follows_the_project_convention(
    h: int, w: int, s: int, expected: tuple[int, int, int, int]
) -> None:
    g = letterbox_geometry(h, w, s)
    assert (g.new_h, g.new_w, g.pad_top, g.pad_left) == expected


def test_letterbox_places_content_and_pads_with_zero() -> None:
    cfg = PreprocessConfig(image_size=64, resize="letterbox", mean=(0.0,) * 3, std=(1.0,) * 3)
    out = preprocess_image(np.ones((30, 60), np.float32), cfg)
    assert np.all(out[:, :16, :] == 0.0) and np.all(out[:, 48:, :] == 0.0)
    np.testing.assert_allclose(out[:, 16:48, :], 1.0, atol=1e-6)


def test_squash_stretches_each_axis_independently() -> None:
    image = np.zeros((40, 80), np.float32)
    image[:, 40:] = 1.0  # right half white
    grey = to_square(image, PreprocessConfig(image_size=20))
    assert np.all(grey[:, :10] == 0.0) and np.all(grey[:, 10:] == 1.0)


def test_area_interpolation_when_shrinking() -> None:
    # Columns 1,0,0 repeated: averaging 3-column blocks gives 1/3; sampling would give 0 or 1.
    row = np.tile(np.array([1.0, 0.0, 0.0], np.float32), 32)
    image = np.tile(row, (96, 1))
    grey = to_square(image, PreprocessConfig(image_size=32))
    np.testing.assert_allclose(grey, 1.0 / 3.0, atol=1e-5)


def test_linear_interpolation_when_enlarging() -> None:
    image = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    grey = to_square(image, PreprocessConfig(image_size=8))
    expected = cv2.resize(image, (8, 8), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(grey, expected, atol=1e-6)
    assert 0.0 < grey[0, 3] < 1.0  # a ramp, not the nearest-neighbour step


def test_canny_blend_adds_edges_at_the_step_only() -> None:
    image = np.full((64, 64), 0.2, np.float32)
    image[:, 32:] = 0.8
    grey = to_square(image, PreprocessConfig(image_size=64, canny_blend=0.3))
    base = 0.7 * image
    diff = grey - base
    edge_cols = np.unique(np.nonzero(diff > 1e-4)[1])
    assert edge_cols.size > 0 and set(edge_cols.tolist()) <= {30, 31, 32, 33}
    np.testing.assert_allclose(diff[diff > 1e-4], 0.3, atol=1e-6)
    np.testing.assert_allclose(grey[:, :28], 0.14, atol=1e-6)
    np.testing.assert_allclose(grey[:, 36:], 0.56, atol=1e-6)


def test_canny_does_not_see_the_letterbox_border() -> None:
    cfg = PreprocessConfig(image_size=64, resize="letterbox", canny_blend=0.3)
    grey = to_square(np.full((30, 60), 0.8, np.float32), cfg)
    assert grey.max() == pytest.approx(0.56, abs=1e-6)
    assert np.all(grey[:16] == 0.0)


def test_clahe_warns_and_raises_contrast() -> None:
    image = (0.45 + 0.1 * _rng_image(64, 64)).astype(np.float32)
    with pytest.warns(UserWarning, match="Normal"):
        cfg = PreprocessConfig(image_size=64, clahe=True)
    grey = to_square(image, cfg)
    assert grey.std() > 2 * image.std()


def test_no_warning_without_clahe() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preprocess_image(_rng_image(16, 16), PreprocessConfig(image_size=8))


def test_three_channels_and_per_channel_normalisation() -> None:
    image = _rng_image(50, 70)
    cfg = PreprocessConfig(image_size=24, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    out = preprocess_image(image, cfg)
    grey = to_square(image, cfg)
    for c in range(3):
        np.testing.assert_allclose(out[c], (grey - cfg.mean[c]) / cfg.std[c], rtol=1e-6, atol=1e-6)


def test_deterministic_and_batch_matches_single() -> None:
    cfg = PreprocessConfig(image_size=32, resize="letterbox", canny_blend=0.3)
    images = [_rng_image(40, 30, 1), _rng_image(25, 90, 2)]
    batch = preprocess_batch(images, cfg)
    assert batch.shape == (2, 3, 32, 32)
    for i, image in enumerate(images):
        np.testing.assert_array_equal(batch[i], preprocess_image(image, cfg))
    np.testing.assert_array_equal(batch, preprocess_batch(images, cfg))
    assert preprocess_batch([], cfg).shape == (0, 3, 32, 32)


def test_from_spec() -> None:
    spec = MemberSpec(
        kind="detr", name="d", image_size=48, resize="letterbox", mean=(0.4, 0.4, 0.4),
        std=(0.2, 0.2, 0.2), canny_blend=0.3, options={"canny_low": 10, "canny_high": 20},
    )
    cfg = PreprocessConfig.from_spec(spec)
    assert (cfg.image_size, cfg.resize, cfg.mean, cfg.canny_blend) == (48, "letterbox", (0.4,) * 3, 0.3)
    assert (cfg.canny_low, cfg.canny_high, cfg.clahe) == (10, 20, False)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 3), np.float32), "grey H x W"),
        (np.zeros((0, 4), np.float32), "grey H x W"),
        (np.array([[0.5, np.nan]], np.float32), "NaN"),
        (np.array([[0.5, 1.2]], np.float32), r"in \[0, 1\]"),
        ([[0.5]], "numpy array"),
    ],
)
def test_invalid_images(image: np.ndarray, message: str) -> None:
    with pytest.raises(PreprocessError, match=message):
        preprocess_image(image, PreprocessConfig(image_size=8))


def test_small_range_excursions_are_clipped() -> None:
    image = np.array([[-5e-4, 1.0 + 5e-4]], np.float32)
    grey = to_square(image, PreprocessConfig(image_size=2, resize="squash"))
    assert grey.min() >= 0.0 and grey.max() <= 1.0


def test_batch_error_names_the_image() -> None:
    with pytest.raises(PreprocessError, match="image 1 of the batch"):
        preprocess_batch([_rng_image(8, 8), np.ones((8, 8)) * 3], PreprocessConfig(image_size=8))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 0}, "image_size"),
        ({"image_size": 8, "resize": "crop"}, "resize must be one of"),
        ({"image_size": 8, "std": (1.0, 0.0, 1.0)}, "std must be > 0"),
        ({"image_size": 8, "mean": (1.0, 1.0)}, "mean must be three"),
        ({"image_size": 8, "canny_blend": 1.5}, "canny_blend"),
        ({"image_size": 8, "canny_low": 200, "canny_high": 100}, "canny_low <= canny_high"),
    ],
)
def test_invalid_config(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PreprocessError, match=message) as info:
        PreprocessConfig(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, EnsembleError) and isinstance(info.value, ValueError)


def test_letterbox_box_to_image_undoes_the_padding() -> None:
    from ensembles.preprocess import letterbox_box_to_image
    from ensembles.types import Box

    # 30 x 60 into 64: content rows 16..48, all columns.
    full = letterbox_box_to_image(Box(0.0, 16 / 64, 1.0, 48 / 64), 30, 60, 64)
    assert full == pytest.approx((0.0, 0.0, 1.0, 1.0))
    inner = letterbox_box_to_image(Box(0.25, 24 / 64, 0.5, 32 / 64), 30, 60, 64)
    assert inner == pytest.approx((0.25, 0.25, 0.5, 0.5))
    assert letterbox_box_to_image(Box(0.1, 0.0, 0.2, 0.2), 30, 60, 64) is None  # in the padding
    clipped = letterbox_box_to_image(Box(0.1, 0.1, 0.2, 0.3), 30, 60, 64)
    assert clipped == pytest.approx((0.1, 0.0, 0.2, (0.3 * 64 - 16) / 32))
