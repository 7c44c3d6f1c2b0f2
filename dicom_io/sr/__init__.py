"""DICOM Structured Reports of screened studies: build, write atomically, read back.

One Comprehensive SR (TID 1500 measurement report) per screened study; see
:mod:`dicom_io.sr.build` for what it contains and why, :mod:`dicom_io.sr.model` for how the
ensemble's extra facts (members, operating level) are encoded, and :mod:`dicom_io.sr.library`
for the highdicom 0.28 guard (CR without ImagerPixelSpacing).
"""

from __future__ import annotations

from dicom_io.sr.build import BOX_TOLERANCE_PX, build_screening_sr, write_sr
from dicom_io.sr.model import AlgorithmInfo, SRFinding, SRReadback
from dicom_io.sr.read import read_sr, read_sr_findings

__all__ = [
    "BOX_TOLERANCE_PX",
    "AlgorithmInfo",
    "SRFinding",
    "SRReadback",
    "build_screening_sr",
    "read_sr",
    "read_sr_findings",
    "write_sr",
]
