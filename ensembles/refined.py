"""A detector member whose boxes the refiner stage corrects: the paper's second stage.

The practitioner's boxes drifted 10-30 px on subtle findings, so a second stage regresses the
corners from a crop around each proposed box (:class:`ensembles.members.refiner.Refiner`).
:class:`RefinedMember` puts that stage behind the member interface, so the screener, ``screen
eval`` and fusion see one detector whose boxes are already refined:

1. the wrapped member predicts as usual;
2. each reported box is taken to the whole image's normalised frame (a letterbox member's
   boxes through :func:`ensembles.preprocess.letterbox_box_to_image`; a squash member's boxes
   already are in it) and refined on the source radiograph ``iterations`` times (a refined box
   is cropped again, so a proposal that was far off gets a second, closer look);
3. the refined box goes back to the member's own frame
   (:func:`ensembles.preprocess.image_box_to_letterbox`), so callers map it as they map the
   member's boxes, and scores, labels and the image score are untouched.

The proposal is kept in ``MemberOutput.extras["proposals"]`` (member frame) for audit.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ensembles.errors import EnsembleError
from ensembles.preprocess import image_box_to_letterbox, letterbox_box_to_image
from ensembles.registry import MemberWrapper
from ensembles.types import Detection, MemberOutput


class RefinedMember(MemberWrapper):
    """``member`` with its boxes corrected by ``refiner`` (see the module docstring).

    Args:
        member: any detector member (``predict(images) -> MemberOutput``).
        refiner: an object with ``refine(image, detections) -> detections`` on boxes normalised
            to ``image`` (:class:`ensembles.members.refiner.Refiner`).
        letterbox_size: the member's input side when it letterboxes (its boxes are in that
            square's frame); ``None`` when its boxes are normalised to the image (squash).
        iterations: refinement passes per box (>= 1).
    """

    def __init__(self, member: Any, refiner: Any, *, letterbox_size: int | None = None,
                 iterations: int = 1) -> None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise EnsembleError(f"refiner iterations must be a positive integer, got {iterations!r}")
        super().__init__(member)
        self.refiner = refiner
        self.letterbox_size = letterbox_size
        self.iterations = iterations

    def predict(self, images: Sequence[np.ndarray]) -> list[MemberOutput]:
        """The member's outputs, each reported box refined on its source image."""
        outputs = self.member.predict(images)
        return [self._refine(image, output) for image, output in zip(images, outputs)]

    def _refine(self, image: np.ndarray, output: MemberOutput) -> MemberOutput:
        if not output.detections:
            extras = {**output.extras, "proposals": [], "refiner": getattr(self.refiner, "name", "refiner")}
            return dataclasses.replace(output, extras=extras)
        height, width = int(image.shape[0]), int(image.shape[1])
        size = self.letterbox_size
        placed: list[Detection] = []
        keep: list[int] = []
        for index, detection in enumerate(output.detections):
            box = detection.box if size is None else letterbox_box_to_image(detection.box, height, width, size)
            if box is not None:  # a box entirely in the letterbox padding is left as it was
                placed.append(dataclasses.replace(detection, box=box))
                keep.append(index)
        for _ in range(self.iterations):
            placed = self.refiner.refine(image, placed)
        detections = list(output.detections)
        for index, refined in zip(keep, placed):
            box = refined.box if size is None else image_box_to_letterbox(refined.box, height, width, size)
            detections[index] = dataclasses.replace(detections[index], box=box)
        extras = {**output.extras, "proposals": [list(d.box) for d in output.detections],
                  "refiner": getattr(self.refiner, "name", "refiner")}
        return dataclasses.replace(output, detections=detections, extras=extras)


__all__ = ["RefinedMember"]
