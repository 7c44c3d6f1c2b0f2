"""Build and write the DICOM SR of one screened study (Comprehensive SR, TID 1500).

Why this shape: the morning reader's PACS shows the SR next to the images, so it must carry the
study's own UIDs and patient/study attributes (copied from the first source by highdicom), a new
series, point at the exact pixels of each box, and say which algorithm, version and operating
point made the call. :mod:`dicom_io.sr.content` decides the content tree; this module validates
the inputs and assembles the document.

Comprehensive SR (not Comprehensive 3D SR) because the regions are 2D image coordinates on a
projection radiograph without a frame of reference; ``dciodvfy`` and PixelMed accept it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from copy import deepcopy
from pathlib import Path

import numpy as np
from highdicom.sr import ComprehensiveSR
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid

from dicom_io.atomic import atomic_write_bytes
from dicom_io.errors import InvalidArgumentError, SRError
from dicom_io.sr import codes as sr_codes
from dicom_io.sr.content import finding_group, measurement_report
from dicom_io.sr.library import evidence_header, redact_names
from dicom_io.sr.model import AlgorithmInfo, SRFinding

__all__ = ["BOX_TOLERANCE_PX", "build_screening_sr", "write_sr"]

BOX_TOLERANCE_PX = 1e-3
"""How far (in pixels) a box may reach outside the image (float rounding) before it is an error;
boxes within the tolerance are clamped to the image."""

SERIES_DESCRIPTION = "AI fracture screen"


def _required(ds: Dataset, keyword: str, index: int) -> str:
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        raise InvalidArgumentError(
            f"source {index} lacks {keyword}; pass the screened images' full headers "
            "(pydicom.dcmread(path, stop_before_pixels=True))"
        )
    return str(value)


_TEMPORAL_FORMS = {
    "DA": re.compile(r"\d{8}"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "DT": re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?"),
}


def with_valid_dates(ds: Dataset) -> Dataset:
    """A copy of a source header whose malformed dates and times (``1970-01-31`` as a DA) are
    emptied, so the attributes the SR copies cannot stop it being written.

    The raw bytes are checked without pydicom's value conversion, which would warn and log the
    bad value (a patient's birth date) verbatim. Type 2 attributes may be empty; the source
    file itself is not changed.
    """
    clean = deepcopy(ds)
    for tag in list(clean.keys()):
        element = clean.get_item(tag)
        vr = element.VR
        if vr is None or vr == "UN":
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
        form = _TEMPORAL_FORMS.get(str(vr))
        value = getattr(element, "value", None)
        if form is None or value is None:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        parts = [part.strip(" \x00") for part in text.split("\\")]
        if any(part and not form.fullmatch(part) for part in parts):
            clean[tag] = DataElement(tag, str(vr), "")
    return clean


def _check_sources(sources: Sequence[Dataset]) -> dict[str, Dataset]:
    """Validate the sources and index them by SOP Instance UID."""
    if isinstance(sources, Dataset) or len(sources) == 0:
        raise InvalidArgumentError("sources must be a non-empty sequence of the study's image datasets")
    by_uid: dict[str, Dataset] = {}
    study = _required(sources[0], "StudyInstanceUID", 0)
    for index, ds in enumerate(sources):
        if not isinstance(ds, Dataset):
            raise InvalidArgumentError(f"source {index} is a {type(ds).__name__}, not a pydicom Dataset")
        uid = _required(ds, "SOPInstanceUID", index)
        _required(ds, "SOPClassUID", index)
        if _required(ds, "StudyInstanceUID", index) != study:
            raise InvalidArgumentError(
                f"source {index} ({uid}) belongs to study {ds.StudyInstanceUID}, not {study}: "
                "one SR reports on one study"
            )
        for keyword in ("Rows", "Columns"):
            if not isinstance(ds.get(keyword), int) or ds.get(keyword) <= 0:
                raise InvalidArgumentError(
                    f"source {index} ({uid}) has no valid {keyword}; it is not an image"
                )
        if uid in by_uid:
            raise InvalidArgumentError(f"source {index} repeats SOP Instance UID {uid}")
        by_uid[uid] = ds
    return by_uid


def _clamped_box(
    box: tuple[float, float, float, float], ds: Dataset, index: int
) -> tuple[float, float, float, float]:
    """Finding ``index``'s box, checked against its image and clamped within the tolerance."""
    cols, rows = float(ds.Columns), float(ds.Rows)
    col0, row0, col1, row1 = box
    tol = BOX_TOLERANCE_PX
    if col0 < -tol or row0 < -tol or col1 > cols + tol or row1 > rows + tol:
        raise InvalidArgumentError(
            f"finding {index}: box {box} reaches outside its image "
            f"(0..{int(cols)} columns, 0..{int(rows)} rows); pass source pixel-edge coordinates "
            "(ResizeSpec.box_to_source), columns first"
        )
    return (max(col0, 0.0), max(row0, 0.0), min(col1, cols), min(row1, rows))


def _probability(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{what} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise InvalidArgumentError(
            f"{what} must be in [0, 1] (a probability, not a percentage), got {number}"
        )
    return number


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{what} must be a positive int, got {value!r}")
    return value


def _long_string(value: object, what: str) -> str:
    """A DICOM LO value: a string of at most 64 characters without backslash."""
    if not isinstance(value, str) or not value.strip() or len(value) > 64 or "\\" in value:
        raise InvalidArgumentError(
            f"{what} must be a non-empty string of at most 64 characters without '\\', got {value!r}"
        )
    return value


def _check_findings(findings: Sequence[SRFinding], by_uid: dict[str, Dataset], positive: bool) -> None:
    if not positive and len(findings) > 0:
        raise InvalidArgumentError(
            f"a negative study cannot carry findings (got {len(findings)}); pass positive=True "
            "or drop the findings"
        )
    for index, finding in enumerate(findings):
        if not isinstance(finding, SRFinding):
            raise InvalidArgumentError(f"finding {index} is a {type(finding).__name__}, not an SRFinding")
        if finding.source_sop_instance_uid not in by_uid:
            raise InvalidArgumentError(
                f"finding {index} is on image {finding.source_sop_instance_uid}, which is not among "
                "the sources; pass that image's header in sources"
            )


def _check_series(series_instance_uid: object, sources: Sequence[Dataset]) -> str:
    if not isinstance(series_instance_uid, str) or not series_instance_uid.strip():
        raise InvalidArgumentError(f"series_instance_uid must be a UID string, got {series_instance_uid!r}")
    for index, ds in enumerate(sources):
        if str(ds.get("SeriesInstanceUID", "")) == series_instance_uid:
            raise InvalidArgumentError(
                f"series_instance_uid is the series of source {index}; the SR needs a new series "
                "(pydicom.uid.generate_uid())"
            )
    return series_instance_uid


def _check_supersedes(supersedes: Sequence[Dataset], study_uid: str, sop_uid: str) -> None:
    for index, previous in enumerate(supersedes):
        for keyword in ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID"):
            if not str(previous.get(keyword, "") or "").strip():
                raise InvalidArgumentError(
                    f"supersedes[{index}] lacks {keyword}; pass the earlier SR dataset"
                )
        if str(previous.StudyInstanceUID) != study_uid:
            raise InvalidArgumentError(
                f"supersedes[{index}] ({previous.SOPInstanceUID}) belongs to another study; "
                "an SR only supersedes SRs of its own study"
            )
        if str(previous.SOPInstanceUID) == sop_uid:
            raise InvalidArgumentError(
                f"supersedes[{index}] has this SR's own SOP Instance UID {sop_uid}; a new SR needs a new UID"
            )


def build_screening_sr(
    sources: Sequence[Dataset],
    findings: Sequence[SRFinding],
    *,
    positive: bool,
    score: float,
    algorithm: AlgorithmInfo,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    sop_instance_uid: str | None = None,
    supersedes: Sequence[Dataset] = (),
    institution_name: str | None = None,
    manufacturer: str = "fracture-screen",
) -> Dataset:
    """Build the Comprehensive SR (TID 1500) reporting one screened study.

    Args:
        sources: the screened images' headers (same study); patient and study attributes are
            copied from the first. Never modified.
        findings: fused findings, each on one of the sources; empty for a negative study.
        positive: the study decision; a negative study must have no findings.
        score: the fused study score in ``[0, 1]``.
        algorithm: name, version, operating point and members of the screener.
        series_instance_uid: the SR's (new) series; the caller keeps one per run.
        series_number: its number.
        instance_number: the SR's number within the series.
        sop_instance_uid: the SR's UID; a new one when ``None``.
        supersedes: earlier SRs of this study that this one replaces (written as predecessor
            documents).
        institution_name: written as the SR's Institution Name when given.
        manufacturer: the SR's Manufacturer.

    Returns:
        The SR dataset (a :class:`highdicom.sr.ComprehensiveSR`), ready for :func:`write_sr`.

    Raises:
        InvalidArgumentError: an argument is inconsistent (the message names it and the fix).
        SRError: highdicom could not build the document.
    """
    sources = [with_valid_dates(ds) if isinstance(ds, Dataset) else ds for ds in sources]
    by_uid = _check_sources(sources)
    study_uid = str(sources[0].StudyInstanceUID)
    if not isinstance(algorithm, AlgorithmInfo):
        raise InvalidArgumentError(f"algorithm must be an AlgorithmInfo, got {type(algorithm).__name__}")
    if not isinstance(positive, (bool, np.bool_)):
        raise InvalidArgumentError(f"positive must be a bool, got {positive!r}")
    _check_findings(findings, by_uid, bool(positive))
    _long_string(manufacturer, "manufacturer")
    if institution_name is not None:
        _long_string(institution_name, "institution_name")
    sop_uid = sop_instance_uid or generate_uid()
    _check_supersedes(supersedes, study_uid, sop_uid)
    try:
        return _build(
            sources, by_uid, findings, positive=bool(positive), score=_probability(score, "score"),
            algorithm=algorithm, series_instance_uid=_check_series(series_instance_uid, sources),
            series_number=_positive_int(series_number, "series_number"),
            instance_number=_positive_int(instance_number, "instance_number"), sop_uid=sop_uid,
            supersedes=supersedes, institution_name=institution_name, manufacturer=manufacturer,
        )  # fmt: skip
    except InvalidArgumentError:
        raise
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        detail = f"{type(exc).__name__}: {redact_names(str(exc), sources)}"
        raise SRError(f"cannot build the SR of study {study_uid}: {detail}") from exc


def _build(
    sources: Sequence[Dataset],
    by_uid: dict[str, Dataset],
    findings: Sequence[SRFinding],
    *,
    positive: bool,
    score: float,
    algorithm: AlgorithmInfo,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    sop_uid: str,
    supersedes: Sequence[Dataset],
    institution_name: str | None,
    manufacturer: str,
) -> Dataset:
    """The highdicom part of :func:`build_screening_sr`, after validation."""
    groups = []
    n_boxes = n_images = 0
    for index, finding in enumerate(findings):
        ds = by_uid[finding.source_sop_instance_uid]
        if finding.box is None:
            n_images += 1
            label = f"{sr_codes.IMAGE_FINDING_PREFIX} {n_images}"
            box = (0.0, 0.0, float(ds.Columns), float(ds.Rows))
        else:
            n_boxes += 1
            label = f"{sr_codes.ROI_FINDING_PREFIX} {n_boxes}"
            box = _clamped_box(finding.box, ds, index)
        groups.append(finding_group(finding, box, ds, label, algorithm, sop_uid))
    report = measurement_report(
        sources, groups, positive=positive, score=score, algorithm=algorithm, manufacturer=manufacturer
    )
    return ComprehensiveSR(
        evidence=[evidence_header(sources[0]), *sources[1:]],
        content=report[0],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=manufacturer,
        is_complete=True,
        institution_name=institution_name,
        previous_versions=list(supersedes) or None,
        series_description=SERIES_DESCRIPTION,
        software_versions=f"{algorithm.name} {algorithm.version}"[:64],
    )


def write_sr(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file at ``path`` atomically (temp file, fsync, rename).

    Returns:
        ``path``.

    Raises:
        SRError: the dataset cannot be encoded.
    """
    target = Path(path)
    buffer = io.BytesIO()
    try:
        dcmwrite(buffer, ds, enforce_file_format=True)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        uid, detail = ds.get("SOPInstanceUID", "?"), redact_names(str(exc), [ds])
        raise SRError(f"cannot encode the SR {uid}: {type(exc).__name__}: {detail}") from exc
    atomic_write_bytes(target, buffer.getvalue())
    return target
