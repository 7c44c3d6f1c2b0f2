"""The member checkpoint format: a ``save_pretrained`` directory plus a small ``member.json``.

A member checkpoint is a local directory. The weights are whatever the member's library writes
with ``save_pretrained`` (safetensors); ``member.json`` says what the weights alone cannot: which
registry kind loads it, the prompt, the input size and resize mode the model was trained with,
the normalisation it expects, its labels and its own decision threshold. Reading it never needs
torch, so ``screen models`` can describe a checkpoint on any machine.

The JSON is versioned (``format_version``); a file written by a newer fracture-screen than this
one is refused with a message saying so rather than half-read.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator

from ensembles.config_model import (
    CHECK_ERRORS,
    ConfigModel,
    ListAsTuple,
    Problem,
    Wording,
    check,
    is_predicate,
    parse_model,
    show,
)
from ensembles.errors import CheckpointError
from ensembles.registry import list_members
from ensembles.types import ResizeMode

MEMBER_JSON = "member.json"
FORMAT_VERSION = 2
"""2 added ``intended_use``; a version-1 file (without it) reads as ``research``."""

IntendedUse = Literal["clinical", "research", "demo"]
"""What a site declares a member fit for: ``clinical`` (validated for screening patients at
this site), ``research`` (not validated for patient care; the default), ``demo`` (phantom-trained
examples that mean nothing on real radiographs)."""
INTENDED_USES: tuple[str, ...] = get_args(IntendedUse)
DEFAULT_INTENDED_USE: IntendedUse = "research"

_KIND_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _code_version() -> str:
    """The installed fracture-screen version, so a checkpoint records what wrote it."""
    try:
        return metadata.version("fracture-screen")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def _key(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else (f".{part}" if i else part)
                   for i, part in enumerate(loc))


def _invalid(problem: Problem) -> str:
    key = _key(problem.loc)
    if problem.type in CHECK_ERRORS:
        if not key:
            return f"member spec {problem.expected}"
        if not is_predicate(problem.expected):
            return f"member spec field {key!r}: {problem.expected}"
        got = "" if ", got " in problem.expected else f", got {show(problem.value)}"
        return f"member spec field {key!r} {problem.expected}{got}"
    expected = problem.expected
    if expected == "a table":
        expected = "a JSON object"
    if problem.type in _BOUNDS:
        expected = expected.removeprefix("a number ")
    return f"member spec field {key!r} must be {expected}, got {show(problem.value)}"


MEMBER_WORDING = Wording(
    unknown=lambda p: (f"member spec has unknown field(s) {', '.join(p.keys)}; valid fields: "
                       f"{', '.join(p.valid)} (put kind-specific settings under 'options')"
                       if not p.loc else
                       f"member spec {_key(p.loc)!r} has unknown field(s) {', '.join(p.keys)}"),
    invalid=_invalid,
    missing=lambda p: f"member spec is missing required field(s) {_key((*p.loc, *p.keys))}",
)
"""How ``member.json`` words a problem (``member spec field 'image_size' must be >= 1 ...``)."""


UnitFloat = Annotated[float, check(lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")]


class MemberSpec(ConfigModel):
    """What a member checkpoint's ``member.json`` holds (checked whole when read or built).

    Attributes:
        kind: registry kind that loads it (``"paligemma-classifier"``, ``"paligemma-detector"``,
            ``"detr"``, ``"refiner"``, or a plugin's registered kind).
        name: display name, e.g. ``"pg2-3b-cls"``; shown in CSV columns and the SR.
        image_size: side of the square model input in pixels (224/448/896 for PaliGemma).
        resize: :class:`~ensembles.types.ResizeMode` ``squash`` (PaliGemma's own) or
            ``letterbox`` (see :mod:`ensembles.preprocess`).
        mean: per-channel normalisation mean the checkpoint expects.
        std: per-channel normalisation std the checkpoint expects (all > 0).
        prompt: PaliGemma prefix text, e.g. ``"Detect Fracture"``; ``None`` for DETR/refiner.
        labels: class names; a classifier lists its answers, e.g. ``("Fracture", "Normal")``.
        canny_blend: weight of Canny edges blended into the image (the paper used 0.3); 0 = off.
        clahe: apply CLAHE; explicit opt-in only, since the paper saw it collapse a PaliGemma
            model to always answering "Normal".
        threshold: the member's own image-level decision threshold in ``[0, 1]``; the detector
            decodes boxes only above it.
        intended_use: what the site declares the member fit for, one of
            :data:`INTENDED_USES`; never ``clinical`` unless someone said so.
        code_version: fracture-screen version that wrote the checkpoint.
        format_version: version of this JSON layout (1 .. :data:`FORMAT_VERSION`).
        options: kind-specific settings (``task_head``, ``quantization``, ``max_new_tokens``...);
            must be JSON-serialisable.

    Raises:
        CheckpointError: (building one) a field missing, unknown or invalid.
    """

    kind: str
    name: Annotated[str, check(lambda v: bool(v.strip()), "must be a non-empty string")]
    image_size: int = Field(ge=1)
    resize: ResizeMode = Field(default=ResizeMode.SQUASH, strict=False)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: Annotated[tuple[float, float, float],
                   check(lambda v: all(c > 0 for c in v), "must be > 0 per channel")] = (0.5, 0.5, 0.5)
    prompt: str | None = None
    labels: Annotated[tuple[str, ...], ListAsTuple,
                      check(lambda v: bool(v) and all(label.strip() for label in v),
                            "must list at least one non-empty string")] = ("fracture",)
    canny_blend: UnitFloat = 0.0
    clahe: bool = False
    threshold: UnitFloat = 0.5
    intended_use: IntendedUse = DEFAULT_INTENDED_USE
    code_version: str = Field(default_factory=_code_version, min_length=1)
    format_version: int = Field(default=FORMAT_VERSION, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def code_problems(cls) -> tuple[type[CheckpointError], Wording]:
        return CheckpointError, MEMBER_WORDING

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, value: str) -> str:
        if not _KIND_PATTERN.match(value):
            raise ValueError(
                "must be a registry kind such as 'paligemma-detector' (lower case, digits, '-' "
                f"or '_'), got {value!r}"
            )
        known = list_members()
        if value not in known:
            raise ValueError(
                f"must be a registered member kind ({', '.join(known)}), got {value!r}"
            )
        return value

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _three(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise ValueError(f"must list three per-channel numbers, got {value!r}")
        return tuple(value)

    @field_validator("format_version")
    @classmethod
    def _readable(cls, value: int) -> int:
        if value > FORMAT_VERSION:
            raise ValueError(
                f"{value} is newer than this fracture-screen supports ({FORMAT_VERSION}); "
                "upgrade fracture-screen to load this checkpoint"
            )
        return value

    @field_validator("options")
    @classmethod
    def _json_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be JSON-serialisable: {exc}") from None
        return value

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists, the resize mode its word)."""
        data = {name: getattr(self, name) for name in type(self).model_fields}
        for key in ("mean", "std", "labels"):
            data[key] = list(data[key])
        data["resize"] = self.resize.value
        data["options"] = json.loads(json.dumps(self.options))
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "MemberSpec":
        """Build from a parsed ``member.json``, naming any missing, unknown or invalid field.

        Raises:
            CheckpointError: not an object, a newer format, or a field missing, unknown or
                invalid.
        """
        if not isinstance(data, Mapping):
            raise CheckpointError(
                f"member spec must be a JSON object, got {type(data).__name__}"
            )
        version = data.get("format_version", FORMAT_VERSION)
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise CheckpointError(
                f"member spec 'format_version' {version} is newer than this fracture-screen "
                f"supports ({FORMAT_VERSION}); upgrade fracture-screen to load this checkpoint"
            )
        return parse_model(cls, data, error=CheckpointError, wording=MEMBER_WORDING)


def read_member_spec(checkpoint_dir: Path) -> MemberSpec:
    """Read and validate ``checkpoint_dir/member.json``.

    Raises:
        CheckpointError: the directory or file is missing, the JSON is malformed, or a field is
            missing/invalid (the message names it).
    """
    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise CheckpointError(
            f"member checkpoint directory {str(directory)!r} does not exist or is not a "
            "directory; point the site config at a save_pretrained directory"
        )
    path = directory / MEMBER_JSON
    if not path.is_file():
        raise CheckpointError(
            f"member checkpoint {str(directory)!r} has no {MEMBER_JSON}; every checkpoint "
            "needs one (write it with ensembles.checkpoint.write_member_spec)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {str(path)!r}: {exc}") from None
    try:
        return MemberSpec.from_dict(data)
    except CheckpointError as exc:
        raise CheckpointError(f"invalid {str(path)!r}: {exc}") from None


def write_member_spec(checkpoint_dir: Path, spec: MemberSpec) -> Path:
    """Write ``spec`` as ``checkpoint_dir/member.json`` atomically (temp file + rename).

    The directory is created if needed. Keys are sorted and indented so diffs stay readable.

    Returns:
        The path of the written ``member.json``.
    """
    if not isinstance(spec, MemberSpec):
        raise CheckpointError(f"write_member_spec needs a MemberSpec, got {type(spec).__name__}")
    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / MEMBER_JSON
    data = spec.to_dict()
    data["format_version"] = FORMAT_VERSION  # what this writer writes, whatever was read
    text = json.dumps(data, sort_keys=True, indent=2, allow_nan=False) + "\n"
    atomic_write_text(target, text)
    return target


def save_paligemma_checkpoint(directory: str | Path, model: Any, processor: Any,
                              spec: MemberSpec) -> Path:
    """Write a PaliGemma member checkpoint: the model (safetensors), its processor and tokenizer
    (``save_pretrained``) and ``member.json``, into ``directory`` (created if needed).

    Returns:
        The checkpoint directory.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    processor.save_pretrained(target)
    write_member_spec(target, spec)
    return target


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory and ``os.replace``.

    A reader sees the old file or the new one, never half of it, even if the writer dies.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; these files are shared read-only
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
