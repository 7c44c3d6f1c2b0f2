"""What goes into a screening SR and what comes back out of one: plain frozen dataclasses.

Why separate from the builder: the runner builds :class:`SRFinding` and :class:`AlgorithmInfo`
from fused results without touching highdicom, and :mod:`dicom_io.sr.read` returns the same
types, so a write/read round trip can be compared with ``==``.

How the extra facts are encoded (documented here because a reader of the DICOM needs it): the
SR standard has no coded concept for "which ensemble members saw this box" or "which operating
level of a dual operating point flagged it", so both go into the finding's TID 4019 Algorithm
Identification as ``Algorithm Parameters`` TEXT items, ``finding-members=detr,pg-det`` and
``finding-level=high-sensitivity``. The report-wide parameters are ``operating-point=<id>``,
one ``member:<name>=<version>`` per member, and the caller's ``key=value`` pairs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dicom_io.errors import InvalidArgumentError

__all__ = ["AlgorithmInfo", "SRFinding", "SRReadback", "RESERVED_PARAMETER_KEYS"]

RESERVED_PARAMETER_KEYS = ("operating-point", "finding-members", "finding-level", "intended-use")

INTENDED_USE_NOTICES: dict[str, str] = {
    "clinical": "",
    "research": "RESEARCH USE ONLY: made by models not validated for patient care; not a "
                "clinical result.",
    "demo": "DEMONSTRATION ONLY: made by phantom-trained demo models that mean nothing on real "
            "radiographs; not a clinical result.",
    "unknown": "Intended use of the models not declared; not a clinical result.",
}
"""The report text for each intended use of the models that made it (none for clinical)."""
"""Parameter keys the writer sets itself (plus every key starting with ``member:``)."""

_FORBIDDEN_NAME_CHARS = (",", "=", "\n", "\r")


def _check_token(value: Any, what: str, forbidden: tuple[str, ...] = _FORBIDDEN_NAME_CHARS) -> str:
    """Return ``value`` if it is a non-empty string free of the separator characters."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"{what} must be a non-empty string, got {value!r}")
    bad = [c for c in forbidden if c in value]
    if bad:
        raise InvalidArgumentError(
            f"{what} {value!r} contains {bad[0]!r}; remove it (',' and '=' separate the values "
            "stored in the SR's algorithm parameters)"
        )
    return value


@dataclass(frozen=True)
class SRFinding:
    """One fused finding to report.

    Attributes:
        source_sop_instance_uid: the image the finding is on (one of the SR's sources).
        box: ``(col0, row0, col1, row1)`` in source pixel-edge coordinates (the output of
            :meth:`dicom_io.geometry.ResizeSpec.box_to_source`), or ``None`` for an image-level
            finding (a classifier-only positive), which has no region.
        score: fused confidence in ``[0, 1]``; written as "Certainty of Finding" in percent.
        members: names of the ensemble members that saw it (order kept).
        level: the operating level that flagged it (e.g. ``"high-sensitivity"``) for a dual
            operating point, or ``None``.
    """

    source_sop_instance_uid: str
    box: tuple[float, float, float, float] | None
    score: float
    members: tuple[str, ...] = ()
    level: str | None = None

    def __post_init__(self) -> None:
        uid = self.source_sop_instance_uid
        if not isinstance(uid, str) or not uid.strip():
            raise InvalidArgumentError(f"source_sop_instance_uid must be a non-empty UID string, got {uid!r}")
        if self.box is not None:
            try:
                box = tuple(float(v) for v in self.box)
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    f"box must be 4 numbers (col0, row0, col1, row1) or None, got {self.box!r}"
                ) from None
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise InvalidArgumentError(
                    f"box must be 4 finite numbers (col0, row0, col1, row1) or None, got {self.box!r}"
                )
            if not (box[0] < box[2] and box[1] < box[3]):
                raise InvalidArgumentError(
                    f"box {box} is empty or inverted: need col0 < col1 and row0 < row1 "
                    "(pixel-edge coordinates, columns first)"
                )
            object.__setattr__(self, "box", box)
        try:
            score = float(self.score)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"score must be a number in [0, 1], got {self.score!r}") from None
        if not (0.0 <= score <= 1.0):
            raise InvalidArgumentError(
                f"score must be in [0, 1] (a probability, not a percentage), got {score}"
            )
        object.__setattr__(self, "score", score)
        if isinstance(self.members, str):
            raise InvalidArgumentError(
                f"members must be a sequence of member names, got the string {self.members!r}; "
                "wrap it: (name,)"
            )
        members = tuple(self.members)
        for name in members:
            _check_token(name, "member name")
        object.__setattr__(self, "members", members)
        if self.level is not None:
            _check_token(self.level, "level", ("\n", "\r"))


@dataclass(frozen=True, kw_only=True)
class AlgorithmInfo:
    """Identification of the algorithm that made the report (TID 4019).

    Attributes:
        name: algorithm name (also the device observer's name, so at most 64 characters).
        version: the screener's version.
        operating_point_id: id of the operating point the decision used.
        members: ``(member name, member version or checkpoint hash)`` pairs.
        parameters: further ``key -> value`` parameters (thresholds, vote rule); keys must not
            use the writer's own keys (:data:`RESERVED_PARAMETER_KEYS`, ``member:*``).
        intended_use: what the models were declared fit for (the least fit member's); anything
            but ``clinical`` adds a notice to the report (:data:`INTENDED_USE_NOTICES`).
    """

    name: str = "fracture-screen"
    version: str
    operating_point_id: str
    members: tuple[tuple[str, str], ...]
    parameters: Mapping[str, str] = field(default_factory=dict)
    intended_use: str = "clinical"

    def __post_init__(self) -> None:
        if self.intended_use not in INTENDED_USE_NOTICES:
            raise InvalidArgumentError(
                f"intended_use must be one of {', '.join(INTENDED_USE_NOTICES)}, got {self.intended_use!r}"
            )
        _check_token(self.name, "algorithm name", ("\n", "\r"))
        if len(self.name) > 64:
            raise InvalidArgumentError(
                f"algorithm name is {len(self.name)} characters; at most 64 fit the SR's "
                "Device Observer Name (LO): shorten it"
            )
        _check_token(self.version, "algorithm version", ("\n", "\r"))
        _check_token(self.operating_point_id, "operating_point_id", ("\n", "\r"))
        pairs: list[tuple[str, str]] = []
        for pair in self.members:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise InvalidArgumentError(
                    f"each member must be a (name, version) pair, got {pair!r}"
                )
            name = _check_token(pair[0], "member name")
            version = _check_token(pair[1], f"version of member {name!r}", ("\n", "\r"))
            pairs.append((name, version))
        names = [n for n, _ in pairs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidArgumentError(f"member names must be unique, repeated: {', '.join(duplicates)}")
        object.__setattr__(self, "members", tuple(pairs))
        params: dict[str, str] = {}
        for key, value in dict(self.parameters).items():
            _check_token(key, "parameter key")
            if key in RESERVED_PARAMETER_KEYS or key.startswith("member:"):
                raise InvalidArgumentError(
                    f"parameter key {key!r} is set by the SR writer itself; rename it"
                )
            if not isinstance(value, str):
                raise InvalidArgumentError(
                    f"parameter {key!r} must be a string, got {type(value).__name__}; format it first"
                )
            params[key] = _check_token(value, f"parameter {key!r}", ("\n", "\r"))
        object.__setattr__(self, "parameters", params)

    def parameter_texts(self) -> list[str]:
        """The report-wide ``Algorithm Parameters`` texts, in a fixed order."""
        texts = [f"operating-point={self.operating_point_id}", f"intended-use={self.intended_use}"]
        texts += [f"member:{name}={version}" for name, version in self.members]
        texts += [f"{key}={value}" for key, value in self.parameters.items()]
        return texts


@dataclass(frozen=True)
class SRReadback:
    """A screening SR read back (see :func:`dicom_io.sr.read.read_sr`).

    Attributes:
        sop_instance_uid: the SR's own SOP Instance UID.
        study_instance_uid: the study it reports on.
        positive: the study decision (Fracture of bone present or absent).
        score: the fused study score in ``[0, 1]``.
        findings: box findings first (document order), then image-level findings.
        algorithm: the algorithm identification of the study decision group.
        source_sop_instance_uids: the images the study decision refers to.
        predecessor_sop_instance_uids: SRs this one supersedes.
    """

    sop_instance_uid: str
    study_instance_uid: str
    positive: bool
    score: float
    findings: tuple[SRFinding, ...]
    algorithm: AlgorithmInfo
    source_sop_instance_uids: tuple[str, ...]
    predecessor_sop_instance_uids: tuple[str, ...] = ()
