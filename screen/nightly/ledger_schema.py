"""The ledger's schema, its versions and migrations, and the refusal of a ledger that is not one.

The ledger is the output folder's memory. Losing it must never lose results, so opening one is
strict:

- a folder that holds results (``studies.csv``, ``run.json`` or SR files) but no ledger, or an
  empty, truncated or foreign ``ledger.sqlite``, is refused (:class:`LedgerUnusableError`,
  exit 2) before anything is written or deleted; ``screen ledger rebuild OUT`` makes a new one
  from the files on disk (:mod:`screen.nightly.ledger_rebuild`);
- an older ledger is migrated in place, after a consistent copy is kept beside it
  (``ledger.sqlite.v<N>-backup-<time>``); a newer one is refused (upgrade fracture-screen).

Versions:
    1. runs, studies, findings, srs, sends; the identifier salt in ``meta``.
    2. ``studies.patient_key`` (keyed pseudonym of PatientID + IssuerOfPatientID) and
       ``studies.attempts`` (failed tries of the same content); ``srs.intended_use``; an
       ``instances`` table (SOP Instance UID -> study) for collisions across nights; the salt
       leaves the ledger (identifiers are keyed by the site's key, :mod:`screen.id_key`, kept
       outside the folder; the ledger keeps only its fingerprint). Rows written before keep
       their old pseudonyms.
    3. every object the folder writes, not only SRs: ``srs`` becomes ``objects`` (``kind``
       ``sr``, ``gsps``, ``sc``, ``kos`` or ``gap-sr``; ``path``; ``withdrawn``: why a result is
       no longer current, ``rejected:<KOS UID>`` or ``superseded``) and ``sends`` names any
       object (``sop_instance_uid``). An SR recorded before is an ``sr`` object, as it was.
    4. each night's studies, for monitoring (the ``studies`` table keeps only a study's latest
       state): ``run_studies`` (one row per run and study: status, whether flagged, the
       operating point that decided it, Manufacturer, ManufacturerModelName, BodyPartExamined,
       Modality) and ``run_scores`` (the raw study score of each member and ``fused``). Runs
       before version 4 have none: monitoring starts with the first night after the migration.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from screen.errors import ScreenError

SCHEMA_VERSION = 4
LEDGER_NAME = "ledger.sqlite"

_RUN_TABLES = """CREATE TABLE IF NOT EXISTS run_studies (
    run_id TEXT NOT NULL, study_instance_uid TEXT NOT NULL, status TEXT NOT NULL, flagged INTEGER,
    operating_point_id TEXT, manufacturer TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '',
    body_part TEXT NOT NULL DEFAULT '', modality TEXT NOT NULL DEFAULT '', recorded_at TEXT NOT NULL,
    PRIMARY KEY (run_id, study_instance_uid));
CREATE TABLE IF NOT EXISTS run_scores (
    run_id TEXT NOT NULL, study_instance_uid TEXT NOT NULL, member TEXT NOT NULL, score REAL NOT NULL,
    PRIMARY KEY (run_id, study_instance_uid, member));
"""


def run_tables_sql() -> str:
    """The statements that make the per-run tables of version 4."""
    return _RUN_TABLES


SCHEMA = """
BEGIN;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, archive TEXT,
    model_key TEXT, operating_point_id TEXT, status TEXT NOT NULL, summary_json TEXT);
CREATE TABLE IF NOT EXISTS studies (
    study_instance_uid TEXT PRIMARY KEY, content_hash TEXT NOT NULL, model_key TEXT NOT NULL,
    run_id TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    row_json TEXT NOT NULL, sr_path TEXT, sr_sop_instance_uid TEXT, updated_at TEXT NOT NULL,
    patient_key TEXT, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS findings (
    study_instance_uid TEXT NOT NULL, idx INTEGER NOT NULL, row_json TEXT NOT NULL,
    PRIMARY KEY (study_instance_uid, idx));
CREATE TABLE IF NOT EXISTS objects (
    sop_instance_uid TEXT PRIMARY KEY, study_instance_uid TEXT NOT NULL, kind TEXT NOT NULL,
    path TEXT NOT NULL, run_id TEXT NOT NULL, supersedes TEXT, created_at TEXT NOT NULL,
    intended_use TEXT NOT NULL DEFAULT 'unknown', withdrawn TEXT);
CREATE TABLE IF NOT EXISTS sends (
    sop_instance_uid TEXT NOT NULL, destination TEXT NOT NULL, ok INTEGER NOT NULL,
    status INTEGER, attempts INTEGER NOT NULL, error TEXT NOT NULL DEFAULT '', sent_at TEXT NOT NULL,
    PRIMARY KEY (sop_instance_uid, destination));
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY, study_instance_uid TEXT NOT NULL);
""" + _RUN_TABLES + """INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '""" + str(SCHEMA_VERSION) + """');
COMMIT;
"""
"""One transaction: a kill while a ledger is made leaves all of it or none."""

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE studies ADD COLUMN patient_key TEXT",
        "ALTER TABLE studies ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE srs ADD COLUMN intended_use TEXT NOT NULL DEFAULT 'unknown'",
        "CREATE TABLE IF NOT EXISTS instances (sop_instance_uid TEXT PRIMARY KEY, "
        "study_instance_uid TEXT NOT NULL)",
        "UPDATE studies SET attempts = 1 WHERE status = 'failed'",
        "DELETE FROM meta WHERE key = 'salt'",  # a secret next to the hashes it protects: gone
    ),
    3: (
        "CREATE TABLE objects (sop_instance_uid TEXT PRIMARY KEY, study_instance_uid TEXT NOT NULL, "
        "kind TEXT NOT NULL, path TEXT NOT NULL, run_id TEXT NOT NULL, supersedes TEXT, "
        "created_at TEXT NOT NULL, intended_use TEXT NOT NULL DEFAULT 'unknown', withdrawn TEXT)",
        "INSERT INTO objects(sop_instance_uid, study_instance_uid, kind, path, run_id, supersedes, created_at, "
        "intended_use) SELECT sr_sop_instance_uid, study_instance_uid, 'sr', sr_path, run_id, supersedes, "
        "created_at, intended_use FROM srs ORDER BY rowid",
        "DROP TABLE srs",
        "ALTER TABLE sends RENAME COLUMN sr_sop_instance_uid TO sop_instance_uid",
    ),
    4: tuple(statement.strip() for statement in run_tables_sql().split(";") if statement.strip()),
}
"""Statements that take a ledger of version ``N - 1`` to version ``N``."""

REQUIRED_TABLES = ("meta", "runs", "studies", "findings", "objects", "sends")
_LEGACY_NAMES = {"srs": "objects"}  # a table's name before version 3 -> its name now


class LedgerUnusableError(ScreenError):
    """The output folder's ledger is missing (beside results), empty, corrupt or newer."""


def rebuild_hint(out_dir: Path) -> str:
    return (f"nothing was changed or deleted; rebuild it from the SRs and CSVs on disk with "
            f"`screen ledger rebuild {out_dir}`, then run again")


def folder_results(out_dir: Path) -> list[str]:
    """What results the folder holds (empty for a new folder)."""
    found = [name for name in ("studies.csv", "findings.csv", "run.json") if (out_dir / name).is_file()]
    sr_dir = out_dir / "sr"
    count = sum(1 for p in sr_dir.rglob("*.dcm") if p.is_file()) if sr_dir.is_dir() else 0
    if count:
        found.append(f"{count} SR file(s)")
    return found


def check_usable(out_dir: Path, *, writable: bool = True) -> None:
    """Refuse a ledger that cannot be the folder's memory, before anything touches the folder.

    Raises:
        LedgerUnusableError: results without a ledger, or an empty, corrupt, foreign or newer
            ``ledger.sqlite`` (the message says which and what to do).
    """
    path = out_dir / LEDGER_NAME
    results = folder_results(out_dir) if out_dir.is_dir() else []
    if not path.exists():
        if results:
            raise LedgerUnusableError(
                f"{out_dir} holds results ({', '.join(results)}) but no {LEDGER_NAME}; "
                + rebuild_hint(out_dir))
        return
    problem = _problem(path, writable)
    if problem == _NEVER_STARTED and not results:
        return  # made by a run killed before its first commit: nothing can have been recorded
    if problem is not None:
        detail = f" and the folder holds results ({', '.join(results)})" if problem == _NEVER_STARTED else ""
        raise LedgerUnusableError(f"{path} {problem}{detail}; " + rebuild_hint(out_dir))


_NEVER_STARTED = "is empty"


def _problem(path: Path, writable: bool) -> str | None:
    if not path.is_file():
        return "is not a file"
    if path.stat().st_size == 0:
        return _NEVER_STARTED
    try:  # a writable connection can replay the write-ahead log a killed run left behind
        db = sqlite3.connect(path) if writable else sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            check = db.execute("PRAGMA quick_check(1)").fetchone()
            if check is None or check[0] != "ok":
                return f"is corrupt (SQLite quick_check: {check[0] if check else 'no answer'})"
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                return _NEVER_STARTED
            present = tables | {_LEGACY_NAMES[t] for t in tables if t in _LEGACY_NAMES}
            missing = [t for t in REQUIRED_TABLES if t not in present]
            ours = tables <= set(REQUIRED_TABLES) | set(_LEGACY_NAMES) | {"instances", "run_studies", "run_scores"}
            if missing and ours and all(
                    db.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone() is None for t in tables):
                return _NEVER_STARTED  # a ledger whose creation a kill cut short: nothing in it
            if missing:
                return f"is not a fracture-screen ledger (no {', '.join(missing)} table)"
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return f"is not a readable SQLite database ({exc})"
    if row is None or not str(row[0]).isdigit():
        return "has no schema version"
    if int(row[0]) > SCHEMA_VERSION:
        return (f"was written by a newer fracture-screen (ledger schema {row[0]}, this one reads "
                f"up to {SCHEMA_VERSION}): upgrade fracture-screen, or use another --out folder")
    return None


def schema_version(db: sqlite3.Connection) -> int:
    """The ledger's version (:data:`SCHEMA_VERSION` for one not started yet: nothing to migrate)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return SCHEMA_VERSION
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row is not None else SCHEMA_VERSION


def migrate(db: sqlite3.Connection, path: Path | None) -> Path | None:
    """Bring ``db`` to :data:`SCHEMA_VERSION`; with ``path``, keep a backup first.

    Returns:
        The backup's path (``None`` when nothing needed migrating or ``path`` is ``None``).
    """
    version = schema_version(db)
    if version >= SCHEMA_VERSION:
        return None
    backup = None
    if path is not None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        backup = path.with_name(f"{path.name}.v{version}-backup-{stamp}")
        target = sqlite3.connect(backup)
        try:
            db.backup(target)  # a consistent copy, the write-ahead log included
            target.execute("DELETE FROM meta WHERE key = 'salt'")  # never a secret beside its hashes
            target.commit()
            target.execute("VACUUM")
        finally:
            target.close()
    db.execute("PRAGMA secure_delete = ON")  # what a migration deletes (a salt) is overwritten
    db.execute("BEGIN IMMEDIATE")
    try:
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[step]:
                db.execute(statement)
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                   (str(SCHEMA_VERSION),))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # and leaves no copy in the write-ahead log
    return backup
