"""Finishing one study: fused decision → CSV rows in source pixels → SR, GSPS, SC → ledger.

Also the objects of the PACS bookkeeping: the IOCM rejection note withdrawing a re-screened
study's earlier results, and the not-screened SR of a study that failed or was out of scope.
Every object is written under ``<kind>/<study UID>/<SOP UID>.dcm`` (:func:`object_path`).

Box geometry: members report Boxes in their own input frame; the fusion maps letterbox
members into the image frame (normalised source image), and
:class:`dicom_io.geometry.ResizeSpec` in squash mode maps that frame to source pixel columns
and rows, so one mapping places every box on the source image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import pydicom

from dicom_io.deflate import read_header
from dicom_io.geometry import ResizeSpec
from dicom_io.gsps import PipelineVoi, build_gsps
from dicom_io.index import Instance
from dicom_io.iocm import build_rejection_note
from dicom_io.pixels import PixelPolicy, load_radiograph
from dicom_io.sc import build_sc
from dicom_io.sr import AlgorithmInfo, SRFinding, build_screening_sr, write_sr
from dicom_io.sr.gap import build_gap_sr
from dicom_io.uids import is_valid_uid
from ensembles.fusion import Finding, StudyDecision
from ensembles.operating_point.levels import level_name
from ensembles.operating_point.point import OperatingPoint
from ensembles.types import MemberOutput, ResizeMode
from screen.nightly.ledger import OBJECT_DIRS, OutputObject, StoredObject


@dataclass(frozen=True)
class PixelFinding:
    """A finding placed on its source image: pixel-edge box (or ``None``), score, level."""

    instance: Instance
    box: tuple[float, float, float, float] | None
    score: float
    members: tuple[str, ...]
    level: str | None


def to_pixels(decision: StudyDecision, images: Mapping[str, Instance], levels: Sequence[str | None]) -> list[PixelFinding]:
    """Map each finding's image-frame box to source pixel columns/rows of its image."""
    placed = []
    for finding, level in zip(decision.findings, levels):
        instance = images[str(finding.image)]
        box = None
        if finding.box is not None:
            spec = ResizeSpec(instance.rows, instance.columns, 1, ResizeMode.SQUASH)
            box = spec.box_to_source(tuple(finding.box))
        placed.append(PixelFinding(instance, box, float(finding.score), tuple(finding.members), level))
    return placed


def box_levels(decision: StudyDecision, points: Sequence[OperatingPoint], decisions: Sequence[StudyDecision],
               iou: float = 0.3) -> list[str | None]:
    """Each finding's level under several operating points (``None`` for a single point).

    A finding takes the level of the strictest point that also reports it: the same image
    and, for boxes, a box of that point's decision overlapping it at IoU >= ``iou`` (the
    study-level counterpart is :func:`ensembles.operating_point.levels.finding_level`).
    """
    if len(points) < 2:
        return [None] * len(decision.findings)
    levels: list[str | None] = []
    for finding in decision.findings:
        level = level_name(points[0], 0)
        for index in range(1, len(points)):
            strict = decisions[index]
            if strict.positive and any(_same(finding, other, iou) for other in strict.findings):
                level = level_name(points[index], index)
        levels.append(level)
    return levels


def _same(a: Finding, b: Finding, iou: float) -> bool:
    if a.image != b.image:
        return False
    if a.box is None or b.box is None:
        return a.box is None and b.box is None
    return a.box.iou(b.box) >= iou


def finding_rows(study_uid: str, placed: Sequence[PixelFinding], run_id: str) -> list[dict[str, Any]]:
    """``findings.csv`` rows for one study."""
    rows = []
    for f in placed:
        col0, row0, col1, row1 = f.box if f.box is not None else (None, None, None, None)
        rows.append({
            "study_instance_uid": study_uid, "series_instance_uid": f.instance.series_instance_uid,
            "sop_instance_uid": f.instance.sop_instance_uid, "col0": col0, "row0": row0, "col1": col1,
            "row1": row1, "score": f.score, "level": f.level or "", "members": ";".join(f.members),
            "run_id": run_id,
        })
    return rows


def member_columns(outputs: Mapping[Hashable, Mapping[str, MemberOutput]], decision: StudyDecision,
                   member_names: Sequence[str]) -> dict[str, Any]:
    """``score:<member>`` (study score = max over images) and ``vote:<member>`` columns."""
    columns: dict[str, Any] = {}
    for name in member_names:
        scores = [per[name].score for per in outputs.values() if name in per]
        columns[f"score:{name}"] = max(scores) if scores else None
        vote = decision.votes.get(name)
        columns[f"vote:{name}"] = None if vote is None else bool(vote)
    return columns


def study_headers(images: Sequence[Instance]) -> list[pydicom.Dataset]:
    """The study's image headers, read once for every object written about it (bounded
    reads, deflated files too)."""
    return [read_header(inst.path) for inst in images]


def write_study_sr(
    *,
    sources: Sequence[pydicom.Dataset],
    decision: StudyDecision,
    placed: Sequence[PixelFinding],
    algorithm: AlgorithmInfo,
    out_dir: Path,
    series_instance_uid: str,
    series_number: int,
    supersedes: Sequence[Path],
    institution_name: str | None,
    sop_instance_uid: str | None = None,
) -> tuple[str, str]:
    """Build and atomically write the study's SR; returns (path relative to out_dir, SOP UID).

    The path is built from the study's and the SR's UIDs only: the planner has checked that
    the study's is a DICOM UID (``invalid-uid`` otherwise), and the SR's is made here or is one
    this folder made (``sop_instance_uid``: an SR written again after its file was lost).
    """
    previous = [pydicom.dcmread(p) for p in supersedes if p.is_file()]
    findings = sr_findings(placed)
    ds = build_screening_sr(
        sources, findings, positive=decision.positive, score=decision.score, algorithm=algorithm,
        series_instance_uid=series_instance_uid, series_number=series_number,
        instance_number=len(previous) + 1, supersedes=previous, institution_name=institution_name,
        sop_instance_uid=sop_instance_uid,
    )
    written = _write(ds, "sr", out_dir)
    return written.path, written.sop_instance_uid


def sr_findings(placed: Sequence[PixelFinding]) -> list[SRFinding]:
    """The fused findings as the DICOM writers take them (SR, GSPS, SC)."""
    return [SRFinding(source_sop_instance_uid=f.instance.sop_instance_uid, box=f.box, score=f.score,
                      members=f.members, level=f.level) for f in placed]


def object_path(out_dir: Path, kind: str, study_uid: str, sop_uid: str) -> Path:
    """Where an object of ``kind`` is written: ``<kind folder>/<study UID>/<SOP UID>.dcm``.

    Raises:
        ValueError: either UID is not a DICOM UID (never a path from anything else).
    """
    if not (is_valid_uid(study_uid) and is_valid_uid(sop_uid)):
        raise ValueError(f"refusing to name a {kind} file after a study or SOP UID that is not a DICOM UID")
    return out_dir / OBJECT_DIRS[kind] / study_uid / f"{sop_uid}.dcm"


def _write(ds: pydicom.Dataset, kind: str, out_dir: Path, **extra: Any) -> OutputObject:
    path = object_path(out_dir, kind, str(ds.StudyInstanceUID), str(ds.SOPInstanceUID))
    write_sr(ds, path)  # any dataset: Part 10, atomically
    return OutputObject(kind, str(ds.SOPInstanceUID), path.relative_to(out_dir).as_posix(), **extra)


@dataclass(frozen=True)
class Series:
    """A run's series for one kind of object: its UID and number."""

    uid: str
    number: int


def write_study_gsps(*, sources: Sequence[pydicom.Dataset], placed: Sequence[PixelFinding], levels: Sequence[str],
                     views: Mapping[str, PipelineVoi], algorithm: AlgorithmInfo, out_dir: Path, series: Series,
                     instance_number: int, institution_name: str | None) -> OutputObject | None:
    """The study's GSPS (``None`` for a study without findings or without a greyscale image)."""
    findings = sr_findings(placed)
    if not findings or not any(int(ds.get("SamplesPerPixel", 1) or 1) == 1 for ds in sources):
        return None
    ds = build_gsps(sources, findings, levels=levels, views=views, algorithm=algorithm,
                    series_instance_uid=series.uid, series_number=series.number, instance_number=instance_number,
                    institution_name=institution_name)
    return _write(ds, "gsps", out_dir)


def write_study_scs(*, placed: Sequence[PixelFinding], levels: Sequence[str], algorithm: AlgorithmInfo,
                    out_dir: Path, series: Series, first_number: int, policy: PixelPolicy,
                    institution_name: str | None) -> list[OutputObject]:
    """One annotated SC per image with a finding, from its pixels decoded again as the pipeline
    decodes them (the run does not keep pixels)."""
    by_image: dict[str, list[SRFinding]] = {}
    instances: dict[str, Instance] = {}
    for finding, pixel in zip(sr_findings(placed), placed):
        by_image.setdefault(finding.source_sop_instance_uid, []).append(finding)
        instances[finding.source_sop_instance_uid] = pixel.instance
    written = []
    for number, (uid, findings) in enumerate(by_image.items(), start=first_number):
        radiograph = load_radiograph(instances[uid].path, policy)
        ds = build_sc(read_header(instances[uid].path), radiograph.pixels, findings, levels=levels,
                      algorithm=algorithm, series_instance_uid=series.uid, series_number=series.number,
                      instance_number=number, institution_name=institution_name)
        written.append(_write(ds, "sc", out_dir))
    return written


def write_rejection(*, withdrawn: Sequence[StoredObject], algorithm: AlgorithmInfo, out_dir: Path, series: Series,
                    instance_number: int, institution_name: str | None) -> OutputObject | None:
    """The IOCM rejection note withdrawing ``withdrawn`` (objects a PACS stored), or ``None``
    when none of their files is left to name (the note needs each object's series and class)."""
    headers = []
    for item in withdrawn:
        path = out_dir / item.path
        if path.is_file():
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
    if not headers:
        return None
    ds = build_rejection_note(headers, algorithm=algorithm, series_instance_uid=series.uid,
                              series_number=series.number, instance_number=instance_number,
                              institution_name=institution_name)
    return _write(ds, "kos", out_dir, withdraws=tuple(str(h.SOPInstanceUID) for h in headers))


def write_gap(*, instances: Sequence[Instance], reason: str, algorithm: AlgorithmInfo, out_dir: Path,
              series: Series, institution_name: str | None) -> OutputObject | None:
    """The not-screened SR of a study (``None`` when none of its headers can be read)."""
    sources = []
    for inst in instances:
        try:
            sources.append(read_header(inst.path))
        except Exception:  # noqa: BLE001 - an unreadable file is why some studies fail
            continue
    if not sources:
        return None
    ds = build_gap_sr(sources, reason, algorithm=algorithm, series_instance_uid=series.uid,
                      series_number=series.number, institution_name=institution_name)
    return _write(ds, "gap-sr", out_dir)
