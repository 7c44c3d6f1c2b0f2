"""The run's tabular outputs: ``studies.csv``, ``findings.csv`` and ``run.json``.

All three are views written atomically from the ledger (``studies.csv`` holds one row per study
the folder has seen, its latest state), so a killed run never leaves a partial or duplicated
row. Patient identifiers follow ``[output] patient_id``; patient names are never written. The
CSVs' columns and format are declared in :mod:`dicom_io.tables` (:data:`~dicom_io.tables.STUDIES`,
:data:`~dicom_io.tables.FINDINGS`); ``run.json`` carries their ``format_version``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from dicom_io.atomic import atomic_write_text
from dicom_io.tables import FINDINGS, OUTPUT_FORMAT_VERSION, STUDIES, write_table
from screen.id_key import pseudonym
from screen.site_config import PatientIdPolicy

#: Columns of ``studies.csv`` before the per-member ``score:``/``vote:`` columns.
STUDY_COLUMNS: tuple[str, ...] = STUDIES.names
#: Columns of ``findings.csv``: one fused box (or image-level finding) per row, source pixels.
FINDING_COLUMNS: tuple[str, ...] = FINDINGS.names


def patient_id_value(patient_id: str, mode: PatientIdPolicy, key: bytes) -> str | None:
    """The PatientID as ``[output] patient_id`` allows: itself, a keyed 128-bit pseudonym
    (HMAC-SHA-256 under the site's key, :mod:`screen.id_key`), or ``None``."""
    if mode == PatientIdPolicy.INCLUDE:
        return patient_id
    if mode == PatientIdPolicy.HASH:
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


def write_studies_csv(path: Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``studies.csv`` (atomically)."""
    return write_table(path, STUDIES, rows, columns)


def write_findings_csv(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write ``findings.csv`` (atomically)."""
    return write_table(path, FINDINGS, rows, FINDING_COLUMNS)


def write_run_json(path: Path, summary: dict[str, Any]) -> Path:
    """Write ``run.json`` (atomically), stamped with the outputs' ``format_version``."""
    data = {**summary, "format_version": OUTPUT_FORMAT_VERSION}
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
