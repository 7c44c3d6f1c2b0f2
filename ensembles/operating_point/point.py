"""The operating point: a versioned JSON that fixes how member votes become study decisions.

``screen tune`` writes it and ``screen run`` reads it. Layout (schema version 1)::

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

A file may also hold several points, ``{"schema_version": 1, "points": [point, ...]}``
(``screen tune --dual``); :func:`load_operating_point` then returns the first, deciding point
and :func:`ensembles.operating_point.levels.load_operating_points` returns them all.

The default ``id`` hashes only what changes decisions (schema version, thresholds, vote, boxes),
so two files that decide alike share an id whatever their notes say. Unknown keys are refused,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ensembles.box_fusion import BoxSettings, FusionError
from ensembles.checkpoint import atomic_write_text
from ensembles.errors import OperatingPointError
from ensembles.fusion import StudyDecision, VoteRule, fuse_study
from ensembles.types import MemberOutput

SCHEMA_VERSION = 1
_TOP_KEYS = ("schema_version", "id", "level", "thresholds", "vote", "boxes", "provenance")
_VOTE_KEYS = ("rule", "k", "weights", "threshold")
_BOX_KEYS = (
    "score_threshold", "iou_threshold", "scoring", "skip_box_threshold", "members", "weights",
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _unknown(section: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise OperatingPointError(
            f"operating point {section} has unknown key(s) {', '.join(unknown)}; "
            f"valid keys: {', '.join(allowed)}"
        )


def _mapping(section: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise OperatingPointError(
            f"operating point key {section!r} must be a JSON object, got {value!r}"
        )
    return value


def _optional_unit(key: str, value: Any) -> float | None:
    return None if value is None else _unit(key, value)


def _unit(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise OperatingPointError(
            f"operating point key {key!r} must be a number in [0, 1], got {value!r}"
        )
    return float(value)


@dataclass(frozen=True)
class Estimate:
    """A proportion measured on the tuning set, with its confidence interval."""

    value: float
    ci_low: float
    ci_high: float
    n: int | None = None
    method: str | None = None

    @classmethod
    def from_dict(cls, key: str, data: Any) -> "Estimate":
        """Validate ``data`` for provenance key ``key``."""
        data = _mapping(key, data)
        _unknown(key, data, ("value", "ci_low", "ci_high", "n", "method"))
        for name in ("value", "ci_low", "ci_high"):
            if name not in data:
                raise OperatingPointError(f"operating point key '{key}.{name}' is missing")
        value = _unit(f"{key}.value", data["value"])
        low = _unit(f"{key}.ci_low", data["ci_low"])
        high = _unit(f"{key}.ci_high", data["ci_high"])
        if not low <= value <= high:
            raise OperatingPointError(
                f"operating point key {key!r} needs ci_low <= value <= ci_high, got "
                f"{low} <= {value} <= {high}"
            )
        n = data.get("n")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise OperatingPointError(
                f"operating point key '{key}.n' must be a count >= 0, got {n!r}"
            )
        method = data.get("method")
        if method is not None and not isinstance(method, str):
            raise OperatingPointError(
                f"operating point key '{key}.method' must be a string, got {method!r}"
            )
        return cls(value, low, high, n, method)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "n": self.n, "method": self.method}


_PROVENANCE_STR_KEYS = ("source_sha256", "tuning_set", "created_by", "created_at", "notes")
_PROVENANCE_EXTRA_KEYS = (
    "objective", "target_specificity", "ppv", "npv", "f1", "out_of_fold", "guard",
)


@dataclass(frozen=True)
class Provenance:
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
    target_recall: float | None = None
    sensitivity: Estimate | None = None
    specificity: Estimate | None = None
    created_by: str | None = None
    created_at: str | None = None
    notes: str | None = None
    objective: str | None = None
    target_specificity: float | None = None
    ppv: Estimate | None = None
    npv: Estimate | None = None
    f1: Estimate | None = None
    out_of_fold: OutOfFold | None = None
    guard: TuneGuard | None = None

    @classmethod
    def from_dict(cls, data: Any) -> "Provenance":
        """Validate the ``provenance`` object."""
        data = _mapping("provenance", data)
        allowed = (
            _PROVENANCE_STR_KEYS + ("target_recall", "sensitivity", "specificity")
            + _PROVENANCE_EXTRA_KEYS
        )
        _unknown("provenance", data, allowed)
        for key in _PROVENANCE_STR_KEYS + ("objective",):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise OperatingPointError(
                    f"operating point key 'provenance.{key}' must be a string, got {value!r}"
                )
        sha = data.get("source_sha256")
        if sha is not None and not _SHA256.match(sha):
            raise OperatingPointError(
                f"operating point key 'provenance.source_sha256' must be 64 lower-case hex "
                f"digits (hashlib.sha256(...).hexdigest()), got {sha!r}"
            )
        created = data.get("created_at")
        if created is not None:
            try:
                datetime.fromisoformat(created)
            except ValueError:
                raise OperatingPointError(
                    f"operating point key 'provenance.created_at' must be an ISO 8601 time, "
                    f"got {created!r}"
                ) from None
        sens, spec = data.get("sensitivity"), data.get("specificity")
        return cls(
            source_sha256=sha,
            tuning_set=data.get("tuning_set"),
            target_recall=_optional_unit("provenance.target_recall", data.get("target_recall")),
            sensitivity=(
                None if sens is None else Estimate.from_dict("provenance.sensitivity", sens)
            ),
            specificity=(
                None if spec is None else Estimate.from_dict("provenance.specificity", spec)
            ),
            created_by=data.get("created_by"),
            created_at=created,
            notes=data.get("notes"),
            objective=data.get("objective"),
            target_specificity=_optional_unit(
                "provenance.target_specificity", data.get("target_specificity")
            ),
            ppv=_optional_estimate("provenance.ppv", data.get("ppv")),
            npv=_optional_estimate("provenance.npv", data.get("npv")),
            f1=_optional_estimate("provenance.f1", data.get("f1")),
            out_of_fold=(
                None if data.get("out_of_fold") is None
                else OutOfFold.from_dict(data["out_of_fold"])
            ),
            guard=None if data.get("guard") is None else TuneGuard.from_dict(data["guard"]),
        )

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


def _optional_estimate(key: str, data: Any) -> Estimate | None:
    return None if data is None else Estimate.from_dict(key, data)


_OOF_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1")


@dataclass(frozen=True)
class OutOfFold:
    """Figures of an operating point measured out of fold.

    Attributes:
        folds: number of stratified folds (each chosen on the other ``folds - 1``).
        sensitivity, specificity, ppv, npv, f1: pooled held-out figures with CIs.
    """

    folds: int
    sensitivity: Estimate | None = None
    specificity: Estimate | None = None
    ppv: Estimate | None = None
    npv: Estimate | None = None
    f1: Estimate | None = None

    def __post_init__(self) -> None:
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise OperatingPointError(
                f"operating point key 'provenance.out_of_fold.folds' must be an integer >= 2, "
                f"got {self.folds!r}"
            )

    @classmethod
    def from_dict(cls, data: Any) -> "OutOfFold":
        """Validate the ``provenance.out_of_fold`` object."""
        data = _mapping("provenance.out_of_fold", data)
        _unknown("provenance.out_of_fold", data, ("folds",) + _OOF_METRICS)
        if "folds" not in data:
            raise OperatingPointError(
                "operating point key 'provenance.out_of_fold.folds' is missing"
            )
        estimates = {
            key: _optional_estimate(f"provenance.out_of_fold.{key}", data.get(key))
            for key in _OOF_METRICS
        }
        return cls(folds=data["folds"], **estimates)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"folds": self.folds}
        for key in _OOF_METRICS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_dict()
        return out


GUARDS = ("oof", "lower-ci", "none")
_GUARD_KEYS = (
    "guard", "free_parameters", "fitted_recall", "positives", "positives_needed", "allowed_small",
)


def _optional_count(key: str, value: Any, least: int = 0) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < least):
        raise OperatingPointError(
            f"operating point key {key!r} must be an integer >= {least} or null, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class TuneGuard:
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

    guard: str
    free_parameters: int
    fitted_recall: float | None = None
    positives: int | None = None
    positives_needed: int | None = None
    allowed_small: bool = False

    def __post_init__(self) -> None:
        if self.guard not in GUARDS:
            raise OperatingPointError(
                f"operating point key 'provenance.guard.guard' must be one of "
                f"{', '.join(GUARDS)}, got {self.guard!r}"
            )
        free = self.free_parameters
        if isinstance(free, bool) or not isinstance(free, int) or free < 0:
            raise OperatingPointError(
                "operating point key 'provenance.guard.free_parameters' must be an integer >= 0, "
                f"got {free!r}"
            )
        _optional_unit("provenance.guard.fitted_recall", self.fitted_recall)
        _optional_count("provenance.guard.positives", self.positives)
        _optional_count("provenance.guard.positives_needed", self.positives_needed, least=1)
        if not isinstance(self.allowed_small, bool):
            raise OperatingPointError(
                "operating point key 'provenance.guard.allowed_small' must be true or false, "
                f"got {self.allowed_small!r}"
            )

    @classmethod
    def from_dict(cls, data: Any) -> "TuneGuard":
        """Validate the ``provenance.guard`` object."""
        data = _mapping("provenance.guard", data)
        _unknown("provenance.guard", data, _GUARD_KEYS)
        missing = [key for key in ("guard", "free_parameters") if key not in data]
        if missing:
            raise OperatingPointError(f"operating point key 'provenance.guard.{missing[0]}' is "
                                      "missing")
        return cls(**{key: data[key] for key in _GUARD_KEYS if key in data})

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in _GUARD_KEYS}


def _vote_from_dict(data: Any) -> VoteRule:
    data = _mapping("vote", data)
    _unknown("vote", data, _VOTE_KEYS)
    if "rule" not in data:
        raise OperatingPointError(
            "operating point key 'vote.rule' is missing; use 'any', 'k-of-n' or 'weighted-mean'"
        )
    try:
        return VoteRule(rule=data["rule"], k=data.get("k"), weights=data.get("weights"),
                        threshold=data.get("threshold"))
    except FusionError as exc:
        raise OperatingPointError(f"operating point key 'vote': {exc}") from None


def _vote_to_dict(rule: VoteRule) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": rule.rule}
    if rule.rule == "k-of-n":
        out["k"] = rule.k
    if rule.rule == "weighted-mean":
        out["weights"] = dict(rule.weights or {})
        out["threshold"] = rule.threshold
    return out


def _boxes_from_dict(data: Any) -> BoxSettings:
    data = _mapping("boxes", data)
    _unknown("boxes", data, _BOX_KEYS)
    members = data.get("members", [])
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise OperatingPointError(
            f"operating point key 'boxes.members' must be a list of member names, got {members!r}"
        )
    kwargs = {k: data[k] for k in _BOX_KEYS if k in data and k != "members"}
    try:
        return BoxSettings(members=tuple(members), **kwargs)
    except FusionError as exc:
        raise OperatingPointError(f"operating point key 'boxes': {exc}") from None


def _boxes_to_dict(boxes: BoxSettings) -> dict[str, Any]:
    return {
        "score_threshold": boxes.score_threshold, "iou_threshold": boxes.iou_threshold,
        "scoring": boxes.scoring, "skip_box_threshold": boxes.skip_box_threshold,
        "members": list(boxes.members),
        "weights": None if boxes.weights is None else dict(boxes.weights),
    }


@dataclass(frozen=True)
class OperatingPoint:
    """Per-member thresholds, the vote rule, box settings and provenance (see module docstring).

    Attributes:
        thresholds: ``{member name: image-level threshold in [0, 1]}``; names the voting members.
        vote: the study-level vote rule.
        boxes: box fusion and reporting settings.
        level: optional name, e.g. ``"high-sensitivity"``.
        provenance: where it came from.
        id: given id, or ``None`` to derive ``op-<12 hex>`` from the decision fields.
        schema_version: layout version of the JSON.
    """

    thresholds: Mapping[str, float]
    vote: VoteRule = field(default_factory=VoteRule)
    boxes: BoxSettings = field(default_factory=BoxSettings)
    level: str | None = None
    provenance: Provenance = field(default_factory=Provenance)
    id: str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.thresholds, Mapping) or not self.thresholds:
            raise OperatingPointError(
                "operating point key 'thresholds' must map each member name to its threshold, "
                f"got {self.thresholds!r}"
            )
        clean: dict[str, float] = {}
        for name, value in self.thresholds.items():
            if not isinstance(name, str) or not name.strip():
                raise OperatingPointError(
                    f"operating point member names must be non-empty strings, got {name!r}"
                )
            clean[name] = _unit(f"thresholds.{name}", value)
        object.__setattr__(self, "thresholds", clean)
        if isinstance(self.schema_version, bool) or not isinstance(self.schema_version, int):
            raise OperatingPointError(
                "operating point key 'schema_version' must be an integer, "
                f"got {self.schema_version!r}"
            )
        if self.schema_version > SCHEMA_VERSION:
            raise OperatingPointError(
                f"operating point schema_version {self.schema_version} is newer than this "
                f"fracture-screen supports ({SCHEMA_VERSION}); upgrade fracture-screen"
            )
        if self.schema_version < 1:
            raise OperatingPointError(
                f"operating point key 'schema_version' must be >= 1, got {self.schema_version}"
            )
        if self.level is not None and (not isinstance(self.level, str) or not self.level.strip()):
            raise OperatingPointError(
                "operating point key 'level' must be a non-empty string or null, "
                f"got {self.level!r}"
            )
        if self.id is not None and (not isinstance(self.id, str) or not self.id.strip()):
            raise OperatingPointError(
                f"operating point key 'id' must be a non-empty string or null, got {self.id!r}"
            )
        members = list(clean)
        try:
            self.vote.check_members(members)
        except FusionError as exc:
            raise OperatingPointError(f"operating point key 'vote': {exc}") from None
        box_refs = (
            ("boxes.members", list(self.boxes.members)),
            ("boxes.weights", list(self.boxes.weights or {})),
        )
        for key, names in box_refs:
            unknown = sorted(set(names) - set(members))
            if unknown:
                raise OperatingPointError(
                    f"operating point key {key!r} names member(s) {unknown} without a threshold; "
                    f"members: {members}"
                )
        if self.id is None:
            object.__setattr__(self, "id", self.content_id())

    def content_id(self) -> str:
        """``op-`` + the first 12 hex digits of SHA-256 over the decision fields."""
        decision = {
            "schema_version": self.schema_version, "thresholds": dict(self.thresholds),
            "vote": _vote_to_dict(self.vote), "boxes": _boxes_to_dict(self.boxes),
        }
        digest = hashlib.sha256(json.dumps(decision, sort_keys=True).encode()).hexdigest()
        return f"op-{digest[:12]}"

    @property
    def members(self) -> tuple[str, ...]:
        """The members this operating point expects, in threshold order."""
        return tuple(self.thresholds)

    @classmethod
    def from_dict(cls, data: Any) -> "OperatingPoint":
        """Validate a parsed JSON object (errors name the key, the value and the fix)."""
        data = _mapping("(top level)", data)
        _unknown("(top level)", data, _TOP_KEYS)
        for key in ("schema_version", "thresholds"):
            if key not in data:
                raise OperatingPointError(f"operating point key {key!r} is missing")
        version = data["schema_version"]
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise OperatingPointError(
                f"operating point schema_version {version} is newer than this fracture-screen "
                f"supports ({SCHEMA_VERSION}); upgrade fracture-screen"
            )
        return cls(
            thresholds=_mapping("thresholds", data["thresholds"]),
            vote=_vote_from_dict(data.get("vote", {"rule": "any"})),
            boxes=_boxes_from_dict(data.get("boxes", {})),
            level=data.get("level"),
            provenance=Provenance.from_dict(data.get("provenance", {})),
            id=data.get("id"),
            schema_version=version,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` reads back to an equal object."""
        return {
            "schema_version": self.schema_version, "id": self.id, "level": self.level,
            "thresholds": dict(self.thresholds), "vote": _vote_to_dict(self.vote),
            "boxes": _boxes_to_dict(self.boxes), "provenance": self.provenance.to_dict(),
        }

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


def load_operating_point(path: str | Path) -> OperatingPoint:
    """Read and validate an operating point JSON file.

    A file with several points (``{"schema_version": 1, "points": [...]}``, written by
    ``screen tune --dual``) gives its first point, the one that decides; read every point with
    :func:`ensembles.operating_point.levels.load_operating_points`.

    Raises:
        OperatingPointError: the file is missing, not JSON, or invalid (the message names the
            file and the key).
    """
    file = Path(path)
    data = read_operating_point_json(file)
    try:
        if isinstance(data, Mapping) and "points" in data:
            from ensembles.operating_point.levels import operating_points_from_dict

            return operating_points_from_dict(data)[0]
        return OperatingPoint.from_dict(data)
    except OperatingPointError as exc:
        raise OperatingPointError(f"{file}: {exc}") from None


def read_operating_point_json(file: Path) -> Any:
    """The parsed JSON of an operating point file (``NaN``/``Infinity`` refused)."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OperatingPointError(
            f"operating point file {str(file)!r} does not exist; write one with `screen tune`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OperatingPointError(f"cannot read operating point {str(file)!r}: {exc}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise OperatingPointError(
            f"operating point {str(file)!r} is not valid JSON: {exc}"
        ) from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def save_operating_point(op: OperatingPoint, path: str | Path) -> Path:
    """Write ``op`` as sorted, indented JSON atomically; returns the path."""
    if not isinstance(op, OperatingPoint):
        raise OperatingPointError(
            f"save_operating_point needs an OperatingPoint, got {type(op).__name__}"
        )
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(op.to_dict(), sort_keys=True, indent=2, allow_nan=False) + "\n"
    atomic_write_text(file, text)
    return file


def uniform_operating_point(
    members: Sequence[str], threshold: float = 0.5, *, level: str | None = None
) -> OperatingPoint:
    """The untuned default: every member at ``threshold``, ``any`` rule, ``max`` box scoring."""
    if (
        isinstance(threshold, bool) or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
    ):
        raise OperatingPointError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return OperatingPoint(thresholds={m: float(threshold) for m in members}, level=level)
