"""Intended use: is a study one the members are fit for? (``[scope]`` of the site config)

A screening result is only a result for studies like those the members were trained and
validated on. A study outside that scope gets its own status, ``out-of-scope``, with the
reason: it is never screened and never reported ``negative`` (a model that says nothing about
a wrist is not saying "no fracture"). The checks read headers only, so they cost nothing and
run before any image is decoded.
"""

from __future__ import annotations

import hashlib
import json

from screen.site_config import ScopeSettings
from screen.nightly.plan import StudyPlan

SCOPE_KEY_PREFIX = "scope:"


def out_of_scope_reason(plan: StudyPlan, scope: ScopeSettings) -> str | None:
    """Why ``plan`` is outside ``scope`` (``None`` when it is inside)."""
    parts = sorted({inst.body_part for inst in plan.images})
    if scope.require_body_part and "" in parts:
        return "out-of-scope: a view has no BodyPartExamined (the members' scope is by body part)"
    if scope.body_parts:
        outside = [p for p in parts if p and p not in scope.body_parts]
        if outside:
            return (f"out-of-scope: BodyPartExamined {', '.join(outside)} is not among the members' "
                    f"body parts ({', '.join(scope.body_parts)})")
    if scope.min_patient_age > 0:
        ages = {inst.patient_age_years for inst in plan.images}
        if None in ages:
            return ("out-of-scope: patient age unknown (no valid PatientAge or PatientBirthDate) and "
                    f"the scope starts at {scope.min_patient_age:g} years")
        youngest = min(a for a in ages if a is not None)
        if youngest < scope.min_patient_age:
            return f"out-of-scope: patient younger than {scope.min_patient_age:g} years"
    return None


def scope_key(scope: ScopeSettings) -> str:
    """What an ``out-of-scope`` row was judged against: a new scope judges the study again."""
    payload = json.dumps(scope.model_dump(), sort_keys=True)  # same key as the dataclass had
    return SCOPE_KEY_PREFIX + hashlib.sha256(payload.encode()).hexdigest()[:16]
