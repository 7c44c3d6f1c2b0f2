"""The ledger: what an output folder has screened, with which models, and what was sent where.

One SQLite file (``ledger.sqlite``) per output folder. It is the commit point of a run: a
study's files (SR, GSPS, SC images, rejection note, not-screened SR) are written (atomically)
first and its ledger row last, so after a ``kill -9`` the ledger never names a file that is not
whole, and files the ledger does not name are debris that :meth:`Ledger.sweep_orphans` removes
(so a resumed study gets one GSPS, never a second). Every object is recorded with its kind,
and every send of it per destination. ``studies.csv`` and ``findings.csv`` are
views of the ledger, rewritten atomically, so a study appears in them exactly once.

A study counts as done when its row has status ``screened`` for the same content hash (its
instances): a rerun skips it, and a study that gained images has a new content hash and is
screened again (its new SR supersedes the old one). The model key (member checkpoints +
operating point) is recorded with each row; a new one applies to studies not yet screened
(:mod:`screen.nightly.triage` says when screened studies are screened again). The ledger also keeps
each study's patient (a salted hash) and instances, for UID collisions across nights, and how
often a failed study failed. Its schema, migrations and the refusal of a ledger that cannot be
the folder's memory are in :mod:`screen.nightly.ledger_schema`.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from screen.errors import OutputLockedError
from screen.nightly.ledger_schema import (
    LEDGER_NAME,
    SCHEMA,
    LedgerUnusableError,
    check_usable,
    migrate,
)
from screen.id_key import key_fingerprint, pseudonym

LOCK_NAME = ".screen.lock"

#: studies.csv columns naming a study's results, kept when the study later fails.
_KEPT_COLUMNS = ("gsps_path", "gsps_sop_instance_uid", "sc_paths", "sc_sop_instance_uids", "gap_sr_path",
                 "gap_sr_sop_instance_uid")


def now_iso() -> str:
    """UTC time in ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: The folders of the objects a run writes, by kind (under the output folder).
OBJECT_DIRS = {"sr": "sr", "gsps": "gsps", "sc": "sc", "kos": "kos", "gap-sr": "gap-sr"}
#: Kinds that are a study's results (a rejection note withdraws them, never another note).
RESULT_KINDS = ("sr", "gsps", "sc", "gap-sr")


@dataclass(frozen=True)
class OutputObject:
    """One DICOM object written for a study.

    Attributes:
        kind: ``sr``, ``gsps``, ``sc``, ``kos`` (IOCM rejection note) or ``gap-sr``.
        sop_instance_uid: its SOP Instance UID.
        path: relative to the output folder, posix.
        supersedes: the object of the same kind it replaces, if any.
        withdraws: for a ``kos``, the objects it rejects.
    """

    kind: str
    sop_instance_uid: str
    path: str
    supersedes: str | None = None
    withdraws: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoredObject:
    """An object the ledger holds for a study."""

    kind: str
    sop_instance_uid: str
    path: str
    sent: bool


@dataclass(frozen=True)
class StudyState:
    """What the ledger holds for one study."""

    study_instance_uid: str
    content_hash: str
    model_key: str
    status: str
    sr_path: str | None
    sr_sop_instance_uid: str | None
    patient_key: str | None = None
    attempts: int = 0
    reason: str = ""


@dataclass(frozen=True)
class RunStudy:
    """What one night saw of one study, for monitoring (ledger tables ``run_studies`` and
    ``run_scores``).

    Attributes:
        status: ``screened``, ``skipped``, ``out-of-scope`` or ``failed``.
        flagged: whether the deciding point flagged it (``None``: not screened).
        operating_point_id: the point that decided it (its group's, or the global one).
        manufacturer: Manufacturer of its first view ("" when absent).
        model: ManufacturerModelName of its first view.
        body_part: BodyPartExamined of its first view.
        modality: Modality of its first view.
        scores: raw study scores (the max over its images) per member and ``fused``; the scale
            the operating point was tuned on, never the calibrated one.
    """

    status: str
    flagged: bool | None = None
    operating_point_id: str | None = None
    manufacturer: str = ""
    model: str = ""
    body_part: str = ""
    modality: str = ""
    scores: dict[str, float] = field(default_factory=dict)


class OutputLock:
    """An exclusive lock on an output folder (``flock``: released by the OS even on ``kill -9``)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise OutputLockedError(
                f"another screen run is using {self.path.parent} ({holder}); wait for it to finish "
                "or choose another --out folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {now_iso()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Ledger:
    """The SQLite ledger of one output folder."""

    def __init__(self, out_dir: Path, *, read_only: bool = False, rebuilding: bool = False) -> None:
        """Open (or start) the folder's ledger; see :mod:`screen.nightly.ledger_schema` for the rules.

        Args:
            out_dir: the output folder.
            read_only: a copy in memory (a dry run); the file is never touched.
            rebuilding: start a new ledger in a folder that holds results (only
                :mod:`screen.nightly.ledger_rebuild`, after moving an unusable ledger aside).

        Raises:
            LedgerUnusableError: results without a ledger, or a ledger that is not one.
        """
        self.out_dir = out_dir
        self.path = out_dir / LEDGER_NAME
        self.read_only = read_only
        self.backup: Path | None = None
        self._key: bytes | None = None  # bind_key
        if not rebuilding:
            check_usable(out_dir, writable=not read_only)
        if read_only:  # a copy in memory, brought to this version: the file is never touched
            self._db = sqlite3.connect(":memory:", isolation_level=None)
            if self.path.exists():
                source = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
                try:
                    source.backup(self._db)
                finally:
                    source.close()
                migrate(self._db, None)
            self._db.executescript(SCHEMA)  # the schema stamps its version in its own transaction
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")  # replaced identifiers do not linger in free pages
        if not new:
            self.backup = migrate(self._db, self.path)
        self._db.executescript(SCHEMA)  # the schema stamps its version in its own transaction

    def close(self) -> None:
        self._db.close()

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def bind_key(self, key: bytes) -> None:
        """Use ``key`` for the folder's pseudonyms (:mod:`screen.id_key`).

        Raises:
            LedgerUnusableError: the folder was written with another key (its pseudonyms would
                no longer match: restore the key rather than mix two).
        """
        fingerprint = key_fingerprint(key)
        known = self.get_meta("id_key_fingerprint")
        if known is not None and known != fingerprint:
            raise LedgerUnusableError(
                f"{self.out_dir} was written with another identifier key than this run's "
                "($FRACTURE_SCREEN_SALT or [output] id_key_file): its pseudonymous patient ids and "
                "patient checks would not match. Restore that key, or use a new --out folder"
            )
        if known is None and not self.read_only:
            self.set_meta("id_key_fingerprint", fingerprint)
        self._key = key

    @property
    def id_key(self) -> bytes:
        if self._key is None:
            raise RuntimeError("Ledger.bind_key must be called before pseudonyms are made")
        return self._key

    def patient_key(self, key: tuple[str, str]) -> str:
        """The keyed pseudonym of (PatientID, IssuerOfPatientID): compares patients across nights."""
        return pseudonym(self.id_key, "patient", key[0], key[1])

    # -- runs -------------------------------------------------------------------------------
    def start_run(self, run_id: str, archive: str, model_key: str, operating_point_id: str) -> None:
        """Record a new run; runs still 'running' were killed (the caller holds the folder lock)."""
        self._db.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
        self._db.execute(
            "INSERT INTO runs(run_id, started_at, archive, model_key, operating_point_id, status) "
            "VALUES (?, ?, ?, ?, ?, 'running')",
            (run_id, now_iso(), archive, model_key, operating_point_id),
        )

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE runs SET finished_at = ?, status = ?, summary_json = ? WHERE run_id = ?",
            (now_iso(), status, json.dumps(summary, sort_keys=True), run_id),
        )

    # -- studies ----------------------------------------------------------------------------
    def study_state(self, study_instance_uid: str) -> StudyState | None:
        row = self._db.execute(
            "SELECT study_instance_uid, content_hash, model_key, status, sr_path, sr_sop_instance_uid, "
            "patient_key, attempts, reason FROM studies WHERE study_instance_uid = ?",
            (study_instance_uid,),
        ).fetchone()
        return None if row is None else StudyState(*row)

    def instance_owner(self, sop_instance_uid: str) -> str | None:
        """The study a SOP Instance UID was recorded in on an earlier night, if any."""
        row = self._db.execute("SELECT study_instance_uid FROM instances WHERE sop_instance_uid = ?",
                               (sop_instance_uid,)).fetchone()
        return None if row is None else str(row[0])

    def sr_datasets_of(self, study_instance_uid: str, *, excluding: str | None = None) -> list[Path]:
        """Paths of every SR this folder wrote for a study (oldest first), but ``excluding``."""
        rows = self._db.execute(
            "SELECT path FROM objects WHERE kind = 'sr' AND study_instance_uid = ? AND sop_instance_uid IS NOT ? "
            "ORDER BY created_at, rowid",
            (study_instance_uid, excluding),
        ).fetchall()
        return [self.out_dir / r[0] for r in rows]

    def current_objects(self, study_instance_uid: str, kinds: Sequence[str] = RESULT_KINDS) -> list[StoredObject]:
        """The study's objects of ``kinds`` not withdrawn or superseded (oldest first), and
        whether some destination stored each."""
        marks = ", ".join("?" for _ in kinds)
        rows = self._db.execute(
            f"SELECT o.kind, o.sop_instance_uid, o.path, EXISTS (SELECT 1 FROM sends d WHERE "
            f"d.sop_instance_uid = o.sop_instance_uid AND d.ok = 1) FROM objects o WHERE o.study_instance_uid = ? "
            f"AND o.withdrawn IS NULL AND o.kind IN ({marks}) ORDER BY o.created_at, o.rowid",
            (study_instance_uid, *kinds),
        ).fetchall()
        return [StoredObject(str(k), str(u), str(p), bool(sent)) for k, u, p, sent in rows]

    def object_count(self, study_instance_uid: str, kind: str) -> int:
        """How many objects of ``kind`` the folder ever wrote for a study (for instance numbers)."""
        row = self._db.execute("SELECT count(*) FROM objects WHERE study_instance_uid = ? AND kind = ?",
                               (study_instance_uid, kind)).fetchone()
        return int(row[0])

    def objects_count(self) -> dict[str, int]:
        """How many objects of each kind the folder holds."""
        rows = self._db.execute("SELECT kind, count(*) FROM objects GROUP BY kind").fetchall()
        return {str(kind): int(n) for kind, n in rows}

    def record_study(
        self,
        *,
        row: dict[str, Any],
        content_hash: str,
        model_key: str,
        run_id: str,
        findings: Sequence[dict[str, Any]] = (),
        sr_path: str | None = None,
        sr_sop_instance_uid: str | None = None,
        supersedes: str | None = None,
        patient_key: str | None = None,
        instances: Sequence[str] = (),
        intended_use: str = "unknown",
        keep_sr: bool = False,
        objects: Sequence[OutputObject] = (),
        replaced: Sequence[str] = (),
        night: RunStudy | None = None,
    ) -> None:
        """Commit one study's outcome, its findings and its objects, in one transaction.

        ``night`` is what this run saw of the study (for ``screen monitor``), kept per run.

        A failed outcome counts an attempt (the same content failing again adds one; new
        content starts at one). ``instances`` (SOP Instance UIDs) are remembered for collisions
        on later nights. ``keep_sr`` keeps the results the study already has (a study that now
        fails keeps what was written and sent: SR, GSPS and SC columns). ``objects`` are the
        other objects written for it (GSPS, SC, rejection note, not-screened SR); a rejection
        note marks what it withdraws ``rejected:<its UID>``, and ``replaced`` (earlier results
        never stored anywhere) are marked ``superseded``: neither is sent again.
        """
        uid = str(row["study_instance_uid"])
        stamp = now_iso()
        previous = self.study_state(uid)
        attempts = 0
        if row["status"] == "failed":
            same = previous is not None and previous.status == "failed" and previous.content_hash == content_hash
            attempts = (previous.attempts if same and previous is not None else 0) + 1
        if keep_sr and previous is not None and sr_path is None and previous.sr_path:
            sr_path, sr_sop_instance_uid = previous.sr_path, previous.sr_sop_instance_uid
            row = {**row, "sr_path": sr_path, "sr_sop_instance_uid": sr_sop_instance_uid}
        if keep_sr and previous is not None:
            earlier = self._row(uid)
            row = {**row, **{k: earlier[k] for k in _KEPT_COLUMNS if earlier.get(k) and not row.get(k)}}
        if patient_key is None and previous is not None:
            patient_key = previous.patient_key
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO studies(study_instance_uid, content_hash, model_key, run_id, "
                "status, reason, row_json, sr_path, sr_sop_instance_uid, updated_at, patient_key, attempts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (uid, content_hash, model_key, run_id, row["status"], row.get("reason", ""),
                 json.dumps(row, sort_keys=True), sr_path, sr_sop_instance_uid, stamp, patient_key,
                 attempts),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO instances(sop_instance_uid, study_instance_uid) VALUES (?, ?)",
                [(sop, uid) for sop in instances],
            )
            self._db.execute("DELETE FROM findings WHERE study_instance_uid = ?", (uid,))
            self._db.executemany(
                "INSERT INTO findings(study_instance_uid, idx, row_json) VALUES (?, ?, ?)",
                [(uid, i, json.dumps(f, sort_keys=True)) for i, f in enumerate(findings)],
            )
            written = list(objects)
            if sr_path is not None and sr_sop_instance_uid is not None and not keep_sr:
                written.insert(0, OutputObject("sr", sr_sop_instance_uid, sr_path, supersedes))
            for item in written:
                self._db.execute(
                    "INSERT OR REPLACE INTO objects(sop_instance_uid, study_instance_uid, kind, path, run_id, "
                    "supersedes, created_at, intended_use) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (item.sop_instance_uid, uid, item.kind, item.path, run_id, item.supersedes, stamp, intended_use),
                )
                self._db.executemany("UPDATE objects SET withdrawn = ? WHERE sop_instance_uid = ?",
                                     [(f"rejected:{item.sop_instance_uid}", old) for old in item.withdraws])
            self._db.executemany("UPDATE objects SET withdrawn = 'superseded' WHERE sop_instance_uid = ? "
                                 "AND withdrawn IS NULL", [(old,) for old in replaced])
            if night is not None:
                self._record_night(run_id, uid, night, stamp)

    def _record_night(self, run_id: str, uid: str, night: RunStudy, stamp: str) -> None:
        flagged = None if night.flagged is None else int(night.flagged)
        self._db.execute(
            "INSERT OR REPLACE INTO run_studies(run_id, study_instance_uid, status, flagged, operating_point_id, "
            "manufacturer, model, body_part, modality, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, uid, night.status, flagged, night.operating_point_id, night.manufacturer, night.model,
             night.body_part, night.modality, stamp),
        )
        self._db.execute("DELETE FROM run_scores WHERE run_id = ? AND study_instance_uid = ?", (run_id, uid))
        self._db.executemany(
            "INSERT INTO run_scores(run_id, study_instance_uid, member, score) VALUES (?, ?, ?, ?)",
            [(run_id, uid, member, float(score)) for member, score in night.scores.items()
             if score is not None and score == score],
        )

    # -- monitoring -------------------------------------------------------------------------
    def recent_runs(self, limit: int | None = None, *, until: str | None = None) -> list[dict[str, Any]]:
        """Finished or running runs, newest first (``until``: that run and those before it):
        ``run_id``, ``started_at``, ``status``, ``operating_point_id``."""
        rows = self._db.execute(
            "SELECT run_id, started_at, status, operating_point_id FROM runs "
            "WHERE (? IS NULL OR started_at <= (SELECT started_at FROM runs WHERE run_id = ?)) "
            "ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (until, until, -1 if limit is None else limit),
        ).fetchall()
        return [{"run_id": r, "started_at": t, "status": st, "operating_point_id": op} for r, t, st, op in rows]

    def run_studies(self, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The ``run_studies`` rows of ``run_ids``, with each study's ``scores`` as a dict."""
        if not run_ids:
            return []
        marks = ", ".join("?" for _ in run_ids)
        rows = self._db.execute(
            f"SELECT run_id, study_instance_uid, status, flagged, operating_point_id, manufacturer, model, "
            f"body_part, modality FROM run_studies WHERE run_id IN ({marks}) ORDER BY run_id, study_instance_uid",
            tuple(run_ids),
        ).fetchall()
        scores: dict[tuple[str, str], dict[str, float]] = {}
        for run_id, uid, member, score in self._db.execute(
                f"SELECT run_id, study_instance_uid, member, score FROM run_scores WHERE run_id IN ({marks})",
                tuple(run_ids)).fetchall():
            scores.setdefault((str(run_id), str(uid)), {})[str(member)] = float(score)
        keys = ("run_id", "study_instance_uid", "status", "flagged", "operating_point_id", "manufacturer",
                "model", "body_part", "modality")
        out = []
        for row in rows:
            item = dict(zip(keys, row))
            item["flagged"] = None if item["flagged"] is None else bool(item["flagged"])
            item["scores"] = scores.get((str(item["run_id"]), str(item["study_instance_uid"])), {})
            out.append(item)
        return out

    def accession_index(self) -> dict[str, str]:
        """``{accession number: study}`` of the studies whose row keeps one (``[output] accession``)."""
        out: dict[str, str] = {}
        for row in self.study_rows():
            accession = str(row.get("accession_number") or "").strip()
            if accession:
                out[accession] = str(row["study_instance_uid"])
        return out

    def _row(self, study_instance_uid: str) -> dict[str, Any]:
        found = self._db.execute("SELECT row_json FROM studies WHERE study_instance_uid = ?",
                                 (study_instance_uid,)).fetchone()
        return {} if found is None else dict(json.loads(found[0]))

    def fail_study(self, study_instance_uid: str, reason: str) -> bool:
        """Fail a recorded study from now on (a collision found on a later night), keeping its
        SR and what was sent. Returns False when it is unknown or already failed so."""
        state = self.study_state(study_instance_uid)
        if state is None or (state.status == "failed" and state.reason == reason):
            return False
        row = json.loads(self._db.execute("SELECT row_json FROM studies WHERE study_instance_uid = ?",
                                          (study_instance_uid,)).fetchone()[0])
        row.update(status="failed", reason=reason)
        self._db.execute(
            "UPDATE studies SET status = 'failed', reason = ?, row_json = ?, attempts = attempts + 1, "
            "updated_at = ? WHERE study_instance_uid = ?",
            (reason, json.dumps(row, sort_keys=True), now_iso(), study_instance_uid),
        )
        return True

    def needs_attention(self, max_attempts: int) -> list[tuple[str, str]]:
        """``(study, reason)`` of failed studies no longer retried: ``max_attempts`` failures
        with the same content, or a UID collision."""
        rows = self._db.execute(
            "SELECT study_instance_uid, reason FROM studies WHERE status = 'failed' AND "
            "(attempts >= ? OR reason LIKE 'uid-collision%') ORDER BY study_instance_uid",
            (max_attempts,),
        ).fetchall()
        return [(str(uid), str(reason)) for uid, reason in rows]

    def study_rows(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT row_json FROM studies ORDER BY study_instance_uid").fetchall()
        return [json.loads(r[0]) for r in rows]

    def finding_rows(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT row_json FROM findings ORDER BY study_instance_uid, idx").fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- the objects' files and sending -----------------------------------------------------
    def known_sr_paths(self) -> set[str]:
        """Paths of every object the ledger names (SRs and every other kind)."""
        return {str(r[0]) for r in self._db.execute("SELECT path FROM objects").fetchall()}

    def unsent_objects(self, destination: str, *, allow_demo: bool = False) -> list[tuple[str, Path, str]]:
        """``(SOP instance UID, path, kind)`` of every object to store at ``destination``: not
        stored there yet, not withdrawn or superseded (rejection notes always), made by members
        fit for patients unless ``allow_demo``. Rejection notes first: a PACS hides the old
        results before the new ones arrive."""
        rows = self._db.execute(
            "SELECT o.sop_instance_uid, o.path, o.kind FROM objects o LEFT JOIN sends d "
            "ON d.sop_instance_uid = o.sop_instance_uid AND d.destination = ? "
            "WHERE (d.ok IS NULL OR d.ok = 0) AND (? OR o.intended_use != 'demo') "
            "AND (o.withdrawn IS NULL OR o.kind = 'kos') "
            "ORDER BY o.kind != 'kos', o.created_at, o.rowid",
            (destination, int(allow_demo)),
        ).fetchall()
        return [(str(uid), self.out_dir / path, str(kind)) for uid, path, kind in rows]

    def unsent_srs(self, destination: str, *, allow_demo: bool = False) -> list[tuple[str, Path]]:
        """``(SOP instance UID, path)`` of the SRs among :meth:`unsent_objects`."""
        return [(uid, path) for uid, path, kind in self.unsent_objects(destination, allow_demo=allow_demo)
                if kind == "sr"]

    def add_sr(self, sr_sop_instance_uid: str, study_instance_uid: str, sr_path: str, run_id: str,
               supersedes: str | None, intended_use: str, kind: str = "sr") -> None:
        """Record an object file found on disk (a rebuild); one already recorded is kept as it is."""
        self._db.execute(
            "INSERT OR IGNORE INTO objects(sop_instance_uid, study_instance_uid, kind, path, run_id, supersedes, "
            "created_at, intended_use) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (sr_sop_instance_uid, study_instance_uid, kind, sr_path, run_id, supersedes, now_iso(), intended_use),
        )

    def was_sent(self, sop_instance_uid: str) -> bool:
        """Whether some destination stored this object."""
        row = self._db.execute("SELECT 1 FROM sends WHERE sop_instance_uid = ? AND ok = 1",
                               (sop_instance_uid,)).fetchone()
        return row is not None

    def sends_of(self, sop_instance_uid: str) -> dict[str, bool]:
        """Each destination an object was offered to, and whether it stored it."""
        rows = self._db.execute("SELECT destination, ok FROM sends WHERE sop_instance_uid = ?",
                                (sop_instance_uid,)).fetchall()
        return {str(dest): bool(ok) for dest, ok in rows}

    def record_send(self, sop_instance_uid: str, destination: str, *, ok: bool, status: int | None,
                    attempts: int, error: str = "") -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sends(sop_instance_uid, destination, ok, status, attempts, error, sent_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sop_instance_uid, destination, int(ok), status, attempts, error, now_iso()),
        )

    def sweep_orphans(self, sr_dir: Path | None = None) -> list[Path]:
        """Delete object files (under ``sr/``, ``gsps/``, ``sc/``, ``kos/``, ``gap-sr/``) the
        ledger does not name and temporary files left by a killed run. ``sr_dir`` is accepted
        for older callers; every object folder is swept."""
        known = self.known_sr_paths()
        folders = [self.out_dir / name for name in OBJECT_DIRS.values()]
        removed: list[Path] = []
        for path in sorted(self.out_dir.rglob("*")):
            if not path.is_file():
                continue
            relative = path.relative_to(self.out_dir).as_posix()
            temporary = path.name.startswith(".") and path.name.endswith(".tmp")
            orphan = any(path.is_relative_to(folder) for folder in folders) and relative not in known
            if temporary or orphan:
                path.unlink()
                removed.append(path)
        return removed

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
