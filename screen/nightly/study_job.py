"""Finishing one screened study: fusion, its SR, GSPS, SC and rejection note, its thumbnails.

A :class:`StudyJob` carries everything this needs, read from the ledger by the driver before
(earlier SRs to supersede, earlier objects to withdraw, instance numbers), so
:func:`write_study` is a plain function of its argument: it runs in a writer process of the
night (``[run] writers``), or as a Ray task (``--engine ray``), off the process that feeds the
members. The driver records what comes back (:class:`StudyWritten`) in the ledger, alone: a
study is done when its ledger row is, and what a killed run wrote without one is swept by the
next (``Ledger.sweep_orphans``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Sequence

import pydicom

from dicom_io.atomic import file_mode
from dicom_io.gsps import PipelineVoi
from dicom_io.pixels import PixelPolicy
from dicom_io.sr import AlgorithmInfo
from dicom_io.uids import is_valid_uid
from ensembles.operating_point.levels import finding_level
from ensembles.operating_point.point import OperatingPoint, op_id
from ensembles.types import MemberOutput
from screen.nightly.ledger import OutputObject
from screen.nightly.monitoring import calibrated, calibrated_columns, night_record
from screen.nightly.plan import SCREENED, StudyPlan
from screen.nightly.writers import (Series, box_levels, finding_rows, member_columns, study_headers, to_pixels,
                                    write_rejection, write_study_gsps, write_study_scs, write_study_sr)
from screen.report.thumbs import Preview, study_thumbs
from screen.site_config import OutputSettings, RescreenPolicy

__all__ = ["PresentationRequest", "SrRequest", "StudyJob", "StudyWritten", "logged_uid", "write_study"]


@dataclass(frozen=True)
class SrRequest:
    """The study's SR as the ledger asks for it.

    Attributes:
        series_instance_uid: this run's SR series.
        algorithm: the screener as the deciding point describes it.
        supersedes: the study's earlier SR file (at most one) that this one replaces.
        sop_instance_uid: the UID to write again when the SR file was lost (``None``: a new one).
    """

    series_instance_uid: str
    algorithm: AlgorithmInfo
    supersedes: tuple[Path, ...] = ()
    sop_instance_uid: str | None = None


@dataclass(frozen=True)
class PresentationRequest:
    """The study's GSPS, SC images and rejection note, with what the ledger knows of earlier ones.

    Attributes:
        algorithm: the screener under the global operating point.
        series: this run's series per kind (``gsps``, ``sc``, ``kos``).
        counts: objects of each kind the study already has (instance numbers go on from there).
        stored: earlier results already sent to a PACS (withdrawn by a rejection note).
        earlier: every earlier current result of the study (replaced by these).
        policy: the pixel limits an SC image is made under.
    """

    algorithm: AlgorithmInfo
    series: dict[str, Series]
    counts: dict[str, int]
    stored: tuple[Any, ...]
    earlier: tuple[Any, ...]
    policy: PixelPolicy


@dataclass(frozen=True)
class StudyJob:
    """Everything :func:`write_study` needs for one study (picklable).

    Attributes:
        plan: the study.
        outputs: each image's member outputs (by SOP Instance UID, then member name).
        shapes: each image's (rows, cols).
        views: how each image was windowed (for its GSPS).
        previews: each image small (for the thumbnails).
        points: the deciding point first (the study's group's), then the other levels' points.
        global_point: the global operating point (its calibration and monitoring reference).
        letterboxed: input side of each letterboxing member.
        members: the members' names, in config order.
        output: ``[output]``.
        out_dir: the run's output folder.
        run_id: this run.
        sr: the SR to write (``None``: ``[output] write_sr`` is off).
        presentations: the GSPS/SC/rejection to write (``None`` when the SR is written again
            with its old UID after its file was lost: the study keeps its other results).
        levels: the level names, most sensitive first.
    """

    plan: StudyPlan
    outputs: dict[Hashable, dict[str, MemberOutput]]
    shapes: dict[Hashable, tuple[int, int]]
    views: dict[str, PipelineVoi]
    previews: dict[str, Preview]
    points: tuple[OperatingPoint, ...]
    global_point: OperatingPoint
    letterboxed: dict[str, int]
    members: tuple[str, ...]
    output: OutputSettings
    out_dir: Path
    run_id: str
    sr: SrRequest | None
    presentations: PresentationRequest | None
    levels: tuple[str, ...]


@dataclass
class StudyWritten:
    """What :func:`write_study` did, for the driver to record.

    Attributes:
        columns: the study's ``studies.csv`` columns from its decision and outputs.
        positive: the study is flagged.
        findings: its ``findings.csv`` rows.
        sr_path: the SR written (relative to the output folder), or ``None``.
        sr_uid: its SOP Instance UID.
        objects: the presentation objects written (a rejection note first).
        replaced: earlier results these replace.
        night: what the ledger keeps of the study tonight (monitoring).
        seconds: wall time per phase (``write``, ``gsps``, ``sc``, ``page``; disjoint).
        cpu_seconds: CPU time per phase, in the process that wrote.
        warnings: lines for the night's log (a writer process logs nothing itself).
    """

    columns: dict[str, Any]
    positive: bool
    findings: list[dict[str, Any]]
    sr_path: str | None
    sr_uid: str | None
    objects: list[OutputObject]
    replaced: list[str]
    night: Any
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class _Phases:
    """Disjoint wall and CPU time per phase inside one job (the CPU is this process's: a writer
    process's or a Ray task's)."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.cpu: defaultdict[str, float] = defaultdict(float)
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def apart(self, phase: str) -> "_Apart":
        return _Apart(self, phase)

    def total(self) -> tuple[dict[str, float], dict[str, float]]:
        """Wall and CPU seconds per phase; ``write`` is what no other phase took."""
        wall = time.perf_counter() - self._start
        cpu = time.process_time() - self._cpu_start
        return ({"write": wall - sum(self.seconds.values()), **self.seconds},
                {"write": cpu - sum(self.cpu.values()), **self.cpu})


class _Apart:
    def __init__(self, phases: _Phases, phase: str) -> None:
        self.phases, self.phase = phases, phase

    def __enter__(self) -> None:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        self.phases.seconds[self.phase] += time.perf_counter() - self.start
        self.phases.cpu[self.phase] += time.process_time() - self.cpu_start


def write_study(job: StudyJob) -> StudyWritten:
    """Fuse one study and write its results (see the module docstring).

    Raises:
        OSError: the output folder cannot be written (the run stops for an environment error).
        Exception: anything else fails this study alone (``write-failed``).
    """
    with file_mode(job.output.mode_bits):  # a writer process or Ray task has its own umask
        return _write_study(job)


def _write_study(job: StudyJob) -> StudyWritten:
    phases = _Phases()
    plan = job.plan
    deciding = job.points[0]
    decisions = [p.decide(job.outputs, letterboxed=job.letterboxed, image_shapes=job.shapes) for p in job.points]
    raw = decisions[0]  # the raw scores: what monitoring compares with the tuning set
    decision = calibrated(raw, job.global_point.calibration)  # the certainty it reports
    levels = box_levels(decision, list(job.points), decisions)
    level = finding_level(list(job.points), decisions) if len(job.points) > 1 else None
    images = {inst.sop_instance_uid: inst for inst in plan.images}
    placed = to_pixels(decision, images, levels)
    output = job.output
    headers = study_headers(plan.images) if output.write_sr or output.write_gsps else []
    sr_path = sr_uid = None
    if job.sr is not None:
        sr_path, sr_uid = write_study_sr(
            sources=headers, decision=decision, placed=placed, algorithm=job.sr.algorithm,
            out_dir=job.out_dir, series_instance_uid=job.sr.series_instance_uid,
            series_number=output.sr_series_number, supersedes=list(job.sr.supersedes),
            institution_name=output.institution_name, sop_instance_uid=job.sr.sop_instance_uid,
        )
    objects, columns, replaced = _presentations(job, placed, headers, phases)
    columns.update({
        "decision": "positive" if decision.positive else "negative",
        "level": level or "", "fused_score": decision.score,
        "n_boxes": sum(1 for f in placed if f.box is not None), "sr_path": sr_path or "",
        "sr_sop_instance_uid": sr_uid or "",
    })
    scores = member_columns(job.outputs, decision, list(job.members))
    columns.update(calibrated_columns(scores, job.global_point.calibration))
    columns["operating_point_id"] = op_id(deciding)
    findings = finding_rows(plan.study_instance_uid, placed, job.run_id)
    warnings: list[str] = []
    if decision.positive:
        with phases.apart("page"):
            warnings += _thumbnails(job, findings)
    wall, cpu = phases.total()
    return StudyWritten(columns=columns, positive=bool(decision.positive), findings=findings, sr_path=sr_path,
                        sr_uid=sr_uid, objects=objects, replaced=replaced,
                        night=night_record(plan, SCREENED, deciding, raw, scores), seconds=wall,
                        cpu_seconds=cpu, warnings=warnings)


def _presentations(job: StudyJob, placed: Sequence[Any], headers: Sequence[pydicom.Dataset],
                   phases: _Phases) -> tuple[list[OutputObject], dict[str, Any], list[str]]:
    """The study's GSPS and SC images, and the withdrawal of its earlier results: the objects
    to record (a rejection note first), their ``studies.csv`` columns, and the earlier results
    never stored anywhere (superseded: not sent any more)."""
    request, output = job.presentations, job.output
    if request is None:
        return [], {}, []
    objects: list[OutputObject] = []
    if request.stored and output.on_rescreen == RescreenPolicy.REJECT:
        note = write_rejection(withdrawn=list(request.stored), algorithm=request.algorithm, out_dir=job.out_dir,
                               series=request.series["kos"], instance_number=1 + request.counts.get("kos", 0),
                               institution_name=output.institution_name)
        if note is not None:
            objects.append(note)
    withdrawn = {w for o in objects for w in o.withdraws}
    replaced = [o.sop_instance_uid for o in request.earlier if o.sop_instance_uid not in withdrawn]
    columns: dict[str, Any] = {}
    if output.write_gsps:
        with phases.apart("gsps"):
            gsps = write_study_gsps(sources=headers, placed=placed, levels=list(job.levels), views=job.views,
                                    algorithm=request.algorithm, out_dir=job.out_dir, series=request.series["gsps"],
                                    instance_number=1 + request.counts.get("gsps", 0),
                                    institution_name=output.institution_name)
        if gsps is not None:
            objects.append(gsps)
            columns.update(gsps_path=gsps.path, gsps_sop_instance_uid=gsps.sop_instance_uid)
    if output.write_sc and placed:
        with phases.apart("sc"):
            scs = write_study_scs(placed=placed, levels=list(job.levels), algorithm=request.algorithm,
                                  out_dir=job.out_dir, series=request.series["sc"],
                                  first_number=1 + request.counts.get("sc", 0), policy=request.policy,
                                  institution_name=output.institution_name)
        objects.extend(scs)
        columns.update(sc_paths=";".join(o.path for o in scs),
                       sc_sop_instance_uids=";".join(o.sop_instance_uid for o in scs))
    return objects, columns, replaced


def _thumbnails(job: StudyJob, findings: list[dict[str, Any]]) -> list[str]:
    """A flagged study's thumbnails for the morning page, from the previews kept at decode; one
    that fails is made (or replaced by a placeholder) by the page. Returns warnings."""
    uid = job.plan.study_instance_uid
    try:
        study_thumbs(job.out_dir, uid, [i.sop_instance_uid for i in job.plan.images], findings, list(job.levels),
                     job.previews)
    except Exception as exc:  # noqa: BLE001 - a picture never fails a screened study
        return [f"thumbnails of study {logged_uid(uid)} not made now: {type(exc).__name__}"]
    return []


def logged_uid(uid: str) -> str:
    """A study's UID for a log line: itself when it is a UID, never an arbitrary header value."""
    return uid if is_valid_uid(uid) else "(with an invalid StudyInstanceUID)"
