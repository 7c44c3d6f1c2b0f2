"""Index: header-only reads into :class:`Instance` records, grouped Study → Series → Instance.

No pixel data is read here. The reader stops before Pixel Data and then looks at that
element's header alone (12 bytes) to learn whether pixel data is present and whether the file
is long enough to hold it, so truncated files fail here and not in a worker later. A deflated
file is inflated only up to that element header, in bounded chunks (:mod:`dicom_io.deflate`).

Reason codes produced here:
    ``unreadable-header``   pydicom cannot parse the header (failed)
    ``unreadable``          the file cannot be opened (failed)
    ``missing-uid``         SOP Instance, Series or Study Instance UID absent (failed)
    ``truncated-pixel-data`` the file ends before its declared Pixel Data length (failed)
    ``too-large``           the header claims more pixel bytes than the limit (skipped)
    ``header-too-large``    a deflated file inflates to more than ``max_header_bytes`` before
                            its Pixel Data (failed: a deflate bomb, most likely)
    ``pixel-length-mismatch`` a deflated file's Pixel Data is more than twice what its header
                            needs (failed)
    ``duplicate-sop-instance`` a second file with a SOPInstanceUID already indexed (skipped)
    ``dicomdir``            a media directory file, whatever its name (skipped)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Iterable

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicom_io.deflate import (
    DEFAULT_MAX_HEADER_BYTES,
    UNDEFINED_LENGTH,
    PixelElement,
    check_native_length,
    deflated_file_meta,
    read_deflated_header,
    read_pixel_element,
)
from dicom_io.discover import FoundFile
from dicom_io.errors import DicomIOError, DicomReadError, SizeLimitError
from dicom_io.geometry import spacing_from_dataset
from dicom_io.header_values import HeaderValues, header_tags

#: Default refusal threshold for declared pixel data (bytes); a 4k x 4k 16-bit radiograph is
#: 32 MiB, so 512 MiB leaves room for multi-frame images while refusing absurd headers.
DEFAULT_MAX_PIXEL_BYTES = 512 * 2**20

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

#: The only header elements the index reads (pydicom skips the rest quickly).
HEADER_KEYWORDS: tuple[str, ...] = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
    "AccessionNumber", "StudyDate", "StudyTime", "SeriesNumber", "InstanceNumber", "Modality",
    "BodyPartExamined", "ImageType", "BurnedInAnnotation", "PresentationIntentType",
    "ViewPosition", "Laterality", "ImageLaterality", "Rows", "Columns", "NumberOfFrames",
    "SamplesPerPixel", "BitsAllocated", "BitsStored", "PhotometricInterpretation",
    "PixelSpacing", "ImagerPixelSpacing", "EstimatedRadiographicMagnificationFactor",
    "ConversionType", "SpecificCharacterSet", "IssuerOfPatientID", "PatientAge", "PatientBirthDate",
    "Manufacturer", "ManufacturerModelName",
    "RequestedProcedurePriority", "InstitutionalDepartmentName",
)
#: Their tags, looked up once (a keyword costs a dictionary search on every read).
HEADER_TAGS = header_tags(HEADER_KEYWORDS)


@dataclass(frozen=True)
class Instance:
    """What the index knows about one DICOM file, from its header alone.

    Patient names and birth dates are deliberately not kept: nothing downstream of the index
    needs them (the age is kept as a number, for the intended-use scope), and writers that
    copy patient attributes (the SR) read them from the source file.
    """

    path: Path
    file_size: int
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_age_years: float | None = None  # PatientAge, else StudyDate - PatientBirthDate
    accession_number: str = ""
    study_date: str = ""
    study_time: str = ""
    series_number: int | None = None
    instance_number: int | None = None
    modality: str = ""
    body_part: str = ""
    image_type: tuple[str, ...] = ()
    burned_in_annotation: str = ""
    presentation_intent: str = ""
    conversion_type: str = ""
    view_position: str = ""
    laterality: str = ""
    rows: int = 0
    columns: int = 0
    frames: int = 1
    samples_per_pixel: int = 1
    bits_allocated: int = 0
    bits_stored: int = 0
    photometric: str = ""
    spacing_source: str = "none"
    has_pixel_data: bool = False
    manufacturer: str = ""  # Manufacturer and ManufacturerModelName: the device, for monitoring
    model_name: str = ""
    requested_priority: str = ""  # RequestedProcedurePriority, upper-cased (the run's priority order)
    department: str = ""  # InstitutionalDepartmentName (an emergency department ranks first)

    @property
    def pixel_bytes(self) -> int:
        """Bytes the header claims the decoded pixel data takes."""
        bits = self.bits_allocated or 8
        return self.rows * self.columns * self.frames * self.samples_per_pixel * bits // 8

    @property
    def patient_key(self) -> tuple[str, str]:
        """Who the instance belongs to: PatientID and IssuerOfPatientID, padding stripped.

        Two instances of one study with different keys are two patients (a UID collision).
        """
        return (" ".join(self.patient_id.split()), " ".join(self.issuer_of_patient_id.split()))

    @property
    def sop_class_name(self) -> str:
        return UID(self.sop_class_uid).name if self.sop_class_uid else ""


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()


class IndexedFileError(DicomIOError):
    """A refusal after the header was read: the cause plus the :class:`Instance` it describes."""

    def __init__(self, instance: "Instance", cause: DicomIOError) -> None:
        super().__init__(str(cause), reason=cause.reason)
        self.instance = instance
        self.cause = cause


def _read_header(found: FoundFile, max_header_bytes: int) -> tuple[Dataset, PixelElement | None, bool]:
    """The header dataset, its Pixel Data element header and whether the file is deflated.

    The reader stops before Pixel Data, so the element header is the next 8 or 12 bytes.
    """
    with open(found.path, "rb") as handle, warnings.catch_warnings():
        # pydicom warns about every oddity it reads past; a nightly log is no place for them
        warnings.simplefilter("ignore")
        deflated = deflated_file_meta(handle) if found.has_preamble else None
        if deflated is not None:
            ds, stream = read_deflated_header(
                handle, deflated[1], max_header_bytes=max_header_bytes,
                specific_tags=HEADER_TAGS, name=str(found.path),
            )
            return ds, read_pixel_element(stream), True
        handle.seek(0)
        ds = pydicom.dcmread(
            handle,
            stop_before_pixels=True,
            force=not found.has_preamble,
            specific_tags=HEADER_TAGS,
        )
        implicit, little = ds.original_encoding
        return ds, read_pixel_element(handle, implicit=bool(implicit), little=little is not False), False


def read_instance(
    found: FoundFile,
    max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> Instance:
    """Read one file's header into an :class:`Instance`.

    Args:
        found: the file, as discovered.
        max_pixel_bytes: refuse a header that declares more decoded pixel bytes than this.
        max_header_bytes: refuse a deflated file whose elements before Pixel Data inflate to
            more than this (nothing beyond the Pixel Data element header is ever inflated).

    Raises:
        DicomReadError: unreadable file or header, a missing UID, or a deflated header above
            ``max_header_bytes`` (``reason`` says which).
        IndexedFileError: the header was read but the file is refused: truncated pixel data
            (a ``DicomReadError``), a deflated file's Pixel Data over twice what its header
            needs (``pixel-length-mismatch``) or more than ``max_pixel_bytes`` of declared pixel data
            (a ``SizeLimitError``, raised before anything but the header is read). It carries
            the instance, so the file still counts in its study.
    """
    try:
        ds, element, deflated = _read_header(found, max_header_bytes)
    except DicomIOError:
        raise
    except OSError as exc:
        raise DicomReadError(f"cannot read: {exc.strerror or exc}", reason="unreadable") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed headers
        raise DicomReadError(
            f"header not readable as DICOM: {type(exc).__name__}: {exc}", reason="unreadable-header"
        ) from exc
    values = HeaderValues(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY:
        raise DicomReadError("DICOMDIR media directory (not an instance)", reason="dicomdir")
    missing = [k for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID") if not values.text(k)]
    if missing:
        raise DicomReadError(f"missing required UID(s): {', '.join(missing)}", reason="missing-uid")
    syntax = _text(meta, "TransferSyntaxUID") if meta is not None else ""
    instance = Instance(
        path=found.path,
        file_size=found.size,
        sop_class_uid=values.text("SOPClassUID"),
        sop_instance_uid=values.text("SOPInstanceUID"),
        study_instance_uid=values.text("StudyInstanceUID"),
        series_instance_uid=values.text("SeriesInstanceUID"),
        transfer_syntax_uid=syntax,
        patient_id=values.text("PatientID"),
        issuer_of_patient_id=values.text("IssuerOfPatientID"),
        patient_age_years=patient_age_years(ds),
        accession_number=values.text("AccessionNumber"),
        study_date=values.text("StudyDate"),
        study_time=values.text("StudyTime"),
        series_number=values.integer("SeriesNumber"),
        instance_number=values.integer("InstanceNumber"),
        modality=values.text("Modality").upper(),
        body_part=values.text("BodyPartExamined").upper(),
        image_type=values.values("ImageType"),
        burned_in_annotation=values.text("BurnedInAnnotation").upper(),
        presentation_intent=values.text("PresentationIntentType").upper(),
        conversion_type=values.text("ConversionType").upper(),
        view_position=values.text("ViewPosition"),
        laterality=values.text("ImageLaterality") or values.text("Laterality"),
        rows=values.integer("Rows", 0) or 0,
        columns=values.integer("Columns", 0) or 0,
        frames=max(1, values.integer("NumberOfFrames", 1) or 1),
        samples_per_pixel=values.integer("SamplesPerPixel", 1) or 1,
        bits_allocated=values.integer("BitsAllocated", 0) or 0,
        bits_stored=values.integer("BitsStored", 0) or 0,
        photometric=values.text("PhotometricInterpretation").upper(),
        spacing_source=_spacing_source(ds),
        has_pixel_data=element is not None,
        manufacturer=values.text("Manufacturer"),
        model_name=values.text("ManufacturerModelName"),
        requested_priority=values.text("RequestedProcedurePriority").upper(),
        department=values.text("InstitutionalDepartmentName"),
    )
    if element is not None and instance.pixel_bytes > max_pixel_bytes:
        raise IndexedFileError(instance, SizeLimitError(
            f"header claims {instance.rows}x{instance.columns}x{instance.frames} frames "
            f"x{instance.samples_per_pixel} samples at {instance.bits_allocated} bits = "
            f"{instance.pixel_bytes:,} bytes, above the limit of {max_pixel_bytes:,} bytes "
            "(raise max_pixel_bytes to allow it)"
        ))
    if element is None or element.length == UNDEFINED_LENGTH:
        return instance  # encapsulated data is checked by the decoder
    if deflated:  # positions are in the inflated stream: check the length against the header
        try:
            check_native_length(element.length, instance.pixel_bytes)
        except DicomIOError as exc:
            raise IndexedFileError(instance, exc) from None
    elif element.value_start + element.length > found.size:
        raise IndexedFileError(instance, DicomReadError(
            "file ends before the end of its Pixel Data", reason="truncated-pixel-data"
        ))
    return instance


_AGE_UNITS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def patient_age_years(ds: Dataset) -> float | None:
    """Age at the study in years: PatientAge (``nnnD/W/M/Y``), else StudyDate minus
    PatientBirthDate; ``None`` when neither is a valid value (never an error: the raw values
    are not kept or shown anywhere)."""
    age = _raw_text(ds, "PatientAge").upper()
    if len(age) == 4 and age[:3].isdigit() and age[3] in _AGE_UNITS:
        return int(age[:3]) * _AGE_UNITS[age[3]]
    born, seen = _date(_raw_text(ds, "PatientBirthDate")), _date(_raw_text(ds, "StudyDate"))
    if born is None or seen is None or seen < born:
        return None
    return (seen - born).days / 365.25


def _raw_text(ds: Dataset, keyword: str) -> str:
    """An element's bytes as text *without* pydicom's value conversion, which warns and logs
    an invalid value (a malformed birth date would otherwise reach the log verbatim)."""
    if keyword not in ds:
        return ""
    element = ds.get_item(keyword)
    value = getattr(element, "value", None)
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace").strip(" \x00")
    return "" if value is None else str(value).strip()


def _date(value: str) -> "date | None":
    """A DICOM DA (``YYYYMMDD``), or ``None`` for anything else (``1970-01-31`` included)."""
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def _spacing_source(ds: Dataset) -> str:
    try:
        return spacing_from_dataset(ds).source
    except Exception:  # noqa: BLE001 - malformed spacing values are reported, not fatal here
        return "invalid"


@dataclass
class Series:
    """One series: its instances sorted by InstanceNumber, then path."""

    series_instance_uid: str
    instances: list[Instance] = field(default_factory=list)

    @property
    def modality(self) -> str:
        return self.instances[0].modality if self.instances else ""


@dataclass
class Study:
    """One study: series keyed by SeriesInstanceUID, in first-seen order."""

    study_instance_uid: str
    series: dict[str, Series] = field(default_factory=dict)

    @property
    def instances(self) -> list[Instance]:
        return [inst for s in self.series.values() for inst in s.instances]

    @property
    def first(self) -> Instance:
        return self.instances[0]


def group_studies(instances: Iterable[Instance]) -> dict[str, Study]:
    """Group instances Study → Series → Instance (each level in a stable order)."""
    studies: dict[str, Study] = {}
    for inst in instances:
        study = studies.setdefault(inst.study_instance_uid, Study(inst.study_instance_uid))
        series = study.series.setdefault(inst.series_instance_uid, Series(inst.series_instance_uid))
        series.instances.append(inst)
    for study in studies.values():
        for series in study.series.values():
            series.instances.sort(
                key=lambda i: (i.instance_number if i.instance_number is not None else 1 << 30, str(i.path))
            )
    return studies


def header_fields(instance: Instance) -> dict[str, Any]:
    """The instance's columns for ``scan.csv`` (no patient identifiers)."""
    return {
        "study_instance_uid": instance.study_instance_uid,
        "series_instance_uid": instance.series_instance_uid,
        "sop_instance_uid": instance.sop_instance_uid,
        "sop_class": instance.sop_class_name or instance.sop_class_uid,
        "modality": instance.modality,
        "body_part": instance.body_part,
        "transfer_syntax": UID(instance.transfer_syntax_uid).name if instance.transfer_syntax_uid else "",
        "photometric": instance.photometric,
        "rows": instance.rows,
        "columns": instance.columns,
        "frames": instance.frames,
        "bits_stored": instance.bits_stored,
        "spacing_source": instance.spacing_source,
    }
