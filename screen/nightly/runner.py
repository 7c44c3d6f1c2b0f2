"""``screen run``: scan → select → decode (workers) → members (batched across studies) → fuse → write.

The data's path of docs/architecture.md. Decoding runs in worker processes ahead of the models;
images of several studies share a forward pass; each study is finished (fusion, SR, ledger)
as soon as its last image is scored. The ledger entry is written last, so a run can be killed
at any moment and the next run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import ssl
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Hashable, Iterator

from pydicom.uid import generate_uid

import screen
from dicom_io.atomic import file_mode
from dicom_io.pixels import PixelPolicy, Radiograph
from dicom_io.decode import DecodeTask, decode_one
from dicom_io.gsps import PipelineVoi
from dicom_io.scan import INDEX_CHUNK, IndexMap, IndexTask, Indexed, scan_archive
from dicom_io.sr import AlgorithmInfo
from dicom_io.uids import is_valid_uid
from dicom_io.workers import Outcome, TaskFailure, run_tasks
from ensembles.batching import batch_shrinks
from ensembles.checkpoint import read_member_spec
from ensembles.operating_point.levels import level_names
from ensembles.operating_point.point import OperatingPoint, op_id
from ensembles.types import MemberOutput
from screen.site_config import PatientIdPolicy, SendSettings, SiteConfig, load_site_config
from screen.errors import ConfigError, EnvironmentProblem, environment_detail, is_environment_error
from screen.id_key import load_id_key
from screen.nightly.ledger import Ledger, OutputLock, OutputObject, now_iso
from screen.nightly.monitoring import algorithm_parameters, group_value, night_monitor, night_record
from screen.nightly.site_members import LoadedMember, letterbox_sizes, load_members, member_version, model_key
from ensembles.operating_point.op_json import load_points
from screen.nightly.tables import patient_id_value, study_columns, write_findings_csv, write_run_json, write_studies_csv
from screen.nightly.plan import (FAILED_STUDY, INVALID_UID, OUT_OF_SCOPE, SCREENED, SKIPPED, UID_COLLISION, StudyPlan,
                                 order_plans, plan_studies)
from screen.nightly.alerts import DEFAULT_STATUS_FILE, alarm_of, run_alert_hook, write_status_file
from screen.nightly.deadline import Clock, Deadline, local_now
from screen.commands.scan import write_scan_csv
from screen.nightly.scope import scope_key
from screen.nightly.study_job import PresentationRequest, SrRequest, StudyJob, StudyWritten, logged_uid
from screen.nightly.writer_pool import InlineWriters, ProcessWriters, StudyWriters
from screen.nightly.triage import Triage, triage
from screen.nightly.writers import Series, write_gap
from screen.report import write_report
from screen.report.thumbs import Preview

if TYPE_CHECKING:  # ray is an optional extra: its engine is imported when it runs
    from screen.nightly.ray_engine import ImageResult

log = logging.getLogger("screen.run")

#: Seconds one header read may take in the Ray engine's index pass (as the local pass's default).
INDEX_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class RunOptions:
    """Command-line choices of one run (``None`` keeps the site config's value)."""

    workers: int | None = None
    batch_size: int | None = None
    device: str | None = None
    limit: int | None = None
    since: date | None = None
    dry_run: bool = False
    force: bool = False
    operating_point: Path | None = None
    send_to: str | None = None
    rescreen_since: date | None = None
    allow_demo: bool = False
    deadline: str | None = None  # HH:MM; None keeps [run] deadline
    engine: str = "local"  # "local" (worker processes) or "ray" (ray_engine)
    address: str | None = None  # the Ray cluster; None keeps [ray] address


@dataclass
class RunSummary:
    """What a run did; written to ``run.json`` and printed as the closing table."""

    run_id: str
    out_dir: Path
    counts: Counter[str] = field(default_factory=Counter)
    positives: int = 0
    images: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    would_screen: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    needs_attention: list[tuple[str, str]] = field(default_factory=list)  # (study, reason)
    collisions: list[str] = field(default_factory=list)  # studies found colliding tonight
    intended_use: str = "clinical"
    written: Counter[str] = field(default_factory=Counter)  # objects written tonight, by kind
    deadline: str | None = None  # HH:MM after which no new study started
    deferred: list[str] = field(default_factory=list)  # studies the deadline left for the next night
    batch_halvings: list[dict[str, Any]] = field(default_factory=list)  # out of device memory: smaller batches
    writer_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds the writers spent, by phase

    @property
    def exit_code(self) -> int:
        failed = self.counts.get(FAILED_STUDY, 0) or self.sent.get("failed", 0) or self.needs_attention
        return 1 if failed else 0


@dataclass
class _Pending:
    """A study whose images are being decoded and scored."""

    plan: StudyPlan
    shapes: dict[Hashable, tuple[int, int]] = field(default_factory=dict)  # (rows, cols) per SOP UID
    outputs: dict[Hashable, dict[str, MemberOutput]] = field(default_factory=dict)
    views: dict[str, PipelineVoi] = field(default_factory=dict)  # how each image was windowed
    previews: dict[str, Preview] = field(default_factory=dict)  # each image small, for the page
    failures: list[tuple[str, str]] = field(default_factory=list)
    waiting: int = 0


class _Clock:
    """Wall time spent in named phases (the benchmark reads the share outside the members)."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def timed(self, phase: str) -> "_Timer":
        return _Timer(self, phase)

    def apart(self, phase: str, within: str) -> "_Timer":
        """Time ``phase`` inside ``within``'s timer and take it out of ``within``, so the
        phases stay disjoint (``write`` is the SR, ``gsps`` and ``sc`` their own)."""
        return _Timer(self, phase, within)


class _Timer:
    def __init__(self, clock: _Clock, phase: str, within: str | None = None) -> None:
        self.clock, self.phase, self.within = clock, phase, within

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.start
        self.clock.seconds[self.phase] += elapsed
        if self.within is not None:
            self.clock.seconds[self.within] -= elapsed


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_screen(
    archive: Path,
    out_dir: Path,
    *,
    config: SiteConfig | None = None,
    config_path: Path | None = None,
    options: RunOptions = RunOptions(),
    progress: Callable[[Iterator[Any], str, int], Any] | None = None,
    clock: Clock = local_now,
) -> RunSummary:
    """Screen ``archive`` into ``out_dir``; callable without Click (see module docstring).

    ``clock`` tells the local time for the deadline (a test passes a fake one).
    """
    started = time.perf_counter()
    warn_if_root()
    site = config or load_site_config(config_path)
    if options.dry_run:
        return _checked_run(archive, out_dir, site, options, progress, started, clock)
    try:
        summary = _checked_run(archive, out_dir, site, options, progress, started, clock)
    except Exception as exc:  # a night that did not run: the configured status file and hook say so
        _after_night(site, None, {"exit_code": getattr(exc, "exit_code", 2), "error": str(exc)[:500],
                                  "finished_at": now_iso()})
        raise
    return summary


def warn_if_root() -> None:
    """One warning when run as root: a nightly job needs read access to the export and write
    access to ``--out``, nothing more (README: "Running it every night")."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        log.warning("running as root: run screen as a service user with read access to the archive and "
                    "write access to --out (README: \"Running it every night\"; deploy/ has systemd units)")


def _checked_run(archive: Path, out_dir: Path, site: SiteConfig, options: RunOptions,
                 progress: Callable[[Iterator[Any], str, int], Any] | None, started: float,
                 clock: Clock) -> RunSummary:
    deadline_text = options.deadline or site.run.deadline
    deadline = Deadline.parse(deadline_text, clock=clock) if deadline_text and not options.dry_run else None
    point_file = options.operating_point or site.operating_point
    if point_file is None:
        raise ConfigError(
            "screen run needs an operating point: set operating_point = \"op.json\" in the site "
            "config or pass --operating-point FILE (make one with screen eval, then screen tune)"
        )
    points = load_points(point_file)
    for point in points:
        point.check_members([m.name for m in site.members])
    uses = member_intended_uses(site)
    if options.send_to:
        from dicom_io.send import parse_destination

        parse_destination(options.send_to)  # a bad destination is a usage error before any work
        _tls(site.send)  # so are unreadable TLS files
        demo = sorted(name for name, use in uses.items() if use == "demo")
        if demo and not options.allow_demo:
            raise ConfigError(
                f"--send-to would send results of demo members ({', '.join(demo)}: intended_use \"demo\" "
                "in member.json) to a PACS: they are phantom-trained and mean nothing on patients. Use "
                "members declared fit for patients (screen models import --intended-use clinical), or "
                "pass --allow-demo to send demo results knowingly (e.g. to a test PACS)"
            )
    if options.dry_run:
        return _dry_run(archive, out_dir, site, points, options)
    summary = RunSummary(new_run_id(), out_dir, intended_use=least_fit_use(uses),
                         deadline=deadline.text if deadline else None)
    try:
        with file_mode(site.output.mode_bits):  # every file it writes holds identifiers
            lock = OutputLock(out_dir)
            lock.acquire()  # before anything slow, so a second run is refused at once
            try:
                with _engine(site, options):
                    return _run_locked(archive, out_dir, site, points, options, progress, started, summary, uses,
                                       deadline)
            finally:
                lock.release()
    except (OSError, sqlite3.OperationalError) as exc:
        if not is_environment_error(exc):
            raise
        raise _environment_problem(out_dir, exc, summary) from exc


def _engine(site: SiteConfig, options: RunOptions) -> ContextManager[None]:
    """Ray for the run with ``--engine ray`` (joined or started); nothing for the local engine."""
    if options.engine != "ray":
        return nullcontext()
    from screen.nightly.ray_engine import ray_session

    return ray_session(site.ray, options.address)


def _ray_index_map(site: SiteConfig) -> IndexMap:
    """The index pass as Ray tasks (each file read in a child process with a timeout)."""
    from screen.nightly.ray_engine import ray_map

    def index_map(func: Callable[[IndexTask], Indexed], tasks: list[IndexTask]) -> Iterator[Outcome[IndexTask, Indexed]]:
        return ray_map(func, tasks, settings=site.ray, timeout_s=INDEX_TIMEOUT_S, chunk_size=INDEX_CHUNK)

    return index_map


def _writers(site: SiteConfig, options: RunOptions) -> StudyWriters:
    """Where the night's studies are finished: Ray tasks (``--engine ray``), ``[run] writers``
    processes, or this process (``writers = 0``)."""
    if options.engine == "ray":
        from screen.nightly.ray_engine import RayWriters

        return RayWriters(site.ray)
    return ProcessWriters(site.run.writers) if site.run.writers else InlineWriters()


def _environment_problem(out_dir: Path, exc: BaseException, summary: RunSummary) -> EnvironmentProblem:
    """One line for an error of the machine; what was done before it stays recorded."""
    detail = environment_detail(exc)
    done = summary.counts.get(SCREENED, 0)
    kept = f"; the {done} studies screened before it are recorded" if done else "; nothing was lost"
    return EnvironmentProblem(
        f"cannot write to {out_dir}: {detail}{kept}. Make the folder writable by this user and free "
        "space, then run again (finished studies are not screened again)",
        exit_code=1 if done else 2,
    )


def member_intended_uses(site: SiteConfig) -> dict[str, str]:
    """Each member's declared intended use (``member.json``; read without loading a model)."""
    return {m.name: read_member_spec(m.checkpoint).intended_use for m in site.members}


def least_fit_use(uses: dict[str, str]) -> str:
    """The run's intended use: its least fit member's (demo < research < clinical)."""
    order = ("demo", "research", "clinical")
    return min(uses.values(), key=order.index) if uses else "research"


def _key_file(site: SiteConfig) -> Path | None:
    return Path(site.output.id_key_file) if site.output.id_key_file else None


def _triage(plans: list[StudyPlan], ledger: Ledger, site: SiteConfig, key: str, options: RunOptions) -> Triage:
    return triage(plans, ledger, key=key, scope=site.scope, scope_mark=scope_key(site.scope),
                  force=options.force, rescreen_since=options.rescreen_since,
                  max_attempts=site.run.max_attempts, limit=options.limit)


def _dry_run(archive: Path, out_dir: Path, site: SiteConfig, points: list[OperatingPoint],
             options: RunOptions) -> RunSummary:
    """Scan and select, compare with the ledger, write nothing."""
    summary = RunSummary(new_run_id(), out_dir)
    key = model_key(site, op_id(points[0]))
    ledger = Ledger(out_dir, read_only=True)
    try:
        ledger.bind_key(load_id_key(_key_file(site), out_dir=out_dir, create=False))
        scan = scan_archive(archive, rules=site.selection, workers=options.workers or site.run.workers)
        plans = order_plans(plan_studies(scan, rules=site.selection, since=options.since), site.run.priority,
                            site.run.emergency_departments)
        fate = _triage(plans, ledger, site, key, options)
        summary.needs_attention = ledger.needs_attention(site.run.max_attempts)
    finally:
        ledger.close()
    summary.would_screen = [p.study_instance_uid for p in fate.todo]
    summary.counts["would-screen"] = len(fate.todo)
    return summary


def _run_locked(archive: Path, out_dir: Path, site: SiteConfig, points: list[OperatingPoint], options: RunOptions,
                progress: Callable[[Iterator[Any], str, int], Any] | None, started: float,
                summary: RunSummary, uses: dict[str, str], deadline: Deadline | None) -> RunSummary:
    clock = _Clock()
    key = model_key(site, op_id(points[0]))
    workers = options.workers or site.run.workers
    ledger = Ledger(out_dir)  # refuses a missing (beside results) or corrupt ledger before any change
    try:
        ledger.bind_key(load_id_key(_key_file(site), out_dir=out_dir))
        if ledger.backup is not None:
            log.info("migrated the ledger to this version; the previous one is kept as %s", ledger.backup.name)
        with clock.timed("scan"):
            scan = scan_archive(archive, rules=site.selection, workers=workers, progress=progress or _quiet,
                                index_map=_ray_index_map(site) if options.engine == "ray" else None)
        plans = order_plans(plan_studies(scan, rules=site.selection, since=options.since), site.run.priority,
                            site.run.emergency_departments)  # what a deadline leaves is the tail
        sr_dir = out_dir / "sr"
        removed = ledger.sweep_orphans(sr_dir)
        if removed:
            log.info("removed %d partial or orphan files left by an interrupted run", len(removed))
        hide_paths = site.output.patient_id != PatientIdPolicy.INCLUDE
        write_scan_csv(scan, out_dir / "scan.csv", path_key=ledger.id_key if hide_paths else None)
        ledger.start_run(summary.run_id, str(archive), key, op_id(points[0]))
        batch_size = options.batch_size or site.run.batch_size
        fate = _triage(plans, ledger, site, key, options)
        context = _RunContext(site, options, points, key, summary, ledger, out_dir, clock, batch_size,
                              reuse_sr=fate.reuse_sr, deadline=deadline, writers=_writers(site, options))
        summary.counts["already-screened"] += fate.done
        summary.collisions = fate.collisions
        for plan in fate.unscreenable:
            context.record_unscreenable(plan)
        for plan, reason in fate.out_of_scope:
            context.record_out_of_scope(plan, reason)
        for plan in fate.refused:
            context.record_failed(plan, plan.failure_reason())
        try:
            if options.engine == "ray":
                context.screen_ray(fate.todo, progress)
            else:
                context.screen(fate.todo, workers, progress)
        finally:
            context.writers.close()
        summary.batch_halvings = [s.as_dict() for m in context.loaded or [] for s in batch_shrinks(m.member)]
        if options.send_to:
            with clock.timed("send"):
                summary.sent = _send(ledger, options.send_to, allow_demo=options.allow_demo, settings=site.send)
        summary.needs_attention = ledger.needs_attention(site.run.max_attempts)
        _write_views(context)
        summary.timings = {k: round(v, 3) for k, v in clock.seconds.items()}
        summary.timings["wall"] = round(time.perf_counter() - started, 3)
        ledger.finish_run(summary.run_id, "failed" if summary.exit_code else "ok", summary_dict(summary))
        write_run_json(out_dir / "run.json", summary_dict(summary) | {
            "archive": str(archive), "model_key": key, "operating_point_id": op_id(points[0]),
            "members": {m.name: member_version(m) for m in site.members}, "member_intended_use": uses,
            "finished_at": now_iso(), "levels": level_names(points),
            "patient_id_policy": str(site.output.patient_id),
            "monitor": night_monitor(ledger, points[0], site, summary.run_id),
        })
        write_report(out_dir, sources={i.sop_instance_uid: i.path for i in scan.selected}, keep_going=True)
        _after_night(site, out_dir, _night(out_dir, summary))
    finally:
        ledger.close()
    return summary


def _night(out_dir: Path, summary: RunSummary) -> dict[str, Any]:
    """The night as ``run.json`` has it (its monitoring part included), or the summary alone."""
    try:
        night = json.loads((out_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return summary_dict(summary)
    return night if isinstance(night, dict) else summary_dict(summary)


def _after_night(site: SiteConfig, out_dir: Path | None, night: dict[str, Any]) -> None:
    """The status file, and the ``[alerts] command`` when the night failed or raised an alarm.
    Neither ever changes the night's outcome: a problem with them is a warning in the log.

    ``out_dir`` is ``None`` for a night that did not run (exit 2): then only a configured
    ``[alerts] status_file`` is written, never a file in a folder the run refused to touch.
    """
    path = site.alerts.status_file or (out_dir / DEFAULT_STATUS_FILE if out_dir is not None else None)
    if path is not None:
        try:
            with file_mode(site.output.mode_bits):
                write_status_file(path, night)
        except OSError as exc:
            log.warning("status file %s not written: %s", path, exc.strerror or type(exc).__name__)
    if site.alerts.command and (night.get("exit_code", 2) != 0 or alarm_of(night)):
        run_alert_hook(site.alerts.command, night, timeout_s=site.alerts.command_timeout_s)


def _quiet(iterable: Iterator[Any], description: str, total: int) -> Iterator[Any]:
    return iterable


@dataclass
class _RunContext:
    site: SiteConfig
    options: RunOptions
    points: list[OperatingPoint]
    key: str
    summary: RunSummary
    ledger: Ledger
    out_dir: Path
    clock: _Clock
    batch_size: int
    sr_series_uid: str = field(default_factory=generate_uid)
    loaded: list[LoadedMember] | None = None
    reuse_sr: dict[str, str] = field(default_factory=dict)  # study -> SR SOP UID to write again
    series: dict[str, Series] = field(default_factory=dict)  # kind -> this run's series of it
    algorithm: AlgorithmInfo | None = None  # _algorithm()
    algorithms: dict[str, AlgorithmInfo] = field(default_factory=dict)  # per operating point id
    deadline: Deadline | None = None  # no new study starts after it
    writers: StudyWriters = field(default_factory=InlineWriters)  # where studies are finished
    # studies handed to the writers: the plan and the SR UID a new SR of it replaces
    writing: dict[str, tuple[StudyPlan, str | None]] = field(default_factory=dict)
    _letterboxed: dict[str, int] | None = None

    def series_of(self, kind: str) -> Series:
        """This run's series for objects of ``kind`` (one new series per kind and run)."""
        if kind not in self.series:
            number = {"gsps": self.site.output.gsps_series_number, "sc": self.site.output.sc_series_number,
                      "kos": self.site.output.kos_series_number,
                      "gap-sr": self.site.output.gap_sr_series_number}[kind]
            self.series[kind] = Series(generate_uid(), number)
        return self.series[kind]

    @property
    def pixel_policy(self) -> PixelPolicy:
        """How images are decoded, and the size limit of an SC image made from one."""
        return PixelPolicy(max_pixel_bytes=self.site.selection.max_pixel_bytes)

    @property
    def letterboxed(self) -> dict[str, int]:
        """Each letterboxing member's input side (from ``member.json``: no model loaded)."""
        if self._letterboxed is None:
            self._letterboxed = letterbox_sizes(self.site)
        return self._letterboxed

    @property
    def members(self) -> list[LoadedMember]:
        """The members, loaded when the first decoded image needs them: a night with nothing
        new, or whose new studies all fail to decode, loads no model (a 10B takes minutes)."""
        if self.loaded is None:
            with self.clock.timed("load-members"):
                self.loaded = load_members(self.site, device=self.options.device,
                                           batch_size=self.options.batch_size)
        return self.loaded

    # -- rows -------------------------------------------------------------------------------
    def base_row(self, plan: StudyPlan, status: str, reason: str = "") -> dict[str, Any]:
        first = plan.first
        row: dict[str, Any] = {
            "study_instance_uid": plan.study_instance_uid, "study_date": first.study_date,
            "status": status, "reason": reason, "n_images": len(plan.images),
            "model_version": self.key, "operating_point_id": op_id(self.points[0]),
            "run_id": self.summary.run_id, "screened_at": now_iso(),
            "intended_use": self.summary.intended_use, "content_hash": plan.content_hash(),
        }
        patient = patient_id_value(first.patient_id, self.site.output.patient_id, self.ledger.id_key)
        if patient is not None:
            row["patient_id"] = patient
        if self.site.output.accession:
            row["accession_number"] = first.accession_number
        return row

    def _identity(self, plan: StudyPlan) -> dict[str, Any]:
        """The study's patient (hashed) and instances, remembered for later nights' collisions;
        nothing for a study that is one already (its earlier record stays the reference)."""
        keys = plan.patient_keys
        if plan.problem is not None or len(keys) != 1:
            return {}
        sops = [inst.sop_instance_uid for inst in plan.views]
        return {"patient_key": self.ledger.patient_key(next(iter(keys))), "instances": sops}

    def record_unscreenable(self, plan: StudyPlan) -> None:
        row = self.base_row(plan, SKIPPED, plan.skip_reason())
        self.ledger.record_study(row=row, content_hash=plan.content_hash(), model_key=self.key,
                                 run_id=self.summary.run_id, night=night_record(plan, SKIPPED), **self._identity(plan))
        self.summary.counts[SKIPPED] += 1

    def record_out_of_scope(self, plan: StudyPlan, reason: str) -> None:
        row = self.base_row(plan, OUT_OF_SCOPE, reason)
        gap = self._gap_sr(plan, reason, row)
        self.ledger.record_study(row=row, content_hash=plan.content_hash(), model_key=scope_key(self.site.scope),
                                 run_id=self.summary.run_id, keep_sr=True, objects=gap,
                                 intended_use=self.summary.intended_use, night=night_record(plan, OUT_OF_SCOPE),
                                 **self._identity(plan))
        self.summary.counts[OUT_OF_SCOPE] += 1

    def record_failed(self, plan: StudyPlan, reason: str) -> None:
        row = self.base_row(plan, FAILED_STUDY, reason)
        gap = self._gap_sr(plan, reason, row)
        self.ledger.record_study(row=row, content_hash=plan.content_hash(), model_key=self.key,
                                 run_id=self.summary.run_id, keep_sr=True, objects=gap,
                                 intended_use=self.summary.intended_use, night=night_record(plan, FAILED_STUDY),
                                 **self._identity(plan))
        self.summary.counts[FAILED_STUDY] += 1
        log.warning("study %s failed: %s", logged_uid(plan.study_instance_uid), reason)

    def _gap_sr(self, plan: StudyPlan, reason: str, row: dict[str, Any]) -> list[OutputObject]:
        """The not-screened SR of a failed or out-of-scope study (``[output] write_gap_sr``),
        added to ``row``; none for a study without a valid UID or of more than one patient (it
        would land in someone else's study), nor when it already has a result or one."""
        uid = plan.study_instance_uid
        if (not self.site.output.write_gap_sr or not is_valid_uid(uid) or len(plan.patient_keys) != 1
                or reason.startswith((INVALID_UID, UID_COLLISION))
                or self.ledger.current_objects(uid, ("sr", "gap-sr"))):
            return []
        try:
            with self.clock.timed("write"):
                gap = write_gap(instances=plan.instances, reason=reason, algorithm=self._algorithm(),
                                out_dir=self.out_dir, series=self.series_of("gap-sr"),
                                institution_name=self.site.output.institution_name)
        except Exception as exc:  # noqa: BLE001 - the study is recorded all the same, without it
            if isinstance(exc, OSError) and is_environment_error(exc):
                raise
            log.warning("study %s: no not-screened SR (%s)", logged_uid(uid), type(exc).__name__)
            return []
        if gap is None:
            return []
        row.update(gap_sr_path=gap.path, gap_sr_sop_instance_uid=gap.sop_instance_uid)
        self.summary.written[gap.kind] += 1
        return [gap]

    # -- the pipeline -----------------------------------------------------------------------
    def _startable(self, todo: list[StudyPlan]) -> list[StudyPlan]:
        """The studies to decode; one the plan already failed is recorded as failed here."""
        startable: list[StudyPlan] = []
        for plan in todo:
            if plan.failed:
                self.record_failed(plan, plan.failure_reason())
            else:
                startable.append(plan)
        return startable

    def screen(self, todo: list[StudyPlan], workers: int, progress: Callable[..., Any] | None) -> None:
        policy = self.pixel_policy
        pending: dict[str, _Pending] = {}
        startable = self._startable(todo)
        owner = {inst.path: plan.study_instance_uid for plan in startable for inst in plan.images}
        batch_size = self.batch_size
        queue: list[tuple[str, str, Radiograph]] = []
        decoded: Iterator[Outcome[DecodeTask, Radiograph]] = run_tasks(
            decode_one, self._started(startable, pending, policy), workers=workers,
            prefetch=max(2 * batch_size, 4 * workers), timeout_s=self.site.run.decode_timeout_s)
        stream = progress(decoded, "screen", len(owner)) if progress else decoded
        wait_start = time.perf_counter()
        for outcome in stream:
            self.clock.seconds["decode-wait"] += time.perf_counter() - wait_start
            uid = owner[outcome.item.path]
            state = pending[uid]
            sop = _sop_of(state.plan, outcome.item.path)
            if outcome.result is None:
                assert outcome.failure is not None
                state.failures.append((outcome.failure.reason, outcome.failure.message))
                state.waiting -= 1
            else:
                queue.append((uid, sop, outcome.result))
                self.summary.images += 1
            if len(queue) >= batch_size:
                self._score(queue, pending)
                queue = []
            self._finish_ready(pending)
            wait_start = time.perf_counter()
        if queue:
            self._score(queue, pending)
        self._finish_ready(pending, wait=True)

    def screen_ray(self, todo: list[StudyPlan], progress: Callable[..., Any] | None) -> None:
        """:meth:`screen` on Ray (``--engine ray``, :mod:`screen.nightly.ray_engine`): decoding
        and the members run there; each study is finished and recorded here as its last image
        comes back, so the ledger has one writer."""
        from screen.nightly.ray_engine import ray_scored

        policy = self.pixel_policy
        startable = self._startable(todo)
        pending = {plan.study_instance_uid: _Pending(plan, waiting=len(plan.images)) for plan in startable}
        deferred: set[str] = set()
        results = ray_scored(startable, self.site, policy=policy, device=self.options.device,
                             batch_size=self.batch_size, deadline_epoch=self.deadline.epoch() if self.deadline else None)
        stream = progress(results, "screen", sum(len(p.images) for p in startable)) if progress else results
        wait_start = time.perf_counter()
        for result in stream:  # "ray": waiting for decoding and the members on the cluster
            self.clock.seconds["ray"] += time.perf_counter() - wait_start
            self._take(result, pending, deferred)
            self._finish_ready(pending)
            wait_start = time.perf_counter()
        self._finish_ready(pending, wait=True)
        for uid, state in pending.items():  # a study the engine lost: failed, never called negative
            self.record_failed(state.plan, f"engine-lost: {state.waiting} of {len(state.plan.images)} images "
                                           "came back from Ray with no result")
        if deferred:
            self._defer([p for p in startable if p.study_instance_uid in deferred])

    def _take(self, result: ImageResult, pending: dict[str, _Pending], deferred: set[str]) -> None:
        """One image (or one deferred study) back from Ray, into its study's state."""
        state = pending[result.study]
        if result.deferred:
            deferred.add(result.study)
            del pending[result.study]
            return
        assert result.path is not None
        if result.seen is None or result.outputs is None:
            failure = result.failure or TaskFailure("error", "no result came back")
            state.failures.append((failure.reason, failure.message))
        else:
            sop = _sop_of(state.plan, result.path)
            state.outputs[sop] = dict(result.outputs)
            state.shapes[sop] = (result.seen.rows, result.seen.cols)
            state.views[sop] = result.seen.view
            state.previews[sop] = result.seen.preview
            self.summary.images += 1
        state.waiting -= 1

    def _defer(self, plans: list[StudyPlan]) -> None:
        """The studies the deadline left unstarted, for the summary and the next night."""
        self.summary.deferred = [p.study_instance_uid for p in plans]
        self.summary.counts["deferred"] = len(self.summary.deferred)
        log.warning("deadline %s reached: %d studies not started are left for the next night",
                    self.deadline.text if self.deadline else "", len(self.summary.deferred))

    def _started(self, plans: list[StudyPlan], pending: dict[str, _Pending], policy: PixelPolicy) -> Iterator[DecodeTask]:
        """The decode tasks of each study in turn, as the workers take them; a study starts whole
        (all its images) before the deadline, or not at all: the rest are deferred."""
        for index, plan in enumerate(plans):
            if self.deadline is not None and self.deadline.passed():
                self._defer(plans[index:])
                return
            pending[plan.study_instance_uid] = _Pending(plan, waiting=len(plan.images))
            for inst in plan.images:
                yield DecodeTask(inst.path, policy)

    def _score(self, queue: list[tuple[str, str, Radiograph]], pending: dict[str, _Pending]) -> None:
        images = [r.pixels for _, _, r in queue]
        for loaded in self.members:
            with self.clock.timed("members"):
                outputs = loaded.member.predict(images)
            for (uid, sop, _), output in zip(queue, outputs):
                pending[uid].outputs.setdefault(sop, {})[loaded.name] = output
        for uid, sop, radiograph in queue:
            pending[uid].shapes[sop] = (radiograph.rows, radiograph.cols)  # pixels are not kept
            pending[uid].views[sop] = PipelineVoi.of(radiograph)  # the window, for the GSPS
            with self.clock.timed("page"):  # its thumbnail's start: the page decodes nothing again
                pending[uid].previews[sop] = Preview.of(radiograph.pixels)
            pending[uid].waiting -= 1

    def _finish_ready(self, pending: dict[str, _Pending], *, wait: bool = False) -> None:
        """Hand each study whose images are all back to the writers; record those they finished
        (``wait``: all of them, at the end of the night)."""
        for uid in [u for u, s in pending.items() if s.waiting == 0]:
            state = pending.pop(uid)
            if state.failures:
                counts = Counter(reason for reason, _ in state.failures)
                detail = ", ".join(f"{r} ({n})" for r, n in counts.most_common())
                self.record_failed(state.plan, f"{len(state.failures)} of {len(state.plan.images)} images failed to decode: {detail}")
                continue
            try:
                with self.clock.timed("record"):
                    job, supersedes = self._job(state)
            except Exception as exc:  # noqa: BLE001 - one study's failure must not stop the run
                self._write_failed(state.plan, exc)
                continue
            self.writing[uid] = (state.plan, supersedes)
            self.writers.submit(uid, job)
        self._record_written(wait=wait)

    def _record_written(self, *, wait: bool) -> None:
        """Record the studies the writers have finished (all, with ``wait``)."""
        with self.clock.timed("write-wait" if wait else "record"):
            finished = self.writers.finished(wait=wait)
        for uid, written in finished:
            plan, supersedes = self.writing.pop(uid)
            if isinstance(written, BaseException):
                self._write_failed(plan, written)
                continue
            for phase, seconds in written.seconds.items():  # the writer's time, by phase
                self.clock.seconds[phase] += seconds
            for phase, seconds in written.cpu_seconds.items():
                self.summary.writer_cpu[phase] = self.summary.writer_cpu.get(phase, 0.0) + seconds
            for line in written.warnings:
                log.warning("%s", line)
            with self.clock.timed("record"):
                self._commit(plan, written, supersedes if written.sr_uid else None)  # no new SR: none replaced

    def _write_failed(self, plan: StudyPlan, exc: BaseException) -> None:
        if isinstance(exc, (OSError, sqlite3.OperationalError)) and is_environment_error(exc):
            raise exc  # the machine's (a full or read-only disk): the run stops with one line
        # the exception's text may quote header values: the reason names its type only
        log.debug("study %s: %s", logged_uid(plan.study_instance_uid), exc)
        self.record_failed(plan, f"write-failed: {type(exc).__name__} while writing the results")

    def _job(self, state: _Pending) -> tuple[StudyJob, str | None]:
        """What the writers need for ``state``'s study, with what the ledger knows of it, and the
        UID of the earlier SR a new one replaces."""
        plan = state.plan
        uid = plan.study_instance_uid
        deciding = self.points[0].for_group(group_value(self.points[0], plan))  # its group's point, or the global
        previous = self.ledger.study_state(uid)
        reuse = self.reuse_sr.get(uid)  # its SR file was lost: the same SR again
        sr = None
        if self.site.output.write_sr:
            old = self.ledger.sr_datasets_of(uid, excluding=reuse) if previous is not None else []
            sr = SrRequest(self.sr_series_uid, self._algorithm(deciding), tuple(old[-1:]), reuse)
        presentations = None
        if reuse is None:
            earlier = self.ledger.current_objects(uid)
            presentations = PresentationRequest(
                algorithm=self._algorithm(), series={kind: self.series_of(kind) for kind in ("gsps", "sc", "kos")},
                counts={kind: self._count(uid, kind) for kind in ("gsps", "sc", "kos")},
                stored=tuple(o for o in earlier if o.sent), earlier=tuple(earlier),
                policy=self.pixel_policy)
        supersedes = previous.sr_sop_instance_uid if previous is not None and reuse is None else None
        return StudyJob(plan=plan, outputs={k: dict(v) for k, v in state.outputs.items()},
                        shapes=dict(state.shapes), views=dict(state.views),
                        previews=dict(state.previews), points=(deciding, *self.points[1:]),
                        global_point=self.points[0], letterboxed=self.letterboxed,
                        members=tuple(m.name for m in self.site.members), output=self.site.output,
                        out_dir=self.out_dir, run_id=self.summary.run_id, sr=sr, presentations=presentations,
                        levels=tuple(level_names(self.points))), supersedes

    def _commit(self, plan: StudyPlan, written: StudyWritten, supersedes: str | None) -> None:
        """Record a written study in the ledger (``supersedes``: the earlier SR its new one
        replaces): from now on it is done."""
        row = self.base_row(plan, SCREENED)
        row.update(written.columns)
        self.ledger.record_study(
            row=row, content_hash=plan.content_hash(), model_key=self.key, run_id=self.summary.run_id,
            findings=written.findings, sr_path=written.sr_path, sr_sop_instance_uid=written.sr_uid,
            supersedes=supersedes, intended_use=self.summary.intended_use, objects=written.objects,
            replaced=written.replaced, night=written.night, **self._identity(plan),
        )
        self.summary.written.update(o.kind for o in written.objects)
        if written.sr_uid:
            self.summary.written["sr"] += 1
        self.summary.counts[SCREENED] += 1
        self.summary.positives += int(written.positive)

    def _count(self, study_uid: str, kind: str) -> int:
        return self.ledger.object_count(study_uid, kind)

    def _algorithm(self, point: OperatingPoint | None = None) -> AlgorithmInfo:
        """The screener's identification with ``point``'s parameters (default: the global
        point), made once per point; from the site config, so a not-screened SR of a night that
        scores nothing loads no model."""
        point = point or self.points[0]
        key = op_id(point)
        if key not in self.algorithms:
            parameters = {f"threshold:{name}": f"{value:.6g}" for name, value in point.thresholds.items()}
            parameters["vote"] = point.vote.label
            parameters.update(algorithm_parameters(self.points[0], point))
            self.algorithms[key] = AlgorithmInfo(
                name="fracture-screen", version=screen.__version__, operating_point_id=key,
                members=tuple((m.name, member_version(m)) for m in self.site.members), parameters=parameters,
                intended_use=self.summary.intended_use,
            )
        if point is self.points[0]:
            self.algorithm = self.algorithms[key]
        return self.algorithms[key]


def _sop_of(plan: StudyPlan, path: Path) -> str:
    for inst in plan.images:
        if inst.path == path:
            return inst.sop_instance_uid
    raise KeyError(path)


def _tls(settings: SendSettings) -> ssl.SSLContext | None:
    """The DICOM TLS context of ``[send]`` (``None`` without ``tls = true``).

    Raises:
        ConfigError: a TLS file that cannot be used, naming the key.
    """
    if not settings.tls:
        return None
    from dicom_io.errors import InvalidArgumentError
    from dicom_io.send import tls_context

    try:
        return tls_context(ca_file=settings.ca_file, cert_file=settings.cert_file, key_file=settings.key_file,
                           verify=settings.verify)
    except InvalidArgumentError as exc:
        raise ConfigError(f"[send] {exc}") from None


def _send(ledger: Ledger, destination: str, *, allow_demo: bool = False,
          settings: SendSettings = SendSettings()) -> dict[str, int]:
    """C-STORE every object of this folder not yet stored at ``destination`` (SR, GSPS, SC,
    not-screened SR; rejection notes first; demo members' results only with ``allow_demo``;
    withdrawn or superseded results never), over DICOM TLS when ``[send] tls``; record each result."""
    from dicom_io.send import parse_destination, send_files

    target = parse_destination(destination)
    unsent = ledger.unsent_objects(destination, allow_demo=allow_demo)
    if not unsent:
        return {"sent": 0, "failed": 0}
    results = send_files([path for _, path, _ in unsent], target, calling_ae=settings.calling_ae,
                         tls=_tls(settings))
    counts = Counter[str]()
    for (uid, _, _), result in zip(unsent, results):
        ledger.record_send(uid, destination, ok=result.ok, status=result.status, attempts=result.attempts,
                           error=result.error)
        counts["sent" if result.ok else "failed"] += 1
    return {"sent": counts["sent"], "failed": counts["failed"]}


def _write_views(context: _RunContext) -> None:
    site = context.site
    columns = study_columns([m.name for m in site.members], patient_id=site.output.patient_id != PatientIdPolicy.OMIT,
                            accession=site.output.accession)
    write_studies_csv(context.out_dir / "studies.csv", context.ledger.study_rows(), columns)
    write_findings_csv(context.out_dir / "findings.csv", context.ledger.finding_rows())


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    """The JSON-able part of a summary."""
    return {
        "run_id": summary.run_id, "counts": dict(summary.counts), "positives": summary.positives,
        "images": summary.images, "timings_s": summary.timings, "sent": summary.sent,
        "exit_code": summary.exit_code, "intended_use": summary.intended_use,
        "needs_attention": [{"study_instance_uid": uid, "reason": reason} for uid, reason in summary.needs_attention],
        "collisions": summary.collisions, "objects_written": dict(summary.written),
        "deadline": summary.deadline, "deferred": summary.deferred, "batch_halvings": summary.batch_halvings,
        "writer_cpu_s": {k: round(v, 3) for k, v in summary.writer_cpu.items()},
    }


def parse_since(value: str, option: str = "--since") -> date:
    """``--since`` (or ``option``) as YYYY-MM-DD or YYYYMMDD."""
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ConfigError(f"{option} {value!r} is not a date; use YYYY-MM-DD (e.g. 2026-11-26)")
