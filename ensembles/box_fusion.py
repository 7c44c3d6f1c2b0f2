"""Box fusion per image across detector members: weighted boxes fusion that can keep lone boxes.

Weighted boxes fusion (WBF, Solovyev et al.) clusters boxes of the same label from all members
by IoU and averages each cluster's corners weighted by score. Its default score, the cluster's
mean score times ``min(n_members, cluster size) / sum(weights)``, cuts a box that only one of
three members saw to a third of its score; for a screener that must not miss fractures that is
the wrong default. Scoring modes (``scoring``):

- ``"wbf"``: ensemble-boxes' default (its ``conf_type="avg"``), with that penalty.
- ``"box_and_model_avg"``, ``"absent_model_aware_avg"``: ensemble-boxes' modes of those names.
- ``"max"``: ensemble-boxes' ``"max"``: the best weighted score in the cluster divided by the
  largest member weight; with equal weights a lone box keeps its own score. Recall-oriented.
- ``"mean"``: ``sum(w_i * s_i) / sum(w_i)`` over the boxes in the cluster only, so absent members
  do not count against it; a lone box keeps its own score. Recall-oriented.

Clustering and corner averaging are ensemble-boxes' own functions (``prefilter_boxes``,
``find_matching_box_fast``, ``get_weighted_box``); this module runs their loop itself only to
keep track of which members contributed to each fused box, which the library does not report.
For its modes the result equals ``ensemble_boxes.weighted_boxes_fusion`` (tested to 1e-6).

All boxes must be in one frame: normalised ``(x0, y0, x1, y1)`` of the same image. Boxes of a
letterbox member must first be mapped to the squash frame (see
:func:`ensembles.preprocess.letterbox_box_to_image`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError, field_validator, model_validator

from ensembles.config_model import (
    CHECK_ERRORS,
    ConfigModel,
    Problem,
    Wording,
    code_init,
    is_predicate,
    raise_problem,
    show,
)
from ensembles.errors import EnsembleError
from ensembles.types import Box, Detection

SCORING_MODES: tuple[str, ...] = (
    "max", "mean", "wbf", "box_and_model_avg", "absent_model_aware_avg",
)
RECALL_MODES: tuple[str, ...] = ("max", "mean")
"""Modes under which a box only one member saw keeps its own score (equal weights)."""
LIBRARY_CONF_TYPES: dict[str, str] = {
    "wbf": "avg",
    "max": "max",
    "box_and_model_avg": "box_and_model_avg",
    "absent_model_aware_avg": "absent_model_aware_avg",
}
"""Our scoring name -> ensemble-boxes' ``conf_type``."""


class FusionError(EnsembleError, ValueError):
    """Fusion inputs or settings are invalid.

    A ``ValueError`` too, so a check inside a :class:`~ensembles.config_model.ConfigModel`
    validator (a vote rule or box settings read from ``op.json``) reports where it failed.
    """


def fusion_wording(what: str) -> Wording:
    """How a fusion setting built in code words a problem (as :class:`FusionError`): a check's
    own sentence, or ``<what> <key> must be ...`` (``what``: ``box``, ``vote``); ``op.json``
    words the same problems its own way."""

    def invalid(problem: Problem) -> str:
        key = ".".join(str(part) for part in problem.loc)
        if problem.type in CHECK_ERRORS:
            predicate = key and is_predicate(problem.expected)
            return f"{what} {key} {problem.expected}" if predicate else problem.expected
        return f"{what} {key} must be {problem.expected}, got {show(problem.value)}"

    return Wording(
        unknown=lambda p: f"unknown {what} setting(s) {', '.join(p.keys)}; valid: {', '.join(p.valid)}",
        invalid=invalid,
        missing=lambda p: f"{what} {'.'.join(map(str, (*p.loc, *p.keys)))} is missing",
    )


@dataclass(frozen=True)
class FusedDetection(Detection):
    """A fused box, knowing who saw it.

    Attributes:
        members: members with at least one box in the cluster, in input order.
        member_scores: each contributing member's best (unweighted) score in the cluster.
        n_boxes: how many input boxes the cluster holds.
    """

    members: tuple[str, ...] = ()
    member_scores: Mapping[str, float] = field(default_factory=dict)
    n_boxes: int = 1


class BoxSettings(ConfigModel):
    """How boxes are fused per image and which fused boxes become findings (also ``op.json``'s
    ``boxes`` table).

    Attributes:
        score_threshold: fused boxes scoring below it are not reported.
        iou_threshold: IoU above which boxes of one label join a cluster (ensemble-boxes'
            ``iou_thr``).
        scoring: one of :data:`SCORING_MODES`; ``"max"`` (recall-oriented) by default.
        skip_box_threshold: input boxes scoring below it are ignored before fusion.
        members: the detector members whose boxes are fused; empty means every member that
            reported a box for the study. Name them when using ``"wbf"``, whose penalty depends
            on the member count.
        weights: per-member weights (> 0) for fusion; ``None`` means 1 each, and a fused
            member not named here gets 1.

    Raises:
        FusionError: (building one) a value out of range, an unknown scoring or a bad weight.
    """

    score_threshold: float = 0.0
    iou_threshold: float = 0.55
    scoring: str = "max"
    skip_box_threshold: float = 0.0
    members: tuple[str, ...] = ()
    weights: dict[str, float] | None = None

    @code_init
    def __init__(self, **settings: Any) -> None:
        try:
            super().__init__(**settings)
        except ValidationError as exc:
            raise_problem(type(self), exc, error=FusionError, wording=fusion_wording("box"))

    @field_validator("members", mode="before")
    @classmethod
    def _member_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            return tuple(value)
        if not isinstance(value, tuple):
            raise FusionError(f"must be a list of member names, got {value!r}")
        return value

    @model_validator(mode="after")
    def _settings_fit(self) -> "BoxSettings":
        for name in ("score_threshold", "iou_threshold", "skip_box_threshold"):
            _check_unit(name, getattr(self, name))
        if self.scoring not in SCORING_MODES:
            raise FusionError(
                f"box scoring {self.scoring!r} is unknown; choose one of {', '.join(SCORING_MODES)}"
            )
        if len(set(self.members)) != len(self.members):
            raise FusionError(f"box members are listed twice: {list(self.members)}")
        if self.weights is not None:
            _check_weights(self.weights, "box weights", positive=True)
        return self


def _check_unit(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise FusionError(f"{name} must be a number in [0, 1], got {value!r}")


def _check_weights(
    weights: Mapping[str, float], what: str, *, positive: bool = False
) -> dict[str, float]:
    if not isinstance(weights, Mapping):
        raise FusionError(f"{what} must map member names to numbers, got {weights!r}")
    out: dict[str, float] = {}
    bound = "> 0" if positive else ">= 0"
    for name, w in dict(weights).items():
        if (
            isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w)
            or w < 0 or (positive and w == 0)
        ):
            raise FusionError(
                f"{what}: weight of {name!r} must be a finite number {bound}, got {w!r}"
            )
        out[str(name)] = float(w)
    if out and sum(out.values()) <= 0:
        raise FusionError(f"{what}: weights must not all be 0, got {out}")
    return out


def fuse_boxes(
    detections: Mapping[str, Sequence[Detection]],
    *,
    weights: Mapping[str, float] | None = None,
    iou_threshold: float = 0.55,
    skip_box_threshold: float = 0.0,
    scoring: str = "max",
    score_threshold: float = 0.0,
) -> list[FusedDetection]:
    """Fuse one image's boxes from several members.

    Args:
        detections: ``{member: boxes}``; every member listed counts towards the member count
            (a detector that saw nothing is listed with an empty sequence).
        weights: ``{member: weight}`` for members in ``detections``; ``None`` = 1 each.
        iou_threshold: cluster IoU threshold.
        skip_box_threshold: input boxes below this score are ignored.
        scoring: see the module docstring.
        score_threshold: fused boxes below this score are dropped.

    Returns:
        Fused boxes, highest score first.

    Raises:
        FusionError: invalid settings, weights or boxes (checked before ensemble-boxes is
            called, since it exits the process on mismatched inputs).
    """
    settings = BoxSettings(
        score_threshold=score_threshold, iou_threshold=iou_threshold, scoring=scoring,
        skip_box_threshold=skip_box_threshold, weights=weights,
    )
    members = list(detections)
    if not members:
        return []
    if settings.weights is None:
        weight_arr = np.ones(len(members))
    else:
        missing = [m for m in members if m not in settings.weights]
        if missing:
            raise FusionError(
                f"box weights lack member(s) {missing}; give every fused member a weight > 0 "
                "or leave weights out"
            )
        weight_arr = np.array([settings.weights[m] for m in members])
    labels = sorted({d.label.casefold() for dets in detections.values() for d in _checked(dets)})
    label_ids = {label: i for i, label in enumerate(labels)}
    boxes_list, scores_list, labels_list = [], [], []
    for member in members:
        # a zero-confidence box is no box (and would give ensemble-boxes NaN corners)
        dets = [d for d in detections[member] if d.score > 0]
        boxes_list.append(np.array([list(d.box) for d in dets], dtype=float).reshape(-1, 4))
        scores_list.append(np.array([d.score for d in dets], dtype=float))
        labels_list.append(np.array([label_ids[d.label.casefold()] for d in dets], dtype=float))
    # imported here: the ensemble_boxes package costs ~0.7 s to import (it loads numba)
    from ensemble_boxes.ensemble_boxes_wbf import find_matching_box_fast, get_weighted_box, prefilter_boxes

    filtered = prefilter_boxes(boxes_list, scores_list, labels_list, weight_arr, skip_box_threshold)
    conf_type = LIBRARY_CONF_TYPES.get(scoring, "avg")
    fused: list[FusedDetection] = []
    for label_id, rows in filtered.items():
        clusters: list[list[np.ndarray]] = []
        weighted = np.empty((0, 8))
        for row in rows:
            index, _ = find_matching_box_fast(weighted, row, iou_threshold)
            if index != -1:
                clusters[index].append(row)
                weighted[index] = get_weighted_box(clusters[index], conf_type)
            else:
                clusters.append([row.copy()])
                weighted = np.vstack((weighted, row.copy()))
        for i, cluster in enumerate(clusters):
            score = _cluster_score(scoring, weighted[i], np.array(cluster), weight_arr)
            if score < score_threshold:
                continue
            fused.append(_fused(weighted[i], cluster, score, labels[int(label_id)], members))
    fused.sort(key=lambda d: -d.score)
    return fused


def _checked(dets: Sequence[Detection]) -> Sequence[Detection]:
    for d in dets:
        if not isinstance(d, Detection):
            raise FusionError(f"fuse_boxes needs Detection objects, got {type(d).__name__}")
    return dets


def _cluster_score(
    scoring: str, fused_row: np.ndarray, cluster: np.ndarray, weights: np.ndarray
) -> float:
    """The cluster's score, reproducing ensemble-boxes' rescaling for the modes it has."""
    base = float(fused_row[1])
    if scoring == "mean":
        score = float(cluster[:, 1].sum() / cluster[:, 2].sum())
    elif scoring == "max":
        score = base / float(weights.max())
    elif scoring == "box_and_model_avg":
        score = base * len(cluster) / float(fused_row[2])
        _, idx = np.unique(cluster[:, 3], return_index=True)
        score = score * float(cluster[idx, 2].sum()) / float(weights.sum())
    elif scoring == "absent_model_aware_avg":
        present = np.unique(cluster[:, 3]).astype(int)
        mask = np.ones(len(weights), dtype=bool)
        mask[present] = False
        score = base * len(cluster) / (float(fused_row[2]) + float(weights[mask].sum()))
    else:  # "wbf", ensemble-boxes' default without overflow
        score = base * min(len(weights), len(cluster)) / float(weights.sum())
    return min(1.0, max(0.0, score))


def _fused(
    row: np.ndarray, cluster: list[np.ndarray], score: float, label: str, members: list[str]
) -> FusedDetection:
    best: dict[str, float] = {}
    for b in cluster:
        name = members[int(b[3])]
        original = float(b[1] / b[2]) if b[2] > 0 else 0.0
        best[name] = max(best.get(name, 0.0), min(1.0, original))
    ordered = tuple(m for m in members if m in best)
    x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in row[4:])
    return FusedDetection(
        box=Box(x0, y0, x1, y1),
        label=label,
        score=score,
        members=ordered,
        member_scores={m: best[m] for m in ordered},
        n_boxes=len(cluster),
    )
