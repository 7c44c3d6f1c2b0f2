"""``paligemma-detector``: PaliGemma prompted ``Detect Fracture``; decide first, then decode.

Image score, from one forward pass (the first answer token)::

    score = P(any loc token) / (P(any loc token) + P(normal))

summing the probability of all 1,024 ``<locNNNN>`` tokens against the first token of the
checkpoint's "no finding" answer (``Normal``). Plain greedy decoding hides positives: a box's
first-token mass is spread over many bins, so ``Normal`` wins the argmax even when the loc
mass is far larger (seen in a trial here).

Decode only when ``score >= threshold`` (``member.json`` ``threshold``): greedy generation with
the grammar forced into its box branch (:mod:`ensembles.grammar`), bounded by
``max_new_tokens``, so every decoded answer holds at least one valid box and parses with
:func:`ensembles.loc_tokens.parse_detections`.

Box confidence: the probability that the model emits this box at all. The first box exists
exactly when the answer is not ``Normal``, so its confidence is the image score. Box ``k + 1``
exists when, after box ``k``'s ``;``, the model goes on rather than ending; with ``c_k`` that
continuation probability (1 minus the grammar-renormalised probability of EOS at that step)::

    confidence(box 1) = score,   confidence(box k+1) = confidence(box k) * c_k

So confidences lie in ``[0, score]``, never rise along the answer, and scale with the image
score. The renormalised probabilities of each box's four loc tokens (how sharply it is
localised) are kept in ``extras["boxes"]`` for audit but are not part of the confidence: a
trained model's mass spreads over neighbouring bins, which says little about whether the
fracture is there.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList

from ensembles import symmetry
from ensembles.checkpoint import MemberSpec
from ensembles.errors import CheckpointError
from ensembles.grammar import DetectionGrammar, GrammarLogitsProcessor, GrammarState
from ensembles.loc_tokens import NORMAL_TEXT, parse_detections
from ensembles.members.paligemma_common import PaliGemmaMemberBase, load_member_parts
from ensembles.registry import MemberOptions, register_member
from ensembles.types import Box, Detection, MemberKind, MemberOutput

KIND: str = MemberKind.PALIGEMMA_DETECTOR.value
DEFAULT_MAX_BOXES = 4


class PaliGemmaDetector(PaliGemmaMemberBase):
    """Image score and boxes from a PaliGemma detector checkpoint.

    Args:
        model, processor, spec, name, batch_size: see :class:`PaliGemmaMemberBase`.
        max_boxes: most boxes per image (``options.max_boxes``, default 4).
        max_new_tokens: generation budget (``options.max_new_tokens``; default enough for
            ``max_boxes`` boxes). Must fit one box.
        normal: the "no finding" answer (``options.normal``, default ``"Normal"``).
        threshold: decode boxes when the score reaches it (``spec.threshold`` by default).
        symmetries: decode each positive image's boxes under this many of the square's
            symmetries (``options.symmetries``: 1, 2, 4 or 8; default 1, once) and place each
            box the plain decode found at the median of the corners the decodes gave it
            (:func:`ensembles.symmetry.median_boxes`). The plain decode decides how many boxes
            there are, their confidences and the raw answer (``MemberOutput.raw``); the others
            only place them. Costs one more decode per symmetry for images at or above the
            threshold.

    Raises:
        CheckpointError: the spec does not fit, or the tokenizer cannot express the grammar.
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
        max_boxes: int | None = None,
        max_new_tokens: int | None = None,
        normal: str | None = None,
        threshold: float | None = None,
        symmetries: int | None = None,
    ) -> None:
        super().__init__(model, processor, spec, name=name, batch_size=batch_size)
        options = spec.options
        try:
            self.symmetries = symmetry.first_symmetries(
                options.get("symmetries", 1) if symmetries is None else symmetries)
        except ValueError as exc:
            raise CheckpointError(f"{KIND}: {exc}") from None
        self.normal = normal or str(options.get("normal", NORMAL_TEXT))
        self.max_boxes = int(max_boxes or options.get("max_boxes", DEFAULT_MAX_BOXES))
        self.threshold = float(spec.threshold if threshold is None else threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise CheckpointError(f"threshold must be in [0, 1], got {self.threshold}")
        try:
            self.grammar = DetectionGrammar(
                self.tokenizer, spec.labels, normal=self.normal, max_boxes=self.max_boxes
            )
        except ValueError as exc:
            raise CheckpointError(f"{KIND} checkpoint cannot use the box grammar: {exc}") from None
        default_budget = self.max_boxes * (self.grammar.box_tokens + 1)
        budget = max_new_tokens or options.get("max_new_tokens", default_budget)
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise CheckpointError(f"max_new_tokens must be an integer, got {budget!r}")
        if budget < self.grammar.min_tokens(forced=True):
            raise CheckpointError(
                f"max_new_tokens={budget} cannot fit one box "
                f"({self.grammar.min_tokens(forced=True)} tokens with EOS); raise it"
            )
        self.max_new_tokens = budget
        self.normal_id = self.token_id(self.normal, what="normal answer")
        self.loc_ids = torch.tensor(self.grammar.loc_ids, dtype=torch.long, device=self.device)
        if self.normal_id in self.grammar.loc_ids:  # pragma: no cover - grammar refuses it
            raise CheckpointError("the normal answer starts with a loc token")

    def scores_from_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(score, probs)``: the loc-vs-normal score and ``(P(loc), P(normal))`` per row."""
        logits = logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)
        log_loc = torch.logsumexp(log_probs[:, self.loc_ids], dim=-1)
        log_normal = log_probs[:, self.normal_id]
        pair = torch.stack([log_loc, log_normal], dim=-1)
        score = torch.softmax(pair, dim=-1)[:, 0]
        return score.clamp(0.0, 1.0), pair.exp()

    def _predict_batch(self, pixel_values: torch.Tensor) -> list[MemberOutput]:
        logits = self.first_step_logits(pixel_values)
        scores, probs = self.scores_from_logits(logits)
        score_list = [float(s) for s in scores.tolist()]
        positive = [i for i, s in enumerate(score_list) if s >= self.threshold]
        decoded: dict[int, tuple[str, list[Detection], dict[str, Any]]] = {}
        if positive:
            chosen = pixel_values[positive]
            chosen_scores = [score_list[i] for i in positive]
            results = self.decode(chosen, chosen_scores)
            if len(self.symmetries) > 1:
                results = self._placed_by_symmetries(chosen, chosen_scores, results)
            for row, result in zip(positive, results):
                decoded[row] = result
        outputs: list[MemberOutput] = []
        for row, score in enumerate(score_list):
            p_loc, p_normal = (float(v) for v in probs[row].tolist())
            extras: dict[str, Any] = {"p_loc": p_loc, "p_normal": p_normal, "decoded": False}
            if row in decoded:
                text, detections, more = decoded[row]
                extras.update(more)
                extras["decoded"] = True
                outputs.append(MemberOutput(self.name, score, detections, text, extras))
            else:
                outputs.append(MemberOutput(self.name, score, [], self.normal, extras))
        return outputs

    def _placed_by_symmetries(
        self, pixel_values: torch.Tensor, scores: list[float],
        plain: list[tuple[str, list[Detection], dict[str, Any]]],
    ) -> list[tuple[str, list[Detection], dict[str, Any]]]:
        """``plain``'s boxes placed by the median over the decodes under :attr:`symmetries`."""
        others: list[list[list[Box]]] = [[] for _ in plain]
        for k in self.symmetries[1:]:
            for row, (_, seen, _) in enumerate(self.decode(symmetry.apply_to_pixels(pixel_values, k), scores)):
                others[row].append([symmetry.box_from_symmetry(d.box, k) for d in seen])
        placed = []
        for (text, detections, extras), boxes in zip(plain, others):
            fused = symmetry.median_boxes([d.box for d in detections], boxes)
            moved = [replace(d, box=box) for d, (box, _) in zip(detections, fused)]
            placed.append((text, moved, {**extras, "symmetries": len(self.symmetries),
                                         "symmetry_votes": [votes for _, votes in fused]}))
        return placed

    def decode(
        self, pixel_values: torch.Tensor, scores: list[float]
    ) -> list[tuple[str, list[Detection], dict[str, Any]]]:
        """Greedy grammar-forced box decoding for images already judged positive.

        Returns:
            Per image: the generated text, its detections (confidence as in the module
            docstring) and audit extras.
        """
        inputs = self.encode(pixel_values.shape[0])
        processor = GrammarLogitsProcessor(
            self.grammar, forced=True, max_new_tokens=self.max_new_tokens
        )
        out = self.model.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            token_type_ids=inputs["token_type_ids"],
            pixel_values=pixel_values,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            logits_processor=LogitsProcessorList([processor]),
            return_dict_in_generate=True,
            output_logits=True,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        start = inputs["input_ids"].shape[1]
        results = []
        for row, score in enumerate(scores):
            tokens = [int(t) for t in out.sequences[row, start:].tolist()]
            row_logits = [step[row] for step in out.logits]  # views: no (B, T, vocab) copy
            results.append(self._read_answer(tokens, row_logits, score))
        return results

    def _read_answer(
        self, tokens: list[int], logits: list[torch.Tensor], score: float
    ) -> tuple[str, list[Detection], dict[str, Any]]:
        """Replay the grammar over the generated tokens to score each box, then parse."""
        state: GrammarState = self.grammar.initial_state(forced=True)
        eos = self.grammar.eos_id
        boxes: list[dict[str, Any]] = []
        continuation = 1.0
        kept: list[int] = []
        for step, token in enumerate(tokens):
            if state.phase == "done":
                break
            remaining = self.max_new_tokens - step
            allowed = self.grammar.allowed(state, remaining)
            probs = torch.softmax(logits[step][allowed].float(), dim=-1)
            chosen = float(probs[allowed.index(token)]) if token in allowed else 0.0
            if self.grammar.is_box_decision(state) and eos in allowed:
                continuation = 1.0 - float(probs[allowed.index(eos)])
            next_state = self.grammar.advance(state, token)
            if next_state.phase == "loc" and len(next_state.locs) == 1:  # a box opens
                existence = score if not boxes else boxes[-1]["confidence"] * continuation
                boxes.append({"confidence": existence, "loc_probs": [chosen]})
            elif state.phase == "loc":
                boxes[-1]["loc_probs"].append(chosen)
            if token != eos:
                kept.append(token)
            state = next_state
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        parsed = parse_detections(text)
        detections: list[Detection] = []
        for item in parsed:
            info = boxes[item.group_index] if item.group_index < len(boxes) else None
            confidence = info["confidence"] if info else 0.0
            detections.append(item.to_detection(min(1.0, max(0.0, confidence))))
        for info in boxes:
            loc_probs = info["loc_probs"]
            product = 1.0
            for value in loc_probs:
                product *= max(value, 1e-12)
            info["loc_prob_geomean"] = product ** (1.0 / len(loc_probs)) if loc_probs else 0.0
        extras = {
            "boxes": boxes,
            "generated_tokens": len(tokens),
            "dropped": parsed.dropped,
            "drop_reasons": list(parsed.drop_reasons),
        }
        return text, detections, extras


class DetectorOptions(MemberOptions):
    """The options of a ``paligemma-detector`` (see :class:`~ensembles.registry.MemberOptions`).

    Attributes:
        name: display name (default: ``member.json``'s).
        max_boxes: most boxes decoded per image (default: ``member.json``'s, or the grammar's).
        max_new_tokens: generation budget (default: enough for ``max_boxes``).
        threshold: image score above which boxes are decoded (default: ``member.json``'s).
        symmetries: decodes per positive image, under the square's symmetries, whose median
            places each box (1, 2, 4 or 8; default: ``member.json``'s, or 1).
    """

    name: str | None = None
    max_boxes: int | None = None
    max_new_tokens: int | None = None
    threshold: float | None = None
    symmetries: int | None = None


# requirements and description: ensembles.registry.BUILTIN_KINDS
@register_member(KIND, options=DetectorOptions)
def from_checkpoint(checkpoint_dir: Path, options: DetectorOptions) -> PaliGemmaDetector:
    """Load a detector checkpoint (plain or LoRA adapter) from a local directory.

    Raises:
        CheckpointError: the checkpoint is missing, incomplete or for another kind.
        MemberUnavailableError: the device or quantisation cannot run here.
    """
    loaded, spec = load_member_parts(
        Path(checkpoint_dir), device=options.device, dtype=options.dtype,
        quantization=options.quantization,
    )
    return PaliGemmaDetector(
        loaded.model,
        loaded.processor,
        spec,
        name=options.name,
        batch_size=options.batch_size,
        max_boxes=options.max_boxes,
        max_new_tokens=options.max_new_tokens,
        threshold=options.threshold,
        symmetries=options.symmetries,
    )
