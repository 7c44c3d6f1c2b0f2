"""The ``toy`` phantom style: one or two bright rectangles or ellipses on noise.

Trivially easy for any detector that works, which is its purpose: the learnability check of the
detector training path (``bench/learnability.py``) trains a tiny PaliGemma detector on it through
the real ``screen prepare`` → ``detector.jsonl`` → ``screen train detector`` path and asks for
held-out boxes at IoU >= 0.5. A path that cannot learn these boxes cannot learn fractures.

A "positive" image carries one shape (two in ``two_fracture_fraction`` of them), each 12..30 % of
the short side per axis, anywhere on the canvas; a "negative" image is noise alone. The truth box
is the shape's bounding box (exclusive ends, as every phantom box).
"""

from __future__ import annotations

import cv2
import numpy as np

from dicom_io.phantom.draw import MAX_VALUE, Box, PhantomImage

#: Background level and noise σ (12-bit linear values).
TOY_BACKGROUND = (300.0, 700.0)
TOY_NOISE_SIGMA = (20.0, 60.0)
#: Brightness of a shape above the background.
TOY_GAIN = (800.0, 1600.0)
#: Side of a shape as a share of the canvas' short side (each axis drawn apart).
TOY_SIZE = (0.12, 0.30)


def _shape(rng: np.random.Generator, rows: int, cols: int, taken: list[Box]) -> tuple[np.ndarray, Box]:
    short = min(rows, cols)
    for _attempt in range(50):
        h = int(round(rng.uniform(*TOY_SIZE) * short))
        w = int(round(rng.uniform(*TOY_SIZE) * short))
        y0 = int(rng.integers(0, rows - h + 1))
        x0 = int(rng.integers(0, cols - w + 1))
        box = (x0, y0, x0 + w, y0 + h)
        if all(box[2] <= t[0] or t[2] <= box[0] or box[3] <= t[1] or t[3] <= box[1] for t in taken):
            break
    mask = np.zeros((rows, cols), np.float32)
    if rng.random() < 0.5:
        mask[y0:y0 + h, x0:x0 + w] = 1.0
    else:
        centre = (x0 + w / 2.0 - 0.5, y0 + h / 2.0 - 0.5)
        cv2.ellipse(mask, (int(round(centre[0] * 16)), int(round(centre[1] * 16))),
                    (int(round((w / 2.0 - 0.5) * 16)), int(round((h / 2.0 - 0.5) * 16))),
                    0.0, 0.0, 360.0, 1.0, -1, cv2.LINE_AA, 4)
    return mask, box


def generate_toy_image(rng: np.random.Generator, *, positive: bool, size_range: tuple[int, int],
                       two_fracture_fraction: float) -> PhantomImage:
    """Draw one toy image: its truth boxes are the shapes' bounding boxes."""
    rows = int(rng.integers(size_range[0], size_range[1] + 1))
    cols = int(rng.integers(size_range[0], size_range[1] + 1))
    image = np.full((rows, cols), rng.uniform(*TOY_BACKGROUND), np.float32)
    boxes: list[Box] = []
    n_shapes = (2 if rng.random() < two_fracture_fraction else 1) if positive else 0
    for _ in range(n_shapes):
        mask, box = _shape(rng, rows, cols, boxes)
        image += mask * np.float32(rng.uniform(*TOY_GAIN))
        boxes.append(box)
    image = image + rng.normal(0.0, rng.uniform(*TOY_NOISE_SIGMA), size=(rows, cols)).astype(np.float32)
    pixels = np.clip(np.rint(image), 0, MAX_VALUE).astype(np.uint16)
    return PhantomImage(pixels=pixels, boxes=tuple(boxes), n_fractures=len(boxes), distractor=None, n_rods=0)
