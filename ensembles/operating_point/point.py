"""The operating point: the schema of one point and how it decides a study.

``screen tune`` writes it and ``screen run`` reads it (the file, one point or several:
:mod:`ensembles.operating_point.op_json`). Layout of one point (schema version 1)::

    {
      "schema_version": 1,
      "id": "op-1a2b3c4d5e6f",                 # optional; default: hash of the decision fields
      "level": "high-sensitivity",             # optional name of this operating point
      "thresholds": {"pg2-3b-cls": 0.31, "pg2-10b-det": 0.22, "detr": 0.40},
      "vote": {"rule": "any"},                 # or {"rule": "k-of-n", "k": 2}
                                               # or {"rule": "weighted-mean",
                                               #     "weights": {...}, "threshold": 0.4}
      "boxes": {"score_threshold": 0.1, "iou_threshold": 0.55, "scoring": "max",
                "skip_box_threshold": 0.0, "members": ["pg2-10b-det", "detr"], "weights": null},
      "provenance": {"source_sha256": "...", "tuning_set": "...", "target_recall": 0.95,
                     "sensitivity": {"value": 0.96, "ci_low": 0.93, "ci_high": 0.98, "n": 210,
                                     "method": "wilson"},
                     "specificity": {...}, "created_by": "screen tune 0.1.0",
                     "created_at": "2025-01-31T02:00:00+00:00", "notes": "...",
                     # optional, written by screen tune:
                     "objective": "precision", "target_specificity": null,
                     "ppv": {...}, "npv": {...}, "f1": {...},
                     "out_of_fold": {"folds": 5, "sensitivity": {...}, "specificity": {...},
                                     "ppv": {...}, "npv": {...}, "f1": {...}},
                     "guard": {"guard": "oof", "free_parameters": 3, "fitted_recall": 0.92,
                               "positives": 51, "positives_needed": 36,
                               "allowed_small": false}}
    }

Schema version 2 adds optional sections, written only when set: ``calibration``
(:mod:`~ensembles.operating_point.calibration`), ``reference`` (the monitoring reference,
:mod:`~ensembles.operating_point.reference`), and ``group_by`` with ``group_points`` (one point
per value of a header field, e.g. ``{"group_by": "BodyPartExamined", "group_points": {"WRIST":
{...a point...}}}``; a study of another group is decided by the point itself, the fallback).

Every table is a :class:`~ensembles.config_model.ConfigModel` (``vote`` is
:class:`~ensembles.fusion.VoteRule`, ``boxes`` :class:`~ensembles.box_fusion.BoxSettings`), so
a point is checked whole when it is read or built: unknown keys are refused (a typo never
silently falls back to a default), numbers are finite and in range, and every message names
the key, the value and the fix (:func:`op_wording`). The default ``id`` hashes only what
changes decisions (schema version, thresholds, vote, boxes), so two files that decide alike
share an id whatever their notes say.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Hashable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from ensembles.box_fusion import BoxSettings, FusionError
from ensembles.config_model import check, code_init, parse_model
from ensembles.errors import OperatingPointError
from ensembles.fusion import StudyDecision, VoteRule, fuse_study
from ensembles.operating_point.calibration import Calibration
from ensembles.operating_point.reference import Reference
from ensembles.operating_point.schema import OP_WORDING, Estimate, OpTable, Unit, op_wording
from ensembles.types import MemberOutput

__all__ = [
    "GROUP_FIELDS", "OP_WORDING", "SCHEMA_VERSION", "Calibration", "Estimate", "OperatingPoint",
    "OutOfFold", "Provenance", "Reference", "TuneGuard", "Unit", "apply_operating_point",
    "check_schema_version", "op_id", "op_wording", "uniform_operating_point",
]

SCHEMA_VERSION = 2
"""Version 2 added the optional ``calibration``, ``reference``, ``group_by`` and
``group_points``; a version 1 file loads unchanged (same keys, same id)."""
#: Header fields ``screen tune --by`` groups studies by.
GROUP_FIELDS: tuple[str, ...] = ("BodyPartExamined", "Manufacturer", "ManufacturerModelName", "Modality")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_OOF_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1")


class OutOfFold(OpTable):
    """Figures of an operating point measured out of fold.

    Attributes:
        folds: number of stratified folds (each chosen on the other ``folds - 1``).
        sensitivity, specificity, ppv, npv, f1: pooled held-out figures with CIs.
    """

    folds: int = Field(ge=2)
    sensitivity: Estimate | None = None
    specificity: Estimate | None = None
    ppv: Estimate | None = None
    npv: Estimate | None = None
    f1: Estimate | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"folds": self.folds}
        for key in _OOF_METRICS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_dict()
        return out


GUARDS: tuple[str, ...] = ("oof", "lower-ci", "none")


class TuneGuard(OpTable):
    """How ``screen tune`` guarded a point against over-fitting its tuning set.

    Optional in the JSON (files written before it existed have none and read back unchanged).

    Attributes:
        guard: ``oof`` (the way the point was chosen met the target out of fold), ``lower-ci``
            (the exact 95 % lower bound of its in-sample sensitivity met the target) or
            ``none`` (chosen on in-sample figures only: unguarded).
        free_parameters: values the search fitted for the rule (one threshold per member,
            plus ``k`` for k-of-n; ``n - 1`` weights and one threshold for a weighted mean).
        fitted_recall: the in-sample sensitivity the rule was fitted to (the target, or more
            where guard ``oof`` needed a margin); ``None`` for a high-specificity point.
        positives: fracture studies in the tuning set.
        positives_needed: the fewest fracture studies ``n`` whose ``n/n`` has a two-sided
            exact 95 % lower bound >= the target (``None``: no number is enough).
        allowed_small: the set had fewer than ``positives_needed`` and ``--allow-small`` tuned
            it anyway.
    """

    guard: Annotated[str, check(lambda v: v in GUARDS, f"must be one of {', '.join(GUARDS)}")]
    free_parameters: int = Field(ge=0)
    fitted_recall: Unit | None = None
    positives: Annotated[int, check(lambda v: v >= 0, "must be an integer >= 0 or null")] | None = None
    positives_needed: Annotated[int, check(lambda v: v >= 1, "must be an integer >= 1 or null")] | None = None
    allowed_small: bool = False

    @code_init
    def __init__(self, guard: str, free_parameters: int, fitted_recall: float | None = None,
                 positives: int | None = None, positives_needed: int | None = None,
                 allowed_small: bool = False) -> None:
        super().__init__(**{"guard": guard, "free_parameters": free_parameters,
                            "fitted_recall": fitted_recall, "positives": positives,
                            "positives_needed": positives_needed, "allowed_small": allowed_small})

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in type(self).model_fields}


_PROVENANCE_STR_KEYS = ("source_sha256", "tuning_set", "created_by", "created_at", "notes")
_PROVENANCE_EXTRA_KEYS = (
    "objective", "target_specificity", "ppv", "npv", "f1", "out_of_fold", "guard",
)


class Provenance(OpTable):
    """Where an operating point came from (all optional; ``screen tune`` fills them in).

    Attributes:
        source_sha256: SHA-256 (hex) of the tuning data file.
        tuning_set: human description or path of the tuning set.
        target_recall: the sensitivity the tuning aimed for.
        sensitivity: achieved sensitivity with CI on the tuning set.
        specificity: achieved specificity with CI on the tuning set.
        created_by: tool and version that wrote it.
        created_at: ISO 8601 timestamp.
        notes: free text.
        objective: what the tuning maximised under its target (``"precision"``, ...).
        target_specificity: the specificity a high-specificity point aimed for.
        ppv: achieved positive predictive value (precision) with CI on the tuning set.
        npv: achieved negative predictive value with CI on the tuning set.
        f1: achieved F1 with CI on the tuning set.
        out_of_fold: the same figures measured out of fold (chosen on k-1 folds, measured on
            the held-out one), so the reported sensitivity is not the one it was chosen on.
        guard: how the point was guarded against over-fitting its tuning set, how many free
            parameters its rule has and whether the set was too small to show the target.

    The keys after ``notes`` are optional in the JSON and left out of :meth:`to_dict` when
    unset, so files written before they existed read back unchanged.
    """

    source_sha256: str | None = None
    tuning_set: str | None = None
    target_recall: Unit | None = None
    sensitivity: Estimate | None = None
    specificity: Estimate | None = None
    created_by: str | None = None
    created_at: str | None = None
    notes: str | None = None
    objective: str | None = None
    target_specificity: Unit | None = None
    ppv: Estimate | None = None
    npv: Estimate | None = None
    f1: Estimate | None = None
    out_of_fold: OutOfFold | None = None
    guard: TuneGuard | None = None

    @field_validator("source_sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value):
            raise ValueError(
                "must be 64 lower-case hex digits (hashlib.sha256(...).hexdigest()), "
                f"got {value!r}"
            )
        return value

    @field_validator("created_at")
    @classmethod
    def _iso_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"must be an ISO 8601 time, got {value!r}") from None
        return value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: getattr(self, key) for key in _PROVENANCE_STR_KEYS}
        out["target_recall"] = self.target_recall
        out["sensitivity"] = None if self.sensitivity is None else self.sensitivity.to_dict()
        out["specificity"] = None if self.specificity is None else self.specificity.to_dict()
        for key in _PROVENANCE_EXTRA_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_dict() if hasattr(value, "to_dict") else value
        return out


def _vote_to_dict(rule: VoteRule) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": rule.rule.value}
    if rule.k is not None:
        out["k"] = rule.k
    if rule.weights is not None:
        out["weights"] = dict(rule.weights)
        out["threshold"] = rule.threshold
    return out


def _boxes_to_dict(boxes: BoxSettings) -> dict[str, Any]:
    return {
        "score_threshold": boxes.score_threshold, "iou_threshold": boxes.iou_threshold,
        "scoring": boxes.scoring, "skip_box_threshold": boxes.skip_box_threshold,
        "members": list(boxes.members),
        "weights": None if boxes.weights is None else dict(boxes.weights),
    }


def check_schema_version(data: Any, where: str = "") -> None:
    """Refuse a file (or point) written by a newer fracture-screen before reading the rest.

    Raises:
        OperatingPointError: ``schema_version`` is above :data:`SCHEMA_VERSION`.
    """
    version = data.get("schema_version") if isinstance(data, Mapping) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise OperatingPointError(
            f"{where}operating point schema_version {version} is newer than this "
            f"fracture-screen supports ({SCHEMA_VERSION}); upgrade fracture-screen"
        )


class OperatingPoint(OpTable):
    """Per-member thresholds, the vote rule, box settings and provenance (see module docstring).

    Attributes:
        schema_version: layout version of the JSON (1 ..  :data:`SCHEMA_VERSION`).
        id: given id, or ``None`` to derive ``op-<12 hex>`` from the decision fields (always
            set once built).
        level: optional name, e.g. ``"high-sensitivity"``.
        thresholds: ``{member name: image-level threshold in [0, 1]}``; names the voting members.
        vote: the study-level vote rule.
        boxes: box fusion and reporting settings.
        provenance: where it came from.
        calibration: maps from raw to calibrated scores (optional; schema 2): what ``screen run``
            reports, never what it decides on.
        reference: the tuning set as ``screen monitor`` compares the nights with (optional;
            schema 2; the deciding point of a file carries it).
        group_by: the header field (:data:`GROUP_FIELDS`) whose value picks a point per study
            (optional; schema 2).
        group_points: ``{value: point}`` tuned on the studies of that group; a study of another
            group, or without the field, is decided by this point (the fallback).

    Raises:
        OperatingPointError: (building one) a value out of range, a vote or box setting that
            does not fit the members, an unknown key.
    """

    schema_version: int = Field(ge=1)  # a file says it; built in code it is SCHEMA_VERSION
    id: str | None = None
    level: str | None = None
    thresholds: dict[str, Unit]
    vote: VoteRule = Field(default_factory=VoteRule)
    boxes: BoxSettings = Field(default_factory=BoxSettings)
    provenance: Provenance = Field(default_factory=Provenance)
    calibration: Calibration | None = None
    reference: Reference | None = None
    group_by: Annotated[str, check(lambda v: v in GROUP_FIELDS,
                                   f"must be one of {', '.join(GROUP_FIELDS)}")] | None = None
    group_points: dict[str, "OperatingPoint"] = Field(default_factory=dict)

    @code_init
    def __init__(self, **values: Any) -> None:
        super().__init__(**{"schema_version": SCHEMA_VERSION, **values})

    @field_validator("thresholds", mode="before")
    @classmethod
    def _member_map(cls, value: Any) -> Any:
        if not isinstance(value, Mapping) or not value:
            raise ValueError(
                f"must map each member name to its threshold, got {value!r}"
            )
        blank = [name for name in value if not isinstance(name, str) or not name.strip()]
        if blank:
            raise ValueError(f"must name each member with a non-empty string, got {blank[0]!r}")
        return dict(value)

    @field_validator("level", "id")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(f"must be a non-empty string or null, got {value!r}")
        return value

    @model_validator(mode="after")
    def _fits_members(self) -> "OperatingPoint":
        if self.schema_version > SCHEMA_VERSION:
            raise ValueError(
                f"operating point schema_version {self.schema_version} is newer than this "
                f"fracture-screen supports ({SCHEMA_VERSION}); upgrade fracture-screen"
            )
        members = list(self.thresholds)
        try:
            self.vote.check_members(members)
        except FusionError as exc:
            raise ValueError(f"operating point key 'vote': {exc}") from None
        box_refs = (
            ("boxes.members", list(self.boxes.members)),
            ("boxes.weights", list(self.boxes.weights or {})),
        )
        for key, names in box_refs:
            unknown = sorted(set(names) - set(members))
            if unknown:
                raise ValueError(
                    f"operating point key {key!r} names member(s) {unknown} without a threshold; "
                    f"members: {members}"
                )
        self._check_groups(members)
        if self.id is None:
            object.__setattr__(self, "id", self.content_id())
        return self

    def _check_groups(self, members: list[str]) -> None:
        if bool(self.group_points) and self.group_by is None:
            raise ValueError("operating point key 'group_points' needs 'group_by' (the header field "
                             f"whose value picks a point: one of {', '.join(GROUP_FIELDS)})")
        for value, point in self.group_points.items():
            if point.group_points or point.reference is not None:
                raise ValueError(f"operating point key 'group_points.{value}' must be a plain point "
                                 "(no group_points or reference of its own)")
            if set(point.thresholds) != set(members):
                raise ValueError(f"operating point key 'group_points.{value}' thresholds members "
                                 f"{sorted(point.thresholds)}, the point {sorted(members)}; every "
                                 "group point must threshold the same members")

    def for_group(self, value: str | None) -> "OperatingPoint":
        """The point that decides a study whose :attr:`group_by` field is ``value``: the group's
        own point when tuned, else this one (the fallback)."""
        if value is None or not self.group_points:
            return self
        return self.group_points.get(value.strip(), self)

    def content_id(self) -> str:
        """``op-`` + the first 12 hex digits of SHA-256 over the decision fields."""
        decision = {
            "schema_version": self.schema_version, "thresholds": dict(self.thresholds),
            "vote": _vote_to_dict(self.vote), "boxes": _boxes_to_dict(self.boxes),
        }
        if self.group_points:  # which point decides a study is part of the decision
            decision["groups"] = {"by": self.group_by,
                                  "points": {v: p.content_id() for v, p in sorted(self.group_points.items())}}
        digest = hashlib.sha256(json.dumps(decision, sort_keys=True).encode()).hexdigest()
        return f"op-{digest[:12]}"

    @property
    def members(self) -> tuple[str, ...]:
        """The members this operating point expects, in threshold order."""
        return tuple(self.thresholds)

    @classmethod
    def from_dict(cls, data: Any) -> "OperatingPoint":
        """Validate a parsed JSON object (errors name the key, the value and the fix).

        Raises:
            OperatingPointError: not an object, a newer schema, or an invalid key.
        """
        if not isinstance(data, Mapping):
            raise OperatingPointError(f"operating point file must be a JSON object, got {data!r}")
        check_schema_version(data)
        return parse_model(cls, data, error=OperatingPointError, wording=OP_WORDING)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` reads back to an equal object."""
        return {
            "schema_version": self.schema_version, "id": self.id, "level": self.level,
            "thresholds": dict(self.thresholds), "vote": _vote_to_dict(self.vote),
            "boxes": _boxes_to_dict(self.boxes), "provenance": self.provenance.to_dict(),
            **self._sections(),
        }

    def _sections(self) -> dict[str, Any]:
        """The optional sections of schema 2, only when set (a version 1 file reads back as it was)."""
        out: dict[str, Any] = {}
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        if self.reference is not None:
            out["reference"] = self.reference.to_dict()
        if self.group_by is not None:
            out["group_by"] = self.group_by
        if self.group_points:
            out["group_points"] = {v: p.to_dict() for v, p in sorted(self.group_points.items())}
        return out

    def check_members(self, member_names: Sequence[str]) -> None:
        """Raise unless the ensemble's members and this operating point's members match.

        Raises:
            OperatingPointError: a member this operating point needs is not in the ensemble, or
                an ensemble member has no threshold here.
        """
        have = set(member_names)
        lacking = [m for m in self.thresholds if m not in have]
        if lacking:
            raise OperatingPointError(
                f"operating point {self.id} needs member(s) {lacking} that the ensemble lacks "
                f"(ensemble: {sorted(have)}); add their checkpoints or use a matching "
                "operating point"
            )
        extra = sorted(have - set(self.thresholds))
        if extra:
            raise OperatingPointError(
                f"ensemble member(s) {extra} have no threshold in operating point {self.id}; "
                "retune (screen tune) or remove them from the site config"
            )

    def decide(
        self, outputs: Mapping[Hashable, Mapping[str, MemberOutput]], **frames: Any
    ) -> StudyDecision:
        """Decide one study: see :func:`apply_operating_point`."""
        return apply_operating_point(self, outputs, **frames)


def apply_operating_point(
    op: OperatingPoint,
    outputs: Mapping[Hashable, Mapping[str, MemberOutput]],
    *,
    letterboxed: Mapping[str, int] | None = None,
    image_shapes: Mapping[Hashable, tuple[int, int]] | None = None,
) -> StudyDecision:
    """One study's decision under ``op`` from ``{image key: {member: MemberOutput}}``.

    ``letterboxed`` and ``image_shapes`` bring letterbox members' boxes into the image frame;
    see :func:`ensembles.fusion.fuse_study`.
    """
    return fuse_study(
        outputs, thresholds=op.thresholds, rule=op.vote, boxes=op.boxes,
        letterboxed=letterboxed, image_shapes=image_shapes,
    )


def op_id(point: OperatingPoint) -> str:
    """The point's id (given, or derived from its decision fields)."""
    return point.id or point.content_id()


def uniform_operating_point(
    members: Sequence[str], threshold: float = 0.5, *, level: str | None = None
) -> OperatingPoint:
    """The untuned default: every member at ``threshold``, ``any`` rule, ``max`` box scoring.

    Raises:
        OperatingPointError: ``threshold`` is not a number in ``[0, 1]``.
    """
    return OperatingPoint(thresholds={m: threshold for m in members}, level=level)


OperatingPoint.model_rebuild()
