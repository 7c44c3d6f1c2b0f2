"""A member whose image score is the mean of its scores under the square's symmetries.

Test-time augmentation of the decision: a fracture is a fracture flipped or transposed, so a
member that scores an image and its flips differently is unsure, and the mean of those scores
can rank studies better than any one of them (on the demo's phantom sets it raised the fused
score's study AUC in all three styles, most on the ``shifted`` one: README, "The ensemble").
:class:`SymmetryScoredMember` puts that behind the member interface (site config
``score_symmetries``), for any member kind:

1. the wrapped member predicts on the images as they are: its detections, raw answer and
   extras are kept as they are (boxes are not moved or re-voted here; a PaliGemma detector's
   own ``symmetries`` option places its boxes);
2. the member scores each image under the next ``count - 1`` symmetries of
   :data:`ensembles.symmetry.ORDER` (the flips first), through its ``scores(images)`` when it
   has one (PaliGemma members: one forward pass, no decoding), else its ``predict``;
3. the image score becomes the mean of the ``count`` scores; the per-symmetry scores are kept in
   ``MemberOutput.extras["symmetry_scores"]`` for audit.

A detector's boxes stay those it reported on the original image, each with its own score, so an
image can score above a threshold with no box of its own (as the classifier's images do).
The operating point must be tuned on scores made with the same setting (``screen eval`` with the
site config that has it, then ``screen tune``): the mean is less extreme than one score.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ensembles import symmetry
from ensembles.registry import MemberWrapper
from ensembles.types import MemberOutput


class SymmetryScoredMember(MemberWrapper):
    """``member`` with its image score averaged over ``count`` symmetries (module docstring).

    Args:
        member: any member (``predict(images) -> MemberOutput``), optionally with
            ``scores(images) -> list[float]`` for a cheaper score-only pass.
        count: symmetries per image, one of :data:`ensembles.symmetry.COUNTS` (1: the member
            as it is).
    """

    def __init__(self, member: Any, count: int) -> None:
        self.symmetries = symmetry.first_symmetries(count)
        super().__init__(member)

    def predict(self, images: Sequence[np.ndarray]) -> list[MemberOutput]:
        """The member's outputs on ``images``, each score the mean over the symmetries."""
        outputs = self.member.predict(images)
        if len(self.symmetries) == 1:
            return outputs
        if len(outputs) != len(images):
            raise RuntimeError(f"member {self.name!r} returned {len(outputs)} outputs for {len(images)} images")
        scores = [[float(output.score)] for output in outputs]
        for k in self.symmetries[1:]:
            moved = [symmetry.apply_to_image(image, k) for image in images]
            for found, score in zip(scores, self._scores(moved), strict=True):
                found.append(score)
        return [
            dataclasses.replace(output, score=float(np.mean(found)),
                                extras={**output.extras, "symmetry_scores": found})
            for output, found in zip(outputs, scores)
        ]

    def _scores(self, images: Sequence[np.ndarray]) -> list[float]:
        scorer = getattr(self.member, "scores", None)
        if callable(scorer):
            return [float(v) for v in scorer(images)]
        return [float(output.score) for output in self.member.predict(images)]


__all__ = ["SymmetryScoredMember"]
