"""Reading a labels CSV: the truth that ``screen prepare`` and ``screen eval`` learn and judge by.

Format (``docs/phantom.md``, "Labels"): one row per fracture box, and one row with empty
coordinates per normal image::

    StudyInstanceUID,SOPInstanceUID,label,x0,y0,x1,y1[,PatientID,SeriesInstanceUID]

``label`` is ``fracture`` or ``normal`` (any case); ``x0, y0, x1, y1`` are source pixel-edge
columns/rows (:mod:`dicom_io.geometry`). A ``fracture`` row with empty coordinates is an
image-level label without a box (it trains the classifier, not the detectors). Every problem
raises :class:`LabelsError` naming the file, the line and the fix, because a silently dropped
label changes what a model learns. The columns and their types are declared in
:data:`dicom_io.tables.LABELS` (read through :func:`dicom_io.tables.read_table`); other columns
are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dicom_io.tables import LABELS, format_float, read_table, records
from train.errors import TrainError

__all__ = ["REQUIRED_COLUMNS", "BOX_COLUMNS", "ImageLabel", "LabelsError", "read_labels", "study_labels"]

REQUIRED_COLUMNS: tuple[str, ...] = tuple(c.name for c in LABELS.columns if c.required)
BOX_COLUMNS: tuple[str, ...] = ("x0", "y0", "x1", "y1")
LABEL_VALUES: tuple[str, ...] = ("fracture", "normal")

PixelBox = tuple[float, float, float, float]


class LabelsError(TrainError, ValueError):
    """A labels CSV is missing, malformed or contradicts itself."""


@dataclass(frozen=True)
class ImageLabel:
    """The truth for one image.

    Attributes:
        study_instance_uid: the study the image belongs to.
        sop_instance_uid: the image.
        fracture: whether the image shows a fracture.
        boxes_px: fracture boxes ``(col0, row0, col1, row1)`` in source pixel edges (may be
            empty for a fracture labelled without a box).
        patient_id: PatientID from the CSV when it has that column ("" otherwise); the DICOM
            header's value wins where both exist.
    """

    study_instance_uid: str
    sop_instance_uid: str
    fracture: bool
    boxes_px: tuple[PixelBox, ...] = ()
    patient_id: str = ""


def _box(path: Path, line: int, row: Mapping[str, Any]) -> PixelBox | None:
    given: list[float | None] = [row.get(key) for key in BOX_COLUMNS]
    texts = ["" if v is None else format_float(v) for v in given]
    values = tuple(v for v in given if v is not None)
    if not values:
        return None
    if len(values) < len(BOX_COLUMNS):
        raise LabelsError(
            f"{path}:{line}: give all of x0, y0, x1, y1 or none of them, got {texts}"
        )
    if not all(math.isfinite(v) for v in values) or min(values) < 0:
        raise LabelsError(f"{path}:{line}: box coordinates must be finite and >= 0, got {texts}")
    x0, y0, x1, y1 = values
    if not (x1 > x0 and y1 > y0):
        raise LabelsError(
            f"{path}:{line}: box needs x0 < x1 and y0 < y1 (source pixel edges), got {texts}"
        )
    return (x0, y0, x1, y1)


def read_labels(path: str | Path) -> dict[str, ImageLabel]:
    """Read a labels CSV into ``{SOPInstanceUID: ImageLabel}`` (in file order).

    Raises:
        LabelsError: the file is missing or unreadable, a required column is absent, a label is
            not ``fracture``/``normal``, a box is malformed, a ``normal`` row has a box, one
            image is labelled both ways, or one image is listed under two studies.
    """
    file = Path(path)
    if not file.is_file():
        raise LabelsError(f"labels CSV {str(file)!r} does not exist; pass --labels FILE")
    frame = read_table(file, LABELS, error=LabelsError)
    study_of: dict[str, str] = {}
    fracture_of: dict[str, bool] = {}
    boxes_of: dict[str, list[PixelBox]] = {}
    patient_of: dict[str, str] = {}
    for line, row in zip(frame.index, records(frame)):
        study = (row.get("StudyInstanceUID") or "").strip()
        sop = (row.get("SOPInstanceUID") or "").strip()
        if not study or not sop:
            raise LabelsError(f"{file}:{line}: StudyInstanceUID and SOPInstanceUID must not be empty")
        label = (row.get("label") or "").strip().lower()
        if label not in LABEL_VALUES:
            raise LabelsError(
                f"{file}:{line}: label must be one of {', '.join(LABEL_VALUES)}, got {row.get('label') or ''!r}"
            )
        box = _box(file, line, row)
        fracture = label == "fracture"
        if not fracture and box is not None:
            raise LabelsError(f"{file}:{line}: a normal image must have empty x0, y0, x1, y1")
        if sop in study_of:
            if study_of[sop] != study:
                raise LabelsError(
                    f"{file}:{line}: SOPInstanceUID {sop} is listed under studies {study_of[sop]} "
                    f"and {study}; an image belongs to one study"
                )
            if fracture_of[sop] != fracture:
                raise LabelsError(
                    f"{file}:{line}: SOPInstanceUID {sop} is labelled both fracture and normal"
                )
        study_of[sop] = study
        fracture_of[sop] = fracture
        boxes = boxes_of.setdefault(sop, [])
        if box is not None:
            boxes.append(box)
        patient = (row.get("PatientID") or "").strip()
        if patient:
            patient_of.setdefault(sop, patient)
    return {
        sop: ImageLabel(study_of[sop], sop, fracture_of[sop], tuple(boxes_of[sop]), patient_of.get(sop, ""))
        for sop in study_of
    }


def study_labels(labels: Mapping[str, ImageLabel]) -> dict[str, bool]:
    """``{StudyInstanceUID: positive}``: a study is positive when any of its images is."""
    studies: dict[str, bool] = {}
    for item in labels.values():
        studies[item.study_instance_uid] = studies.get(item.study_instance_uid, False) or item.fracture
    return studies
