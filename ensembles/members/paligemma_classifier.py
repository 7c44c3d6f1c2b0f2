"""``paligemma-classifier``: a PaliGemma asked a yes/no-style question about a fracture.

The checkpoint's prompt is the paper's classifier style (e.g. ``"Is there a fracture in this
x-ray?"``) and its ``labels`` are the two answers it was trained on, positive first
(``("Fracture", "Normal")``). One forward pass gives the first answer token's logits; the score
is the positive answer's probability against the two answers only::

    score = P(fracture) / (P(fracture) + P(normal))

using the *first* token of each answer as the model would write it after the prompt's ``\\n``
(the two must differ). Renormalising over the two answers keeps the score meaningful even when
an under-trained model spreads mass over other tokens; the absolute probabilities are kept in
``extras`` for audit. ``raw`` is the answer the model would give greedily between the two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ensembles.checkpoint import MemberSpec
from ensembles.errors import CheckpointError
from ensembles.members.paligemma_common import PaliGemmaMemberBase, load_member_parts
from ensembles.registry import MemberOptions, register_member
from ensembles.types import MemberKind, MemberOutput

KIND: str = MemberKind.PALIGEMMA_CLASSIFIER.value


class PaliGemmaClassifier(PaliGemmaMemberBase):
    """Image-level fracture score from a PaliGemma classifier checkpoint.

    Build it from loaded objects (benches use random-init real-size models) or with
    :func:`from_checkpoint`. ``spec.labels`` must hold the positive and the negative answer.
    """

    kind: str = KIND

    def __init__(
        self,
        model: Any,
        processor: Any,
        spec: MemberSpec,
        *,
        name: str | None = None,
        batch_size: int = 8,
    ) -> None:
        super().__init__(model, processor, spec, name=name, batch_size=batch_size)
        if len(spec.labels) != 2:
            raise CheckpointError(
                f"{KIND} needs labels [positive, negative] such as ['Fracture', 'Normal'] in "
                f"member.json, got {list(spec.labels)}"
            )
        self.positive, self.negative = spec.labels
        self.positive_id = self.token_id(self.positive, what="positive answer")
        self.negative_id = self.token_id(self.negative, what="negative answer")
        if self.positive_id == self.negative_id:
            raise CheckpointError(
                f"answers {self.positive!r} and {self.negative!r} start with the same token "
                f"({self.positive_id}), so the first step cannot tell them apart; choose "
                "answers whose first tokens differ"
            )

    def scores_from_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(score, probs)`` from first-step logits: the two-answer score and full softmax."""
        probs = torch.softmax(logits.float(), dim=-1)
        pair = probs[:, [self.positive_id, self.negative_id]]
        # log-space ratio keeps the score defined when both probabilities underflow
        pair_logits = logits.float()[:, [self.positive_id, self.negative_id]]
        score = torch.softmax(pair_logits, dim=-1)[:, 0]
        return score.clamp(0.0, 1.0), pair

    def _predict_batch(self, pixel_values: torch.Tensor) -> list[MemberOutput]:
        logits = self.first_step_logits(pixel_values)
        scores, pair = self.scores_from_logits(logits)
        outputs: list[MemberOutput] = []
        for score, (p_pos, p_neg) in zip(scores.tolist(), pair.tolist()):
            outputs.append(
                MemberOutput(
                    member=self.name,
                    score=float(score),
                    raw=self.positive if p_pos > p_neg else self.negative,
                    extras={
                        "p_positive": float(p_pos),
                        "p_negative": float(p_neg),
                        "answers": [self.positive, self.negative],
                    },
                )
            )
        return outputs


class ClassifierOptions(MemberOptions):
    """The options of a ``paligemma-classifier`` (see :class:`~ensembles.registry.MemberOptions`).

    Attributes:
        name: display name (default: ``member.json``'s).
    """

    name: str | None = None


# requirements and description: ensembles.registry.BUILTIN_KINDS
@register_member(KIND, options=ClassifierOptions)
def from_checkpoint(checkpoint_dir: Path, options: ClassifierOptions) -> PaliGemmaClassifier:
    """Load a classifier checkpoint (plain or LoRA adapter) from a local directory.

    Raises:
        CheckpointError: the checkpoint is missing, incomplete or for another kind.
        MemberUnavailableError: the device or quantisation cannot run here.
    """
    loaded, spec = load_member_parts(
        Path(checkpoint_dir), device=options.device, dtype=options.dtype,
        quantization=options.quantization,
    )
    return PaliGemmaClassifier(
        loaded.model, loaded.processor, spec, name=options.name, batch_size=options.batch_size
    )
