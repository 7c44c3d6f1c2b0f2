"""The content tree of a screening SR (TID 1500), built from highdicom's templates.

What goes where, and why (PixelMed's template validator, the one CI runs, decided two things):

- The study decision sits in TID 1500's report-level "Qualitative Evaluations" container
  (rows 12-14): "Fracture of bone = Present" or "= Absent" (so a negative study says "Absent"
  explicitly) with the fused study score as a "Certainty of Finding" NUM in percent under it
  (the probability of the finding; for an Absent decision the score that fell below the
  operating point), then the algorithm identification (name, version, operating point, members
  and their versions, parameters) as TEXT items named like TID 4019's.
- Every finding is a TID 1410 planar ROI group in "Imaging Measurements": finding type
  "Fracture of bone", a closed 5-point POLYLINE rectangle (SCOORD, column then row in
  pixel-edge coordinates as DICOM defines them: the image's top-left corner is ``0,0`` and its
  bottom-right ``Columns,Rows``), its certainty and its algorithm identification. An image-level
  finding (no box: a classifier-only positive) is a region covering the whole image, with a
  tracking identifier starting :data:`~dicom_io.sr.codes.IMAGE_FINDING_PREFIX` so a reader
  knows there was no box. Why not a TID 1501 image group: PixelMed (2022) treats every group
  of the container as TID 1410 as soon as exactly one region is present, and then flags any
  non-ROI group as an error; all-ROI groups validate in every case.
- A negative study has no findings, so no "Imaging Measurements" container at all, which
  TID 1500 allows when "Qualitative Evaluations" is present. highdicom's ``MeasurementReport``
  constructor insists on at least one measurement group, so the root container is assembled
  here from highdicom's content items (the reader, ``MeasurementReport.from_sequence``,
  accepts it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    CodedConcept,
    ContainerContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    GraphicTypeValues,
    ImageLibrary,
    ImageRegion,
    LanguageOfContentItemAndDescendants,
    Measurement,
    MeasurementReport,
    NumContentItem,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    RelationshipTypeValues,
    SourceImageForRegion,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicom_io.sr import codes as sr_codes
from dicom_io.sr.library import add_orientation_descriptors, library_view
from dicom_io.sr.model import INTENDED_USE_NOTICES, AlgorithmInfo, SRFinding

__all__ = ["finding_group", "measurement_report"]

_ALGORITHM_NAME = CodedConcept(value="111001", scheme_designator="DCM", meaning="Algorithm Name")
_ALGORITHM_VERSION = CodedConcept(value="111003", scheme_designator="DCM", meaning="Algorithm Version")
_ALGORITHM_PARAMETERS = CodedConcept(value="111002", scheme_designator="DCM", meaning="Algorithm Parameters")
_COMMENT = CodedConcept(value="121106", scheme_designator="DCM", meaning="Comment")


def _rectangle(box: tuple[float, float, float, float]) -> np.ndarray:
    """A closed 5-point POLYLINE around ``box`` in (column, row) order, clockwise on screen."""
    col0, row0, col1, row1 = box
    return np.array([[col0, row0], [col1, row0], [col1, row1], [col0, row1], [col0, row0]], dtype=np.float64)


def _algorithm(algorithm: AlgorithmInfo, finding: SRFinding | None = None) -> AlgorithmIdentification:
    """TID 4019 for the report (``finding=None``) or for one finding (adds members and level)."""
    texts = algorithm.parameter_texts()
    if finding is not None:
        if finding.members:
            texts.append(f"finding-members={','.join(finding.members)}")
        if finding.level is not None:
            texts.append(f"finding-level={finding.level}")
    return AlgorithmIdentification(name=algorithm.name, version=algorithm.version, parameters=texts)


def _tracking(sr_uid: str, label: str) -> TrackingIdentifier:
    """A tracking identifier whose UID derives from the SR's UID, so a rebuild is identical."""
    return TrackingIdentifier(uid=generate_uid(entropy_srcs=[sr_uid, label]), identifier=label)


def finding_group(
    finding: SRFinding,
    box: tuple[float, float, float, float],
    source: Dataset,
    label: str,
    algorithm: AlgorithmInfo,
    sr_uid: str,
) -> PlanarROIMeasurementsAndQualitativeEvaluations:
    """The TID 1410 group of one finding: its region on ``source``, finding type, certainty.

    Args:
        finding: the finding (its members and level go into the algorithm parameters).
        box: the region to draw, already checked against the image (the whole image for an
            image-level finding).
        source: the image's header.
        label: the tracking identifier (a box or an image-level label with its number).
        algorithm: the screener's identification.
        sr_uid: the SR's SOP Instance UID (seeds the tracking UID).
    """
    region = ImageRegion(
        graphic_type=GraphicTypeValues.POLYLINE,
        graphic_data=_rectangle(box),
        source_image=SourceImageForRegion(str(source.SOPClassUID), str(source.SOPInstanceUID)),
    )
    return PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(sr_uid, label),
        referenced_region=region,
        finding_type=sr_codes.FRACTURE_OF_BONE,
        algorithm_id=_algorithm(algorithm, finding),
        measurements=[
            Measurement(
                name=sr_codes.CERTAINTY_OF_FINDING, value=finding.score * 100.0, unit=sr_codes.PERCENT
            )
        ],
    )


def _report_algorithm(algorithm: AlgorithmInfo) -> list[TextContentItem]:
    """The report-wide algorithm identification as TID 1500 row 14 TEXT evaluations.

    Same concept names as TID 4019 (Algorithm Name / Version / Parameters), but CONTAINS, not
    HAS CONCEPT MOD: PixelMed (2022) matches every TEXT child of the container against row 14
    ("TEXT *", CONTAINS) and reports a TID 4019 inclusion there as an error.
    """
    named = [
        (_ALGORITHM_NAME, algorithm.name),
        (_ALGORITHM_VERSION, algorithm.version),
        *((_ALGORITHM_PARAMETERS, text) for text in algorithm.parameter_texts()),
    ]
    notice = INTENDED_USE_NOTICES[algorithm.intended_use]
    if notice:
        named.append((_COMMENT, notice))
    return [
        TextContentItem(name=name, value=value, relationship_type=RelationshipTypeValues.CONTAINS)
        for name, value in named
    ]


def _decision(positive: bool, score: float, algorithm: AlgorithmInfo) -> ContainerContentItem:
    """TID 1500 rows 12-14: Fracture of bone = Present/Absent (with its certainty), algorithm."""
    container = ContainerContentItem(
        name=sr_codes.QUALITATIVE_EVALUATIONS, relationship_type=RelationshipTypeValues.CONTAINS
    )
    decision = CodeContentItem(
        name=sr_codes.FRACTURE_OF_BONE,
        value=sr_codes.PRESENT if positive else sr_codes.ABSENT,
        relationship_type=RelationshipTypeValues.CONTAINS,
    )
    # PixelMed warns "Content Item not in template" for this NUM (row 13 only lists coded
    # modifiers); it is the one warning the SR carries, kept because the study score belongs here.
    decision.ContentSequence = ContentSequence(
        [
            NumContentItem(
                name=sr_codes.CERTAINTY_OF_FINDING,
                value=score * 100.0,
                unit=sr_codes.PERCENT,
                relationship_type=RelationshipTypeValues.HAS_PROPERTIES,
            )
        ]
    )
    container.ContentSequence = ContentSequence([decision, *_report_algorithm(algorithm)])
    return container


def measurement_report(
    sources: Sequence[Dataset],
    groups: Sequence[PlanarROIMeasurementsAndQualitativeEvaluations],
    *,
    positive: bool,
    score: float,
    algorithm: AlgorithmInfo,
    manufacturer: str,
) -> MeasurementReport:
    """The TID 1500 root: context, procedure, image library, findings, study decision."""
    root = ContainerContentItem(name=codes.cid7021.ImagingMeasurementReport, template_id="1500")
    items = ContentSequence()
    items.extend(LanguageOfContentItemAndDescendants(sr_codes.ENGLISH))
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[algorithm.name, algorithm.version]),
            name=algorithm.name,
            manufacturer_name=manufacturer,
            model_name=algorithm.version[:64],
        ),
    )
    items.extend(ObservationContext(observer_device_context=observer))
    items.append(
        CodeContentItem(
            name=codes.DCM.ProcedureReported,
            value=sr_codes.IMAGING_PROCEDURE,
            relationship_type=RelationshipTypeValues.HAS_CONCEPT_MOD,
        )
    )
    # Built here, not via MeasurementReport(referenced_images=...), so the guard applies.
    library = ImageLibrary([library_view(ds) for ds in sources])
    add_orientation_descriptors(library[0], sources)
    items.extend(library)
    if groups:
        measurements = ContainerContentItem(
            name=codes.DCM.ImagingMeasurements, relationship_type=RelationshipTypeValues.CONTAINS
        )
        measurements.ContentSequence = ContentSequence()
        for group in groups:
            measurements.ContentSequence.extend(group)
        items.append(measurements)
    items.append(_decision(positive, score, algorithm))
    root.ContentSequence = items
    return MeasurementReport.from_sequence([root], copy=False)
