"""The one resize convention, held by two packages that may not import each other.

``ensembles.preprocess`` resizes model inputs; ``dicom_io.geometry`` maps boxes back to
source pixels. The arrows of the architecture forbid either importing the other, so the
letterbox/squash arithmetic exists in both: this test (in ``screen``, which sees both) is what
keeps them one convention.
"""

from __future__ import annotations

import numpy as np
import pytest

from dicom_io.geometry import ResizeSpec, resize_image
from ensembles.preprocess import PreprocessConfig, letterbox_box_to_image, letterbox_geometry, to_square
from ensembles.types import Box

SHAPES = [(384, 768), (768, 384), (517, 611), (611, 517), (1760, 1760), (31, 900), (223, 224), (100, 101)]


@pytest.mark.parametrize("rows, cols", SHAPES)
@pytest.mark.parametrize("size", [224, 448])
def test_letterbox_arithmetic_is_the_same(rows: int, cols: int, size: int) -> None:
    spec = ResizeSpec(rows, cols, size, "letterbox")
    ours = letterbox_geometry(rows, cols, size)
    assert (ours.new_h, ours.new_w, ours.pad_top, ours.pad_left) == (spec.new_h, spec.new_w, spec.pad_top, spec.pad_left)


@pytest.mark.parametrize("rows, cols", SHAPES[:4])
@pytest.mark.parametrize("mode", ["squash", "letterbox"])
def test_resized_pixels_are_the_same(rows: int, cols: int, mode: str) -> None:
    image = np.random.default_rng(rows * cols).random((rows, cols), dtype=np.float32)
    model_input = to_square(image, PreprocessConfig(image_size=224, resize=mode))
    reference = resize_image(image, ResizeSpec(rows, cols, 224, mode))
    np.testing.assert_allclose(model_input, reference, atol=1e-6)


@pytest.mark.parametrize("rows, cols", SHAPES)
def test_letterbox_box_maps_to_the_same_source_pixels(rows: int, cols: int) -> None:
    rng = np.random.default_rng(rows + cols)
    spec = ResizeSpec(rows, cols, 224, "letterbox")
    for _ in range(50):
        x0, x1 = sorted(rng.uniform(0, 1, 2))
        y0, y1 = sorted(rng.uniform(0, 1, 2))
        box = Box(x0, y0, x1 + 1e-3 if x1 - x0 < 1e-3 else x1, y1 + 1e-3 if y1 - y0 < 1e-3 else y1)
        box = Box(*(min(1.0, v) for v in box))
        in_image = letterbox_box_to_image(box, rows, cols, 224)
        col0, row0, col1, row1 = spec.box_to_source(box)
        if in_image is None:  # entirely in the padding: dicom_io clips it to a zero-width edge
            assert col0 == col1 or row0 == row1
            continue
        expected = (in_image.x0 * cols, in_image.y0 * rows, in_image.x1 * cols, in_image.y1 * rows)
        np.testing.assert_allclose((col0, row0, col1, row1), expected, atol=1e-6)
