"""The coded concepts the screening SR uses, in one place.

Why a module of constants: pydicom's code dictionary lacks some of these (``Fracture of bone``),
and a reader of the SR (or of :mod:`dicom_io.sr.read`) must match exactly the codes the writer
used, so both import them from here.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept

__all__ = [
    "ABSENT",
    "CERTAINTY_OF_FINDING",
    "ENGLISH",
    "FRACTURE_OF_BONE",
    "IMAGE_FINDING_PREFIX",
    "IMAGING_PROCEDURE",
    "PERCENT",
    "PRESENT",
    "QUALITATIVE_EVALUATIONS",
    "ROI_FINDING_PREFIX",
]

ENGLISH = CodedConcept(value="en-US", scheme_designator="RFC5646", meaning="English (United States)")
"""Language of the content (TID 1204), highdicom's default spelled out."""

FRACTURE_OF_BONE = CodedConcept(value="125605004", scheme_designator="SCT", meaning="Fracture of bone")
"""The finding type of every group, and the concept name of its presence evaluation."""

QUALITATIVE_EVALUATIONS = CodedConcept(
    value="C0034375", scheme_designator="UMLS", meaning="Qualitative Evaluations"
)
"""TID 1500's report-level container holding the study decision (Fracture of bone = ...)."""

PRESENT = CodedConcept(value="52101004", scheme_designator="SCT", meaning="Present")
ABSENT = CodedConcept(value="2667000", scheme_designator="SCT", meaning="Absent")

CERTAINTY_OF_FINDING = CodedConcept(value="111012", scheme_designator="DCM", meaning="Certainty of Finding")
"""The NUM carrying a score (fused confidence in ``[0, 1]``) as a percentage."""

PERCENT = CodedConcept(value="%", scheme_designator="UCUM", meaning="Percent")

IMAGING_PROCEDURE = CodedConcept(value="363679005", scheme_designator="SCT", meaning="Imaging procedure")
"""Procedure reported, from CID 100 (``168537006`` "Plain radiography" is flagged by PixelMed)."""

ROI_FINDING_PREFIX = "fracture-screen box"
"""Tracking identifiers of box findings start with this, then a 1-based number."""

IMAGE_FINDING_PREFIX = "fracture-screen image finding"
"""Tracking identifiers of image-level findings (no box; their region is the whole image)."""
