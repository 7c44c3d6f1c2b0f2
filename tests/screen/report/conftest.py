"""A night's output folder built by hand over real phantom images: known order, hostile text.

The tables are written with the project's own writers (``dicom_io.tables``,
``screen.nightly.tables``), so they are what ``screen run`` writes; the rows are chosen so the
page's order and contents are known: two levels (``doubt`` < ``fracture``), a flagged study of
the lower level with the highest score, a negative, a failed study whose reason is markup, and
an out-of-scope study whose accession is markup.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from dicom_io.atomic import file_mode
from dicom_io.tables import FINDINGS, SCAN, STUDIES, write_table
from screen.nightly.tables import write_run_json

RUN_ID = "20261206T010000Z-abcdef"
HOSTILE_REASON = "<script>alert(1)</script>"
HOSTILE_ACCESSION = '"><img src=x onerror=alert(2)>'
MEMBERS = ("pg-cls", "detr")


@dataclass(frozen=True)
class Night:
    """The folder and what the test needs to know about it."""

    out: Path
    order: tuple[str, ...]  # flagged studies in the order the page must list them
    negative: str
    failed: str
    sources: dict[str, Path]  # SOP Instance UID -> file
    patient_names: tuple[str, ...]
    studies: dict[str, list[str]]  # study UID -> SOP UIDs


def _study_row(uid: str, status: str, **values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "study_instance_uid": uid, "patient_id": "PID-" + uid[-4:], "accession_number": "ACC" + uid[-4:],
        "study_date": "20261205", "status": status, "reason": "", "n_images": 1, "model_version": "m",
        "operating_point_id": "op-1", "intended_use": "demo", "run_id": RUN_ID,
        "screened_at": "2026-12-06T01:00:00+00:00",
    }
    row.update(values)
    return row


def build_night(archive: Path, out: Path, *, mode: int = 0o640) -> Night:
    """Write the folder (see the module docstring) over the phantom ``archive``."""
    headers = [(path, pydicom.dcmread(path, stop_before_pixels=True)) for path in sorted(archive.rglob("*.dcm"))]
    studies: dict[str, list[str]] = {}
    sources: dict[str, Path] = {}
    names = set()
    for path, ds in headers:
        studies.setdefault(str(ds.StudyInstanceUID), []).append(str(ds.SOPInstanceUID))
        sources[str(ds.SOPInstanceUID)] = path
        names.add(str(ds.PatientName))
    uids = sorted(studies)
    assert len(uids) >= 5, "the phantom archive needs five studies"
    a, b, c, d, e = uids[:5]
    votes = {"score:pg-cls": 0.9, "vote:pg-cls": True, "score:detr": 0.4, "vote:detr": False}
    rows = [
        _study_row(a, "screened", decision="positive", level="fracture", fused_score=0.7, **votes),
        _study_row(b, "screened", decision="positive", level="doubt", fused_score=0.95, **votes),
        _study_row(c, "screened", decision="positive", level="fracture", fused_score=0.9,
                   sr_path=f"sr/{c}/1.2.3.dcm", sr_sop_instance_uid="1.2.3", **votes),
        _study_row(d, "screened", decision="negative", fused_score=0.2, **votes),
        _study_row(e, "failed", reason=HOSTILE_REASON),
        _study_row("1.2.3.4.5", "out-of-scope", reason="body-part-out-of-scope",
                   accession_number=HOSTILE_ACCESSION),
        _study_row("1.2.3.4.6", "screened", decision="positive", level="fracture", fused_score=0.99,
                   run_id="an-earlier-night"),
    ]
    columns = list(STUDIES.names) + [f"{k}:{m}" for m in MEMBERS for k in ("score", "vote")]
    findings = []
    for uid, level, score in ((a, "fracture", 0.7), (b, "doubt", 0.95), (c, "fracture", 0.9)):
        sop = studies[uid][0]
        findings.append({"study_instance_uid": uid, "series_instance_uid": "1.2", "sop_instance_uid": sop,
                         "col0": 20.0, "row0": 30.0, "col1": 60.0, "row1": 70.0, "score": score, "level": level,
                         "members": "detr", "run_id": RUN_ID})
    scan = [{"path": str(path), "outcome": "selected", "study_instance_uid": str(ds.StudyInstanceUID),
             "sop_instance_uid": str(ds.SOPInstanceUID)} for path, ds in headers]
    out.mkdir(parents=True, exist_ok=True)
    with file_mode(mode):
        write_table(out / "studies.csv", STUDIES, rows, columns)
        write_table(out / "findings.csv", FINDINGS, findings)
        write_table(out / "scan.csv", SCAN, scan)
        write_run_json(out / "run.json", {
            "run_id": RUN_ID, "counts": {"screened": 4, "failed": 1, "out-of-scope": 1},
            "levels": ["doubt", "fracture"], "intended_use": "demo", "patient_id_policy": "include",
            "finished_at": "2026-12-06T01:05:00+00:00", "needs_attention": [],
        })
    return Night(out, (c, a, b), d, e, sources, tuple(sorted(names)), studies)


@pytest.fixture
def night(small_archive: Path, tmp_path: Path) -> Night:
    """The folder over a copy of the phantom archive (tests may break or move the copy)."""
    archive = tmp_path / "export"
    shutil.copytree(small_archive, archive)
    return build_night(archive, tmp_path / "out")
