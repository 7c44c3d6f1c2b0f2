"""The refiner recipe: jittered proposals, correction targets, augmentation, training, checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from ensembles.members.refiner import Refiner, RefinerConfig, apply_corrections, crop_window
from ensembles.registry import create_member
from ensembles.types import Box, Detection
from train.train_config import config_from_dict
from train.engine import fit
from train.errors import RecipeError, TrainConfigError
from train.recipes import get_recipe
from train.recipes.refiner import (
    RefinerSection,
    build_task,
    dihedral_crops,
    jitter_box,
    proposal_box,
    target_corrections,
)

TINY = {"architecture": "test_resnet", "crop_size": 32, "samples_per_box": 4, "jitter": 0.25}


def _bright_box_image(rng: np.random.Generator, rows: int, cols: int) -> tuple[np.ndarray, list[float]]:
    """Noise with one bright rectangle: the truth box is the rectangle (pixel edges)."""
    image = rng.uniform(0.0, 0.2, size=(rows, cols)).astype(np.float32)
    w, h = int(rng.integers(12, 24)), int(rng.integers(12, 24))
    c0, r0 = int(rng.integers(4, cols - w - 4)), int(rng.integers(4, rows - h - 4))
    image[r0 : r0 + h, c0 : c0 + w] = 0.9
    return image, [float(c0), float(r0), float(c0 + w), float(r0 + h)]


def _write_split(root: Path, split: str, seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        rows, cols = 80, 96
        image, box = _bright_box_image(rng, rows, cols)
        uid = f"9.{seed}.{i}"
        cv2.imwrite(str(root / "images" / f"{uid}.png"), np.rint(image * 65535).astype(np.uint16))
        lines.append(json.dumps({
            "image": f"images/{uid}.png", "rows": rows, "cols": cols, "boxes_px": [box],
            "boxes": [[box[0] / cols, box[1] / rows, box[2] / cols, box[3] / rows]],
            "labels": ["fracture"], "label": "fracture", "study_instance_uid": f"s{i}",
            "sop_instance_uid": uid, "patient_key": f"p{i}",
        }) + "\n")
    # a normal image: no box, must simply be skipped
    lines.append(json.dumps({"image": f"images/9.{seed}.0.png", "rows": 80, "cols": 96,
                             "boxes_px": [], "boxes": [], "labels": [], "label": "normal"}) + "\n")
    (root / split / "boxes.jsonl").write_text("".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def refiner_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("refiner-data")
    _write_split(root, "train", 1, 6)
    _write_split(root, "val", 2, 3)
    return root


def _config(data: Path, out: Path, **train: Any) -> Any:
    loop = {"batch_size": 8, "grad_accum": 1, "epochs": 1, "progress": "off", "resume": False,
            "threads": 1, "eval_batch_size": 8, "patience": 0, "monitor": "mean_iou"}
    loop.update(train)
    return config_from_dict({
        "data": str(data), "out": str(out), "recipe": "refiner", "device": "cpu", "seed": 1,
        "train": loop, "optim": {"lr": 3e-3, "warmup_steps": 0, "schedule": "constant"},
        "refiner": dict(TINY),
    })


def test_target_corrections_undo_the_jitter() -> None:
    truth = Box(0.30, 0.40, 0.45, 0.60)
    proposal = Box(0.3125, 0.375, 0.4375, 0.625)  # exact binary fractions: no rounding surprises
    deltas = target_corrections(proposal, truth, 200, 100, pad_ratio=0.25, max_delta=0.5)
    window = crop_window(proposal, 200, 100, 0.25)
    # by hand: columns 31.25..43.75 padded by 3.125 -> [28, 47); rows 75..125 padded by 12.5 -> [62, 138)
    assert (window.left, window.right, window.top, window.bottom) == (28, 47, 62, 138)
    np.testing.assert_allclose(deltas, [-1.25 / 19, 5 / 76, 1.25 / 19, -5 / 76], rtol=1e-5)
    back = apply_corrections(proposal, window, deltas.tolist(), 200, 100)
    assert back is not None
    np.testing.assert_allclose(list(back), list(truth), atol=1e-6)


def test_target_corrections_are_clipped_to_what_tanh_reaches() -> None:
    deltas = target_corrections(Box(0.0, 0.0, 0.1, 0.1), Box(0.5, 0.5, 0.9, 0.9), 100, 100, 0.25, 0.25)
    assert np.all(np.abs(deltas) < 0.25) and np.all(np.abs(deltas) > 0.24)


def test_jitter_moves_each_edge_at_most_jitter_of_the_side() -> None:
    truth = Box(0.2, 0.3, 0.4, 0.7)
    rng = np.random.default_rng(0)
    for draws in rng.random((200, 4)):
        box = jitter_box(truth, draws, 0.2)
        assert 0 <= box.x0 < box.x1 <= 1 and 0 <= box.y0 < box.y1 <= 1
        assert abs(box.x0 - truth.x0) <= 0.2 * 0.2 + 1e-12
        assert abs(box.y1 - truth.y1) <= 0.2 * 0.4 + 1e-12
    assert jitter_box(truth, np.full(4, 0.5), 0.2) == truth


def test_proposal_shift_and_scale_move_the_centre_and_sides_within_their_bounds() -> None:
    truth = Box(0.4, 0.4, 0.5, 0.6)  # 0.1 wide, 0.2 high, centre (0.45, 0.5)
    # middle draws: no edge jitter, no shift, no scaling
    assert proposal_box(truth, np.full(8, 0.5), 0.2, 1.5, 0.5) == truth
    # extreme draws: centre moved 1.5 sides right and down, sides 1.5 times as long
    moved = proposal_box(truth, np.array([0.5] * 4 + [1.0, 1.0, 1.0, 1.0]), 0.2, 1.5, 0.5)
    assert moved.x0 + moved.x1 == pytest.approx(2 * (0.45 + 0.15))
    assert moved.y0 + moved.y1 == pytest.approx(2 * (0.5 + 0.3))
    assert moved.x1 - moved.x0 == pytest.approx(0.15) and moved.y1 - moved.y0 == pytest.approx(0.3)
    rng = np.random.default_rng(1)
    for draws in rng.random((300, 8)):
        box = proposal_box(truth, draws, 0.1, 2.0, 0.5)
        assert 0 <= box.x0 < box.x1 <= 1 and 0 <= box.y0 < box.y1 <= 1
        assert abs((box.x0 + box.x1) / 2 - 0.45) <= 2.0 * 0.1 + 0.1 * 0.1 * 1.5 + 1e-9
    # without shift or scale it is the edge jitter alone
    draws = rng.random(8)
    assert proposal_box(truth, draws, 0.2) == jitter_box(truth, draws[:4], 0.2)
    with pytest.raises(ValueError, match="8 draws"):
        proposal_box(truth, np.full(4, 0.5), 0.2)
    with pytest.raises(TrainConfigError, match="must not exceed pad_ratio"):
        RefinerSection(shift=1.0, pad_ratio=0.5)


@pytest.mark.parametrize("flip", ["transpose", "horizontal", "vertical"])
def test_augmented_crop_and_corrections_match_the_flipped_image(flip: str) -> None:
    # pad 0.5 around a 16 px proposal: a 32 px window, the crop size, so no resampling blurs
    # the comparison and the crop must match the flipped image's crop exactly
    size = 64
    image = np.random.default_rng(3).uniform(0.0, 0.5, size=(size, size)).astype(np.float32)
    image[22:36, 14:30] = 0.9
    truth = Box(14 / size, 22 / size, 30 / size, 36 / size)
    proposal = Box(16 / size, 20 / size, 32 / size, 36 / size)
    config = RefinerConfig(architecture="test_resnet", crop_size=32, pad_ratio=0.5)
    cropper = Refiner(torch.nn.Identity(), config)

    def sample(img: np.ndarray, t: Box, p: Box) -> tuple[torch.Tensor, torch.Tensor]:
        crops, _ = cropper.crop_inputs(img, [p])
        return torch.from_numpy(crops), torch.from_numpy(target_corrections(p, t, size, size, 0.5, 0.25))[None]

    def mirror(b: Box) -> Box:
        if flip == "transpose":
            return Box(b.y0, b.x0, b.y1, b.x1)
        if flip == "horizontal":
            return Box(1 - b.x1, b.y0, 1 - b.x0, b.y1)
        return Box(b.x0, 1 - b.y1, b.x1, 1 - b.y0)

    flipped = {"transpose": image.T, "horizontal": image[:, ::-1], "vertical": image[::-1]}[flip]
    expected_crop, expected_delta = sample(np.ascontiguousarray(flipped), mirror(truth), mirror(proposal))
    crop, delta = sample(image, truth, proposal)
    draws = torch.tensor([[0.0 if flip == name else 0.9 for name in ("transpose", "horizontal", "vertical")]])
    got_crop, got_delta = dihedral_crops(crop, delta, draws)
    torch.testing.assert_close(got_delta, expected_delta, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_crop, expected_crop)


def test_training_writes_a_refiner_the_screener_loads(refiner_data: Path, tmp_path: Path) -> None:
    best = get_recipe("refiner")(_config(refiner_data, tmp_path / "run", max_steps=2))
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("train_loss", "train_corner_mae", "mean_iou", "iou_before", "iou_gain", "improved"):
        assert column in header
    refiner = create_member("refiner", best)
    image = np.zeros((80, 96), dtype=np.float32)
    refined = refiner.refine(image, [Detection(Box(0.2, 0.2, 0.5, 0.6), score=0.7)])  # type: ignore[attr-defined]
    assert len(refined) == 1 and refined[0].score == 0.7


def test_a_small_overfit_improves_the_boxes(refiner_data: Path, tmp_path: Path) -> None:
    config = _config(refiner_data, tmp_path / "run", epochs=8, epoch_steps=4)
    config.sections["refiner"]["augment"] = False
    task = build_task(config)
    result = fit(task, config)
    losses = [row["train_loss"] for row in result.history]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0]
    first, last = result.history[0], result.history[-1]
    assert last["iou_before"] == pytest.approx(first["iou_before"])  # fixed validation proposals
    assert last["mean_iou"] > first["mean_iou"]


def test_refiner_section_refuses_bad_values() -> None:
    with pytest.raises(TrainConfigError, match=r"\[refiner\] loss must be one of smooth_l1, l1"):
        RefinerSection(loss="l2")
    with pytest.raises(TrainConfigError, match=r"\[refiner\] .*crop_size"):
        RefinerSection(crop_size=8).refiner_config()


def test_refiner_refuses_an_appearance_table(refiner_data: Path, tmp_path: Path) -> None:
    config = _config(refiner_data, tmp_path / "run")
    config = config.model_copy(update={"appearance": config.appearance.model_copy(update={"zoom": (1.0, 1.5)})})
    with pytest.raises(RecipeError, match=r"\[appearance\].*refiner"):
        build_task(config)
