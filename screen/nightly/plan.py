"""Planning a run: which studies of a scanned archive to screen, skip or report as failed.

A study's instances are the indexed files that belong to it. Its *screenable* images are the
selected ones. A study is screened whole or not at all, so a view that should have been
screened but cannot be (truncated, too large, cut short before its Pixel Data) fails the study
with that view's reason; objects that are not radiographs to screen (SR, PR, KO, localizers...)
never count against it.

A study is one patient's study. Before anything is screened, each study is checked:

- ``invalid-uid``: its StudyInstanceUID, or a Series or SOP Instance UID of one of its views,
  is not a DICOM UID (PS3.5 UI grammar, at most 64 characters). Output paths are built from
  these UIDs, so such a study is refused before any path exists.
- ``uid-collision``: its instances name more than one patient (PatientID + IssuerOfPatientID,
  padding stripped), or one of its SOP Instance UIDs is also in another study (both studies
  fail). Never one result, and never one SR citing two patients.

These are *problems* of the plan (``StudyPlan.problem``); the runner records them as failed
rows, and the other studies of the night are unaffected. Reasons name the attribute, never its
value (header values stay out of reasons, logs and the ledger).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date

from dicom_io.index import Instance
from dicom_io.scan import FAILED, SELECTED, ScanResult, ScanRow
from dicom_io.select import SelectionRules, is_screenable_image
from dicom_io.uids import is_valid_uid

#: Study statuses in ``studies.csv``.
SCREENED, SKIPPED, FAILED_STUDY, OUT_OF_SCOPE = "screened", "skipped", "failed", "out-of-scope"

INVALID_UID, UID_COLLISION = "invalid-uid", "uid-collision"
#: Refusals of a view's pixel data that fail its study when it would otherwise be screened.
VIEW_FAILURE_SKIPS = frozenset({"too-large", "no-pixel-data"})
DUPLICATE = "duplicate-sop-instance"


@dataclass
class StudyPlan:
    """One study found in the archive, and what this run will do with it."""

    study_instance_uid: str
    images: list[Instance] = field(default_factory=list)  # selected, to screen
    failed: list[ScanRow] = field(default_factory=list)  # views that should be screened but cannot
    skipped: list[ScanRow] = field(default_factory=list)  # not screenable (SR, other modality, ...)
    duplicates: list[ScanRow] = field(default_factory=list)  # a SOP Instance UID seen before
    problem: tuple[str, str] | None = None  # (reason code, message): the study cannot be screened

    @property
    def first(self) -> Instance:
        for inst in self.images:
            return inst
        rows = self.failed or self.skipped or self.duplicates
        assert rows[0].instance is not None  # a plan is only made from rows with an instance
        return rows[0].instance

    @property
    def study_date(self) -> str:
        return self.first.study_date

    @property
    def views(self) -> list[Instance]:
        """What must be screened: the selected images and the views that cannot be read."""
        return self.images + [r.instance for r in self.failed if r.instance is not None]

    @property
    def instances(self) -> list[Instance]:
        """Every indexed instance of the study (screenable or not)."""
        rows = self.failed + self.skipped + self.duplicates
        return self.images + [r.instance for r in rows if r.instance is not None]

    @property
    def patient_keys(self) -> set[tuple[str, str]]:
        """The (PatientID, IssuerOfPatientID) pairs the study's instances name."""
        return {inst.patient_key for inst in self.instances}

    def content_hash(self) -> str:
        """Identity of what would be screened: SOP Instance UIDs and file sizes, sorted."""
        items = sorted(
            (inst.sop_instance_uid, inst.file_size)
            for inst in self.views
        )
        return hashlib.sha256(repr(items).encode()).hexdigest()[:16]

    def skip_reason(self) -> str:
        """Why nothing in the study is screenable: its files' reasons, most common first."""
        counts = Counter(r.reason for r in self.skipped + self.duplicates)
        return "no screenable image: " + ", ".join(f"{reason} ({n})" for reason, n in counts.most_common())

    def failure_reason(self) -> str:
        if self.problem is not None:
            return f"{self.problem[0]}: {self.problem[1]}"
        counts = Counter(r.reason for r in self.failed)
        total = len(self.images) + len(self.failed)
        detail = ", ".join(f"{reason} ({n})" for reason, n in counts.most_common())
        return f"{len(self.failed)} of {total} images unreadable: {detail}"

    @property
    def cannot_be_screened(self) -> bool:
        """A problem or an unreadable view: the study fails without any model running."""
        return self.problem is not None or bool(self.failed)

    def refuse(self, code: str, message: str) -> None:
        """Record the study's first problem (later ones add nothing a reader needs)."""
        if self.problem is None:
            self.problem = (code, message)


def plan_studies(scan: ScanResult, *, rules: SelectionRules = SelectionRules(),
                 since: date | None = None) -> list[StudyPlan]:
    """Group a scan's rows into studies, in StudyInstanceUID order, filtered by StudyDate.

    Args:
        scan: one row per file.
        rules: the selection the scan used (a view refused for its pixel data fails its study
            only when these rules would screen it).
        since: keep studies from this StudyDate on (a study without a readable date is kept).
    """
    plans: dict[str, StudyPlan] = defaultdict(lambda: StudyPlan(""))
    first_study_of: dict[str, str] = {}
    for row in scan.rows:
        if row.instance is None:
            continue  # not a DICOM instance (or unreadable header): only in scan.csv
        inst = row.instance
        plan = plans[inst.study_instance_uid]
        plan.study_instance_uid = inst.study_instance_uid
        if row.outcome == SELECTED:
            plan.images.append(inst)
        elif row.outcome == FAILED:
            plan.failed.append(row)
        elif row.reason == DUPLICATE:
            plan.duplicates.append(row)
            continue
        elif row.reason in VIEW_FAILURE_SKIPS and is_screenable_image(inst, rules):
            plan.failed.append(row)
        else:
            plan.skipped.append(row)
        first_study_of.setdefault(inst.sop_instance_uid, inst.study_instance_uid)
    for uid, plan in plans.items():
        _check_identity(plan, plans, first_study_of)
    result = []
    for uid in sorted(plans):
        plan = plans[uid]
        plan.images.sort(key=lambda i: (i.series_number or 0, i.series_instance_uid, i.instance_number or 0, str(i.path)))
        if since is not None and not on_or_after(plan.study_date, since):
            continue
        result.append(plan)
    return result


def _check_identity(plan: StudyPlan, plans: dict[str, StudyPlan], first_study_of: dict[str, str]) -> None:
    """Refuse a study with an invalid UID, two patients, or a SOP Instance UID of another study."""
    if not is_valid_uid(plan.study_instance_uid):
        plan.refuse(INVALID_UID, "StudyInstanceUID is not a DICOM UID (digits and dots, at most 64 characters)")
    for inst in plan.views:
        for name, value in (("SeriesInstanceUID", inst.series_instance_uid),
                            ("SOPInstanceUID", inst.sop_instance_uid)):
            if not is_valid_uid(value):
                plan.refuse(INVALID_UID, f"{name} of a view is not a DICOM UID (digits and dots, at most "
                                         "64 characters)")
    if len(plan.patient_keys) > 1:
        plan.refuse(UID_COLLISION, f"StudyInstanceUID is used by {len(plan.patient_keys)} patients "
                                   "(PatientID/IssuerOfPatientID differ between its instances)")
    for row in plan.duplicates:
        assert row.instance is not None
        other = first_study_of.get(row.instance.sop_instance_uid)
        if other is not None and other != plan.study_instance_uid:
            message = "a SOPInstanceUID of the study is also in another study"
            plan.refuse(UID_COLLISION, message)
            plans[other].refuse(UID_COLLISION, message)


#: ``tag:RequestedProcedurePriority``: rank of each value, most urgent first. MEDIUM is ranked
#: above ROUTINE (a request marked anything but routine asks for more than routine); a missing or
#: unknown value counts as ROUTINE; a study from an emergency department counts as STAT.
REQUESTED_PRIORITY_RANK: dict[str, int] = {"STAT": 0, "HIGH": 1, "MEDIUM": 2, "ROUTINE": 3, "LOW": 4}
_ROUTINE = REQUESTED_PRIORITY_RANK["ROUTINE"]


def order_plans(plans: list[StudyPlan], priority: str = "newest",
                emergency_departments: tuple[str, ...] = ()) -> list[StudyPlan]:
    """The studies in the order the night screens them (what a deadline leaves is the tail).

    Args:
        plans: studies of the night.
        priority: ``newest`` (StudyDate and StudyTime, latest first), ``oldest`` (earliest
            first), or ``tag:RequestedProcedurePriority`` (:data:`REQUESTED_PRIORITY_RANK`, the
            most urgent value among a study's instances; ties newest first). A study without a
            readable date comes after the dated ones; equal keys keep StudyInstanceUID order.
        emergency_departments: InstitutionalDepartmentName values (case and padding ignored)
            whose studies count as STAT under ``tag:RequestedProcedurePriority``.

    Raises:
        ValueError: an unknown ``priority`` (the site config refuses it before).
    """
    if priority not in ("newest", "oldest", "tag:RequestedProcedurePriority"):
        raise ValueError(f"unknown priority {priority!r}; use newest, oldest or tag:RequestedProcedurePriority")
    ordered = sorted(plans, key=lambda p: p.study_instance_uid)
    dated = [p for p in ordered if _when(p)]
    undated = [p for p in ordered if not _when(p)]
    dated.sort(key=_when, reverse=priority != "oldest")
    ordered = dated + undated
    if priority.startswith("tag:"):
        emergency = {" ".join(d.split()).upper() for d in emergency_departments if d.strip()}
        ordered.sort(key=lambda p: _urgency(p, emergency))
    return ordered


def _when(plan: StudyPlan) -> str:
    """``YYYYMMDDHHMMSS`` of the study ("" without a readable StudyDate), for sorting."""
    inst = plan.first
    day = inst.study_date.strip()
    if len(day) != 8 or not day.isdigit():
        return ""
    clock = "".join(c for c in inst.study_time.split(".")[0] if c.isdigit())[:6]
    return day + clock.ljust(6, "0")


def _urgency(plan: StudyPlan, emergency: set[str]) -> int:
    """The most urgent rank among the study's instances."""
    ranks = [0 if " ".join(i.department.split()).upper() in emergency
             else REQUESTED_PRIORITY_RANK.get(i.requested_priority.strip(), _ROUTINE) for i in plan.instances]
    return min(ranks, default=_ROUTINE)


def on_or_after(study_date: str, since: date) -> bool:
    """StudyDate (YYYYMMDD) >= since; a study without a readable date is kept (never lost)."""
    try:
        return date(int(study_date[0:4]), int(study_date[4:6]), int(study_date[6:8])) >= since
    except (ValueError, IndexError):
        return True
