"""The refiner stage: crop geometry at borders, corrections, identity, checkpoint round trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from ensembles.checkpoint import MEMBER_JSON, read_member_spec  # noqa: E402
from ensembles.errors import CheckpointError, EnsembleError  # noqa: E402
from ensembles.members.refiner import (  # noqa: E402
    CropWindow,
    Refiner,
    RefinerConfig,
    apply_corrections,
    build_refiner_model,
    crop_window,
    extract_crop,
    save_refiner,
)
from ensembles.preprocess import PreprocessConfig, preprocess_image  # noqa: E402
from ensembles.registry import create_member  # noqa: E402
from ensembles.demo_arch.detr import write_tiny_refiner_checkpoint  # noqa: E402
from ensembles.types import Box, Detection  # noqa: E402

ARCH = "resnet18"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.random((100, 160), dtype=np.float32)


@pytest.fixture(scope="module")
def detections() -> list[Detection]:
    return [
        Detection(Box(0.0, 0.0, 0.2, 0.25), "fracture", 0.9),  # top-left corner
        Detection(Box(0.8, 0.7, 1.0, 1.0), "fracture", 0.4),  # bottom-right corner
        Detection(Box(0.3, 0.4, 0.55, 0.6), "other", 0.7),  # interior
        Detection(Box(0.0, 0.0, 1.0, 1.0), "fracture", 0.1),  # whole image
        Detection(Box(0.5, 0.5, 0.503, 0.505), "fracture", 0.2),  # sub-pixel box
    ]


def test_window_interior_is_padded_box() -> None:
    window = crop_window(Box(0.25, 0.5, 0.5, 0.75), height=200, width=400, pad_ratio=0.25)
    # box: x 100..200 (w 100), y 100..150 (h 50); pad 25 px in x, 12.5 px in y, rounded outwards
    assert window == CropWindow(left=75, top=87, right=225, bottom=163)


def test_crop_at_top_left_border_is_zero_outside(image: np.ndarray) -> None:
    window = crop_window(Box(0.0, 0.0, 0.25, 0.2), 100, 160, pad_ratio=0.5)
    # box 40 x 20 px at the origin, padded by 20 / 10 px on each side
    assert window == CropWindow(left=-20, top=-10, right=60, bottom=30)
    crop = extract_crop(image, window)
    assert crop.shape == (40, 80)
    assert not crop[:10].any() and not crop[:, :20].any()
    np.testing.assert_array_equal(crop[10:, 20:], image[0:30, 0:60])


def test_crop_at_bottom_right_border(image: np.ndarray) -> None:
    window = crop_window(Box(0.9, 0.8, 1.0, 1.0), 100, 160, pad_ratio=0.25)
    assert window == CropWindow(left=140, top=75, right=164, bottom=105)
    crop = extract_crop(image, window)
    np.testing.assert_array_equal(crop[:25, :20], image[75:100, 140:160])
    assert not crop[25:].any() and not crop[:, 20:].any()


def test_crop_window_entirely_outside_is_black(image: np.ndarray) -> None:
    crop = extract_crop(image, CropWindow(200, 200, 210, 220))
    assert crop.shape == (20, 10) and not crop.any()


def test_apply_corrections_moves_corners_in_window_units() -> None:
    box = Box(0.25, 0.5, 0.5, 0.75)
    window = CropWindow(75, 87, 225, 163)  # 150 x 76 px of a 400 x 200 image
    assert apply_corrections(box, window, (0, 0, 0, 0), 200, 400) == box
    moved = apply_corrections(box, window, (0.1, -0.1, 0.2, 0.0), 200, 400)
    assert moved == pytest.approx(
        (0.25 + 0.1 * 150 / 400, 0.5 - 0.1 * 76 / 200, 0.5 + 0.2 * 150 / 400, 0.75)
    )
    clipped = apply_corrections(
        Box(0.0, 0.0, 0.1, 0.1), CropWindow(-5, -5, 15, 15), (-0.5, -0.5, 0, 0), 100, 100
    )
    assert clipped == (0.0, 0.0, 0.1, 0.1)
    assert apply_corrections(box, window, (0.5, 0, -0.5, 0), 200, 400) is None


def test_crop_inputs_are_preprocessed_crops(image: np.ndarray, detections: list[Detection]) -> None:
    config = RefinerConfig(architecture=ARCH, crop_size=32, in_chans=3, pad_ratio=0.5)
    refiner = Refiner(build_refiner_model(config), config)
    inputs, windows = refiner.crop_inputs(image, [d.box for d in detections])
    assert inputs.shape == (len(detections), 3, 32, 32)
    cfg = PreprocessConfig(image_size=32, resize="squash", mean=config.mean, std=config.std)
    for index, det in enumerate(detections):
        expected_window = crop_window(det.box, 100, 160, 0.5)
        assert windows[index] == expected_window
        expected = preprocess_image(extract_crop(image, expected_window), cfg)
        np.testing.assert_array_equal(inputs[index], expected)


def test_identity_refiner_returns_same_boxes(
    tmp_path: Path, image: np.ndarray, detections: list[Detection]
) -> None:
    directory = write_tiny_refiner_checkpoint(
        tmp_path / "identity", architecture=ARCH, zero_head=True
    )
    refiner = create_member("refiner", directory)
    assert isinstance(refiner, Refiner)
    assert refiner.refine(image, detections) == detections
    assert refiner.refine(image, []) == []


@pytest.mark.parametrize(
    ("bias", "grows"),
    [((-3.0, -3.0, 3.0, 3.0), True), ((3.0, 0.0, -3.0, 0.0), False)],
    ids=["saturated-growth", "would-empty-keeps-proposal"],
)
def test_saturated_refiner_keeps_scores_labels_and_valid_boxes(
    image: np.ndarray, detections: list[Detection], bias: tuple[float, ...], grows: bool
) -> None:
    config = RefinerConfig(architecture=ARCH, crop_size=32, max_delta=1.0)
    model = build_refiner_model(config, seed=5, zero_head=True)
    with torch.no_grad():  # tanh(+-3) ~ +-0.995: corrections of about one window side
        model.get_classifier().bias.copy_(torch.tensor(bias))
    refined = Refiner(model, config).refine(image, detections)
    assert len(refined) == len(detections)
    for before, after in zip(detections, refined):
        assert (after.score, after.label) == (before.score, before.label)
        assert Box.checked(*after.box) == after.box
        if grows:  # every corner moved outwards (clipped at the border)
            assert after.box.x0 <= before.box.x0 and after.box.y0 <= before.box.y0
            assert after.box.x1 >= before.box.x1 and after.box.y1 >= before.box.y1
            assert after.box != before.box or before.box == (0.0, 0.0, 1.0, 1.0)
        else:  # x corners would cross: the proposal is kept
            assert after.box == before.box


def test_batch_size_does_not_change_corrections(
    image: np.ndarray, detections: list[Detection]
) -> None:
    config = RefinerConfig(architecture=ARCH, crop_size=32)
    model = build_refiner_model(config, seed=2)
    boxes = [d.box for d in detections]
    one = Refiner(model, config, batch_size=1).corrections(image, boxes)
    many = Refiner(model, config, batch_size=16).corrections(image, boxes)
    again = Refiner(model, config, batch_size=16).corrections(image, boxes)
    np.testing.assert_allclose(one, many, atol=1e-5)
    np.testing.assert_array_equal(many, again)
    assert np.abs(many).max() <= config.max_delta
    assert np.abs(many).max() > 0


def test_checkpoint_round_trip_identical(
    tmp_path: Path, image: np.ndarray, detections: list[Detection]
) -> None:
    config = RefinerConfig(
        architecture=ARCH, crop_size=48, in_chans=1, pad_ratio=0.3, max_delta=0.2
    )
    model = build_refiner_model(config, seed=9)
    directory = save_refiner(tmp_path / "rt", model, config, name="rt-refiner")
    spec = read_member_spec(directory)
    assert spec.kind == "refiner" and spec.image_size == 48
    assert spec.options == {"architecture": ARCH, "in_chans": 1, "pad_ratio": 0.3, "max_delta": 0.2}
    loaded = create_member("refiner", directory)
    assert isinstance(loaded, Refiner) and loaded.name == "rt-refiner"
    assert loaded.config == config
    assert loaded.refine(image, detections) == Refiner(model, config).refine(image, detections)


def test_predict_points_to_refine(tmp_path: Path) -> None:
    directory = write_tiny_refiner_checkpoint(tmp_path / "r", architecture=ARCH, crop_size=32)
    refiner = create_member("refiner", directory)
    expected = r"not a screener member: call refine\(image, detections\)"
    with pytest.raises(EnsembleError, match=expected):
        refiner.predict([np.zeros((8, 8), dtype=np.float32)])


def test_checkpoint_that_does_not_fit_architecture(tmp_path: Path) -> None:
    directory = write_tiny_refiner_checkpoint(tmp_path / "r", architecture=ARCH, crop_size=32)
    data = json.loads((directory / MEMBER_JSON).read_text())
    data["options"]["in_chans"] = 3
    (directory / MEMBER_JSON).write_text(json.dumps(data))
    expected = "does not fit architecture 'resnet18' with in_chans=3"
    with pytest.raises(CheckpointError, match=expected):
        create_member("refiner", directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        create_member("refiner", directory)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop_size": 8}, "crop_size must be an integer in 16..1024"),
        ({"in_chans": 2}, "in_chans must be 1 or 3"),
        ({"pad_ratio": -0.1}, "pad_ratio must be a number in"),
        ({"max_delta": 0}, r"max_delta must be a number in \(0, 1\]"),
    ],
    ids=["crop-size", "in-chans", "pad-ratio", "max-delta"],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(EnsembleError, match=message):
        RefinerConfig(**kwargs)  # type: ignore[arg-type]


def test_unknown_architecture() -> None:
    with pytest.raises(EnsembleError, match="refiner architecture 'no_such_net'"):
        build_refiner_model(RefinerConfig(architecture="no_such_net"))
