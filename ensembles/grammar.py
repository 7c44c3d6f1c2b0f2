"""Constrained decoding for PaliGemma's detection answers: ``normal | (<loc>{4} label ;)+``.

A trained detector should never emit text the codec cannot parse, and a random or half-trained
one must not either (the tests sample from random-init models). :class:`DetectionGrammar` is a
small automaton over token ids, built from the tokenizer, and
:class:`GrammarLogitsProcessor` applies it in ``generate`` by setting every token the grammar
does not allow to ``-inf``. It costs about 2x on a tiny model (docs/stack-notes.md) and nothing that
matters on a real one.

The language, in the text the codec reads (:mod:`ensembles.loc_tokens`)::

    answer := normal EOS | box (" " box)* EOS
    box    := <loc y0><loc x0><loc y1><loc x1> " " label ";"

- Box validity is part of the grammar: ``y0, x0 <= 1022`` and ``y1 > y0``, ``x1 > x0``, so
  every decoded box survives the codec's checks.
- Labels, ``normal``, ``";"`` and the separator are token *sequences*, taken from the
  tokenizer's own tokenization of the canonical text, so a trained model's preferred path is
  always allowed and multi-token labels work.
- ``forced`` mode removes the ``normal`` branch: the detector decides "fracture" from the first
  step's probabilities, then decodes boxes only (decide first, then decode).
- With a token budget (``max_new_tokens``) the grammar only starts what it can finish: a token
  is allowed only when the shortest completion after it still fits, so the answer always ends
  with EOS and parses, even when the budget cuts the number of boxes.
- ``max_boxes`` bounds the boxes per answer.

Use one :class:`GrammarLogitsProcessor` per ``generate`` call, with greedy or sampled decoding
(``num_beams=1``); beam search reorders rows and is not supported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence, cast

import torch
from transformers import LogitsProcessor

from ensembles.errors import EnsembleError
from ensembles.loc_tokens import LOC_TOKENS, NORMAL_TEXT, NUM_LOC_BINS

LOC_BINS = NUM_LOC_BINS


class GrammarError(EnsembleError, ValueError):
    """The tokenizer cannot express the grammar, or a budget is too small for any answer."""


@dataclass
class _Node:
    """A trie node over the token sequences of ``normal`` or a box's tail."""

    children: dict[int, "_Node"] = field(default_factory=dict)
    accept_eos: bool = False  # EOS allowed here: the answer may end
    to_loc: bool = False  # a new box's first loc token allowed here
    min_finish: float = math.inf  # fewest tokens (EOS included) to end from here
    min_finish_no_box: float = math.inf  # the same without opening another box


@dataclass(frozen=True)
class GrammarState:
    """Where one row of a batch is in the grammar.

    Attributes:
        phase: ``"trie"`` (inside ``normal`` or a box tail, or at the start), ``"loc"`` (inside
            a box's four loc tokens) or ``"done"`` (EOS emitted).
        node: the trie node in phase ``"trie"``.
        locs: the bins of the current box emitted so far, in ``y0 x0 y1 x1`` order.
        boxes: boxes completed or started so far.
    """

    phase: str
    node: _Node | None = None
    locs: tuple[int, ...] = ()
    boxes: int = 0


class DetectionGrammar:
    """The automaton for ``normal | (<loc>{4} label ;)+`` over one tokenizer's ids.

    Args:
        tokenizer: a PaliGemma tokenizer (the loc tokens must be single added tokens).
        labels: box labels the detector may emit, as written in training (``"Fracture"``).
        normal: the answer for "no box" (``"Normal"``).
        separator: text between two boxes (``" "`` in both the paper's and PaliGemma's format).
        max_boxes: most boxes per answer.

    Raises:
        GrammarError: a loc token is missing or split, or a label/normal/separator does not
            tokenize to a sequence the automaton can tell apart from loc tokens and EOS.
    """

    def __init__(
        self,
        tokenizer: Any,
        labels: Sequence[str] = ("Fracture",),
        *,
        normal: str = NORMAL_TEXT,
        separator: str = " ",
        max_boxes: int = 8,
    ) -> None:
        if isinstance(labels, str) or not labels or not all(
            isinstance(x, str) and x.strip() for x in labels
        ):
            raise GrammarError(f"labels must list non-empty strings, got {labels!r}")
        if not isinstance(normal, str) or not normal.strip():
            raise GrammarError(f"normal must be a non-empty string, got {normal!r}")
        if isinstance(max_boxes, bool) or not isinstance(max_boxes, int) or max_boxes < 1:
            raise GrammarError(f"max_boxes must be an integer >= 1, got {max_boxes!r}")
        self.labels = tuple(labels)
        self.normal = normal
        self.separator = separator
        self.max_boxes = max_boxes
        self.eos_id = int(tokenizer.eos_token_id)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else None
        self.loc_ids = self._loc_ids(tokenizer)
        self._loc_set = frozenset(self.loc_ids)
        self._bin_of = {token: index for index, token in enumerate(self.loc_ids)}
        self.loc_tensor = torch.tensor(self.loc_ids, dtype=torch.long)

        self.start = _Node(to_loc=True)
        self._insert(self.start, self._encode(tokenizer, normal), end="eos")
        self.forced_start = _Node(to_loc=True)
        self.tail = _Node()
        for label in self.labels:
            self._insert(self.tail, self._encode(tokenizer, f" {label};"), end="eos")
            more = self._encode(tokenizer, f" {label};{separator}")
            self._insert(self.tail, more, end="loc")
        self._box_min = 4 + self._finish(self.tail, with_box=False)
        for node in (self.tail, self.start, self.forced_start):
            self._finish(node, with_box=True)
            self._finish(node, with_box=False)

    # -- construction -------------------------------------------------------------------

    @staticmethod
    def _loc_ids(tokenizer: Any) -> tuple[int, ...]:
        ids: list[int] = []
        unk = getattr(tokenizer, "unk_token_id", None)
        for index in range(LOC_BINS):
            token = LOC_TOKENS[index]
            encoded = tokenizer.encode(token, add_special_tokens=False)
            if len(encoded) != 1 or encoded[0] == unk:
                raise GrammarError(
                    f"tokenizer does not hold {token} as one token (got {encoded}); build it "
                    "through PaliGemmaProcessor, which adds the 1024 loc tokens"
                )
            ids.append(int(encoded[0]))
        return tuple(ids)

    def _encode(self, tokenizer: Any, text: str) -> tuple[int, ...]:
        ids = tuple(int(i) for i in tokenizer.encode(text, add_special_tokens=False))
        if not ids:
            raise GrammarError(f"text {text!r} tokenizes to nothing")
        bad = [i for i in ids if i in self._loc_set or i == self.eos_id]
        if bad:
            raise GrammarError(f"text {text!r} tokenizes to loc or EOS tokens {bad}")
        return ids

    def _insert(self, root: _Node, ids: Sequence[int], *, end: str) -> None:
        node = root
        for token in ids:
            node = node.children.setdefault(token, _Node())
        if end == "eos":
            node.accept_eos = True
        else:
            node.to_loc = True

    def _finish(self, node: _Node, *, with_box: bool) -> float:
        """Fill ``min_finish`` (or ``min_finish_no_box``) below ``node``: fewest tokens to EOS."""
        best = 1.0 if node.accept_eos else math.inf
        if node.to_loc and with_box:
            best = min(best, float(self._box_min))
        for child in node.children.values():
            best = min(best, 1.0 + self._finish(child, with_box=with_box))
        if with_box:
            node.min_finish = best
        else:
            node.min_finish_no_box = best
        return best

    # -- stepping -----------------------------------------------------------------------

    def initial_state(self, forced: bool = False) -> GrammarState:
        """The state before the first new token; ``forced`` leaves out ``normal``."""
        return GrammarState("trie", self.forced_start if forced else self.start)

    def min_tokens(self, forced: bool = False) -> int:
        """The shortest answer (EOS included) from the start."""
        return int((self.forced_start if forced else self.start).min_finish)

    @property
    def box_tokens(self) -> int:
        """Tokens of the shortest one-box answer: four locs, a label tail and EOS."""
        return int(self._box_min)

    def _loc_range(self, state: GrammarState) -> tuple[int, int]:
        """Allowed bins ``[low, high)`` for the next loc token of ``state``."""
        count = len(state.locs)
        if count < 2:
            return 0, LOC_BINS - 1
        return state.locs[count - 2] + 1, LOC_BINS

    def _can_open_box(self, state: GrammarState, remaining: int | None) -> bool:
        if state.boxes >= self.max_boxes:
            return False
        return remaining is None or self._box_min <= remaining

    def allowed(self, state: GrammarState, remaining: int | None = None) -> list[int]:
        """Token ids allowed next; ``remaining`` counts the tokens still to generate.

        Never empty for a state reached with a sufficient budget: the budget check keeps a
        way to EOS open.
        """
        if state.phase == "done":
            return [self.eos_id] if self.pad_id is None else [self.eos_id, self.pad_id]
        if state.phase == "loc":
            low, high = self._loc_range(state)
            return list(self.loc_ids[low:high])
        node = state.node
        if node is None:  # pragma: no cover - constructed states always carry a node
            raise GrammarError("grammar state in phase 'trie' without a node")
        out: list[int] = []
        if node.accept_eos:
            out.append(self.eos_id)
        if node.to_loc and self._can_open_box(state, remaining):
            out.extend(self.loc_ids[: LOC_BINS - 1])
        more_boxes = state.boxes < self.max_boxes
        for token, child in node.children.items():
            finish = child.min_finish if more_boxes else child.min_finish_no_box
            if math.isfinite(finish) and (remaining is None or 1 + finish <= remaining):
                out.append(token)
        return out

    def advance(self, state: GrammarState, token: int) -> GrammarState:
        """The state after emitting ``token`` (which must be allowed).

        Raises:
            GrammarError: the token is not allowed in ``state``.
        """
        token = int(token)
        if state.phase == "done":
            if token in (self.eos_id, self.pad_id):
                return state
            raise GrammarError(f"token {token} after EOS")
        if token == self.eos_id:
            if state.phase == "trie" and state.node is not None and state.node.accept_eos:
                return GrammarState("done", boxes=state.boxes)
            raise GrammarError("EOS inside a box or an unfinished word")
        if state.phase == "loc":
            low, high = self._loc_range(state)
            bin_index = self._bin_of.get(token)
            if bin_index is None or not low <= bin_index < high:
                raise GrammarError(f"token {token} is not a loc bin in [{low}, {high})")
            locs = state.locs + (bin_index,)
            if len(locs) == 4:
                return GrammarState("trie", self.tail, (), state.boxes)
            return GrammarState("loc", None, locs, state.boxes)
        node = state.node
        if node is None:  # pragma: no cover - constructed states always carry a node
            raise GrammarError("grammar state in phase 'trie' without a node")
        if token in self._loc_set and node.to_loc:
            bin_index = self._bin_of[token]
            if bin_index >= LOC_BINS - 1 or state.boxes >= self.max_boxes:
                raise GrammarError(f"loc bin {bin_index} cannot open a box here")
            return GrammarState("loc", None, (bin_index,), state.boxes + 1)
        child = node.children.get(token)
        if child is None:
            raise GrammarError(f"token {token} is not allowed here by the grammar")
        return GrammarState("trie", child, (), state.boxes)

    def is_box_decision(self, state: GrammarState) -> bool:
        """True after a box's ``;``, where the answer may end or go on with another box."""
        node = state.node
        return (
            state.phase == "trie"
            and node is not None
            and node is not self.start
            and node is not self.forced_start
            and node.accept_eos
            and (node.to_loc or bool(node.children))
        )


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks every token the grammar does not allow, per row, in ``generate``.

    Args:
        grammar: the automaton.
        forced: decode boxes only (the detector's decide-then-decode branch).
        max_new_tokens: the ``generate`` budget; the grammar plans to end within it.

    Raises:
        GrammarError: the budget cannot fit the shortest answer.
    """

    def __init__(
        self, grammar: DetectionGrammar, *, forced: bool = False, max_new_tokens: int | None = None
    ) -> None:
        needed = grammar.min_tokens(forced)
        if max_new_tokens is not None and max_new_tokens < needed:
            raise GrammarError(
                f"max_new_tokens={max_new_tokens} cannot fit the shortest "
                f"{'box' if forced else ''} answer ({needed} tokens with EOS); raise it"
            )
        self.grammar = grammar
        self.forced = forced
        self.max_new_tokens = max_new_tokens
        self._start_len: int | None = None
        self._states: list[GrammarState] = []

    def reset(self) -> None:
        """Forget the rows (a new ``generate`` call resets automatically)."""
        self._start_len = None
        self._states = []

    @property
    def states(self) -> list[GrammarState]:
        """Per-row states after the last call."""
        return list(self._states)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, length = input_ids.shape
        if self._start_len is None or length <= self._start_len or batch != len(self._states):
            self._start_len = length
            self._states = [self.grammar.initial_state(self.forced) for _ in range(batch)]
        else:
            last = input_ids[:, -1].tolist()
            self._states = [
                self.grammar.advance(state, token) for state, token in zip(self._states, last)
            ]
        generated = length - self._start_len
        remaining = None if self.max_new_tokens is None else self.max_new_tokens - generated
        mask = torch.ones_like(scores, dtype=torch.bool)
        vocab = scores.shape[-1]
        for row, state in enumerate(self._states):
            allowed = [i for i in self.grammar.allowed(state, remaining) if i < vocab]
            mask[row, allowed] = False
        return cast(torch.FloatTensor, scores.masked_fill(mask, -math.inf))
