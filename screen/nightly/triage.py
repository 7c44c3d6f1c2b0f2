"""Triage: what tonight does with each study of the archive, before any image is decoded.

Given the plans (:mod:`screen.nightly.plan`), the ledger (what earlier nights did) and the site's
scope, every study gets exactly one fate:

- **done**: screened before with the same content (a new model or operating point does not
  re-screen it: see below), or judged out of scope against the same scope;
- **refused** (``failed`` without any model running): an invalid UID, two patients, a SOP
  Instance UID of another study (tonight, or on an earlier night: the ledger remembers every
  study's patient and instances), or a view that cannot be read; a study that collides is
  failed from then on and keeps what was written and sent;
- **out of scope**: outside the members' intended use (:mod:`screen.nightly.scope`), never negative;
- **needs attention**: failed ``max_attempts`` times with the same content, or a UID collision:
  not retried silently, listed every night (exit 1) until the data is fixed and the study is
  re-screened with ``--force``;
- **unscreenable**: nothing in it is a radiograph to screen (``skipped``);
- **to screen**: everything else, at most ``--limit``.

Model changes: a study screened with other members or another operating point stays as it is;
the new model applies to studies not yet screened. Re-screening what radiologists may already
have read would send a superseding SR for every study in the folder; it happens only when asked
(``--rescreen-since DATE``: studies of that StudyDate or later screened with another model;
``--force``: everything). A screened study whose SR file is lost is screened again and its SR
written again, with the same SOP Instance UID when the model is the same (so a PACS that has it
is not sent it again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from screen.nightly.ledger import Ledger, StudyState
from screen.nightly.plan import FAILED_STUDY, OUT_OF_SCOPE, SCREENED, UID_COLLISION, StudyPlan, on_or_after
from screen.site_config import ScopeSettings
from screen.nightly.scope import out_of_scope_reason


@dataclass
class Triage:
    """Every study's fate tonight (see the module docstring)."""

    todo: list[StudyPlan] = field(default_factory=list)
    refused: list[StudyPlan] = field(default_factory=list)
    out_of_scope: list[tuple[StudyPlan, str]] = field(default_factory=list)
    unscreenable: list[StudyPlan] = field(default_factory=list)
    done: int = 0
    held: int = 0  # failed before and not retried (needs attention)
    collisions: list[str] = field(default_factory=list)  # studies found colliding tonight
    reuse_sr: dict[str, str] = field(default_factory=dict)  # study -> SR SOP UID to write again


def triage(plans: list[StudyPlan], ledger: Ledger, *, key: str, scope: ScopeSettings, scope_mark: str,
           force: bool = False, rescreen_since: date | None = None, max_attempts: int = 3,
           limit: int | None = None) -> Triage:
    """Decide each study's fate (see the module docstring); writes nothing."""
    result = Triage()
    for plan in plans:
        uid = plan.study_instance_uid
        if not plan.images and not plan.failed and plan.problem is None:
            result.unscreenable.append(plan)
            continue
        state = ledger.study_state(uid)
        _check_earlier_nights(plan, state, ledger, result)
        if not force and state is not None and state.content_hash == plan.content_hash():
            if _already_done(plan, state, ledger, key, scope_mark, rescreen_since, result):
                continue
        if not force and state is not None and _held(state, max_attempts) and plan.problem is None:
            result.held += 1
            continue
        if plan.cannot_be_screened:
            result.refused.append(plan)
            continue
        reason = out_of_scope_reason(plan, scope)
        if reason is not None:
            result.out_of_scope.append((plan, reason))
            continue
        result.todo.append(plan)
    if limit is not None:
        result.todo = result.todo[:limit]
    return result


def _held(state: StudyState, max_attempts: int) -> bool:
    """Failed too often, or a collision: not retried without ``--force``."""
    return state.status == FAILED_STUDY and (
        state.attempts >= max_attempts or state.reason.startswith(UID_COLLISION))


def _already_done(plan: StudyPlan, state: StudyState, ledger: Ledger, key: str, scope_mark: str,
                  rescreen_since: date | None, result: Triage) -> bool:
    if state.status == OUT_OF_SCOPE:
        if state.model_key == scope_mark:
            result.done += 1
            return True
        return False
    if state.status != SCREENED or plan.problem is not None:
        return False
    if state.sr_path and not (ledger.out_dir / state.sr_path).is_file():
        if state.model_key == key and state.sr_sop_instance_uid:
            result.reuse_sr[plan.study_instance_uid] = state.sr_sop_instance_uid
        return False  # screened again to write its SR again
    if rescreen_since is not None and state.model_key != key and on_or_after(plan.study_date, rescreen_since):
        return False
    result.done += 1
    return True


def _check_earlier_nights(plan: StudyPlan, state: StudyState | None, ledger: Ledger, result: Triage) -> None:
    """A study UID screened for another patient, or a SOP UID recorded in another study."""
    if plan.problem is not None:
        return
    keys = plan.patient_keys
    if state is not None and state.patient_key is not None and len(keys) == 1:
        if ledger.patient_key(next(iter(keys))) != state.patient_key:
            plan.refuse(UID_COLLISION, "StudyInstanceUID was screened for another patient on an earlier night")
            result.collisions.append(plan.study_instance_uid)
            return
    for inst in plan.views:
        owner = ledger.instance_owner(inst.sop_instance_uid)
        if owner is not None and owner != plan.study_instance_uid:
            message = "a SOPInstanceUID of the study is also in another study"
            plan.refuse(UID_COLLISION, message + " (recorded on an earlier night)")
            result.collisions.append(plan.study_instance_uid)
            if ledger.fail_study(owner, f"{UID_COLLISION}: {message} (arrived later)"):
                result.collisions.append(owner)
            return
