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
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from ensembles.errors import CheckpointError

MEMBER_JSON = "member.json"
FORMAT_VERSION = 2
"""2 added ``intended_use``; a version-1 file (without it) reads as ``research``."""

INTENDED_USES: tuple[str, ...] = ("clinical", "research", "demo")
"""What a site declares a member fit for: ``clinical`` (validated for screening patients at
this site), ``research`` (not validated for patient care; the default), ``demo`` (phantom-trained
examples that mean nothing on real radiographs)."""
DEFAULT_INTENDED_USE = "research"

RESIZE_MODES: tuple[str, ...] = ("squash", "letterbox")
"""``squash``: resize each axis to the square side (PaliGemma's own); ``letterbox``: keep aspect."""

_KIND_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _code_version() -> str:
    """The installed fracture-screen version, so a checkpoint records what wrote it."""
    try:
        return metadata.version("fracture-screen")
    except metadata.PackageNotFoundError:
        return "0.1.0"


@dataclass(frozen=True)
class MemberSpec:
    """What a member checkpoint's ``member.json`` holds.

    Attributes:
        kind: registry kind that loads it (``"paligemma-classifier"``, ``"paligemma-detector"``,
            ``"detr"``, ``"refiner"``).
        name: display name, e.g. ``"pg2-3b-cls"``; shown in CSV columns and the SR.
        image_size: side of the square model input in pixels (224/448/896 for PaliGemma).
        resize: ``"squash"`` (PaliGemma's own) or ``"letterbox"`` (see :mod:`ensembles.preprocess`).
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
        format_version: version of this JSON layout.
        options: kind-specific settings (``task_head``, ``quantization``, ``max_new_tokens``...);
            must be JSON-serialisable.
    """

    kind: str
    name: str
    image_size: int
    resize: str = "squash"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    prompt: str | None = None
    labels: tuple[str, ...] = ("fracture",)
    canny_blend: float = 0.0
    clahe: bool = False
    threshold: float = 0.5
    intended_use: str = DEFAULT_INTENDED_USE
    code_version: str = field(default_factory=_code_version)
    format_version: int = FORMAT_VERSION
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not _KIND_PATTERN.match(self.kind):
            raise CheckpointError(
                f"member spec field 'kind' must be a registry kind such as "
                f"'paligemma-detector' (lower case, digits, '-' or '_'), got {self.kind!r}"
            )
        if not isinstance(self.name, str) or not self.name.strip():
            raise CheckpointError(
                f"member spec field 'name' must be a non-empty string, got {self.name!r}"
            )
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int):
            raise CheckpointError(
                f"member spec field 'image_size' must be an integer pixel side, "
                f"got {self.image_size!r}"
            )
        if self.image_size < 1:
            raise CheckpointError(
                f"member spec field 'image_size' must be >= 1, got {self.image_size}"
            )
        if self.resize not in RESIZE_MODES:
            raise CheckpointError(
                f"member spec field 'resize' must be one of {', '.join(RESIZE_MODES)}, "
                f"got {self.resize!r}"
            )
        object.__setattr__(self, "mean", _triple("mean", self.mean, positive=False))
        object.__setattr__(self, "std", _triple("std", self.std, positive=True))
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise CheckpointError(
                f"member spec field 'prompt' must be a string or null, got {self.prompt!r}"
            )
        if isinstance(self.labels, str) or not isinstance(self.labels, (tuple, list)):
            raise CheckpointError(
                f"member spec field 'labels' must be a list of strings, got {self.labels!r}"
            )
        labels = tuple(self.labels)
        if not labels or not all(isinstance(x, str) and x.strip() for x in labels):
            raise CheckpointError(
                f"member spec field 'labels' must list at least one non-empty string, "
                f"got {self.labels!r}"
            )
        object.__setattr__(self, "labels", labels)
        object.__setattr__(
            self, "canny_blend", _unit_float("canny_blend", self.canny_blend)
        )
        if not isinstance(self.clahe, bool):
            raise CheckpointError(
                f"member spec field 'clahe' must be true or false, got {self.clahe!r}"
            )
        object.__setattr__(self, "threshold", _unit_float("threshold", self.threshold))
        if self.intended_use not in INTENDED_USES:
            raise CheckpointError(
                f"member spec field 'intended_use' must be one of {', '.join(INTENDED_USES)}, "
                f"got {self.intended_use!r}"
            )
        if not isinstance(self.code_version, str) or not self.code_version:
            raise CheckpointError(
                f"member spec field 'code_version' must be a non-empty string, "
                f"got {self.code_version!r}"
            )
        if isinstance(self.format_version, bool) or not isinstance(self.format_version, int):
            raise CheckpointError(
                f"member spec field 'format_version' must be an integer, "
                f"got {self.format_version!r}"
            )
        if not 1 <= self.format_version <= FORMAT_VERSION:
            raise CheckpointError(
                f"member spec 'format_version' {self.format_version} is not supported: this "
                f"fracture-screen reads versions 1..{FORMAT_VERSION}; upgrade fracture-screen "
                "to load this checkpoint"
            )
        if not isinstance(self.options, dict) or not all(
            isinstance(k, str) for k in self.options
        ):
            raise CheckpointError(
                f"member spec field 'options' must be a mapping with string keys, "
                f"got {self.options!r}"
            )
        try:
            json.dumps(self.options, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"member spec field 'options' must be JSON-serialisable: {exc}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        data = asdict(self)
        for key in ("mean", "std", "labels"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MemberSpec":
        """Build from a parsed ``member.json``, naming any missing or unknown field.

        Raises:
            CheckpointError: a required field is missing, a field is unknown or invalid.
        """
        if not isinstance(data, dict):
            raise CheckpointError(
                f"member spec must be a JSON object, got {type(data).__name__}"
            )
        version = data.get("format_version", FORMAT_VERSION)
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise CheckpointError(
                f"member spec 'format_version' {version} is newer than this fracture-screen "
                f"supports ({FORMAT_VERSION}); upgrade fracture-screen to load this checkpoint"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(
                f"member spec has unknown field(s) {', '.join(unknown)}; valid fields: "
                f"{', '.join(sorted(known))} (put kind-specific settings under 'options')"
            )
        required = ("kind", "name", "image_size")
        missing = [key for key in required if key not in data]
        if missing:
            raise CheckpointError(
                f"member spec is missing required field(s) {', '.join(missing)}"
            )
        kwargs = dict(data)
        for key in ("mean", "std", "labels"):
            if key in kwargs and isinstance(kwargs[key], list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def _triple(name: str, value: Any, *, positive: bool) -> tuple[float, float, float]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or len(value) != 3:
        raise CheckpointError(
            f"member spec field {name!r} must list three per-channel numbers, got {value!r}"
        )
    out: list[float] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise CheckpointError(
                f"member spec field {name!r} must hold finite numbers, got {value!r}"
            )
        if positive and v <= 0:
            raise CheckpointError(
                f"member spec field {name!r} must be > 0 per channel, got {value!r}"
            )
        out.append(float(v))
    return (out[0], out[1], out[2])


def _unit_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"member spec field {name!r} must be a number, got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise CheckpointError(
            f"member spec field {name!r} must be in [0, 1], got {value!r}"
        )
    return float(value)


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
    except TypeError as exc:  # e.g. wrong argument types slipping through dataclass init
        raise CheckpointError(f"invalid {str(path)!r}: {exc}") from None
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
