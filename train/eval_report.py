"""What ``screen eval`` writes: the paper's table, box metrics, and the per-study predictions file.

- ``predictions.csv``: one row per study, ``study_instance_uid,label,n_images,score:<member>...,
  fused_score[,split]`` (:data:`dicom_io.tables.PREDICTIONS`, the contract ``screen tune``
  reads through the same schema). Scores are written as shortest round-trip text (the one
  float format of :mod:`dicom_io.tables`) so a threshold tuned on them reproduces the same
  decisions.
- ``image_predictions.csv``: one row per image: truth, each member's score and boxes (source
  pixel edges), the ensemble's boxes; failed images carry their reason
  (:data:`dicom_io.tables.IMAGE_PREDICTIONS`).
- ``report.md``: model | config | threshold | accuracy | precision | recall | F1 | study AUC
  (95 % bootstrap CI) for each member at its threshold and for the fused ensemble at the
  operating point, then the box metrics.
- ``metrics.json``: every number above, machine-readable.
- ``reliability.png`` and the report's "Calibration" section: each member's and the fused study
  score's expected calibration error, raw and (when the operating point carries calibration
  maps, :mod:`ensembles.operating_point.calibration`) calibrated, with the reliability diagram
  (:mod:`train.calibration`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dicom_io.atomic import atomic_write_text
from dicom_io.tables import TableSchema, write_table
from ensembles.operating_point.calibration import FUSED, Calibration
from train.box_metrics import BoxMetrics
from train.calibration import expected_calibration_error, plot_reliability, reliability_bins
from train.metrics import Confusion, Interval, bootstrap_auc, confusion, confusion_at

__all__ = [
    "ClassificationResult", "calibration_report", "classification_result", "format_number", "render_report",
    "write_csv", "write_metrics_json",
]


@dataclass(frozen=True)
class ClassificationResult:
    """One row of the paper's table.

    Attributes:
        name: member name or ``ensemble``.
        config: what was run (kind, input size, resize; or the vote rule).
        threshold: the decision threshold applied (``nan`` for the ensemble's vote).
        confusion: study-level counts at that threshold.
        auc: study-level ROC AUC with a bootstrap CI (``None`` with one class only).
    """

    name: str
    config: str
    threshold: float
    confusion: Confusion
    auc: Interval | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "config": self.config, "threshold": self.threshold}
        out.update(self.confusion.to_dict())
        out["precision"], out["recall"] = self.confusion.precision, self.confusion.recall
        out["auc"] = self.auc.value if self.auc else math.nan
        out["auc_low"] = self.auc.low if self.auc else math.nan
        out["auc_high"] = self.auc.high if self.auc else math.nan
        return out


def classification_result(
    name: str,
    config: str,
    labels: Sequence[bool],
    scores: Sequence[float],
    threshold: float,
    *,
    decisions: Sequence[bool] | None = None,
    bootstrap: int = 2000,
    seed: int = 0,
) -> ClassificationResult:
    """Counts at ``threshold`` (or the given ``decisions``) and the AUC of ``scores``.

    Args:
        name: row name.
        config: row description.
        labels: truth per study.
        scores: the study scores (AUC; and the decision when ``decisions`` is ``None``).
        threshold: studies with ``score >= threshold`` are called positive.
        decisions: explicit calls (the ensemble's vote), overriding the threshold.
        bootstrap: resamples of the AUC interval (0 skips the interval).
        seed: bootstrap seed.
    """
    truth = np.asarray(labels, dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    counts = confusion(truth, decisions) if decisions is not None else confusion_at(truth, values, threshold)
    auc: Interval | None = None
    if truth.any() and not truth.all():
        if bootstrap > 0:
            auc = bootstrap_auc(truth, values, n_resamples=bootstrap, seed=seed)
        else:
            from train.metrics import roc_auc

            auc = Interval(roc_auc(truth, values), math.nan, math.nan, 0.95, truth.size, "none")
    return ClassificationResult(name, config, float(threshold), counts, auc)


def format_number(value: float | None, digits: int = 3) -> str:
    """A table cell: fixed digits, ``n/a`` for missing or ``nan``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def write_csv(path: Path, schema: TableSchema, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write rows (missing keys empty) atomically as ``schema`` declares them."""
    return write_table(path, schema, rows, columns)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_metrics_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``metrics.json`` (``nan`` becomes ``null``) atomically."""
    atomic_write_text(path, json.dumps(_json_safe(dict(data)), indent=2, sort_keys=True) + "\n")
    return path


def _auc_cell(row: ClassificationResult) -> str:
    if row.auc is None:
        return "n/a (one class)"
    if math.isnan(row.auc.low):
        return format_number(row.auc.value)
    return f"{row.auc.value:.3f} ({row.auc.low:.3f}-{row.auc.high:.3f})"


def render_report(
    *,
    title: str,
    facts: Sequence[tuple[str, str]],
    rows: Sequence[ClassificationResult],
    boxes: Sequence[BoxMetrics],
    notes: Sequence[str] = (),
) -> str:
    """``report.md``: facts, the paper's table, the box table and notes."""
    lines = [f"# {title}", ""]
    lines += [f"- {key}: {value}" for key, value in facts]
    lines += [
        "", "## Study-level classification", "",
        "Each member at its own threshold (a study is positive when its highest image score "
        "reaches it); the ensemble at the operating point's vote. AUC from the study scores "
        "(the fused score for the ensemble), 95 % percentile bootstrap over studies.", "",
        "| model | config | threshold | accuracy | precision | recall | F1 | TP | FP | TN | FN | study AUC (95% CI) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        c = row.confusion
        lines.append(
            f"| {row.name} | {row.config} | {format_number(row.threshold)} | {format_number(c.accuracy)} | "
            f"{format_number(c.precision)} | {format_number(c.recall)} | {format_number(c.f1)} | "
            f"{c.tp} | {c.fp} | {c.tn} | {c.fn} | {_auc_cell(row)} |"
        )
    if boxes:
        lines += [
            "", "## Boxes", "",
            "Reported boxes score at least the member's threshold (the ensemble's are its fused "
            "findings); greedy matching by score. mAP (pycocotools) ranks every box.", "",
            "| model | truth boxes | reported | F1 @0.5 | precision @0.5 | recall @0.5 | mean IoU (matched @0.5) "
            "| matched @IoU>=0.3 | mAP @[.5:.95] | AP @.5 |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for b in boxes:
            lines.append(
                f"| {b.name} | {b.n_truth} | {b.n_reported} | {format_number(b.at_50.f1)} | "
                f"{format_number(b.at_50.precision)} | {format_number(b.at_50.recall)} | "
                f"{format_number(b.at_50.mean_iou)} | {format_number(b.recall_30)} | "
                f"{format_number(b.map)} | {format_number(b.map_50)} |"
            )
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def calibration_report(study_rows: Sequence[Mapping[str, Any]], members: Sequence[str],
                       calibration: Calibration | None, out_dir: Path) -> tuple[list[str], dict[str, Any], Path]:
    """The report's calibration section, its ``metrics.json`` part and ``reliability.png``:
    ECE of each member's and the fused study score, raw and calibrated (when ``calibration``)."""
    labels = np.array([r["label"] == "fracture" for r in study_rows], dtype=bool)
    data: dict[str, Any] = {"method": None if calibration is None else calibration.method, "scores": {}}
    curves: dict[str, Any] = {}
    table = ["| score | ECE raw | ECE calibrated |", "|---|---|---|"]
    for name in (*members, FUSED):
        key = "fused_score" if name == FUSED else f"score:{name}"
        raw = np.array([math.nan if r.get(key) is None else float(r[key]) for r in study_rows], dtype=np.float64)
        mapped = None
        if calibration is not None:
            found = calibration.fused if name == FUSED else calibration.members.get(name)
            mapped = None if found is None else found.apply(raw)
        before = expected_calibration_error(raw, labels)
        after = None if mapped is None else expected_calibration_error(mapped, labels)
        data["scores"][name] = {"ece_raw": before, "ece_calibrated": after}
        curves[f"{name} raw"] = reliability_bins(raw, labels)
        if mapped is not None:
            curves[f"{name} calibrated"] = reliability_bins(mapped, labels)
        table.append(f"| {name} | {format_number(before)} | {format_number(after)} |")
    image = plot_reliability(curves, out_dir / "reliability.png", "Reliability (study scores)")
    wording = ("no calibration maps in the operating point: raw scores only" if calibration is None else
               f"calibrated scores are the {calibration.statement()}")
    lines = ["", "## Calibration", "",
             f"Expected calibration error (10 equal-width bins) on these {labels.size} studies; {wording}.", "",
             *table, "", "![Reliability diagram](reliability.png)", ""]
    return lines, data, image
