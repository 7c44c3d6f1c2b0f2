"""The IOCM rejection note: a valid Key Object Selection titled "Rejected for Quality Reasons"
listing exactly the withdrawn instances of one study."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_io.errors import InvalidArgumentError
from dicom_io.iocm import REJECTED_FOR_QUALITY_REASONS, SUPERSEDED, build_rejection_note
from dicom_io.sr import AlgorithmInfo, write_sr

ALGORITHM = AlgorithmInfo(version="1.0", operating_point_id="op-test", members=(("detr", "v1"),))


def _earlier(study: str, sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "TEST^SECRET", "PID-1", modality
    return ds


def test_rejection_note_validates_and_lists_the_withdrawn(tmp_path: Path, sr_validator: Callable[..., Any]) -> None:
    study = generate_uid()
    withdrawn = [_earlier(study, "1.2.840.10008.5.1.4.1.1.88.33", "SR"),  # Comprehensive SR
                 _earlier(study, "1.2.840.10008.5.1.4.1.1.11.1", "PR")]  # GSPS
    note = build_rejection_note(withdrawn, algorithm=ALGORITHM, series_instance_uid=generate_uid(),
                                series_number=9904)
    path = write_sr(note, tmp_path / "kos.dcm")
    assert sr_validator(path)[0].errors == []
    back = pydicom.dcmread(path)
    assert back.Modality == "KO" and back.StudyInstanceUID == study and back.PatientID == "PID-1"
    title = back.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        REJECTED_FOR_QUALITY_REASONS.value, "DCM", "Rejected for Quality Reasons")
    listed = {i.ReferencedSOPInstanceUID for s in back.CurrentRequestedProcedureEvidenceSequence
              for series in s.ReferencedSeriesSequence for i in series.ReferencedSOPSequence}
    assert listed == {str(ds.SOPInstanceUID) for ds in withdrawn}
    described = [item.TextValue for item in back.ContentSequence
                 if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "113012"]
    assert described == [SUPERSEDED]  # Key Object Description


def test_rejection_note_refuses_nothing_or_two_studies() -> None:
    options: dict[str, Any] = dict(algorithm=ALGORITHM, series_instance_uid=generate_uid(), series_number=9904)
    with pytest.raises(InvalidArgumentError, match="at least one"):
        build_rejection_note([], **options)
    two = [_earlier(generate_uid(), "1.2.840.10008.5.1.4.1.1.88.33", "SR") for _ in range(2)]
    with pytest.raises(InvalidArgumentError, match="one study"):
        build_rejection_note(two, **options)
