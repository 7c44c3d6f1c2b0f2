"""The morning page's content, read from an output folder alone: ``run.json``, ``studies.csv``,
``findings.csv`` and ``scan.csv`` (all through :mod:`dicom_io.tables`).

The page shows the night of ``run.json`` (its ``run_id``): the studies whose latest row was
written by that run. Rows of earlier nights are counted, not listed. Nothing here reads a DICOM
header, so no patient name can reach the page: identifiers are what ``studies.csv`` holds,
already filtered by ``[output] patient_id`` and ``[output] accession``.

Ordering (:attr:`NightPage.studies`): flagged studies first, the strictest level first (the
order of ``run.json`` ``levels``, most sensitive to strictest; a level it does not name ranks
below the named ones), then fused score descending; then negatives ("no AI finding"), then
failed, out-of-scope and skipped studies.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from dicom_io.tables import FINDINGS, SCAN, STUDIES, TableError, read_table, records
from screen.errors import ReportError

__all__ = ["Finding", "ImageEntry", "MemberVote", "NightPage", "StudyEntry", "images_of", "read_night", "safe_link"]

_LINK = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
MAX_IMAGES = 12
"""Thumbnails per study at most (a study of more images says how many are not shown)."""


@dataclass(frozen=True)
class Finding:
    """One fused finding of ``findings.csv`` on one image.

    Attributes:
        box: source-pixel edges ``(col0, row0, col1, row1)``, ``None`` for an image-level finding.
        score: the fused box score.
        level: its level (``None`` for a single operating point).
    """

    box: tuple[float, float, float, float] | None
    score: float
    level: str | None


@dataclass(frozen=True)
class ImageEntry:
    """One image of a study on the page.

    Attributes:
        sop_instance_uid: the image's SOP Instance UID.
        findings: its findings (empty: drawn without boxes).
    """

    sop_instance_uid: str
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class MemberVote:
    """One member's part in a study's decision (``score:<member>``, ``vote:<member>``)."""

    member: str
    score: float | None
    vote: bool | None


@dataclass(frozen=True)
class StudyEntry:
    """One study of the night.

    Attributes:
        study_instance_uid: its UID.
        status: ``screened``, ``failed``, ``out-of-scope`` or ``skipped``.
        reason: why it failed or was not screened.
        flagged: a positive decision.
        level: the study's level (``""`` for a single point or a negative).
        fused_score: the fused score (``None`` when not screened).
        accession_number: as ``studies.csv`` holds it (``""`` when omitted).
        study_date: YYYYMMDD as in the header.
        patient_id: as ``studies.csv`` holds it (the policy's value; ``""`` when omitted).
        votes: each member's score and vote.
        links: ``(label, relative path)`` of its SR, GSPS, SC and not-screened SR files.
        images: its images (flagged studies only), findings first.
        hidden_images: images beyond :data:`MAX_IMAGES` not shown.
    """

    study_instance_uid: str
    status: str
    reason: str
    flagged: bool
    level: str
    fused_score: float | None
    accession_number: str
    study_date: str
    patient_id: str
    votes: tuple[MemberVote, ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    images: tuple[ImageEntry, ...] = ()
    hidden_images: int = 0


@dataclass(frozen=True)
class NightPage:
    """Everything the page shows.

    Attributes:
        run_id: the night's run.
        finished_at: when it finished (ISO text, ``""`` when unknown).
        intended_use: the run's intended use (``demo`` and ``research`` are said on the page).
        counts: ``run.json`` counts by status.
        levels: the operating points' levels, most sensitive to strictest (empty: one point).
        studies: the night's studies in page order (module docstring).
        earlier: studies of the folder last written by an earlier run (not listed).
        needs_attention: ``(study, reason)`` no longer retried.
        sources: SOP Instance UID to the source file (``scan.csv`` paths, when it holds them).
        patient_id_shown: whether ``studies.csv`` has a ``patient_id`` column.
        accession_shown: whether it has ``accession_number``.
        patient_id_policy: ``[output] patient_id`` of the run (``run.json``; ``""`` when older).
    """

    run_id: str
    finished_at: str
    intended_use: str
    counts: dict[str, int]
    levels: tuple[str, ...]
    studies: tuple[StudyEntry, ...]
    earlier: int = 0
    needs_attention: tuple[tuple[str, str], ...] = ()
    sources: dict[str, Path] = field(default_factory=dict)
    patient_id_shown: bool = False
    accession_shown: bool = False
    patient_id_policy: str = ""

    @property
    def flagged(self) -> tuple[StudyEntry, ...]:
        return tuple(s for s in self.studies if s.flagged)

    def by_status(self, status: str) -> tuple[StudyEntry, ...]:
        return tuple(s for s in self.studies if s.status == status and not s.flagged)


def safe_link(path: str | None) -> str | None:
    """``path`` when it is a plain relative posix path inside the folder (letters, digits,
    ``._-``, no ``..``), else ``None``: a cell of a CSV never becomes an arbitrary URL."""
    if not path or not _LINK.fullmatch(path) or ".." in PurePosixPath(path).parts:
        return None
    return path


def read_night(out_dir: Path) -> NightPage:
    """Read the night of ``out_dir`` (see the module docstring).

    Raises:
        ReportError: ``run.json`` is missing or not a run's, or a table does not read as its
            schema (the message names the file and the line).
    """
    run = _run_json(out_dir)
    run_id = str(run.get("run_id", ""))
    levels = tuple(str(v) for v in run.get("levels", []) if isinstance(v, str))
    try:
        studies = records(read_table(out_dir / "studies.csv", STUDIES, error=ReportError))
        findings = records(read_table(out_dir / "findings.csv", FINDINGS, error=ReportError)) \
            if (out_dir / "findings.csv").is_file() else []
        scan = records(read_table(out_dir / "scan.csv", SCAN, error=ReportError)) \
            if (out_dir / "scan.csv").is_file() else []
    except TableError as exc:  # pragma: no cover - read_table raises ReportError itself
        raise ReportError(str(exc)) from exc
    columns = set(studies[0]) if studies else set()
    tonight = [row for row in studies if str(row.get("run_id") or "") == run_id]
    images, sources = _images(scan, findings)
    entries = [_entry(row, images, levels) for row in tonight]
    entries.sort(key=lambda e: _order(e, levels))
    attention = tuple((str(item.get("study_instance_uid", "")), str(item.get("reason", "")))
                      for item in run.get("needs_attention", []) if isinstance(item, dict))
    counts = {str(k): int(v) for k, v in dict(run.get("counts", {})).items() if isinstance(v, int)}
    return NightPage(
        run_id=run_id, finished_at=str(run.get("finished_at", "")), intended_use=str(run.get("intended_use", "")),
        counts=counts, levels=levels, studies=tuple(entries), earlier=len(studies) - len(tonight),
        needs_attention=attention, sources=sources, patient_id_shown="patient_id" in columns,
        accession_shown="accession_number" in columns, patient_id_policy=str(run.get("patient_id_policy", "")),
    )


def _run_json(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{out_dir} has no run.json: the page shows a night of `screen run`; run "
                          f"`screen run ARCHIVE --out {out_dir}` first") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path} is not readable JSON ({type(exc).__name__}); it is written by "
                          "`screen run`: run it again") from None
    if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
        raise ReportError(f"{path} has no run_id: it is not the run.json of `screen run`")
    return data


def _images(scan: list[dict[str, Any]], findings: list[dict[str, Any]]) -> tuple[
        dict[str, dict[str, list[Finding]]], dict[str, Path]]:
    """Per study, per image (in scan order, then findings' order), its findings; and sources."""
    images: dict[str, dict[str, list[Finding]]] = {}
    sources: dict[str, Path] = {}
    for row in scan:
        study, sop = str(row.get("study_instance_uid") or ""), str(row.get("sop_instance_uid") or "")
        if row.get("outcome") == "selected" and study and sop:
            images.setdefault(study, {}).setdefault(sop, [])
            if row.get("path"):
                sources[sop] = Path(str(row["path"]))
    for row in findings:
        study, sop = str(row.get("study_instance_uid") or ""), str(row.get("sop_instance_uid") or "")
        edges = [row.get(k) for k in ("col0", "row0", "col1", "row1")]
        box = None
        if all(isinstance(v, float) and math.isfinite(v) for v in edges):
            box = (float(edges[0]), float(edges[1]), float(edges[2]), float(edges[3]))  # type: ignore[arg-type]
        score = row.get("score")
        images.setdefault(study, {}).setdefault(sop, []).append(
            Finding(box, float(score) if isinstance(score, float) and math.isfinite(score) else 0.0,
                    str(row.get("level") or "") or None))
    return images, sources


def _shown(per_image: dict[str, list[Finding]]) -> tuple[tuple[ImageEntry, ...], int]:
    """The images a flagged study shows (those with findings first, by their best score; at
    most :data:`MAX_IMAGES`) and how many it leaves out."""
    ordered = sorted(per_image.items(), key=lambda kv: (not kv[1], -max((f.score for f in kv[1]), default=0)))
    return tuple(ImageEntry(sop, tuple(found)) for sop, found in ordered[:MAX_IMAGES]), \
        max(0, len(ordered) - MAX_IMAGES)


def images_of(scan: Sequence[Mapping[str, Any]], findings: Sequence[Mapping[str, Any]]
              ) -> dict[str, tuple[ImageEntry, ...]]:
    """Per study, the images its page entry shows, from ``scan.csv``-like and
    ``findings.csv``-like rows (the night calls it with its own rows before writing them)."""
    images, _ = _images([dict(r) for r in scan], [dict(r) for r in findings])
    return {study: _shown(per_image)[0] for study, per_image in images.items()}


def _entry(row: dict[str, Any], images: dict[str, dict[str, list[Finding]]], levels: tuple[str, ...]) -> StudyEntry:
    uid = str(row.get("study_instance_uid") or "")
    flagged = row.get("status") == "screened" and row.get("decision") == "positive"
    votes = tuple(
        MemberVote(name[len("score:"):], _number(row.get(name)), _bool(row.get("vote:" + name[len("score:"):])))
        for name in row if name.startswith("score:"))
    links = [(label, link) for label, link in (("SR", safe_link(row.get("sr_path"))),
                                               ("GSPS", safe_link(row.get("gsps_path"))),
                                               ("not-screened SR", safe_link(row.get("gap_sr_path"))))
             if link]
    for index, path in enumerate(p for p in str(row.get("sc_paths") or "").split(";") if p):
        link = safe_link(path)
        if link:
            links.append((f"SC {index + 1}", link))
    shown: tuple[ImageEntry, ...] = ()
    hidden = 0
    if flagged:
        shown, hidden = _shown(images.get(uid, {}))
    return StudyEntry(
        study_instance_uid=uid, status=str(row.get("status") or ""), reason=str(row.get("reason") or ""),
        flagged=flagged, level=str(row.get("level") or ""), fused_score=_number(row.get("fused_score")),
        accession_number=str(row.get("accession_number") or ""), study_date=str(row.get("study_date") or ""),
        patient_id=str(row.get("patient_id") or ""), votes=votes, links=tuple(links), images=shown,
        hidden_images=hidden,
    )


_STATUS_ORDER = {"screened": 1, "failed": 2, "out-of-scope": 3, "skipped": 4}


def level_rank(level: str, levels: tuple[str, ...]) -> int:
    """Higher is stricter: the index in ``levels``; an unnamed level ranks below the named."""
    return levels.index(level) if level in levels else -1


def _order(entry: StudyEntry, levels: tuple[str, ...]) -> tuple[Any, ...]:
    score = entry.fused_score if entry.fused_score is not None else -1.0
    if entry.flagged:
        return (0, -level_rank(entry.level, levels), -score, entry.study_date, entry.study_instance_uid)
    return (_STATUS_ORDER.get(entry.status, 5), -score, entry.study_date, entry.study_instance_uid)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(float(value)) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None
