"""The "not screened" SR: a short report in a study the screener could not or may not screen.

Why: a study that failed (unreadable images, a decode timeout) or was out of the members'
intended use (another body part, a child) would otherwise have no AI object in the PACS, and
the reading room cannot tell "not screened" from "no AI finding". Opt-in (``[output]
write_gap_sr``). Wording: "not screened by AI: <reason>" (the reason code of ``studies.csv``
and its words); never a finding, never "normal".

Shape: a Comprehensive SR without template (the TID 1500 of a screened study would need
measurements): root CONTAINER "Diagnostic imaging report" holding one TEXT "Comment" with the
sentence, the algorithm's name and version, and its intended-use notice. Patient and study
attributes come from the first source header; the sources are the evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

from highdicom.sr import (
    CodedConcept,
    ComprehensiveSR,
    ContainerContentItem,
    ContentSequence,
    RelationshipTypeValues,
    TextContentItem,
)
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_io.errors import InvalidArgumentError, SRError
from dicom_io.sr.build import with_valid_dates
from dicom_io.sr.library import evidence_header, redact_names
from dicom_io.sr.model import INTENDED_USE_NOTICES, AlgorithmInfo

__all__ = ["NOT_SCREENED", "SERIES_DESCRIPTION", "build_gap_sr", "not_screened_text"]

NOT_SCREENED = "not screened by AI"
SERIES_DESCRIPTION = "AI fracture screen: not screened"
_TITLE = CodedConcept(value="18748-4", scheme_designator="LN", meaning="Diagnostic imaging report")
_COMMENT = CodedConcept(value="121106", scheme_designator="DCM", meaning="Comment")
_ALGORITHM_NAME = CodedConcept(value="111001", scheme_designator="DCM", meaning="Algorithm Name")
_ALGORITHM_VERSION = CodedConcept(value="111003", scheme_designator="DCM", meaning="Algorithm Version")


def not_screened_text(reason: str) -> str:
    """``"not screened by AI: <reason>"`` (the reason on one line, at most 1000 characters)."""
    words = " ".join(str(reason).split()) or "no reason recorded"
    return f"{NOT_SCREENED}: {words}"[:1000]


def build_gap_sr(
    sources: Sequence[Dataset],
    reason: str,
    *,
    algorithm: AlgorithmInfo,
    series_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
    institution_name: str | None = None,
    manufacturer: str = "fracture-screen",
) -> Dataset:
    """Build the SR saying the study was not screened by AI, and why.

    Args:
        sources: headers of the study's instances (one study); patient and study attributes
            come from the first.
        reason: why (``studies.csv`` reason, e.g. ``body-part: HAND not in scope``).
        algorithm: the screener's identification.
        series_instance_uid: the gap SR series of the run (new).
        series_number: its number.
        instance_number: the SR's number in the series.
        sop_instance_uid: its UID; a new one when ``None``.
        institution_name: Institution Name of the equipment, when given.
        manufacturer: Manufacturer of the equipment.

    Raises:
        InvalidArgumentError: no sources, or sources of several studies.
        SRError: highdicom could not build the document.
    """
    if not sources:
        raise InvalidArgumentError("a not-screened SR needs the study's headers: pass at least one")
    clean = [with_valid_dates(ds) for ds in sources]
    if len({str(ds.get("StudyInstanceUID", "")) for ds in clean}) != 1:
        raise InvalidArgumentError("a not-screened SR reports on one study; the sources span several")
    texts = [(_COMMENT, not_screened_text(reason)), (_ALGORITHM_NAME, algorithm.name),
             (_ALGORITHM_VERSION, algorithm.version)]
    notice = INTENDED_USE_NOTICES.get(algorithm.intended_use, "")
    if notice:
        texts.append((_COMMENT, notice))
    root = ContainerContentItem(name=_TITLE)
    root.ContentSequence = ContentSequence(
        [TextContentItem(name=name, value=value, relationship_type=RelationshipTypeValues.CONTAINS)
         for name, value in texts]
    )
    try:
        return ComprehensiveSR(
            evidence=[evidence_header(clean[0]), *clean[1:]], content=root,
            series_instance_uid=series_instance_uid, series_number=series_number,
            sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=instance_number,
            manufacturer=manufacturer, is_complete=True, institution_name=institution_name,
            series_description=SERIES_DESCRIPTION,
            software_versions=f"{algorithm.name} {algorithm.version}"[:64],
        )
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        detail = f"{type(exc).__name__}: {redact_names(str(exc), clean)}"
        study = clean[0].get("StudyInstanceUID", "?")
        raise SRError(f"cannot build the not-screened SR of study {study}: {detail}") from exc
