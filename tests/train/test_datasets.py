"""Readers of a prepared data folder: JSONL, 16-bit PNGs, the PaliGemma text and box datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ensembles.preprocess import PreprocessConfig, preprocess_image
from train.datasets import (
    BoxDataset, DataFormatError, PaliGemmaTextDataset, collate_boxes, collate_text, input_boxes,
    load_image, load_records, prefixes, read_jsonl,
)

ROWS, COLS = 40, 80
BOX_PX = [20.0, 10.0, 60.0, 30.0]


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A two-image data folder written by hand in the layout screen prepare writes."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    gradient = (np.arange(ROWS * COLS, dtype=np.uint32).reshape(ROWS, COLS) * 20).astype(np.uint16)
    cv2.imwrite(str(root / "images" / "a.png"), gradient)
    cv2.imwrite(str(root / "images" / "b.png"), np.full((ROWS, COLS), 32768, dtype=np.uint16))
    norm = [BOX_PX[0] / COLS, BOX_PX[1] / ROWS, BOX_PX[2] / COLS, BOX_PX[3] / ROWS]
    common_a = {"image": "images/a.png", "study_instance_uid": "1.1", "sop_instance_uid": "1.1.1",
                "patient_key": "k1", "rows": ROWS, "cols": COLS, "label": "fracture", "boxes": [norm]}
    common_b = {"image": "images/b.png", "study_instance_uid": "1.2", "sop_instance_uid": "1.2.1",
                "patient_key": "k2", "rows": ROWS, "cols": COLS, "label": "normal", "boxes": []}
    _write_jsonl(root / "train" / "classifier.jsonl", [
        {**common_a, "prefix": "Is there a fracture in this x-ray?", "suffix": "Fracture"},
        {**common_b, "prefix": "Is there a fracture in this x-ray?", "suffix": "Normal"},
    ])
    _write_jsonl(root / "train" / "detector.jsonl", [
        {**common_a, "prefix": "Detect Fracture", "suffix": "<loc0256><loc0256><loc0768><loc0768> Fracture;"},
        {**common_b, "prefix": "Detect Fracture", "suffix": "Normal"},
    ])
    _write_jsonl(root / "train" / "boxes.jsonl", [
        {**common_a, "boxes_px": [BOX_PX], "labels": ["fracture"]},
        {**common_b, "boxes_px": [], "labels": []},
    ])
    return root


def test_read_jsonl_skips_blank_lines_and_names_bad_lines(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert [r["a"] for r in read_jsonl(good)] == [1, 2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(bad)
    array = tmp_path / "array.jsonl"
    array.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"array.jsonl:1: each line must be a JSON object"):
        read_jsonl(array)
    with pytest.raises(DataFormatError, match="screen prepare"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_load_image_scales_16_and_8_bit(data_dir: Path) -> None:
    image = load_image(data_dir, {"image": "images/a.png"})
    assert image.dtype == np.float32 and image.shape == (ROWS, COLS)
    assert image[0, 1] == pytest.approx(20 / 65535) and image[-1, -1] == pytest.approx((ROWS * COLS - 1) * 20 / 65535)
    cv2.imwrite(str(data_dir / "images" / "c.png"), np.full((4, 4), 51, dtype=np.uint8))
    assert load_image(data_dir, {"image": "images/c.png"}) == pytest.approx(np.full((4, 4), 0.2))


def test_load_image_refuses_paths_outside_and_missing_files(data_dir: Path) -> None:
    with pytest.raises(DataFormatError, match="outside the data folder"):
        load_image(data_dir, {"image": "../secret.png"})
    with pytest.raises(DataFormatError, match="cannot read image"):
        load_image(data_dir, {"image": "images/none.png"})
    with pytest.raises(DataFormatError, match="lacks 'image'"):
        load_image(data_dir, {"sop_instance_uid": "9"})


def test_text_dataset_preprocesses_like_inference(data_dir: Path) -> None:
    cfg = PreprocessConfig(image_size=32, resize="squash", canny_blend=0.3)
    records = load_records(data_dir, "train", "classifier")
    dataset = PaliGemmaTextDataset(data_dir, records, cfg)
    assert len(dataset) == 2 and prefixes(records) == {"Is there a fracture in this x-ray?"}
    item = dataset[0]
    expected = preprocess_image(load_image(data_dir, records[0]), cfg)
    assert item["pixel_values"].shape == (3, 32, 32)
    np.testing.assert_array_equal(item["pixel_values"].numpy(), expected)
    assert (item["prefix"], item["suffix"], item["label"]) == ("Is there a fracture in this x-ray?", "Fracture", 1)
    # squash: the input frame is the normalised image frame
    np.testing.assert_allclose(item["boxes"].numpy(), [[0.25, 0.25, 0.75, 0.75]], atol=1e-6)
    assert dataset[1]["label"] == 0 and dataset[1]["boxes"].shape == (0, 4)
    assert item["sop_instance_uid"] == "1.1.1" and item["patient_key"] == "k1"
    batch = collate_text([dataset[0], dataset[1]])
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["label"].tolist() == [1, 0] and batch["suffix"] == ["Fracture", "Normal"]


def test_text_dataset_filters_by_prompt(data_dir: Path) -> None:
    cfg = PreprocessConfig(image_size=16)
    mixed = load_records(data_dir, "train", "classifier") + load_records(data_dir, "train", "detector")
    assert len(prefixes(mixed)) == 2
    only = PaliGemmaTextDataset(data_dir, mixed, cfg, prefix="Detect Fracture")
    assert len(only) == 2 and {only[i]["prefix"] for i in range(2)} == {"Detect Fracture"}


def test_letterbox_boxes_follow_the_project_convention(data_dir: Path) -> None:
    # 40x80 into 64: s = 0.8, content 32x64 placed at pad_top 16, pad_left 0
    cfg = PreprocessConfig(image_size=64, resize="letterbox")
    boxes = input_boxes(np.array([BOX_PX]), ROWS, COLS, cfg)
    np.testing.assert_allclose(boxes, [[20 * 0.8 / 64, (10 * 0.8 + 16) / 64, 60 * 0.8 / 64, (30 * 0.8 + 16) / 64]],
                               atol=1e-6)
    assert input_boxes(np.array([[90.0, 0.0, 100.0, 5.0]]), ROWS, COLS, cfg).shape == (0, 4)


def test_box_dataset_gives_detr_targets(data_dir: Path) -> None:
    cfg = PreprocessConfig(image_size=64, resize="letterbox")
    dataset = BoxDataset(data_dir, data_dir / "train" / "boxes.jsonl", cfg)
    item = dataset[0]
    x0, y0, x1, y1 = 0.25, 24 / 64, 0.75, 40 / 64
    np.testing.assert_allclose(item["boxes"].numpy(), [[x0, y0, x1, y1]], atol=1e-6)
    np.testing.assert_allclose(item["target"]["boxes"].numpy(), [[0.5, (y0 + y1) / 2, 0.5, y1 - y0]], atol=1e-6)
    assert item["class_labels"].tolist() == [0] and item["label"] == 1 and (item["rows"], item["cols"]) == (ROWS, COLS)
    empty = dataset[1]
    assert empty["target"]["boxes"].shape == (0, 4) and empty["class_labels"].shape == (0,)
    batch = collate_boxes([item, empty])
    assert batch["pixel_values"].shape == (2, 3, 64, 64) and len(batch["target"]) == 2


def test_box_dataset_refuses_unknown_labels(data_dir: Path) -> None:
    cfg = PreprocessConfig(image_size=16)
    with pytest.raises(DataFormatError, match="not one of the model's labels"):
        BoxDataset(data_dir, data_dir / "train" / "boxes.jsonl", cfg, label_names=("crack",))


def test_transform_runs_before_preprocessing(data_dir: Path) -> None:
    def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flipped = boxes.copy()
        flipped[:, [0, 2]] = image.shape[1] - boxes[:, [2, 0]]
        return image[:, ::-1].copy(), flipped

    cfg = PreprocessConfig(image_size=32)
    plain = PaliGemmaTextDataset(data_dir, data_dir / "train" / "classifier.jsonl", cfg)[0]
    flipped = PaliGemmaTextDataset(data_dir, data_dir / "train" / "classifier.jsonl", cfg, transform=hflip)[0]
    # box 20..60 of 80 columns flips onto 20..60: symmetric, but the pixels are mirrored
    np.testing.assert_allclose(flipped["boxes"].numpy(), plain["boxes"].numpy(), atol=1e-6)
    np.testing.assert_allclose(flipped["pixel_values"].numpy(), plain["pixel_values"].numpy()[:, :, ::-1], atol=1e-5)


def test_dataset_needs_a_preprocess_config(data_dir: Path) -> None:
    with pytest.raises(DataFormatError, match="PreprocessConfig"):
        PaliGemmaTextDataset(data_dir, [], 224)  # type: ignore[arg-type]
