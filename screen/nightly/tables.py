"""The run's tabular outputs: ``studies.csv``, ``findings.csv`` and ``run.json``.

All three are views written atomically from the ledger (``studies.csv`` holds one row per study
the folder has seen, its latest state), so a killed run never leaves a partial or duplicated
row. Patient identifiers follow ``[output] patient_id``; patient names are never written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from dicom_io.atomic import atomic_open, atomic_write_text
from dicom_io.csv_safe import spreadsheet_safe
from screen.id_key import pseudonym

#: Columns of ``studies.csv`` before the per-member ``score:``/``vote:`` columns.
STUDY_COLUMNS: tuple[str, ...] = (
    "study_instance_uid", "patient_id", "accession_number", "study_date", "status", "reason",
    "decision", "level", "fused_score", "n_images", "n_boxes", "sr_path", "sr_sop_instance_uid",
    "model_version", "operating_point_id", "intended_use", "run_id", "screened_at", "content_hash",
)
#: Columns of ``findings.csv``: one fused box (or image-level finding) per row, source pixels.
FINDING_COLUMNS: tuple[str, ...] = (
    "study_instance_uid", "series_instance_uid", "sop_instance_uid", "col0", "row0", "col1", "row1",
    "score", "level", "members", "run_id",
)


def patient_id_value(patient_id: str, mode: str, key: bytes) -> str | None:
    """The PatientID as ``[output] patient_id`` allows: itself, a keyed 128-bit pseudonym
    (HMAC-SHA-256 under the site's key, :mod:`screen.id_key`), or ``None``."""
    if mode == "include":
        return patient_id
    if mode == "hash":
        if not patient_id:
            return ""
        return pseudonym(key, "patient-id", patient_id)
    return None


def study_columns(member_names: Sequence[str], *, patient_id: bool, accession: bool) -> list[str]:
    """The header of ``studies.csv`` for these members and identifier settings."""
    columns = [c for c in STUDY_COLUMNS
               if (c != "patient_id" or patient_id) and (c != "accession_number" or accession)]
    for name in member_names:
        columns += [f"score:{name}", f"vote:{name}"]
    return columns


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> Path:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
    return path


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.6f}"
    return spreadsheet_safe(value)


def write_studies_csv(path: Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``studies.csv`` (atomically)."""
    return _write_csv(path, columns, rows)


def write_findings_csv(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write ``findings.csv`` (atomically)."""
    return _write_csv(path, FINDING_COLUMNS, rows)


def write_run_json(path: Path, summary: dict[str, Any]) -> Path:
    """Write ``run.json`` (atomically)."""
    atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path
