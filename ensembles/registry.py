"""Member protocol and registry (after timm's ``_registry.py``).

A member kind registers a factory with :func:`register_member`; :func:`create_member` builds
one from a local checkpoint directory. Heavy backends (torch, transformers, bitsandbytes) are
imported by the member modules themselves, so importing this registry stays cheap, and
:func:`member_availability` can tell what can run on this machine and what is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from ensembles.errors import EnsembleError, MemberUnavailableError
from ensembles.types import MemberOutput


@runtime_checkable
class Member(Protocol):
    """What the screener needs from an ensemble member.

    ``predict`` takes radiographs as float32 ``H x W`` arrays in ``[0, 1]`` (any size; the
    member resizes) and returns one :class:`MemberOutput` per image, in order.
    """

    name: str
    kind: str

    def predict(self, images: Sequence[np.ndarray]) -> list[MemberOutput]: ...


@dataclass(frozen=True)
class MemberKind:
    """A registered member kind.

    Attributes:
        kind: registry key, e.g. ``"paligemma-detector"``.
        factory: ``factory(checkpoint_dir, **options) -> Member``.
        requires: importable module names the member needs at run time.
        description: one line for ``screen models``.
        module: where the factory lives (imported lazily by :func:`create_member`).
    """

    kind: str
    factory: Callable[..., Member]
    requires: tuple[str, ...]
    description: str
    module: str


_REGISTRY: dict[str, MemberKind] = {}

# Modules that register member kinds when imported. Listed here so the registry can be
# filled lazily without importing torch at ``import ensembles`` time.
_MEMBER_MODULES: tuple[str, ...] = (
    "ensembles.members.paligemma_classifier",
    "ensembles.members.paligemma_detector",
    "ensembles.members.detr",
    "ensembles.members.refiner",
)


def register_member(
    kind: str, *, requires: Sequence[str] = (), description: str = ""
) -> Callable[[Callable[..., Member]], Callable[..., Member]]:
    """Class or function decorator registering a member factory under ``kind``."""

    def decorator(factory: Callable[..., Member]) -> Callable[..., Member]:
        if kind in _REGISTRY and _REGISTRY[kind].factory is not factory:
            raise EnsembleError(f"member kind {kind!r} is registered twice")
        _REGISTRY[kind] = MemberKind(
            kind=kind,
            factory=factory,
            requires=tuple(requires),
            description=description,
            module=getattr(factory, "__module__", ""),
        )
        return factory

    return decorator


def _load_member_modules() -> None:
    for module in _MEMBER_MODULES:
        if importlib.util.find_spec(module) is None:
            continue
        importlib.import_module(module)


def list_members() -> list[str]:
    """Every registered member kind, sorted."""
    _load_member_modules()
    return sorted(_REGISTRY)


def missing_requirements(kind: str) -> list[str]:
    """Modules ``kind`` needs that cannot be imported here (empty when it can run)."""
    info = member_kind(kind)
    return [name for name in info.requires if importlib.util.find_spec(name) is None]


def member_availability() -> dict[str, list[str]]:
    """``{kind: missing modules}`` for every registered kind."""
    return {kind: missing_requirements(kind) for kind in list_members()}


def member_kind(kind: str) -> MemberKind:
    """The registered :class:`MemberKind` (factory, requirements, description) of ``kind``."""
    _load_member_modules()
    try:
        return _REGISTRY[kind]
    except KeyError:
        valid = ", ".join(sorted(_REGISTRY)) or "(none registered)"
        raise EnsembleError(f"unknown member kind {kind!r}; valid kinds: {valid}") from None


def create_member(kind: str, checkpoint_dir: str | Path, **options: Any) -> Member:
    """Build a member of ``kind`` from a local checkpoint directory.

    Raises:
        EnsembleError: the kind is unknown.
        MemberUnavailableError: a module the member needs is missing here.
    """
    info = member_kind(kind)
    missing = missing_requirements(kind)
    if missing:
        raise MemberUnavailableError(
            f"member {kind!r} cannot run here: missing {', '.join(missing)}; "
            f"install them (pip install {' '.join(missing)})"
        )
    return info.factory(Path(checkpoint_dir), **options)
