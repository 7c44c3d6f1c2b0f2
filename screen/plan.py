"""Planning a run: which studies of a scanned archive to screen, skip or report as failed.

A study's instances are the indexed files that belong to it. Its *screenable* images are the
selected ones; files refused after their header was read (truncated, too large) still count
in the study, so a study never looks complete when one of its images could not be read.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date

from dicom_io.index import Instance
from dicom_io.scan import FAILED, SELECTED, ScanResult, ScanRow

#: Study statuses in ``studies.csv``.
SCREENED, SKIPPED, FAILED_STUDY = "screened", "skipped", "failed"


@dataclass
class StudyPlan:
    """One study found in the archive, and what this run will do with it."""

    study_instance_uid: str
    images: list[Instance] = field(default_factory=list)  # selected, to screen
    failed: list[ScanRow] = field(default_factory=list)  # indexed but refused (truncated, ...)
    skipped: list[ScanRow] = field(default_factory=list)  # not screenable (SR, other modality, ...)

    @property
    def first(self) -> Instance:
        for inst in self.images:
            return inst
        rows = self.failed or self.skipped
        assert rows[0].instance is not None  # a plan is only made from rows with an instance
        return rows[0].instance

    @property
    def study_date(self) -> str:
        return self.first.study_date

    def content_hash(self) -> str:
        """Identity of what would be screened: SOP Instance UIDs and file sizes, sorted."""
        items = sorted(
            (inst.sop_instance_uid, inst.file_size)
            for inst in self.images + [r.instance for r in self.failed if r.instance is not None]
        )
        return hashlib.sha256(repr(items).encode()).hexdigest()[:16]

    def skip_reason(self) -> str:
        """Why nothing in the study is screenable: its files' reasons, most common first."""
        counts = Counter(r.reason for r in self.skipped)
        return "no screenable image: " + ", ".join(f"{reason} ({n})" for reason, n in counts.most_common())

    def failure_reason(self) -> str:
        counts = Counter(r.reason for r in self.failed)
        total = len(self.images) + len(self.failed)
        detail = ", ".join(f"{reason} ({n})" for reason, n in counts.most_common())
        return f"{len(self.failed)} of {total} images unreadable: {detail}"


def plan_studies(scan: ScanResult, *, since: date | None = None) -> list[StudyPlan]:
    """Group a scan's rows into studies, in StudyInstanceUID order, filtered by StudyDate."""
    plans: dict[str, StudyPlan] = defaultdict(lambda: StudyPlan(""))
    for row in scan.rows:
        if row.instance is None:
            continue  # not a DICOM instance (or unreadable header): only in scan.csv
        uid = row.instance.study_instance_uid
        plan = plans[uid]
        plan.study_instance_uid = uid
        if row.outcome == SELECTED:
            plan.images.append(row.instance)
        elif row.outcome == FAILED:
            plan.failed.append(row)
        elif row.reason != "duplicate-sop-instance":
            plan.skipped.append(row)
    result = []
    for uid in sorted(plans):
        plan = plans[uid]
        plan.images.sort(key=lambda i: (i.series_number or 0, i.series_instance_uid, i.instance_number or 0, str(i.path)))
        if since is not None and not _on_or_after(plan.study_date, since):
            continue
        result.append(plan)
    return result


def _on_or_after(study_date: str, since: date) -> bool:
    """StudyDate (YYYYMMDD) >= since; a study without a readable date is kept (never lost)."""
    try:
        return date(int(study_date[0:4]), int(study_date[4:6]), int(study_date[6:8])) >= since
    except (ValueError, IndexError):
        return True
