"""A member's score averaged over the square's symmetries (site config ``score_symmetries``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest
import torch

from ensembles.symmetry import ORDER, apply_to_image, apply_to_pixels
from ensembles.symmetry_scored import SymmetryScoredMember
from ensembles.types import Box, Detection, MemberOutput


def _corner_score(image: np.ndarray) -> float:
    """A score that depends on where the bright pixels lie: the top-left quarter's mean."""
    height, width = image.shape
    return float(image[: height // 2, : width // 2].mean())


class CornerMember:
    """Scores each image by :func:`_corner_score`, reports one fixed box; records its calls."""

    kind = "corner"

    def __init__(self, with_scores: bool) -> None:
        self.name = "corner"
        self.calls: list[tuple[str, list[tuple[int, ...]]]] = []
        if with_scores:
            self.scores = self._scores

    def predict(self, images: Sequence[np.ndarray]) -> list[MemberOutput]:
        self.calls.append(("predict", [image.shape for image in images]))
        return [MemberOutput(self.name, _corner_score(image), [Detection(Box(0.1, 0.2, 0.3, 0.4), "fracture", 0.9)],
                             raw="answer", extras={"seen": image.shape}) for image in images]

    def _scores(self, images: Sequence[np.ndarray]) -> list[float]:
        self.calls.append(("scores", [image.shape for image in images]))
        return [_corner_score(image) for image in images]


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.random((6, 10), dtype=np.float32), rng.random((8, 8), dtype=np.float32) ** 3]


def test_an_image_under_a_symmetry_is_the_member_input_under_it() -> None:
    square = np.arange(36, dtype=np.float32).reshape(6, 6)
    wide = np.arange(24, dtype=np.float32).reshape(4, 6)
    for k in range(8):
        np.testing.assert_array_equal(apply_to_image(square, k), apply_to_pixels(torch.from_numpy(square), k).numpy())
        moved = apply_to_image(wide, k)
        assert moved.shape == ((6, 4) if k & 1 else (4, 6)) and moved.flags["C_CONTIGUOUS"]
        assert sorted(moved.ravel().tolist()) == sorted(wide.ravel().tolist())
    np.testing.assert_array_equal(apply_to_image(wide, 1), wide.T)


@pytest.mark.parametrize("count", [2, 4, 8])
@pytest.mark.parametrize("with_scores", [True, False])
def test_the_score_is_the_mean_over_the_symmetries_and_the_rest_is_the_originals(count: int,
                                                                                 with_scores: bool) -> None:
    inner = CornerMember(with_scores)
    images = _images()
    outputs = SymmetryScoredMember(inner, count).predict(images)
    plain = CornerMember(False).predict(images)
    for image, output, original in zip(images, outputs, plain):
        expected = [_corner_score(apply_to_image(image, k)) for k in ORDER[:count]]
        assert output.extras["symmetry_scores"] == pytest.approx(expected)
        assert output.score == pytest.approx(float(np.mean(expected)))
        assert len(set(np.round(expected, 6))) > 1  # the symmetries do change this member's score
        assert (output.detections, output.raw, output.extras["seen"]) == (original.detections, original.raw,
                                                                         image.shape)
    # one full predict on the originals, then one score pass per other symmetry (transposes: W x H)
    assert inner.calls[0] == ("predict", [(6, 10), (8, 8)])
    assert [kind for kind, _ in inner.calls[1:]] == ["scores" if with_scores else "predict"] * (count - 1)
    assert [shapes[0] for _, shapes in inner.calls[1:]] == [(10, 6) if k & 1 else (6, 10) for k in ORDER[1:count]]


def test_one_symmetry_is_the_member_as_it_is_and_the_name_is_the_members() -> None:
    inner = CornerMember(True)
    wrapped = SymmetryScoredMember(inner, 1)
    assert wrapped.predict(_images()) == CornerMember(True).predict(_images())
    assert [kind for kind, _ in inner.calls] == ["predict"]  # no other pass
    wrapped.name = "site-name"
    assert inner.name == "site-name" and wrapped.name == "site-name" and wrapped.kind == "corner"


@pytest.mark.parametrize("count", [0, 3, 16, True, 8.0])
def test_a_count_that_is_not_a_symmetry_count_is_refused(count: object) -> None:
    with pytest.raises(ValueError, match="1, 2, 4, 8"):
        SymmetryScoredMember(CornerMember(True), count)  # type: ignore[arg-type]


def test_a_member_that_answers_for_fewer_images_is_an_error() -> None:
    inner = CornerMember(True)
    inner.scores = lambda images: [0.5]  # type: ignore[method-assign]
    with pytest.raises(ValueError):
        SymmetryScoredMember(inner, 2).predict(_images())
