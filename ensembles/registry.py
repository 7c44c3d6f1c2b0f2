"""Member protocol and registry (after timm's ``_registry.py``).

A member kind registers a factory with :func:`register_member`, and the options it takes as a
:class:`MemberOptions` model (declared once, with the factory); :func:`create_member` checks the
options against it (an unknown option, or one of the wrong type, is refused in one place with
one wording) and builds the member from a local checkpoint directory. Heavy backends (torch, transformers, bitsandbytes) are
imported by the member modules themselves, and the built-in kinds are described statically
(:data:`BUILTIN_KINDS`), so listing kinds and :func:`member_availability` (what can run on this
machine, what is missing) never import torch: they work where torch is not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from ensembles.config_model import ConfigModel, Problem, Wording, parse_model, show
from ensembles.errors import CheckpointError, EnsembleError, MemberUnavailableError
from ensembles.types import MemberKind, MemberOutput


@runtime_checkable
class Member(Protocol):
    """What the screener needs from an ensemble member.

    ``predict`` takes radiographs as float32 ``H x W`` arrays in ``[0, 1]`` (any size; the
    member resizes) and returns one :class:`MemberOutput` per image, in order.
    """

    name: str
    kind: str

    def predict(self, images: Sequence[np.ndarray]) -> list[MemberOutput]: ...


class MemberWrapper:
    """A stage in front of a member (:class:`~ensembles.refined.RefinedMember`,
    :class:`~ensembles.symmetry_scored.SymmetryScoredMember`): it holds the member as
    ``.member`` (where :func:`ensembles.batching.batch_shrinks` looks), has its kind, and its name
    is the held member's, so the site's name set on the outermost stage reaches the member's
    outputs. Subclasses define ``predict``."""

    def __init__(self, member: Any) -> None:
        self.member = member
        self.kind: str = str(member.kind)

    @property
    def name(self) -> str:
        return str(self.member.name)

    @name.setter
    def name(self, value: str) -> None:
        self.member.name = value


class MemberOptions(ConfigModel):
    """The options every member kind takes (the site config passes them for each member).

    A kind with more options subclasses it and registers the subclass
    (``register_member(kind, options=...)``); its factory gets the validated instance.

    Attributes:
        device: torch device (``cpu``, ``cuda``, ``cuda:1`` ...).
        dtype: ``None`` for the member's policy, or a torch dtype name.
        quantization: ``None``, or a quantisation the kind supports (``4bit``, ``8bit``).
        batch_size: images per forward.
    """

    device: str = "cpu"
    dtype: str | None = None
    quantization: str | None = None
    batch_size: int = 8


def options_wording(kind: str) -> Wording:
    """How a kind's options word a problem (``detr got unknown option(s) box_flor; valid: ...``)."""

    def invalid(problem: Problem) -> str:
        key = ".".join(str(part) for part in problem.loc)
        return f"{kind} option {key!r} must be {problem.expected}, got {show(problem.value)}"

    return Wording(
        unknown=lambda p: (f"{kind} got unknown option(s) {', '.join(p.keys)}; "
                           f"valid: {', '.join(p.valid)}"),
        invalid=invalid,
        missing=lambda p: f"{kind} needs option {'.'.join(map(str, (*p.loc, *p.keys)))!r}",
    )


@dataclass(frozen=True)
class RegisteredKind:
    """A registered member kind.

    Attributes:
        kind: registry key, e.g. ``"paligemma-detector"``.
        factory: ``factory(checkpoint_dir, options) -> Member`` (``options`` an instance of
            ``options``).
        requires: importable module names the member needs at run time.
        description: one line for ``screen models``.
        module: where the factory lives (imported lazily by :func:`create_member`).
        options: the options the kind takes (a :class:`MemberOptions` model).
    """

    kind: str
    factory: Callable[..., Member]
    requires: tuple[str, ...]
    description: str
    module: str
    options: type[MemberOptions] = MemberOptions

    def parse_options(self, options: dict[str, Any]) -> MemberOptions:
        """``options`` checked against the kind's model.

        Raises:
            CheckpointError: an unknown option (the message lists the valid ones) or one of
                the wrong type.
        """
        return parse_model(self.options, options, error=CheckpointError,
                           wording=options_wording(self.kind))


@dataclass(frozen=True)
class KindInfo:
    """What is known about a member kind without importing its module (no torch needed).

    Attributes:
        kind: registry key.
        module: the module that registers it (imported only to build a member).
        requires: importable module names the member needs at run time.
        description: one line for ``screen models``.
    """

    kind: str
    module: str
    requires: tuple[str, ...]
    description: str


BUILTIN_KINDS: tuple[KindInfo, ...] = (
    KindInfo(MemberKind.PALIGEMMA_CLASSIFIER, "ensembles.members.paligemma_classifier",
             ("torch", "transformers"),
             "PaliGemma classifier: P(fracture) vs P(normal) from the first answer token"),
    KindInfo(MemberKind.PALIGEMMA_DETECTOR, "ensembles.members.paligemma_detector",
             ("torch", "transformers"),
             "PaliGemma detector: loc-vs-Normal score, then grammar-forced box decoding"),
    KindInfo(MemberKind.DETR, "ensembles.members.detr", ("torch", "transformers", "timm"),
             "DETR detector (transformers DetrForObjectDetection, timm backbone)"),
    KindInfo(MemberKind.REFINER, "ensembles.members.refiner", ("torch", "timm", "safetensors"),
             "box refiner stage (timm crop regressor); use refine(), not predict()"),
)
"""The kinds this package ships, described statically so listing them never imports torch
(a test holds each module's ``register_member`` call equal to its entry here)."""

FactoryT = TypeVar("FactoryT", bound=Callable[..., Member])

_REGISTRY: dict[str, RegisteredKind] = {}
_KNOWN: dict[str, KindInfo] = {info.kind: info for info in BUILTIN_KINDS}


def register_member(
    kind: str, *, options: type[MemberOptions] = MemberOptions,
    requires: Sequence[str] | None = None, description: str | None = None,
) -> Callable[[FactoryT], FactoryT]:
    """Class or function decorator registering a member factory under ``kind``.

    The factory is called as ``factory(checkpoint_dir, options)`` with ``options`` an instance
    of ``options`` (the kind's options, declared once). A built-in kind takes its requirements
    and description from :data:`BUILTIN_KINDS` (one place); another kind states them here.
    """
    known = _KNOWN.get(kind)
    needs = tuple(requires) if requires is not None else (known.requires if known else ())
    text = description if description is not None else (known.description if known else "")

    def decorator(factory: FactoryT) -> FactoryT:
        if kind in _REGISTRY and _REGISTRY[kind].factory is not factory:
            raise EnsembleError(f"member kind {kind!r} is registered twice")
        module = getattr(factory, "__module__", "")
        _REGISTRY[kind] = RegisteredKind(
            kind=kind, factory=factory, requires=needs, description=text, module=module,
            options=options,
        )
        _KNOWN.setdefault(kind, KindInfo(kind, module, needs, text))
        return factory

    return decorator


def list_members() -> list[str]:
    """Every known member kind, sorted (built-in and registered; imports nothing)."""
    return sorted(_KNOWN)


def kind_info(kind: str) -> KindInfo:
    """What is known about ``kind`` without importing it.

    Raises:
        EnsembleError: the kind is unknown (the message lists the valid ones).
    """
    try:
        return _KNOWN[kind]
    except KeyError:
        valid = ", ".join(sorted(_KNOWN)) or "(none registered)"
        raise EnsembleError(f"unknown member kind {kind!r}; valid kinds: {valid}") from None


def missing_requirements(kind: str) -> list[str]:
    """Modules ``kind`` needs that cannot be imported here (empty when it can run)."""
    return [name for name in kind_info(kind).requires if not _installed(name)]


def _installed(module: str) -> bool:
    """Whether ``module`` can be found (``find_spec`` raises, not returns None, for some misses)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def member_availability() -> dict[str, list[str]]:
    """``{kind: missing modules}`` for every known kind (imports nothing heavy)."""
    return {kind: missing_requirements(kind) for kind in list_members()}


def member_kind(kind: str) -> RegisteredKind:
    """The registered :class:`RegisteredKind` of ``kind`` (imports its module, hence torch).

    Raises:
        EnsembleError: the kind is unknown.
        MemberUnavailableError: a module it needs is missing here.
    """
    info = kind_info(kind)
    if kind not in _REGISTRY:
        missing = missing_requirements(kind)
        if missing:
            raise MemberUnavailableError(
                f"member {kind!r} cannot run here: missing {', '.join(missing)}; "
                f"install them (pip install {' '.join(missing)})"
            )
        importlib.import_module(info.module)
    if kind not in _REGISTRY:  # pragma: no cover - a built-in module that does not register
        raise EnsembleError(f"module {info.module} did not register member kind {kind!r}")
    return _REGISTRY[kind]


def create_member(kind: str, checkpoint_dir: str | Path, **options: Any) -> Member:
    """Build a member of ``kind`` from a local checkpoint directory with ``options``.

    Raises:
        EnsembleError: the kind is unknown.
        CheckpointError: an option the kind does not take, or one of the wrong type.
        MemberUnavailableError: a module the member needs is missing here.
    """
    registered = member_kind(kind)
    return registered.factory(Path(checkpoint_dir), registered.parse_options(options))
