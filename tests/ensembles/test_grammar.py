"""The detection grammar: every sampled answer parses, boxes are valid, budgets are kept."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ensembles.grammar import DetectionGrammar, GrammarError, GrammarLogitsProcessor  # noqa: E402
from ensembles.loc_tokens import parse_detections  # noqa: E402
from ensembles.members.paligemma_inputs import encode_prompts  # noqa: E402
from ensembles.demo_arch.paligemma import build_tiny_paligemma, build_tiny_processor, build_tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return build_tiny_processor(image_size=32, image_seq_length=4).tokenizer


def _sample(
    tokenizer, grammar: DetectionGrammar, *, forced: bool, max_new: int, seed: int,  # type: ignore[no-untyped-def]
    normal_bias: float, batch: int = 16,
) -> list[list[int]]:
    """Sample answers from random logits through the processor, the way ``generate`` does."""
    gen = torch.Generator().manual_seed(seed)
    processor = GrammarLogitsProcessor(grammar, forced=forced, max_new_tokens=max_new)
    vocab = len(tokenizer)
    normal_id = tokenizer.encode(grammar.normal, add_special_tokens=False)[0]
    ids = torch.full((batch, 3), 2, dtype=torch.long)
    done = torch.zeros(batch, dtype=torch.bool)
    for _ in range(max_new):
        scores = 3.0 * torch.randn(batch, vocab, generator=gen)
        scores[:, normal_id] += normal_bias
        masked = processor(ids, scores)
        assert torch.isfinite(masked).any(dim=-1).all(), "grammar left a row with no token"
        nxt = torch.multinomial(torch.softmax(masked, dim=-1), 1, generator=gen).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, tokenizer.pad_token_id), nxt)
        done |= nxt == tokenizer.eos_token_id
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if done.all():
            break
    return [row[3:].tolist() for row in ids]


def _check(tokenizer, rows: list[list[int]], max_new: int, *, forced: bool, max_boxes: int):  # type: ignore[no-untyped-def]
    """Every row ends with EOS within budget and parses without drops; returns box counts."""
    counts = []
    for tokens in rows:
        assert tokenizer.eos_token_id in tokens, "answer did not end within the budget"
        end = tokens.index(tokenizer.eos_token_id)
        assert end + 1 <= max_new
        text = tokenizer.decode(tokens[:end], skip_special_tokens=True)
        parsed = parse_detections(text)
        assert parsed.dropped == 0, (text, parsed.drop_reasons)
        assert parsed.is_normal or len(parsed) >= 1, text
        for det in parsed:
            assert 0 <= det.box.x0 < det.box.x1 <= 1 and 0 <= det.box.y0 < det.box.y1 <= 1
        if forced:
            assert len(parsed) >= 1, text
        assert len(parsed) <= max_boxes
        counts.append(len(parsed))
    return counts


@pytest.mark.parametrize("seed", range(6))
def test_sampled_answers_always_parse(tokenizer, seed: int) -> None:  # type: ignore[no-untyped-def]
    grammar = DetectionGrammar(tokenizer, ("Fracture",), max_boxes=3)
    rows = _sample(tokenizer, grammar, forced=False, max_new=40, seed=seed, normal_bias=10.0)
    counts = _check(tokenizer, rows, 40, forced=False, max_boxes=3)
    # with this bias both branches occur: some Normal, some boxes
    assert 0 in counts and max(counts) >= 1


@pytest.mark.parametrize("seed", range(4))
def test_forced_mode_always_gives_a_box(tokenizer, seed: int) -> None:  # type: ignore[no-untyped-def]
    grammar = DetectionGrammar(tokenizer, ("Fracture",), max_boxes=4)
    rows = _sample(tokenizer, grammar, forced=True, max_new=40, seed=seed, normal_bias=50.0)
    counts = _check(tokenizer, rows, 40, forced=True, max_boxes=4)
    assert min(counts) >= 1


def test_tight_budget_still_ends_with_eos(tokenizer) -> None:  # type: ignore[no-untyped-def]
    grammar = DetectionGrammar(tokenizer, ("Fracture",), max_boxes=8)
    budget = grammar.box_tokens  # exactly one box fits
    rows = _sample(tokenizer, grammar, forced=True, max_new=budget, seed=1, normal_bias=0.0)
    assert _check(tokenizer, rows, budget, forced=True, max_boxes=1) == [1] * len(rows)


def test_multi_token_labels(tokenizer) -> None:  # type: ignore[no-untyped-def]
    labels = ("hairline fracture", "Fracture")
    assert len(tokenizer.encode(" hairline fracture;", add_special_tokens=False)) > 2
    grammar = DetectionGrammar(tokenizer, labels, max_boxes=3)
    seen: set[str] = set()
    for seed in range(3):
        rows = _sample(tokenizer, grammar, forced=True, max_new=60, seed=seed, normal_bias=0.0)
        _check(tokenizer, rows, 60, forced=True, max_boxes=3)
        for tokens in rows:
            end = tokens.index(tokenizer.eos_token_id)
            seen |= {d.label for d in parse_detections(tokenizer.decode(tokens[:end]))}
    assert seen == {"hairline fracture", "fracture"}


def test_grammar_refuses_what_it_cannot_do(tokenizer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GrammarError, match="loc"):
        DetectionGrammar(build_tiny_tokenizer())  # no loc tokens without the processor
    grammar = DetectionGrammar(tokenizer)
    with pytest.raises(GrammarError, match="max_new_tokens"):
        GrammarLogitsProcessor(grammar, forced=True, max_new_tokens=grammar.box_tokens - 1)
    state = grammar.initial_state(forced=True)
    with pytest.raises(GrammarError):
        grammar.advance(state, tokenizer.eos_token_id)  # forced: no empty answer
    state = grammar.advance(state, grammar.loc_ids[500])
    state = grammar.advance(state, grammar.loc_ids[10])
    with pytest.raises(GrammarError, match="loc bin"):
        grammar.advance(state, grammar.loc_ids[400])  # y_max must exceed y_min
    with pytest.raises(GrammarError):
        DetectionGrammar(tokenizer, max_boxes=0)


class _FavourNormal(LogitsProcessor):
    def __init__(self, token: int) -> None:
        self.token = token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] == self.start:  # type: ignore[attr-defined]
            scores = scores.clone()
            scores[:, self.token] += 7.5
        return scores


@pytest.mark.parametrize("forced", [False, True], ids=["free", "forced"])
def test_random_model_samples_parse(forced: bool) -> None:
    model, processor = build_tiny_paligemma(image_size=32, patch=16, siglip_hidden=32,
                                            siglip_layers=1, text_hidden=32, text_layers=1)
    tok = processor.tokenizer
    grammar = DetectionGrammar(tok, ("Fracture",), max_boxes=3)
    enc = encode_prompts(tok, ["Detect Fracture"] * 8, processor.image_seq_length)
    favour = _FavourNormal(tok.encode("Normal", add_special_tokens=False)[0])
    favour.start = enc["input_ids"].shape[1]  # type: ignore[attr-defined]
    counts: list[int] = []
    for seed in range(3):
        torch.manual_seed(seed)
        gram = GrammarLogitsProcessor(grammar, forced=forced, max_new_tokens=24)
        out = model.generate(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
            token_type_ids=enc["token_type_ids"], pixel_values=torch.randn(8, 3, 32, 32),
            do_sample=True, max_new_tokens=24,
            logits_processor=LogitsProcessorList([favour, gram]),
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )
        rows = out[:, enc["input_ids"].shape[1]:].tolist()
        counts += _check(tok, rows, 24, forced=forced, max_boxes=3)
    if forced:
        assert min(counts) >= 1
    else:
        assert 0 in counts  # the bias makes some answers Normal, and those parse too
