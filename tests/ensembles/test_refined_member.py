"""The refiner stage behind the member interface: frames, iterations, what is left untouched."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from ensembles.errors import EnsembleError
from ensembles.preprocess import image_box_to_letterbox, letterbox_box_to_image
from ensembles.refined import RefinedMember
from ensembles.types import Box, Detection, MemberOutput


class FixedMember:
    """A detector that reports the same detections for every image."""

    kind = "detr"

    def __init__(self, detections: list[Detection], score: float = 0.8) -> None:
        self.name, self.detections, self.score = "det", detections, score

    def predict(self, images: Sequence[np.ndarray]) -> list[MemberOutput]:
        return [MemberOutput(self.name, self.score, list(self.detections), raw="r", extras={"k": 1})
                for _ in images]


class ShiftRefiner:
    """Moves every box right by 0.01 of the image; records the boxes it was given."""

    name = "shift"

    def __init__(self) -> None:
        self.seen: list[list[Box]] = []

    def refine(self, image: np.ndarray, detections: Sequence[Detection]) -> list[Detection]:
        self.seen.append([d.box for d in detections])
        return [dataclasses.replace(d, box=Box(d.box.x0 + 0.01, d.box.y0, d.box.x1 + 0.01, d.box.y1))
                for d in detections]


def test_letterbox_box_mapping_round_trips() -> None:
    for height, width in ((300, 500), (500, 300), (256, 256)):
        box = Box(0.1, 0.2, 0.6, 0.9)
        there = image_box_to_letterbox(box, height, width, 64)
        back = letterbox_box_to_image(there, height, width, 64)
        assert back is not None and np.allclose(back, box)
    # a wide image's content sits in the middle rows of the square
    assert image_box_to_letterbox(Box(0, 0, 1, 1), 50, 100, 100) == Box(0.0, 0.25, 1.0, 0.75)


def test_letterbox_member_boxes_are_refined_in_the_image_frame_and_returned_in_its_own() -> None:
    image = np.zeros((50, 100), dtype=np.float32)  # letterboxed into rows 25..75 of a 100 square
    proposal = Box(0.2, 0.4, 0.4, 0.6)  # member frame
    refiner = ShiftRefiner()
    member = RefinedMember(FixedMember([Detection(proposal, "fracture", 0.7)]), refiner,
                           letterbox_size=100, iterations=1)
    (out,) = member.predict([image])
    # the refiner saw the box in the image frame: y 0.4..0.6 of the square is 0.3..0.7 of the image
    assert np.allclose(refiner.seen[0][0], (0.2, 0.3, 0.4, 0.7))
    assert np.allclose(out.detections[0].box, (0.21, 0.4, 0.41, 0.6))
    assert out.detections[0].score == 0.7 and out.detections[0].label == "fracture"
    assert out.score == 0.8 and out.raw == "r" and out.extras["k"] == 1
    assert np.allclose(out.extras["proposals"][0], proposal) and out.extras["refiner"] == "shift"


def test_iterations_refine_the_refined_box_again_and_squash_boxes_stay_in_the_image_frame() -> None:
    refiner = ShiftRefiner()
    member = RefinedMember(FixedMember([Detection(Box(0.1, 0.1, 0.2, 0.2))]), refiner, iterations=3)
    (out,) = member.predict([np.zeros((40, 40), dtype=np.float32)])
    assert [round(b[0].x0, 6) for b in refiner.seen] == [0.1, 0.11, 0.12]
    assert np.allclose(out.detections[0].box, (0.13, 0.1, 0.23, 0.2))


def test_no_boxes_means_no_refiner_call_and_the_name_passes_through() -> None:
    refiner = ShiftRefiner()
    inner = FixedMember([])
    member = RefinedMember(inner, refiner)
    member.name = "site-name"
    assert inner.name == "site-name" and member.kind == "detr"
    (out,) = member.predict([np.zeros((8, 8), dtype=np.float32)])
    assert out.detections == [] and refiner.seen == [] and out.extras["proposals"] == []
    with pytest.raises(EnsembleError, match="iterations"):
        RefinedMember(inner, refiner, iterations=0)


def test_a_zero_head_refiner_checkpoint_leaves_boxes_where_they_were(tmp_path: Path) -> None:
    from ensembles.registry import create_member
    from ensembles.demo_arch.detr import write_tiny_refiner_checkpoint

    write_tiny_refiner_checkpoint(tmp_path / "ref", architecture="resnet18", crop_size=32, zero_head=True)
    refiner = create_member("refiner", tmp_path / "ref")
    box = Box(0.3, 0.3, 0.5, 0.6)
    member = RefinedMember(FixedMember([Detection(box)]), refiner, letterbox_size=64, iterations=2)
    (out,) = member.predict([np.random.default_rng(0).random((48, 80), dtype=np.float32)])
    assert np.allclose(out.detections[0].box, box, atol=1e-6)
