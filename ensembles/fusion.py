"""Study-level fusion: members' scores and boxes in, one recall-oriented decision per study out.

Per member, a study's score is the **maximum over the study's images** of that member's image
score: a fracture seen on any view makes the study suspicious, and the study is as suspicious as
its worst image. Each member votes positive when that score reaches its own threshold.

Vote rules (:class:`VoteRule`):

- ``any``: positive when any member votes positive (OR; the high-recall screening rule).
- ``k-of-n``: positive when at least ``k`` members vote positive.
- ``weighted-mean``: positive when the weighted mean of the members' study scores reaches the
  rule's own ``threshold`` (the members' thresholds then only label their votes).

The fused score in ``[0, 1]`` agrees with the decision (positive exactly when it is >= 0.5 for
``any`` and ``k-of-n``; >= the rule threshold for ``weighted-mean``). For ``any``/``k-of-n`` it
is built from *threshold-centred* member scores, which map a member's threshold to 0.5 linearly
on each side (``s / (2t)`` below, ``0.5 + (s - t) / (2(1 - t))`` above), so members with
different thresholds are comparable: ``any`` takes the largest, ``k-of-n`` the k-th largest.

A positive study always has findings: the fused boxes (see :mod:`ensembles.box_fusion`) scoring
at least the box threshold, or else one image-level finding (box ``None``) on the image that
most suggests a fracture, so a classifier-only positive is still reported.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace

from pydantic import Field, ValidationError, field_validator, model_validator

from ensembles.box_fusion import (
    RECALL_MODES,
    SCORING_MODES,
    BoxSettings,
    FusedDetection,
    FusionError,
    _check_weights,
    fuse_boxes,
    fusion_wording,
)
from ensembles.config_model import ConfigModel, code_init, raise_problem
from ensembles.preprocess import letterbox_box_to_image
from ensembles.types import Box, Detection, MemberOutput, VoteRuleName

__all__ = [
    "RECALL_MODES", "SCORING_MODES", "VOTE_RULES", "BoxSettings", "FusedDetection", "FusionError",
    "Finding", "StudyDecision", "VoteRule", "decide_study", "fuse_boxes", "fuse_study",
    "study_member_scores", "threshold_centred",
]

VOTE_RULES: tuple[str, ...] = tuple(name.value for name in VoteRuleName)
_BELOW_HALF = math.nextafter(0.5, 0.0)


class VoteRule(ConfigModel):
    """How member votes become a study decision (also ``op.json``'s ``vote`` table).

    Attributes:
        rule: ``any``, ``k-of-n`` or ``weighted-mean`` (a :class:`VoteRuleName`; a plain
            string is accepted).
        k: votes needed for ``k-of-n`` (>= 1); unused otherwise.
        weights: ``{member: weight >= 0}`` for ``weighted-mean``; every voting member needs one.
        threshold: decision threshold on the weighted mean for ``weighted-mean``.

    Raises:
        FusionError: (building one) an unknown rule, or settings the rule does not use or lacks.
    """

    rule: VoteRuleName = Field(strict=False)  # ``any`` when built in code; a file says it
    k: int | None = None
    weights: dict[str, float] | None = None
    threshold: float | None = None

    @code_init
    def __init__(self, rule: str = VoteRuleName.ANY, k: int | None = None,
                 weights: Mapping[str, float] | None = None, threshold: float | None = None) -> None:
        try:
            super().__init__(**{"rule": rule, "k": k, "weights": weights, "threshold": threshold})
        except ValidationError as exc:
            raise_problem(type(self), exc, error=FusionError, wording=fusion_wording("vote"))

    @field_validator("rule", mode="before")
    @classmethod
    def _known_rule(cls, value: object) -> object:
        if value not in VOTE_RULES:
            raise FusionError(
                f"vote rule {value!r} is unknown; choose one of {', '.join(VOTE_RULES)}"
            )
        return value

    @model_validator(mode="after")
    def _fits_rule(self) -> "VoteRule":
        if self.rule == VoteRuleName.K_OF_N:
            if self.k is None or self.k < 1:
                raise FusionError(f"k-of-n needs an integer k >= 1, got k={self.k!r}")
        elif self.k is not None:
            raise FusionError(f"k is only used by the k-of-n rule, not {self.rule.value!r}; remove it")
        if self.rule == VoteRuleName.WEIGHTED_MEAN:
            if not self.weights:
                raise FusionError(
                    "weighted-mean needs weights, e.g. {'classifier': 1.0, 'detr': 0.5}"
                )
            _check_weights(self.weights, "vote weights")
            t = self.threshold
            if t is None or not 0 <= t <= 1:
                raise FusionError(f"weighted-mean needs a threshold in [0, 1], got {t!r}")
        elif self.weights is not None or self.threshold is not None:
            raise FusionError(
                f"weights and threshold are only used by weighted-mean, not {self.rule.value!r}; "
                "remove them"
            )
        return self

    @property
    def label(self) -> str:
        """Short name for reports: ``"any"``, ``"k-of-n(k=2)"`` or ``"weighted-mean"``."""
        return f"k-of-n(k={self.k})" if self.rule == VoteRuleName.K_OF_N else self.rule.value

    def check_members(self, members: Sequence[str]) -> None:
        """Raise :class:`FusionError` unless the rule fits an ensemble of ``members``."""
        if self.rule == VoteRuleName.K_OF_N and self.k is not None and self.k > len(members):
            raise FusionError(
                f"k-of-n needs k <= number of members ({len(members)}), got k={self.k}"
            )
        if self.rule == VoteRuleName.WEIGHTED_MEAN and self.weights is not None:
            unknown = sorted(set(self.weights) - set(members))
            missing = sorted(set(members) - set(self.weights))
            if unknown:
                raise FusionError(
                    f"vote weights name unknown member(s) {unknown}; members: {list(members)}"
                )
            if missing:
                raise FusionError(
                    f"vote weights lack member(s) {missing}; give each a weight (0 to ignore)"
                )
            if sum(self.weights[m] for m in members) <= 0:
                raise FusionError("vote weights of the members are all 0")


@dataclass(frozen=True)
class Finding:
    """One thing a positive study is reported for.

    Attributes:
        image: the caller's key of the image (e.g. its SOP Instance UID).
        box: the fused box (normalised image frame), or ``None`` for an image-level finding.
        score: the fused box score, or the study score for an image-level finding.
        label: finding label.
        members: members behind it (box contributors, or the members that voted positive).
    """

    image: Hashable
    box: Box | None
    score: float
    label: str = "fracture"
    members: tuple[str, ...] = ()
    detection: FusedDetection | None = None


@dataclass(frozen=True)
class StudyDecision:
    """The decision for one study and why."""

    positive: bool
    score: float
    rule: str
    votes: Mapping[str, bool]
    member_scores: Mapping[str, float]
    thresholds: Mapping[str, float]
    findings: tuple[Finding, ...] = ()

    @property
    def image_level_only(self) -> bool:
        """Positive without any box (e.g. only the classifier saw it)."""
        return self.positive and all(f.box is None for f in self.findings)

    @property
    def positive_members(self) -> tuple[str, ...]:
        """Members that voted positive, in threshold order."""
        return tuple(m for m, v in self.votes.items() if v)


def threshold_centred(score: float, threshold: float) -> float:
    """Map ``score`` so the member's ``threshold`` lands on 0.5, linearly on each side."""
    if score < threshold:
        return score / (2.0 * threshold)
    if threshold >= 1.0:
        return 1.0
    return 0.5 + 0.5 * (score - threshold) / (1.0 - threshold)


def _check_scores(member_scores: Mapping[str, float], thresholds: Mapping[str, float]) -> None:
    if not thresholds:
        raise FusionError("no member thresholds given; the operating point must name its members")
    for name, t in thresholds.items():
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1:
            raise FusionError(f"threshold of member {name!r} must be in [0, 1], got {t!r}")
    missing = sorted(set(thresholds) - set(member_scores))
    if missing:
        raise FusionError(
            f"no score from member(s) {missing}; every member with a threshold must score "
            "the study"
        )
    extra = sorted(set(member_scores) - set(thresholds))
    if extra:
        raise FusionError(
            f"member(s) {extra} have scores but no threshold; add them to the operating point"
        )
    for name, s in member_scores.items():
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1:
            raise FusionError(f"score of member {name!r} must be in [0, 1], got {s!r}")


def decide_study(
    member_scores: Mapping[str, float], thresholds: Mapping[str, float], rule: VoteRule
) -> StudyDecision:
    """Apply a vote rule to per-member study scores (no findings; see :func:`fuse_study`)."""
    _check_scores(member_scores, thresholds)
    members = list(thresholds)
    rule.check_members(members)
    votes = {m: float(member_scores[m]) >= float(thresholds[m]) for m in members}
    if rule.rule == VoteRuleName.WEIGHTED_MEAN:
        weights = rule.weights or {}
        total = sum(weights[m] for m in members)
        score = sum(weights[m] * float(member_scores[m]) for m in members) / total
        score = min(1.0, max(0.0, score))
        positive = score >= float(rule.threshold or 0.0)
    else:
        centred = sorted(
            (threshold_centred(float(member_scores[m]), float(thresholds[m])) for m in members),
            reverse=True,
        )
        needed = 1 if rule.rule == VoteRuleName.ANY else int(rule.k or 1)
        positive = sum(votes.values()) >= needed
        score = centred[needed - 1]
        score = max(score, 0.5) if positive else min(score, _BELOW_HALF)
    return StudyDecision(
        positive=positive, score=score, rule=rule.label, votes=votes,
        member_scores={m: float(member_scores[m]) for m in members},
        thresholds={m: float(thresholds[m]) for m in members},
    )


def study_member_scores(
    outputs: Mapping[Hashable, Mapping[str, MemberOutput]],
) -> dict[str, float]:
    """Each member's study score: the maximum of its image scores over the study's images."""
    scores: dict[str, float] = {}
    for per_member in outputs.values():
        for member, output in per_member.items():
            scores[member] = max(scores.get(member, 0.0), float(output.score))
    return scores


def fuse_study(
    outputs: Mapping[Hashable, Mapping[str, MemberOutput]],
    *,
    thresholds: Mapping[str, float],
    rule: VoteRule,
    boxes: BoxSettings | None = None,
    letterboxed: Mapping[str, int] | None = None,
    image_shapes: Mapping[Hashable, tuple[int, int]] | None = None,
) -> StudyDecision:
    """Decide one study from its members' outputs and attach its findings.

    Finding boxes are in the image frame: normalised ``(x0, y0, x1, y1)`` of the whole image,
    which is a squash member's own Box frame. Boxes of letterbox members are mapped into it
    first (name them in ``letterboxed`` and give ``image_shapes``), so members with different
    resize modes fuse correctly; ``dicom_io`` maps finding boxes to pixels as squash boxes.

    Args:
        outputs: ``{image key: {member name: MemberOutput}}`` for every screened image of the
            study.
        thresholds: per-member image-level thresholds; names the members that vote.
        rule: the vote rule.
        boxes: box fusion settings; default :class:`BoxSettings` (``"max"`` scoring).
        letterboxed: ``{member: input side}`` for members whose boxes are in a letterboxed
            square input (e.g. a DETR checkpoint with ``resize="letterbox"``).
        image_shapes: ``{image key: (height, width)}`` of the images given to the members;
            needed for images with boxes from a letterboxed member.

    Raises:
        FusionError: no images, a voting member without any output, a letterboxed member's
            boxes on an image without a shape, or invalid settings.
    """
    if not outputs:
        raise FusionError("fuse_study needs at least one image's outputs")
    settings = boxes or BoxSettings()
    if letterboxed:
        outputs = _to_image_frame(outputs, letterboxed, image_shapes or {})
    decision = decide_study(study_member_scores(outputs), thresholds, rule)
    if not decision.positive:
        return decision
    box_findings: list[Finding] = []
    for image, per_member in outputs.items():
        for fused in _fuse_image(per_member, settings):
            box_findings.append(
                Finding(image=image, box=fused.box, score=fused.score, label=fused.label,
                        members=fused.members, detection=fused)
            )
    box_findings.sort(key=lambda f: -f.score)
    if box_findings:
        findings = tuple(box_findings)
    else:
        findings = (_image_level_finding(outputs, decision),)
    return StudyDecision(
        positive=True, score=decision.score, rule=decision.rule, votes=decision.votes,
        member_scores=decision.member_scores, thresholds=decision.thresholds, findings=findings,
    )


def _to_image_frame(
    outputs: Mapping[Hashable, Mapping[str, MemberOutput]],
    letterboxed: Mapping[str, int],
    image_shapes: Mapping[Hashable, tuple[int, int]],
) -> dict[Hashable, dict[str, MemberOutput]]:
    mapped: dict[Hashable, dict[str, MemberOutput]] = {}
    for image, per_member in outputs.items():
        mapped[image] = dict(per_member)
        for member, size in letterboxed.items():
            output = per_member.get(member)
            if output is None or not output.detections:
                continue
            if image not in image_shapes:
                raise FusionError(
                    f"member {member!r} gives letterboxed boxes on image {image!r} but "
                    "image_shapes has no (height, width) for it"
                )
            height, width = image_shapes[image]
            detections = []
            for d in output.detections:
                box = letterbox_box_to_image(d.box, height, width, size)
                if box is not None:
                    detections.append(Detection(box=box, label=d.label, score=d.score))
            mapped[image][member] = replace(output, detections=detections)
    return mapped


def _fuse_image(
    per_member: Mapping[str, MemberOutput], settings: BoxSettings
) -> list[FusedDetection]:
    if settings.members:
        names = [m for m in settings.members if m in per_member]
    else:
        names = [m for m, out in per_member.items() if out.detections]
    detections = {m: per_member[m].detections for m in names}
    weights = None
    if settings.weights is not None:
        weights = {m: settings.weights.get(m, 1.0) for m in names}
    return fuse_boxes(
        detections, weights=weights, iou_threshold=settings.iou_threshold,
        skip_box_threshold=settings.skip_box_threshold, scoring=settings.scoring,
        score_threshold=settings.score_threshold,
    )


def _image_level_finding(
    outputs: Mapping[Hashable, Mapping[str, MemberOutput]], decision: StudyDecision
) -> Finding:
    voters = decision.positive_members or tuple(decision.thresholds)
    best_image: Hashable = next(iter(outputs))
    best = -1.0
    for image, per_member in outputs.items():
        for member in voters:
            if member in per_member:
                value = threshold_centred(per_member[member].score, decision.thresholds[member])
                if value > best:
                    best, best_image = value, image
    return Finding(image=best_image, box=None, score=decision.score, members=voters)
