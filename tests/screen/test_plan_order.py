"""The order a night screens its studies in (``[run] priority``): what a deadline leaves is the tail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dicom_io.scan import scan_archive
from screen.nightly.plan import order_plans, plan_studies

# (name, StudyDate, StudyTime, RequestedProcedurePriority, InstitutionalDepartmentName)
STUDIES = [
    ("routine-new", "20261205", "231500", "ROUTINE", "ORTHOPAEDICS"),
    ("low-newest", "20261206", "010000", "LOW", ""),
    ("stat-old", "20261130", "080000", "STAT", ""),
    ("emergency-dept", "20261201", "120000", "", " Emergency "),
    ("medium", "20261203", "090000", "MEDIUM", ""),
    ("high", "20261202", "235959.123", "HIGH", ""),
    ("no-priority", "20261204", "", "", ""),
    ("no-date", "", "", "", ""),
]


@pytest.fixture
def plans(tmp_path: Path, write_dicom: Any) -> dict[str, Any]:
    uid_of = {}
    for index, (name, day, clock, priority, department) in enumerate(STUDIES):
        uid = f"1.2.826.0.1.3680043.10.{index + 1}"
        attrs: dict[str, Any] = {"StudyDate": day, "StudyTime": clock, "BodyPartExamined": "SHOULDER"}
        if priority:
            attrs["RequestedProcedurePriority"] = priority
        if department:
            attrs["InstitutionalDepartmentName"] = department
        write_dicom(f"archive/{name}.dcm", study_uid=uid, **attrs)
        uid_of[uid] = name
    found = plan_studies(scan_archive(tmp_path / "archive"))
    assert len(found) == len(STUDIES)
    return {"plans": found, "names": uid_of}


def _names(ordered: list[Any], names: dict[str, str]) -> list[str]:
    return [names[p.study_instance_uid] for p in ordered]


def test_newest_first_is_the_default(plans: dict[str, Any]) -> None:
    assert _names(order_plans(plans["plans"]), plans["names"]) == [
        "low-newest", "routine-new", "no-priority", "medium", "high", "emergency-dept", "stat-old", "no-date"]


def test_oldest_first(plans: dict[str, Any]) -> None:
    assert _names(order_plans(plans["plans"], "oldest"), plans["names"]) == [
        "stat-old", "emergency-dept", "high", "medium", "no-priority", "routine-new", "low-newest", "no-date"]


def test_requested_procedure_priority_then_newest(plans: dict[str, Any]) -> None:
    """STAT > HIGH > MEDIUM > ROUTINE (or none) > LOW; an emergency department counts as STAT."""
    ordered = order_plans(plans["plans"], "tag:RequestedProcedurePriority", ("EMERGENCY", "ED"))
    assert _names(ordered, plans["names"]) == [
        "emergency-dept", "stat-old", "high", "medium", "routine-new", "no-priority", "no-date", "low-newest"]
    without_departments = order_plans(plans["plans"], "tag:RequestedProcedurePriority")
    assert _names(without_departments, plans["names"])[:2] == ["stat-old", "high"]


def test_an_unknown_priority_is_refused(plans: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unknown priority 'urgent'; use newest, oldest or"):
        order_plans(plans["plans"], "urgent")
