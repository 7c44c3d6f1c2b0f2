"""The loc-token codec: the one place that knows PaliGemma's box text format.

PaliGemma writes a box as four location tokens ``<locNNNN>`` in ``y_min x_min y_max x_max``
order, each a bin ``0..1023`` of the normalised coordinate, followed by the label. The paper's
training target for the detector is::

    <loc0482><loc0103><loc0599><loc0226> Fracture; <loc0100><loc0200><loc0300><loc0400> Fracture;

and ``Normal`` when there is no fracture. PaliGemma's own output separates boxes with `` ; ``
and may drop the final ``;``; :func:`parse_detections` reads both, in any label case.

Encoding is ``min(1023, floor(v * 1024))`` and decoding ``bin / 1024``, so a decoded coordinate
is within one bin (``1/1024``) below the original; the coordinate ``1.0`` decodes to
``1023/1024``. Everything else in :mod:`ensembles` speaks :class:`ensembles.types.Box`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from ensembles.errors import EnsembleError
from ensembles.types import Box, Detection

NUM_LOC_BINS = 1024
LOC_TOKENS: list[str] = [f"<loc{i:04d}>" for i in range(NUM_LOC_BINS)]
"""The 1,024 location tokens, index = bin."""
NUM_SEG_TOKENS = 128
SEG_TOKENS: list[str] = [f"<seg{i:03d}>" for i in range(NUM_SEG_TOKENS)]
"""PaliGemma's 128 segmentation tokens (kept in the tokenizer; not produced by this codec)."""

NORMAL_TEXT = "Normal"
"""The answer for an image without a fracture (the paper's training format)."""

_TOKEN_RE = re.compile(r"<loc(\d{4})>|<seg\d{3}>|<[^<>\s]*>|;|[^<;]+|<", re.IGNORECASE)
_FORBIDDEN_LABEL_CHARS = ("<", ">", ";")


class LocTokenError(EnsembleError, ValueError):
    """A coordinate, bin or label cannot be written in the loc-token format."""


def encode_bin(value: float) -> int:
    """Bin of a normalised coordinate: ``min(1023, floor(value * 1024))``.

    Raises:
        LocTokenError: ``value`` is not finite or outside ``[0, 1]``.
    """
    v = float(value)
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise LocTokenError(f"loc coordinate must be a finite number in [0, 1], got {value!r}")
    return min(NUM_LOC_BINS - 1, math.floor(v * NUM_LOC_BINS))


def decode_bin(bin_index: int) -> float:
    """Normalised coordinate of a bin: ``bin / 1024``.

    Raises:
        LocTokenError: ``bin_index`` is not an integer in ``0..1023``.
    """
    if isinstance(bin_index, bool) or int(bin_index) != bin_index:
        raise LocTokenError(f"loc bin must be an integer 0..1023, got {bin_index!r}")
    b = int(bin_index)
    if not 0 <= b < NUM_LOC_BINS:
        raise LocTokenError(f"loc bin must be in 0..{NUM_LOC_BINS - 1}, got {b}")
    return b / NUM_LOC_BINS


def loc_token(bin_index: int) -> str:
    """``<locNNNN>`` for a bin (validated)."""
    decode_bin(bin_index)
    return LOC_TOKENS[int(bin_index)]


def box_to_bins(box: Box | Sequence[float]) -> tuple[int, int, int, int]:
    """``(y_min, x_min, y_max, x_max)`` bins of a normalised ``(x0, y0, x1, y1)`` box.

    A box thinner than one bin would encode to ``max bin == min bin`` and be dropped when
    parsed back; such a side is widened to exactly one bin so a training target always parses.
    """
    if len(box) != 4:
        raise LocTokenError(f"box must have four coordinates (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x0 < x1 and y0 < y1):
        raise LocTokenError(
            f"box must satisfy x0 < x1 and y0 < y1 (normalised x0, y0, x1, y1), got {tuple(box)}"
        )
    bx0, by0, bx1, by1 = encode_bin(x0), encode_bin(y0), encode_bin(x1), encode_bin(y1)
    bx0, bx1 = _widen(bx0, bx1)
    by0, by1 = _widen(by0, by1)
    return by0, bx0, by1, bx1


def _widen(low: int, high: int) -> tuple[int, int]:
    if high > low:
        return low, high
    if low < NUM_LOC_BINS - 1:
        return low, low + 1
    return low - 1, low


def bins_to_box(y_min: int, x_min: int, y_max: int, x_max: int) -> Box:
    """The normalised Box of four bins (raises :class:`LocTokenError` unless max > min)."""
    if not (y_max > y_min and x_max > x_min):
        raise LocTokenError(
            f"bins must satisfy y_max > y_min and x_max > x_min, got "
            f"y_min={y_min} x_min={x_min} y_max={y_max} x_max={x_max}"
        )
    return Box(decode_bin(x_min), decode_bin(y_min), decode_bin(x_max), decode_bin(y_max))


def format_box(box: Box | Sequence[float], label: str = "Fracture") -> str:
    """One box in the training format: ``<loc..>×4 Label;``."""
    clean = _check_label(label)
    return "".join(LOC_TOKENS[b] for b in box_to_bins(box)) + f" {clean};"


def format_detections(
    items: Iterable[tuple[Box | Sequence[float], str] | Detection],
    *,
    normal: str = NORMAL_TEXT,
) -> str:
    """The paper's detector target: boxes joined by a space, or ``Normal`` when there are none.

    Args:
        items: ``(box, label)`` pairs or :class:`Detection` objects; boxes are normalised
            ``(x0, y0, x1, y1)``.
        normal: the text for an image without boxes.

    Raises:
        LocTokenError: a box is invalid or a label is empty or contains ``<``, ``>`` or ``;``.
    """
    parts: list[str] = []
    for item in items:
        if isinstance(item, Detection):
            parts.append(format_box(item.box, item.label))
        else:
            box, label = item
            parts.append(format_box(box, label))
    return " ".join(parts) if parts else normal


def _check_label(label: str) -> str:
    if not isinstance(label, str) or not label.strip():
        raise LocTokenError(f"label must be a non-empty string, got {label!r}")
    clean = " ".join(label.split())
    if any(ch in clean for ch in _FORBIDDEN_LABEL_CHARS):
        raise LocTokenError(f"label must not contain '<', '>' or ';', got {label!r}")
    return clean


@dataclass(frozen=True)
class ParsedDetection:
    """One box read from PaliGemma text.

    Attributes:
        box: normalised ``(x0, y0, x1, y1)`` Box.
        label: the label as written, whitespace-normalised and lower-cased.
        bins: the four bins as written, ``(y_min, x_min, y_max, x_max)``.
        group_index: ordinal of this group of loc tokens in the text (0-based, counting dropped
            groups too), so a caller can find the generated tokens behind the box.
    """

    box: Box
    label: str
    bins: tuple[int, int, int, int]
    group_index: int

    def to_detection(self, score: float = 1.0) -> Detection:
        """As an :class:`ensembles.types.Detection` with the given confidence."""
        return Detection(box=self.box, label=self.label, score=score)


@dataclass
class ParseResult(Sequence[ParsedDetection]):
    """What :func:`parse_detections` read: the boxes (a sequence) plus what it dropped and why."""

    detections: list[ParsedDetection] = field(default_factory=list)
    drop_reasons: list[str] = field(default_factory=list)
    said_normal: bool = False

    @property
    def dropped(self) -> int:
        """How many groups of text were not boxes and were left out."""
        return len(self.drop_reasons)

    @property
    def is_normal(self) -> bool:
        """No box was read and the text said ``Normal``."""
        return self.said_normal and not self.detections

    def as_detections(self, score: float = 1.0) -> list[Detection]:
        """The boxes as :class:`Detection` objects, all with ``score``."""
        return [d.to_detection(score) for d in self.detections]

    @overload
    def __getitem__(self, index: int) -> ParsedDetection: ...
    @overload
    def __getitem__(self, index: slice) -> list[ParsedDetection]: ...
    def __getitem__(self, index: int | slice) -> ParsedDetection | list[ParsedDetection]:
        return self.detections[index]

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self) -> Iterator[ParsedDetection]:
        return iter(self.detections)


def parse_detections(text: str, *, default_label: str = "fracture") -> ParseResult:
    """Read boxes from the training format or PaliGemma's own output.

    A box is a run of exactly four ``<locNNNN>`` tokens followed by its label, up to the next
    ``;`` or loc token. Other special tokens (``<eos>``, ``<pad>``, ``<seg...>``) are ignored.
    A group is dropped, with a reason, when it has other than four loc tokens, when
    ``y_max <= y_min`` or ``x_max <= x_min``, or when text stands where a box should be. A box
    without a label gets ``default_label``. ``Normal`` (any case) means no finding.
    """
    if not isinstance(text, str):
        raise LocTokenError(f"parse_detections needs a string, got {type(text).__name__}")
    result = ParseResult()
    group_bins: list[int] = []
    label_parts: list[str] = []
    group_index = 0

    def close_group() -> None:
        nonlocal group_index
        if not group_bins:
            return
        label = " ".join(" ".join(label_parts).split()).lower() or default_label
        _add_group(result, list(group_bins), label, group_index)
        group_index += 1
        group_bins.clear()
        label_parts.clear()

    for match in _TOKEN_RE.finditer(text):
        token = match.group(0)
        if match.group(1) is not None:
            if label_parts:  # a new box starts after the previous one's label
                close_group()
            group_bins.append(int(match.group(1)))
        elif token == ";":
            close_group()
        elif token.startswith("<"):
            continue  # other special tokens: <eos>, <pad>, <seg...>, a stray '<'
        elif group_bins:
            if token.strip():
                label_parts.append(token)
        else:
            _loose_text(result, token)
    close_group()
    return result


def _loose_text(result: ParseResult, token: str) -> None:
    words = token.strip()
    if not words:
        return
    if words.lower() == NORMAL_TEXT.lower():
        result.said_normal = True
    else:
        result.drop_reasons.append(f"text without loc tokens: {words[:40]!r}")


def _add_group(result: ParseResult, bins: list[int], label: str, group_index: int) -> None:
    if len(bins) != 4:
        result.drop_reasons.append(
            f"group {group_index}: {len(bins)} loc tokens where a box needs 4"
        )
        return
    if any(b >= NUM_LOC_BINS for b in bins):
        result.drop_reasons.append(f"group {group_index}: loc bin above {NUM_LOC_BINS - 1}")
        return
    y_min, x_min, y_max, x_max = bins
    if y_max <= y_min or x_max <= x_min:
        result.drop_reasons.append(
            f"group {group_index}: empty box (y {y_min}..{y_max}, x {x_min}..{x_max})"
        )
        return
    box = bins_to_box(y_min, x_min, y_max, x_max)
    result.detections.append(
        ParsedDetection(box=box, label=label, bins=(y_min, x_min, y_max, x_max),
                        group_index=group_index)
    )
