"""Read a screening SR back with highdicom: the study decision, the findings, the algorithm.

Why: tests prove each SR says what the run decided (same boxes, same scores), and the nightly
runner reads a study's previous SR when a new one supersedes it. Only the layout written by
:func:`dicom_io.sr.build.build_screening_sr` (see :mod:`dicom_io.sr.content`) is understood;
anything else is an :class:`~dicom_io.errors.SRError` naming what is missing.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from highdicom.sr import ComprehensiveSR, MeasurementReport, ValueTypeValues, srread
from highdicom.sr.utils import find_content_items
from pydicom.dataset import Dataset

from dicom_io.errors import DicomIOError, SRError
from dicom_io.sr import codes as sr_codes
from dicom_io.sr.library import redact_names
from dicom_io.sr.model import RESERVED_PARAMETER_KEYS, AlgorithmInfo, SRFinding, SRReadback

__all__ = ["read_sr", "read_sr_findings"]

_ALGORITHM_NAME = ("111001", "DCM")
_ALGORITHM_VERSION = ("111003", "DCM")
_ALGORITHM_PARAMETERS = ("111002", "DCM")


def _code(concept: Dataset) -> tuple[str, str]:
    return str(concept.CodeValue), str(concept.CodingSchemeDesignator)


def _is(concept: Dataset, code: Any) -> bool:
    return _code(concept) == (code.value, code.scheme_designator)


def _texts(item: Dataset, code: tuple[str, str]) -> list[str]:
    """The TEXT children of ``item`` with the given concept name."""
    return [
        str(child.TextValue)
        for child in find_content_items(item, value_type=ValueTypeValues.TEXT)
        if _code(child.ConceptNameCodeSequence[0]) == code
    ]


def _parameters(item: Dataset) -> dict[str, str]:
    params: dict[str, str] = {}
    for text in _texts(item, _ALGORITHM_PARAMETERS):
        key, sep, value = text.partition("=")
        if not sep:
            raise SRError(f"algorithm parameter {text!r} is not key=value; not a fracture-screen SR")
        params[key] = value
    return params


def _algorithm(item: Dataset) -> AlgorithmInfo:
    names, versions = _texts(item, _ALGORITHM_NAME), _texts(item, _ALGORITHM_VERSION)
    if len(names) != 1 or len(versions) != 1:
        raise SRError("the study decision lacks its algorithm identification; not a fracture-screen SR")
    params = _parameters(item)
    if "operating-point" not in params:
        raise SRError("the algorithm parameters lack operating-point=...; not a fracture-screen SR")
    members = tuple((k.removeprefix("member:"), v) for k, v in params.items() if k.startswith("member:"))
    extra = {
        k: v for k, v in params.items() if not k.startswith("member:") and k not in RESERVED_PARAMETER_KEYS
    }
    return AlgorithmInfo(
        name=names[0], version=versions[0], operating_point_id=params["operating-point"],
        members=members, parameters=extra,
        intended_use=params.get("intended-use", "unknown"),  # SRs written before it was recorded
    )  # fmt: skip


def _percent(items: list[Dataset], what: str) -> float:
    """The one "Certainty of Finding" among ``items`` as a fraction."""
    values = [i for i in items if _is(i.ConceptNameCodeSequence[0], sr_codes.CERTAINTY_OF_FINDING)]
    if len(values) != 1:
        raise SRError(f"{what} has {len(values)} Certainty of Finding values, expected 1")
    measured = values[0].MeasuredValueSequence[0]
    if not _is(measured.MeasurementUnitsCodeSequence[0], sr_codes.PERCENT):
        raise SRError(f"{what}: Certainty of Finding is not in percent")
    value = measured.get("FloatingPointValue", measured.NumericValue)
    return float(value) / 100.0


def _decision(report: MeasurementReport) -> tuple[bool, float, AlgorithmInfo]:
    """The report-level decision: Present/Absent, the study score, the algorithm."""
    containers = find_content_items(
        report[0], name=sr_codes.QUALITATIVE_EVALUATIONS, value_type=ValueTypeValues.CONTAINER
    )
    if len(containers) != 1:
        raise SRError(f"expected one report-level Qualitative Evaluations container, found {len(containers)}")
    items = find_content_items(containers[0], name=sr_codes.FRACTURE_OF_BONE, value_type=ValueTypeValues.CODE)
    if len(items) != 1:
        raise SRError(f"expected one report-level 'Fracture of bone' evaluation, found {len(items)}")
    value = items[0].ConceptCodeSequence[0]
    if _is(value, sr_codes.PRESENT):
        positive = True
    elif _is(value, sr_codes.ABSENT):
        positive = False
    else:
        raise SRError(
            f"the study decision 'Fracture of bone' is {value.CodeMeaning!r}, expected Present or Absent"
        )
    score = _percent(list(items[0].get("ContentSequence", [])), "the study decision")
    return positive, score, _algorithm(containers[0])


def _box(graphic: np.ndarray, what: str) -> tuple[float, float, float, float]:
    """The axis-aligned box of a closed 5-point rectangle (column, row)."""
    points = np.asarray(graphic, dtype=np.float64).reshape(-1, 2)
    if len(points) != 5 or not np.allclose(points[0], points[-1]):
        raise SRError(f"{what}: expected a closed 5-point rectangle, got {len(points)} points")
    cols, rows = points[:, 0], points[:, 1]
    return (float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max()))


def _findings(report: MeasurementReport) -> list[SRFinding]:
    findings: list[SRFinding] = []
    for number, group in enumerate(report.get_planar_roi_measurement_groups(), start=1):
        what = group.tracking_identifier or f"group {number}"
        region = group.roi
        if region is None or group.finding_type != sr_codes.FRACTURE_OF_BONE:
            raise SRError(f"{what} is not a 'Fracture of bone' region")
        uid = str(region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        image_level = what.startswith(sr_codes.IMAGE_FINDING_PREFIX)
        box = None if image_level else _box(region.value, what)
        params = _parameters(group[0])
        members = tuple(m for m in params.get("finding-members", "").split(",") if m)
        score = _percent(list(group[0].ContentSequence), what)
        findings.append(SRFinding(uid, box, score, members, params.get("finding-level")))
    return findings


def _open(source: str | os.PathLike[str] | Dataset) -> ComprehensiveSR:
    """The SR as highdicom reads it (a built, unwritten SR is re-read: only then is its content
    a ``MeasurementReport``)."""
    name = "dataset" if isinstance(source, Dataset) else os.fspath(source)
    try:
        if isinstance(source, Dataset):
            return ComprehensiveSR.from_dataset(source)
        document = srread(os.fspath(source))
    except (OSError, RuntimeError, ValueError, AttributeError) as exc:
        raise SRError(f"cannot read the SR {name}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(document, ComprehensiveSR):
        raise SRError(
            f"{name} is a {type(document).__name__}, not a Comprehensive SR written by fracture-screen"
        )
    return document


def read_sr(source: str | os.PathLike[str] | Dataset) -> SRReadback:
    """Read a screening SR (a path or a dataset) back into plain values.

    Findings come back in the order they were written (the order given to the builder), with
    ``box=None`` for image-level findings.

    Raises:
        SRError: not a readable fracture-screen SR (the message says what is off).
    """
    document = _open(source)
    report = document.content
    if not isinstance(report, MeasurementReport):
        raise SRError("the SR's content is not a TID 1500 Measurement Report")
    try:
        positive, score, algorithm = _decision(report)
        findings = _findings(report)
        predecessors = tuple(
            str(instance.ReferencedSOPInstanceUID)
            for study_item in document.get("PredecessorDocumentsSequence", [])
            for series in study_item.ReferencedSeriesSequence
            for instance in series.ReferencedSOPSequence
        )
        return SRReadback(
            sop_instance_uid=str(document.SOPInstanceUID),
            study_instance_uid=str(document.StudyInstanceUID),
            positive=positive,
            score=score,
            findings=tuple(findings),
            algorithm=algorithm,
            source_sop_instance_uids=tuple(str(sop) for _, _, sop, _ in document.get_evidence()),
            predecessor_sop_instance_uids=predecessors,
        )
    except DicomIOError:
        raise
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        detail = f"{type(exc).__name__}: {redact_names(str(exc), [document])}"
        raise SRError(f"the SR's content is not what fracture-screen writes: {detail}") from exc


def read_sr_findings(
    source: str | os.PathLike[str] | Dataset,
) -> list[tuple[str, tuple[float, float, float, float] | None, float]]:
    """``(source SOP Instance UID, box or None, score)`` of each finding of a screening SR.

    Boxes are ``(col0, row0, col1, row1)`` in source pixel-edge coordinates, scores in
    ``[0, 1]``, in the order they were written; ``None`` marks an image-level finding.
    """
    return [(f.source_sop_instance_uid, f.box, f.score) for f in read_sr(source).findings]
