"""Withdrawing results a PACS already holds: an IHE IOCM rejection note (a Key Object Selection).

When a study changes (it gained or lost images) and is screened again, the results sent for
its earlier content are out of date. IHE Imaging Object Change Management (IOCM) withdraws
instances by sending a Key Object Selection Document (highdicom ``ko``, TID 2010) in the same
study whose document title says why and which lists the instances; an IOCM-aware archive hides
them (and forwards the note), any other PACS shows the note itself next to the results.

Title: ``(113001, DCM, "Rejected for Quality Reasons")``. IOCM's CID 7011 offers it, "Rejected
for Patient Safety Reasons" (113037), "Incorrect Modality Worklist Entry" (113038) and "Data
Retention Policy Expired" (113039). A superseded screening result is not wrong for another
patient and not dangerous to keep: it is the quality-type withdrawal, which archives hide from
normal display but keep retrievable, and which a site can reverse. 113037 would make archives
treat the earlier result like a wrong-patient image, and archives must then refuse it for
good. The Key Object Description says what happened.
"""

from __future__ import annotations

from collections.abc import Sequence

from highdicom.ko import KeyObjectSelection, KeyObjectSelectionDocument
from highdicom.sr import CodedConcept, DeviceObserverIdentifyingAttributes, ObserverContext
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicom_io.errors import InvalidArgumentError, SRError
from dicom_io.sr.build import with_valid_dates
from dicom_io.sr.library import evidence_header, redact_names
from dicom_io.sr.model import AlgorithmInfo

__all__ = ["REJECTED_FOR_QUALITY_REASONS", "SERIES_DESCRIPTION", "SUPERSEDED", "build_rejection_note"]

REJECTED_FOR_QUALITY_REASONS = CodedConcept(value="113001", scheme_designator="DCM",
                                            meaning="Rejected for Quality Reasons")
"""The rejection note's document title (see the module docstring for why this one)."""

SUPERSEDED = "superseded AI screening result: the study changed and was screened again"
SERIES_DESCRIPTION = "AI fracture screen withdrawn results"


def build_rejection_note(
    rejected: Sequence[Dataset],
    *,
    algorithm: AlgorithmInfo,
    series_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
    description: str = SUPERSEDED,
    institution_name: str | None = None,
    manufacturer: str = "fracture-screen",
) -> Dataset:
    """Build the IOCM rejection note withdrawing ``rejected`` (earlier results of one study).

    Args:
        rejected: the headers of the instances to withdraw (SR, GSPS, SC this tool wrote),
            all of one study; patient and study attributes come from the first.
        algorithm: the screener's identification (the observer device).
        series_instance_uid: the note's series (new; one per run).
        series_number: its number.
        instance_number: the note's number in the series.
        sop_instance_uid: its UID; a new one when ``None``.
        description: the Key Object Description.
        institution_name: Institution Name of the equipment, when given.
        manufacturer: Manufacturer of the equipment.

    Returns:
        The Key Object Selection Document, ready for :func:`dicom_io.sr.write_sr`.

    Raises:
        InvalidArgumentError: nothing to withdraw, or instances of several studies.
        SRError: highdicom could not build the document.
    """
    if not rejected:
        raise InvalidArgumentError("a rejection note withdraws instances: pass at least one")
    clean = [with_valid_dates(ds) for ds in rejected]
    studies = {str(ds.get("StudyInstanceUID", "")) for ds in clean}
    if len(studies) != 1:
        raise InvalidArgumentError("a rejection note withdraws instances of one study; got several studies")
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[algorithm.name, algorithm.version]), name=algorithm.name,
            manufacturer_name=manufacturer, model_name=algorithm.version[:64],
        ),
    )
    try:
        content = KeyObjectSelection(
            document_title=REJECTED_FOR_QUALITY_REASONS, referenced_objects=clean,
            observer_device_context=observer, description=description,
        )
        return KeyObjectSelectionDocument(
            evidence=[evidence_header(clean[0]), *clean[1:]], content=content,
            series_instance_uid=series_instance_uid, series_number=series_number,
            sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=instance_number,
            manufacturer=manufacturer, institution_name=institution_name,
            series_description=SERIES_DESCRIPTION,
        )
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        detail = f"{type(exc).__name__}: {redact_names(str(exc), clean)}"
        raise SRError(f"cannot build the rejection note of study {studies.pop()}: {detail}") from exc
