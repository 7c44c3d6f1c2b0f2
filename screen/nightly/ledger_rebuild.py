"""``screen ledger rebuild OUT``: a new ledger from the results on disk, when the old one is lost.

The SRs are the record of what was screened (each names its study, decision, score, findings,
algorithm, intended use and the SR it supersedes); ``studies.csv`` adds what has no SR (failed,
skipped, out-of-scope studies), the model version and each study's content hash; ``findings.csv``
adds the findings' rows; the salt file keeps hashed patient ids the same. What cannot be known
again is said, not guessed:

- which SRs a PACS already stored: none is recorded as sent, so ``--send-to`` sends them again
  (the same SOP Instance UIDs: a PACS keeps one copy);
- the patient and instances of each study (for collisions on later nights): recorded again the
  next time the study is seen;
- a study whose ``studies.csv`` row has no ``content_hash`` (written before it had one) is
  screened again on its next night, and its new SR supersedes the old one;
- which GSPS, SC, rejection note or not-screened SR was withdrawn or superseded: every one
  found under ``gsps/``, ``sc/``, ``kos/`` and ``gap-sr/`` is recorded (so none is swept as an
  orphan) as current.

An unusable ``ledger.sqlite`` is kept beside the new one (``ledger.sqlite.unusable-<time>``);
a working ledger is never replaced.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dicom_io.errors import DicomIOError
from dicom_io.tables import FINDINGS, STUDIES, TableSchema, read_table, records
from dicom_io.uids import is_valid_uid
from screen.errors import ScreenError
from screen.nightly.ledger import OBJECT_DIRS, Ledger, OutputLock
from screen.nightly.ledger_schema import LEDGER_NAME, LedgerUnusableError, check_usable


@dataclass
class RebuildResult:
    """What the rebuild found and recorded."""

    studies: Counter[str] = field(default_factory=Counter)  # by status
    srs: int = 0
    others: Counter[str] = field(default_factory=Counter)  # GSPS, SC ... files recorded, by kind
    findings: int = 0
    unreadable: list[str] = field(default_factory=list)  # SR files that did not read back
    moved_aside: Path | None = None
    without_content_hash: int = 0


def rebuild_ledger(out_dir: Path) -> RebuildResult:
    """Rebuild ``out_dir``'s ledger from its SRs and CSVs (see the module docstring).

    Raises:
        ScreenError: the folder's ledger works (nothing to rebuild), or it holds no results.
        TableError: its ``studies.csv`` or ``findings.csv`` does not read as declared in
            :mod:`dicom_io.tables` (the message names the line and column).
    """
    folder = Path(out_dir)
    if not folder.is_dir():
        raise ScreenError(f"{folder} is not a folder of screen run results")
    with OutputLock(folder):
        return _rebuild(folder)


def _rebuild(folder: Path) -> RebuildResult:
    path = folder / LEDGER_NAME
    try:
        check_usable(folder)
    except LedgerUnusableError:
        pass
    else:
        if path.exists():
            raise ScreenError(f"{path} is a working ledger; nothing to rebuild (it is never replaced)")
    result = RebuildResult()
    if path.exists():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        result.moved_aside = path.with_name(f"{LEDGER_NAME}.unusable-{stamp}")
        os.replace(path, result.moved_aside)
        for suffix in ("-wal", "-shm"):
            extra = path.with_name(path.name + suffix)
            if extra.exists():
                os.replace(extra, result.moved_aside.with_name(result.moved_aside.name + suffix))
    rows = {r["study_instance_uid"]: r for r in _read_csv(folder / "studies.csv", STUDIES)}
    findings = defaultdict(list)
    for row in _read_csv(folder / "findings.csv", FINDINGS):
        findings[row["study_instance_uid"]].append(_typed(row))
    srs = _read_srs(folder, result)
    ledger = Ledger(folder, rebuilding=True)
    try:
        run_id = "rebuilt-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        ledger.start_run(run_id, "", "", "")
        latest = _latest_per_study(srs)
        for uid in sorted(set(rows) | set(latest)):
            row = _typed(rows.get(uid, {"study_instance_uid": uid}))
            sr = latest.get(uid)
            if sr is not None:  # the SR is the record: what it says wins over a lagging CSV
                row.update(status="screened", decision="positive" if sr["positive"] else "negative",
                           fused_score=sr["score"], sr_path=sr["path"], sr_sop_instance_uid=sr["uid"])
            if not row.get("content_hash"):
                result.without_content_hash += 1
            ledger.record_study(
                row=row, content_hash=str(row.get("content_hash") or ""),
                model_key=str(row.get("model_version") or ""), run_id=str(row.get("run_id") or run_id),
                findings=findings.get(uid, []), intended_use=sr["intended_use"] if sr else "unknown",
            )
            result.studies[str(row.get("status") or "unknown")] += 1
            result.findings += len(findings.get(uid, []))
        for sr in srs:  # every SR on disk, superseded ones too, so none is swept as an orphan
            ledger.add_sr(sr["uid"], sr["study"], sr["path"], run_id, sr["supersedes"], sr["intended_use"])
            result.srs += 1
        for kind, uid, study, relative in _read_objects(folder, result):
            ledger.add_sr(uid, study, relative, run_id, None, "unknown", kind=kind)
            result.others[kind] += 1
        ledger.set_meta("rebuilt_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        ledger.finish_run(run_id, "rebuilt", {"studies": dict(result.studies), "srs": result.srs})
    finally:
        ledger.close()
    return result


def _read_csv(path: Path, schema: TableSchema) -> list[dict[str, Any]]:
    """The rows of one of the folder's CSVs that name a study (none when the file is gone).

    Raises:
        TableError: the file does not read as its schema (the message names line and column).
    """
    if not path.is_file():
        return []
    return [row for row in records(read_table(path, schema)) if row.get("study_instance_uid")]


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row as the ledger keeps it: the schema typed it; missing cells are left out."""
    return {key: value for key, value in row.items() if value is not None}


def _read_srs(folder: Path, result: RebuildResult) -> list[dict[str, Any]]:
    from dicom_io.sr import read_sr

    found = []
    sr_dir = folder / "sr"
    for path in sorted(sr_dir.rglob("*.dcm")) if sr_dir.is_dir() else []:
        try:
            back = read_sr(path)
        except (DicomIOError, OSError, ValueError) as exc:
            result.unreadable.append(f"{path.relative_to(folder)}: {exc}")
            continue
        if not (is_valid_uid(back.study_instance_uid) and is_valid_uid(back.sop_instance_uid)):
            result.unreadable.append(f"{path.relative_to(folder)}: not a UID this tool writes")
            continue
        found.append({
            "uid": back.sop_instance_uid, "study": back.study_instance_uid,
            "path": path.relative_to(folder).as_posix(), "positive": back.positive, "score": back.score,
            "supersedes": back.predecessor_sop_instance_uids[-1] if back.predecessor_sop_instance_uids else None,
            "intended_use": back.algorithm.intended_use,
        })
    return found


def _read_objects(folder: Path, result: RebuildResult) -> list[tuple[str, str, str, str]]:
    """``(kind, SOP UID, study UID, path)`` of every GSPS, SC, rejection note and not-screened SR."""
    import pydicom

    found = []
    for kind, name in OBJECT_DIRS.items():
        if kind == "sr" or not (folder / name).is_dir():
            continue
        for path in sorted((folder / name).rglob("*.dcm")):
            relative = path.relative_to(folder).as_posix()
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True,
                                     specific_tags=["SOPInstanceUID", "StudyInstanceUID"])
            except (OSError, ValueError, pydicom.errors.InvalidDicomError) as exc:
                result.unreadable.append(f"{relative}: {exc}")
                continue
            uid, study = str(ds.get("SOPInstanceUID", "")), str(ds.get("StudyInstanceUID", ""))
            if not (is_valid_uid(uid) and is_valid_uid(study)):
                result.unreadable.append(f"{relative}: not a UID this tool writes")
                continue
            found.append((kind, uid, study, relative))
    return found


def _latest_per_study(srs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each study's SR that no other SR supersedes."""
    superseded = {sr["supersedes"] for sr in srs if sr["supersedes"]}
    latest: dict[str, dict[str, Any]] = {}
    for sr in srs:
        if sr["uid"] not in superseded:
            latest[sr["study"]] = sr
    return latest


def rebuild_lines(result: RebuildResult, out_dir: Path) -> list[str]:
    """The command's report."""
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(result.studies.items())) or "none"
    lines = [f"rebuilt {out_dir / LEDGER_NAME}: {sum(result.studies.values())} studies ({by_status}), "
             f"{result.srs} SRs, {result.findings} findings"]
    if result.others:
        lines.append("also recorded: " + ", ".join(f"{n} {kind}" for kind, n in sorted(result.others.items())))
    if result.moved_aside is not None:
        lines.append(f"the unusable ledger is kept as {result.moved_aside.name}")
    if result.unreadable:
        lines.append(f"{len(result.unreadable)} SR file(s) did not read back and were left as they are: "
                     + "; ".join(result.unreadable[:3]))
    if result.without_content_hash:
        lines.append(f"{result.without_content_hash} studies had no content_hash in studies.csv: they are "
                     "screened again on their next night")
    lines.append("no SR is recorded as sent: --send-to sends them again (same SOP Instance UIDs)")
    return lines
