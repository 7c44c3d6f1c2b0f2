"""DICOM datasets for phantom images: CR or DX headers, file meta and lossless compression.

The headers carry what a real CR/DX export carries (patient, study, series, equipment, image,
pixel, VOI and, for DX, the DX-specific modules), so the reader and selection code are tested
against realistic files. Nothing here depends on the clock or the environment: the same
inputs give the same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from dicom_io.phantom.config import COMPRESSION_KINDS, PHANTOM_VERSION, PhantomError
from dicom_io.phantom.draw import MAX_VALUE

#: Transfer syntax of each storage form of :data:`COMPRESSION_KINDS`.
TRANSFER_SYNTAXES: dict[str, UID] = {
    "uncompressed": ExplicitVRLittleEndian,
    "jpeg2000-lossless": JPEG2000Lossless,
    "rle-lossless": RLELossless,
}
SOP_CLASSES: dict[str, UID] = {
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
}
# SNOMED CT codes for the Anatomic Region Sequence (DX requires one).
ANATOMY_CODES: dict[str, Code] = {"SHOULDER": codes.SCT.ShoulderRegionStructure, "ARM": codes.SCT.UpperArm}
# View Code Sequence values (CID 4010) for each View Position.
VIEW_CODES: dict[str, Code] = {
    "AP": codes.SCT.AnteroPosterior, "PA": codes.SCT.PosteroAnterior,
    "LL": codes.SCT.LeftLateral, "RL": codes.SCT.RightLateral,
    "LLO": codes.SCT.LeftOblique, "RLO": codes.SCT.RightOblique,
}  # fmt: skip
# (column direction, row direction) of each view, for Patient Orientation.
ORIENTATIONS: dict[str, tuple[str, str]] = {
    "AP": ("L", "F"), "PA": ("R", "F"), "LL": ("A", "F"), "RL": ("P", "F"),
    "LLO": ("A", "F"), "RLO": ("P", "F"),
}  # fmt: skip


@dataclass(frozen=True)
class StudyHeader:
    """Values shared by every image of one study (one patient, one visit, one device)."""

    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    referring_physician: str
    modality: str
    body_part: str
    laterality: str
    station: str
    detector_type: str


@dataclass(frozen=True)
class ImageHeader:
    """Values of one view: its own series with one instance."""

    series_uid: str
    sop_uid: str
    series_number: int
    series_time: str
    view_position: str
    monochrome1: bool
    spacing_mm: float
    kvp: float
    compression: str
    # (centre, width) in the linear (MONOCHROME2) sense; None: the percentile window.
    window: tuple[int, int] | None = None


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _window(pixels: np.ndarray, monochrome1: bool) -> tuple[int, int]:
    """Window centre and width (stored-value space) spanning soft tissue to densest bone.

    A viewer applies the window before MONOCHROME1 inversion, so for an inverted image the
    centre moves to ``MAX_VALUE - centre`` while the width stays.
    """
    low, high = np.percentile(pixels, [0.5, 99.9])
    low = max(float(low) - 50.0, 0.0)
    high = min(float(high) + 50.0, float(MAX_VALUE))
    center = round((low + high) / 2)
    width = max(round(high - low), 2)
    return (MAX_VALUE - center if monochrome1 else center), width


def build_dataset(study: StudyHeader, image: ImageHeader, pixels: np.ndarray) -> Dataset:
    """An uncompressed CR or DX dataset with file meta, ready to compress and write.

    Args:
        study: patient, study and device values.
        image: series, instance and storage values of this view.
        pixels: uint16 rows×columns linear attenuation (higher = denser), 0..4095. Stored
            inverted when ``image.monochrome1``.

    Raises:
        PhantomError: pixels that are not 2-D uint16 within 12 bits, or an unknown modality,
            body part, view or compression.
    """
    if pixels.ndim != 2 or pixels.dtype != np.uint16 or int(pixels.max(initial=0)) > MAX_VALUE:
        raise PhantomError(
            f"pixels must be 2-D uint16 within 0..{MAX_VALUE}, got shape {pixels.shape} "
            f"dtype {pixels.dtype}"
        )
    for name, value, valid in (
        ("modality", study.modality, SOP_CLASSES),
        ("body_part", study.body_part, ANATOMY_CODES),
        ("view_position", image.view_position, VIEW_CODES),
        ("compression", image.compression, TRANSFER_SYNTAXES),
    ):
        if value not in valid:
            raise PhantomError(f"unknown {name} {value!r}; choose one of {sorted(valid)}")
    dx = study.modality == "DX"
    stored = (MAX_VALUE - pixels).astype(np.uint16) if image.monochrome1 else pixels
    rows, cols = stored.shape

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceCreationDate = study.study_date
    ds.InstanceCreationTime = image.series_time
    ds.SOPClassUID = SOP_CLASSES[study.modality]
    ds.SOPInstanceUID = image.sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.study_date
    ds.StudyTime = study.study_time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = image.series_time
    ds.AccessionNumber = study.accession
    ds.Modality = study.modality
    if dx:
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "Fracture-Screen Phantom"
    ds.InstitutionName = "Phantom General Hospital"
    ds.ReferringPhysicianName = study.referring_physician
    ds.StationName = study.station
    ds.StudyDescription = f"XR {study.body_part} {study.laterality}"
    ds.SeriesDescription = f"{study.body_part} {image.view_position}"
    ds.ManufacturerModelName = f"Phantom {study.modality}"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.BodyPartExamined = study.body_part
    ds.KVP = f"{image.kvp:.0f}"
    ds.DeviceSerialNumber = f"PH{study.modality}{sum(map(ord, study.station)) % 1000:03d}"
    ds.SoftwareVersions = PHANTOM_VERSION
    ds.ViewPosition = image.view_position
    if dx:
        ds.DetectorType = study.detector_type
        ds.PositionerType = "NONE"
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = image.series_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = image.series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = list(ORIENTATIONS[image.view_position])
    # CR carries the series' Laterality, DX the Image Laterality its IOD requires (one only:
    # the General Series module forbids Laterality beside Image Laterality).
    if dx:
        ds.ImageLaterality = study.laterality
    else:
        ds.Laterality = study.laterality
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if image.monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    spacing = [f"{image.spacing_mm:.4f}", f"{image.spacing_mm:.4f}"]
    if dx:
        ds.ImagerPixelSpacing = spacing
    else:
        ds.PixelSpacing = spacing
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    if dx:
        ds.PixelIntensityRelationship = "LOG"
        # -1: higher stored values mean less X-ray reached the detector (denser tissue).
        ds.PixelIntensityRelationshipSign = 1 if image.monochrome1 else -1
    if image.window is None:
        center, width = _window(pixels, image.monochrome1)
    else:  # a style's preset: windows apply to stored values, so MONOCHROME1 mirrors the centre
        center, width = image.window[0], max(int(image.window[1]), 2)
        center = MAX_VALUE - center if image.monochrome1 else center
    ds.WindowCenter = center
    ds.WindowWidth = width
    ds.WindowCenterWidthExplanation = "TISSUE AND BONE"
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "INVERSE" if image.monochrome1 else "IDENTITY"
    ds.AnatomicRegionSequence = Sequence([_code_item(ANATOMY_CODES[study.body_part])])
    if dx:
        ds.ViewCodeSequence = Sequence([_code_item(VIEW_CODES[image.view_position])])
        ds.AcquisitionContextSequence = Sequence([])
    ds.PixelData = stored.astype("<u2").tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def compress(ds: Dataset, kind: str) -> None:
    """Compress ``ds`` in place losslessly (``kind`` from :data:`COMPRESSION_KINDS`).

    The SOP Instance UID is kept (pydicom would otherwise make a random new one), and the
    plugin is fixed so the bytes do not depend on which encoders happen to be installed.
    """
    if kind not in COMPRESSION_KINDS:
        raise PhantomError(f"unknown compression {kind!r}; choose one of {list(COMPRESSION_KINDS)}")
    if kind == "uncompressed":
        return
    ds.compress(TRANSFER_SYNTAXES[kind], encoding_plugin="pylibjpeg", generate_instance_uid=False)


def to_bytes(ds: Dataset) -> bytes:
    """The Part 10 file (preamble, ``DICM``, file meta, dataset) as bytes."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
