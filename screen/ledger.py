"""The ledger: what an output folder has screened, with which models, and what was sent where.

One SQLite file (``ledger.sqlite``) per output folder. It is the commit point of a run: a
study's SR file is written (atomically) first and its ledger row last, so after a ``kill -9``
the ledger never names a file that is not whole, and files the ledger does not name are
debris that :meth:`Ledger.sweep_orphans` removes. ``studies.csv`` and ``findings.csv`` are
views of the ledger, rewritten atomically, so a study appears in them exactly once.

A study counts as done when its row has status ``screened`` for the same content hash (its
instances) and the same model key (member checkpoints + operating point): a rerun skips it, a
study that gained images has a new content hash and is screened again (its new SR supersedes
the old one), and a new model or operating point re-screens everything.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from screen.errors import OutputLockedError, ScreenError

SCHEMA_VERSION = 1
LEDGER_NAME = "ledger.sqlite"
LOCK_NAME = ".screen.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, archive TEXT,
    model_key TEXT, operating_point_id TEXT, status TEXT NOT NULL, summary_json TEXT);
CREATE TABLE IF NOT EXISTS studies (
    study_instance_uid TEXT PRIMARY KEY, content_hash TEXT NOT NULL, model_key TEXT NOT NULL,
    run_id TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    row_json TEXT NOT NULL, sr_path TEXT, sr_sop_instance_uid TEXT, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS findings (
    study_instance_uid TEXT NOT NULL, idx INTEGER NOT NULL, row_json TEXT NOT NULL,
    PRIMARY KEY (study_instance_uid, idx));
CREATE TABLE IF NOT EXISTS srs (
    sr_sop_instance_uid TEXT PRIMARY KEY, study_instance_uid TEXT NOT NULL, sr_path TEXT NOT NULL,
    run_id TEXT NOT NULL, supersedes TEXT, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sends (
    sr_sop_instance_uid TEXT NOT NULL, destination TEXT NOT NULL, ok INTEGER NOT NULL,
    status INTEGER, attempts INTEGER NOT NULL, error TEXT NOT NULL DEFAULT '', sent_at TEXT NOT NULL,
    PRIMARY KEY (sr_sop_instance_uid, destination));
"""


def now_iso() -> str:
    """UTC time in ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StudyState:
    """What the ledger holds for one study."""

    study_instance_uid: str
    content_hash: str
    model_key: str
    status: str
    sr_path: str | None
    sr_sop_instance_uid: str | None


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

    def __init__(self, out_dir: Path, *, read_only: bool = False) -> None:
        self.out_dir = out_dir
        self.path = out_dir / LEDGER_NAME
        if read_only:
            if not self.path.exists():
                self._db = sqlite3.connect(":memory:")
                self._db.executescript(_SCHEMA)
                return
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) > SCHEMA_VERSION:
            raise ScreenError(
                f"{self.path} was written by a newer fracture-screen (ledger schema {version}); "
                "upgrade, or use another --out folder"
            )

    def close(self) -> None:
        self._db.close()

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def salt(self) -> str:
        """The salt for hashed identifiers: ``$FRACTURE_SCREEN_SALT``, else one kept per folder."""
        env = os.environ.get("FRACTURE_SCREEN_SALT")
        if env:
            return env
        salt = self.get_meta("salt")
        if salt is None:
            salt = secrets.token_hex(16)
            self.set_meta("salt", salt)
        return salt

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
            "SELECT study_instance_uid, content_hash, model_key, status, sr_path, sr_sop_instance_uid "
            "FROM studies WHERE study_instance_uid = ?",
            (study_instance_uid,),
        ).fetchone()
        return None if row is None else StudyState(*row)

    def sr_datasets_of(self, study_instance_uid: str) -> list[Path]:
        """Paths of every SR this folder wrote for a study (oldest first)."""
        rows = self._db.execute(
            "SELECT sr_path FROM srs WHERE study_instance_uid = ? ORDER BY created_at, rowid",
            (study_instance_uid,),
        ).fetchall()
        return [self.out_dir / r[0] for r in rows]

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
    ) -> None:
        """Commit one study's outcome, its findings and its SR, in one transaction."""
        uid = str(row["study_instance_uid"])
        stamp = now_iso()
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO studies(study_instance_uid, content_hash, model_key, run_id, "
                "status, reason, row_json, sr_path, sr_sop_instance_uid, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (uid, content_hash, model_key, run_id, row["status"], row.get("reason", ""),
                 json.dumps(row, sort_keys=True), sr_path, sr_sop_instance_uid, stamp),
            )
            self._db.execute("DELETE FROM findings WHERE study_instance_uid = ?", (uid,))
            self._db.executemany(
                "INSERT INTO findings(study_instance_uid, idx, row_json) VALUES (?, ?, ?)",
                [(uid, i, json.dumps(f, sort_keys=True)) for i, f in enumerate(findings)],
            )
            if sr_path is not None and sr_sop_instance_uid is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO srs(sr_sop_instance_uid, study_instance_uid, sr_path, run_id, "
                    "supersedes, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (sr_sop_instance_uid, uid, sr_path, run_id, supersedes, stamp),
                )

    def study_rows(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT row_json FROM studies ORDER BY study_instance_uid").fetchall()
        return [json.loads(r[0]) for r in rows]

    def finding_rows(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT row_json FROM findings ORDER BY study_instance_uid, idx").fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- SR files and sending ---------------------------------------------------------------
    def known_sr_paths(self) -> set[str]:
        return {str(r[0]) for r in self._db.execute("SELECT sr_path FROM srs").fetchall()}

    def unsent_srs(self, destination: str) -> list[tuple[str, Path]]:
        """``(SOP instance UID, path)`` of every SR not yet stored at ``destination``."""
        rows = self._db.execute(
            "SELECT s.sr_sop_instance_uid, s.sr_path FROM srs s LEFT JOIN sends d "
            "ON d.sr_sop_instance_uid = s.sr_sop_instance_uid AND d.destination = ? "
            "WHERE d.ok IS NULL OR d.ok = 0 ORDER BY s.created_at, s.rowid",
            (destination,),
        ).fetchall()
        return [(str(uid), self.out_dir / path) for uid, path in rows]

    def record_send(self, sr_sop_instance_uid: str, destination: str, *, ok: bool, status: int | None,
                    attempts: int, error: str = "") -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sends(sr_sop_instance_uid, destination, ok, status, attempts, error, sent_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sr_sop_instance_uid, destination, int(ok), status, attempts, error, now_iso()),
        )

    def sweep_orphans(self, sr_dir: Path) -> list[Path]:
        """Delete SR files the ledger does not name and temporary files left by a killed run."""
        known = self.known_sr_paths()
        removed: list[Path] = []
        for path in sorted(self.out_dir.rglob("*")):
            if not path.is_file():
                continue
            relative = path.relative_to(self.out_dir).as_posix()
            temporary = path.name.startswith(".") and path.name.endswith(".tmp")
            orphan_sr = path.is_relative_to(sr_dir) and relative not in known
            if temporary or orphan_sr:
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
