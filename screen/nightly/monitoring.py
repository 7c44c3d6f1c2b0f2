"""The night's part of monitoring and calibration, as ``screen run`` applies them.

- which point decides a study (:func:`group_value`: its group's point when the operating point
  has ``group_points``, else the global one);
- the scores it reports (:func:`calibrated`, :func:`calibrated_columns`): calibrated
  probabilities when the operating point carries ``calibration``, the decision itself taken on
  the raw scores;
- what the ledger keeps of each study per run (:func:`night_record`: raw scores, acquisition);
- at the end of the night, :func:`night_monitor`: the checks of :mod:`screen.monitor` over the
  window ending with this run, for ``run.json``'s ``"monitor"`` key
  (``{"alarm": bool, "alarms": [...], ...}``), with one warning line when an alarm is raised. It
  never fails the run: a problem computing it is recorded there and logged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from ensembles.fusion import StudyDecision
from ensembles.operating_point.calibration import FUSED, Calibration
from ensembles.operating_point.point import OperatingPoint, op_id
from screen.monitor.checks import monitor_ledger
from screen.nightly.ledger import Ledger, RunStudy
from screen.nightly.plan import StudyPlan
from screen.site_config import SiteConfig

__all__ = ["algorithm_parameters", "calibrated", "calibrated_columns", "group_value", "night_monitor",
           "night_record"]

log = logging.getLogger("screen.run")

#: The :class:`~dicom_io.index.Instance` attribute of each ``group_by`` field.
_GROUP_ATTRIBUTES = {"BodyPartExamined": "body_part", "Manufacturer": "manufacturer",
                     "ManufacturerModelName": "model_name", "Modality": "modality"}


def group_value(point: OperatingPoint, plan: StudyPlan) -> str | None:
    """The study's value of ``point.group_by`` (its first view's), or ``None``."""
    if point.group_by is None:
        return None
    return str(getattr(plan.first, _GROUP_ATTRIBUTES[point.group_by], "") or "") or None


def calibrated(decision: StudyDecision, calibration: Calibration | None) -> StudyDecision:
    """``decision`` with its fused score as the calibrated probability (unchanged without
    calibration); the vote, the findings and the decision stay as decided."""
    if calibration is None:
        return decision
    return dataclasses.replace(decision, score=calibration.fused_score(decision.score))


def calibrated_columns(columns: Mapping[str, Any], calibration: Calibration | None) -> dict[str, Any]:
    """``studies.csv``'s ``score:<member>`` columns as calibrated probabilities."""
    out = dict(columns)
    if calibration is None:
        return out
    for key, value in columns.items():
        if key.startswith("score:"):
            out[key] = calibration.member_score(key[len("score:"):], value)
    return out


def algorithm_parameters(global_point: OperatingPoint, point: OperatingPoint) -> dict[str, str]:
    """The SR's algorithm parameters that say what its certainty is and which group's point
    decided (``certainty``; ``group`` and ``global-operating-point`` for a group's point)."""
    calibration = global_point.calibration
    out = {"certainty": calibration.statement() if calibration is not None else
           "uncalibrated fused score (not a probability)"}
    if point is not global_point and global_point.group_by is not None:
        value = next((v for v, p in global_point.group_points.items() if p is point), "")
        out["group"] = f"{global_point.group_by}={value}"
        out["global-operating-point"] = op_id(global_point)
    return out


def night_record(plan: StudyPlan, status: str, point: OperatingPoint | None = None,
                 raw: StudyDecision | None = None, columns: Mapping[str, Any] | None = None) -> RunStudy:
    """What the ledger keeps of one study tonight: status, decision, raw scores, acquisition."""
    first = plan.first
    scores: dict[str, float] = {}
    for key, value in (columns or {}).items():
        if key.startswith("score:") and value is not None:
            scores[key[len("score:"):]] = float(value)
    if raw is not None:
        scores[FUSED] = float(raw.score)
    return RunStudy(status=status, flagged=None if raw is None else bool(raw.positive),
                    operating_point_id=None if point is None else op_id(point),
                    manufacturer=first.manufacturer, model=first.model_name, body_part=first.body_part,
                    modality=first.modality, scores=scores)


def night_monitor(ledger: Ledger, point: OperatingPoint, site: SiteConfig, run_id: str) -> dict[str, Any]:
    """The night's monitoring part of ``run.json`` (see the module docstring)."""
    try:
        report = monitor_ledger(ledger, point, site.monitor, until=run_id)
    except Exception as exc:  # noqa: BLE001 - monitoring never fails the night
        log.warning("monitoring not computed: %s", type(exc).__name__)
        return {"alarm": False, "alarms": [], "error": f"{type(exc).__name__}: {exc}"}
    if report is None:
        return {"alarm": False, "alarms": [], "note": "the operating point has no monitoring reference; "
                                                       "retune with screen tune to store one"}
    found = report.to_dict()
    if report.alarm:
        log.warning("monitoring alarm (%d screened studies over %d runs): %s; see screen monitor",
                    report.screened, len(report.nights), "; ".join(report.alarms))
    return found
