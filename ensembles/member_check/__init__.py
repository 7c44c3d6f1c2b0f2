"""Checking a member checkpoint against what the code relies on (``screen models check``).

:func:`check_member` picks the checks for the checkpoint's kind; each kind's module says what
it checks and why. The report module needs no torch; the kind modules import it lazily.
"""

from __future__ import annotations

from pathlib import Path

from ensembles.checkpoint import read_member_spec
from ensembles.errors import CheckpointError
from ensembles.member_check.report import Check, CheckReport
from ensembles.types import MemberKind

__all__ = ["Check", "CheckReport", "check_member"]


def check_member(directory: str | Path, kind: str | None = None) -> CheckReport:
    """Every check for the checkpoint in ``directory`` (its kind from ``member.json``).

    Args:
        directory: the member checkpoint folder.
        kind: the kind it must be (``None``: whatever ``member.json`` says).
    """
    folder = Path(directory)
    try:
        spec = read_member_spec(folder)
    except CheckpointError as exc:
        report = CheckReport(folder, kind or "?")
        report.failed("member.json", str(exc))
        return report
    if kind is not None and spec.kind != kind:
        report = CheckReport(folder, kind)
        report.failed("member.json", f"member.json kind is {spec.kind!r}, expected {kind!r}")
        return report
    if spec.kind in (MemberKind.PALIGEMMA_CLASSIFIER, MemberKind.PALIGEMMA_DETECTOR):
        from ensembles.member_check.paligemma import check_paligemma

        return check_paligemma(folder, spec)
    if spec.kind == MemberKind.DETR:
        from ensembles.member_check.detr import check_detr

        return check_detr(folder, spec)
    return _check_generic(folder, spec.kind)


def _check_generic(folder: Path, kind: str) -> CheckReport:
    """Kinds without their own checks (the refiner): member.json and safetensors weights."""
    from ensembles.member_check.files import safetensors_files

    report = CheckReport(folder, kind)
    report.passed("member.json", kind)
    try:
        found = safetensors_files(folder)
    except CheckpointError as exc:
        report.failed("files", str(exc))
        return report
    report.expect("files", bool(found), f"{len(found)} safetensors file(s)",
                  "no safetensors weights (model.safetensors)")
    return report
