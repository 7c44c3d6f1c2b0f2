"""Box training data shared by the DETR and refiner recipes: ``boxes.jsonl`` records, cached.

A DETR input is the radiograph letterboxed to a square by :func:`ensembles.preprocess.to_square`
(the very function inference uses) and then normalised; the grey square is cached as float16
(a third of the memory of the three normalised planes), and normalisation is applied per batch
with the same arithmetic as :func:`ensembles.preprocess.preprocess_image`'s last step.
Truth boxes are mapped into the square with :func:`train.datasets.input_boxes` (the project's
one resize convention).

Augmentation is the dihedral group of the square (transpose, horizontal and vertical flips),
applied to the cached square and its boxes together: exact for flips, and for the phantom's
bones at any angle a transpose is as plausible as the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ensembles.preprocess import PreprocessConfig, to_square
from train.appearance import AppearanceSource
from train.datasets import boxes_inside, input_boxes, load_image, record_boxes_px


class SquareCache:
    """Each record's grey input square and its boxes in the square's frame, loaded once.

    Args:
        data_dir: the prepared data folder.
        records: ``boxes.jsonl`` records.
        preprocess: the member's preprocessing (letterbox, size, Canny, CLAHE).
        label_names: the model's classes; a box label outside them is refused.
        cache: keep squares in memory after the first load.
        appearance: re-render each training image per use (``[appearance]``,
            :mod:`train.appearance`) when :meth:`get` is given a generator.
    """

    def __init__(
        self,
        data_dir: Path,
        records: Sequence[dict[str, Any]],
        preprocess: PreprocessConfig,
        label_names: Sequence[str],
        *,
        cache: bool = True,
        appearance: AppearanceSource | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.records = list(records)
        self.preprocess = preprocess
        self.label_names = tuple(label_names)
        self.cache = cache
        self.appearance = appearance
        self._store: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def get(self, index: int, rng: np.random.Generator | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(grey S x S float32, boxes (n, 4) xyxy in [0, 1], classes (n,) int64)``; with
        ``rng`` and ``appearance``, the image re-rendered (its boxes keep their classes)."""
        if rng is not None and self.appearance is not None:
            record = self.records[index]
            grey, boxes = self.appearance.draw(index, rng)
            classes = self._classes(index, int(record.get("rows", 0)), int(record.get("cols", 0)))
            if len(classes) != len(boxes):  # a record without its size: one class for all
                classes = np.zeros(len(boxes), dtype=np.int64)
            return grey, boxes, classes
        if index in self._store:
            grey, boxes, classes = self._store[index]
            return grey.astype(np.float32), boxes, classes
        record = self.records[index]
        image = load_image(self.data_dir, record)
        rows, cols = image.shape
        boxes = input_boxes(record_boxes_px(record), rows, cols, self.preprocess)
        classes = self._classes(index, rows, cols)
        # float16 on the first load too, so the first epoch sees what later ones do
        grey = to_square(image, self.preprocess).astype(np.float16)
        if self.cache:
            self._store[index] = (grey, boxes, classes)
        return grey.astype(np.float32), boxes, classes

    def _classes(self, index: int, rows: int, cols: int) -> np.ndarray:
        """The classes of record ``index``'s boxes that have something inside its ``rows x
        cols`` image (:func:`~train.datasets.input_boxes` drops the others)."""
        record = self.records[index]
        boxes_px = record_boxes_px(record)
        names = list(record.get("labels", []))
        if len(names) != len(boxes_px):
            names = [self.label_names[0]] * len(boxes_px)
        kept = [name for name, inside in zip(names, boxes_inside(boxes_px, rows, cols)) if inside]
        return np.array([self.label_names.index(n) for n in kept], dtype=np.int64)

    def label(self, index: int) -> int:
        """1 for a fracture image, 0 for a normal one."""
        return int(self.records[index].get("label") == "fracture")

    def study(self, index: int) -> str:
        return str(self.records[index].get("study_instance_uid", ""))


def dihedral(
    grey: np.ndarray, boxes: np.ndarray, draws: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Transpose / flip a square and its normalised xyxy boxes; ``draws`` are 3 numbers in
    ``[0, 1)`` deciding transpose, horizontal flip and vertical flip (each when < 0.5)."""
    out = grey
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    if draws[0] < 0.5:
        out = out.T
        b = b[:, [1, 0, 3, 2]]
    if draws[1] < 0.5:
        out = out[:, ::-1]
        b = np.stack([1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]], axis=1)
    if draws[2] < 0.5:
        out = out[::-1, :]
        b = np.stack([b[:, 0], 1 - b[:, 3], b[:, 2], 1 - b[:, 1]], axis=1)
    return np.ascontiguousarray(out), b.reshape(-1, 4).astype(np.float32)


def normalise(grey: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """``(B, S, S)`` grey squares to ``(B, 3, S, S)`` model inputs: grey to three channels, then
    ``(x - mean) / std`` per channel (``ensembles.preprocess.preprocess_image``'s last step)."""
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (grey.float().unsqueeze(1) - mean) / std


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """Normalised xyxy to DETR's normalised ``(cx, cy, w, h)``."""
    if boxes.numel() == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    return torch.stack(
        [(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
         boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1,
    )
