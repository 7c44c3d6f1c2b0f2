"""The data contracts of :mod:`ensembles`: one Box convention, detections, member outputs.

Box convention (the only one inside ``ensembles``): normalised ``(x0, y0, x1, y1)`` in
``[0, 1]`` of the member's *input image* (after its resize), ``x`` along columns, ``y`` along
rows, ``x0 < x1`` and ``y0 < y1``. Only :mod:`ensembles.loc_tokens` knows PaliGemma's
``y_min x_min y_max x_max`` bins, and only :mod:`dicom_io.geometry` maps a Box back to source
pixel columns/rows. This module imports neither torch nor DICOM libraries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple


class ResizeMode(StrEnum):
    """How a source image becomes a member's square input (:mod:`dicom_io.geometry` undoes it).

    ``squash`` stretches to the square (PaliGemma's own); ``letterbox`` keeps the aspect ratio
    and pads. A ``StrEnum``: config files and ``member.json`` hold the plain string, and a member
    equals its string (``ResizeMode.SQUASH == "squash"``).
    """

    SQUASH = "squash"
    LETTERBOX = "letterbox"


class VoteRuleName(StrEnum):
    """The study-level vote rules of :class:`ensembles.fusion.VoteRule`."""

    ANY = "any"
    K_OF_N = "k-of-n"
    WEIGHTED_MEAN = "weighted-mean"


class MemberKind(StrEnum):
    """The built-in member kinds (``member.json``'s ``kind``; :mod:`ensembles.registry`).

    A plugin may register other kinds by name; these are the ones the project ships.
    """

    PALIGEMMA_CLASSIFIER = "paligemma-classifier"
    PALIGEMMA_DETECTOR = "paligemma-detector"
    DETR = "detr"
    REFINER = "refiner"


class Box(NamedTuple):
    """Normalised ``(x0, y0, x1, y1)`` in ``[0, 1]`` of the member's input image."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def checked(cls, x0: float, y0: float, x1: float, y1: float) -> "Box":
        """Build a Box, raising ``ValueError`` unless ``0 <= x0 < x1 <= 1`` and likewise for y."""
        values = (float(x0), float(y0), float(x1), float(y1))
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"Box coordinates must be finite, got {values}")
        if not (0.0 <= values[0] < values[2] <= 1.0 and 0.0 <= values[1] < values[3] <= 1.0):
            raise ValueError(
                "Box must be normalised (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and "
                f"0 <= y0 < y1 <= 1, got {values}"
            )
        return cls(*values)

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    def iou(self, other: "Box") -> float:
        """Intersection over union with another Box (0 when they do not overlap)."""
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Detection:
    """One box a member (or the fusion) reports, with its confidence in ``[0, 1]``."""

    box: Box
    label: str = "fracture"
    score: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.box, Box):
            object.__setattr__(self, "box", Box.checked(*self.box))
        if not (0.0 <= self.score <= 1.0) or math.isnan(self.score):
            raise ValueError(f"Detection score must be in [0, 1], got {self.score}")


@dataclass
class MemberOutput:
    """What one member says about one image.

    Attributes:
        member: the member's name (its kind, or the name the site config gives it).
        score: probability-like score in ``[0, 1]`` that a fracture is present.
        detections: boxes in the Box convention, each with its own score and label.
        raw: what the member actually produced, for audit (generated text for PaliGemma).
        extras: member-specific diagnostics (token probabilities, dropped boxes, ...).
    """

    member: str
    score: float
    detections: list[Detection] = field(default_factory=list)
    raw: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (0.0 <= self.score <= 1.0) or math.isnan(self.score):
            raise ValueError(f"MemberOutput.score must be in [0, 1], got {self.score}")
