"""Loading the site's members and naming what was run (versions, the model key)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ensembles.checkpoint import MemberSpec, read_member_spec
from ensembles.errors import CheckpointError
from ensembles.registry import Member, create_member
from ensembles.types import ResizeMode
from screen.site_config import MemberConfig, SiteConfig
from screen.errors import ConfigError


@dataclass
class LoadedMember:
    """A member ready to run, with what the outputs need to say about it."""

    config: MemberConfig
    spec: MemberSpec
    member: Member
    version: str  # "<kind>:<fingerprint>" of its checkpoint

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def letterbox_size(self) -> int | None:
        """Input side when the member letterboxes (its boxes need mapping before fusion)."""
        return self.spec.image_size if self.spec.resize == ResizeMode.LETTERBOX else None


def letterbox_sizes(config: SiteConfig) -> dict[str, int]:
    """Each letterboxing member's input side, by name, read from ``member.json`` (no model is
    loaded: the Ray engine's driver fuses without one)."""
    sizes: dict[str, int] = {}
    for member in config.members:
        spec = read_member_spec(member.checkpoint)
        if spec.resize == ResizeMode.LETTERBOX:
            sizes[member.name] = spec.image_size
    return sizes


def checkpoint_fingerprint(checkpoint: Path) -> str:
    """A cheap identity of a checkpoint folder: ``member.json`` bytes plus every file's name and size.

    Weights are not hashed (a 10B checkpoint is 20 GB); a retrained member changes its
    ``member.json`` or the size of its files, and its folder should be a new one anyway.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        relative = path.relative_to(checkpoint).as_posix()
        digest.update(relative.encode())
        digest.update(str(path.stat().st_size).encode())
        if path.name == "member.json":
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def load_members(config: SiteConfig, *, device: str | None = None, batch_size: int | None = None) -> list[LoadedMember]:
    """Load every configured member (CLI overrides for device and batch size win over each
    member's ``device`` and ``batch_size``, which win over ``[run]``'s)."""
    return [load_member(config, m, device=device, batch_size=batch_size) for m in config.members]


def load_member(config: SiteConfig, member_config: MemberConfig, *, device: str | None = None,
                batch_size: int | None = None) -> LoadedMember:
    """Load one configured member (see :func:`load_members`); a Ray actor loads its own."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would fill the nightly log
    spec = read_member_spec(member_config.checkpoint)
    member_device = device or member_config.device or config.run.device
    member = create_member(
        member_config.kind,
        member_config.checkpoint,
        device=member_device,
        dtype=member_config.dtype,
        quantization=member_config.quantization,
        batch_size=batch_size or member_config.batch_size or config.run.batch_size,
        **dict(member_config.options),
    )
    if member_config.score_symmetries > 1:  # inside the refiner: it refines the original image's boxes
        from ensembles.symmetry_scored import SymmetryScoredMember

        member = SymmetryScoredMember(member, member_config.score_symmetries)
    if member_config.refiner is not None:
        member = _with_refiner(member, spec, member_config, member_device)
    member.name = member_config.name  # outputs, thresholds and CSV columns use the site's name
    return LoadedMember(member_config, spec, member, member_version(member_config))


def _with_refiner(member: Member, spec: MemberSpec, member_config: MemberConfig, device: str) -> Member:
    """``member`` behind the refiner stage its site config names (boxes corrected before fusion)."""
    from ensembles.refined import RefinedMember

    assert member_config.refiner is not None
    try:  # the refiner's own loader checks the kind, the geometry and the weights
        refiner = create_member("refiner", member_config.refiner, device=device)
    except CheckpointError as exc:
        raise ConfigError(
            f"[members.{member_config.name}].refiner {str(member_config.refiner)!r} is not a refiner "
            f"checkpoint that loads: {exc}"
        ) from None
    letterbox = spec.image_size if spec.resize == ResizeMode.LETTERBOX else None
    wrapped: Member = RefinedMember(member, refiner, letterbox_size=letterbox,
                                    iterations=member_config.refiner_iterations)
    return wrapped


def member_version(member: MemberConfig) -> str:
    """``<kind>:<checkpoint fingerprint>``: what outputs and the ledger call this member
    (``+symN`` when its score is the mean over N symmetries, ``+refiner:<fingerprint>xN`` when a
    refiner corrects its boxes: either changes what it says, so it is a new model key)."""
    version = f"{member.kind}:{checkpoint_fingerprint(member.checkpoint)}"
    if member.score_symmetries > 1:
        version += f"+sym{member.score_symmetries}"
    if member.refiner is not None:
        version += f"+refiner:{checkpoint_fingerprint(member.refiner)}x{member.refiner_iterations}"
    return version


def model_key(config: SiteConfig, operating_point_id: str) -> str:
    """What a ledger row was screened with: member names and versions plus the operating point.

    Computed from the checkpoints alone, so a dry run can compare with the ledger without
    loading any model.
    """
    versions = [[m.name, member_version(m)] for m in config.members]
    payload = json.dumps({"members": versions, "op": operating_point_id})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
