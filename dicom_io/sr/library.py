"""Source headers prepared for highdicom: the image library guard and the evidence header.

Why this exists: highdicom 0.28.2 builds the TID 1600 image library entry of a projection
radiograph (CR, DX, ...) by reading ``ImagerPixelSpacing`` and ``PatientOrientation``
unconditionally, so a CR without the (optional, type 3) ``ImagerPixelSpacing`` - most real CRs,
and every CR of the phantom - raises ``AttributeError``. TID 1603 makes those descriptors
conditional on the attributes being present, so the right output is an entry without them. The
guard hands highdicom a shallow copy whose ``Modality`` is ``OT`` (only highdicom's choice of
descriptor branch reads it; the library's coded modality comes from ``SOPClassUID``) and then
adds the patient-orientation descriptors back when the image has them. Pixel spacing is never
invented from ``PixelSpacing``: detector and patient-plane spacing are different quantities.

The SR's patient and study attributes come from the first source; highdicom reads the type 2
ones (``PatientBirthDate``, ``StudyID``, ...) as attributes, so a missing one is given its
empty value, which is what type 2 means.
"""

from __future__ import annotations

from collections.abc import Sequence

from highdicom.sr import ContentSequence, RelationshipTypeValues, TextContentItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

__all__ = [
    "PROJECTION_MODALITIES",
    "add_orientation_descriptors",
    "evidence_header",
    "library_view",
    "needs_library_guard",
    "redact_names",
]

PROJECTION_MODALITIES = frozenset({"CR", "DX", "IO", "MG", "PX", "RF", "RG", "XA"})
"""Modalities for which highdicom 0.28 builds projection-radiography descriptors (TID 1603)."""

_MODALITY_TAG = 0x00080060

_TYPE2_EVIDENCE = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)

_ORIENTATION_ROW = codes.DCM.PatientOrientationRow
_ORIENTATION_COLUMN = codes.DCM.PatientOrientationColumn


def _pair(ds: Dataset, keyword: str) -> list[str] | None:
    """The attribute's two values as strings, or ``None`` when absent, empty or not a pair."""
    value = ds.get(keyword)
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        values = [str(v) for v in value]
    except TypeError:
        return None
    if len(values) != 2 or not all(v.strip() for v in values):
        return None
    return values


def needs_library_guard(ds: Dataset) -> bool:
    """Whether highdicom would fail on this image's projection-radiography descriptors."""
    if str(ds.get("Modality", "")).upper() not in PROJECTION_MODALITIES:
        return False
    return _pair(ds, "ImagerPixelSpacing") is None or _pair(ds, "PatientOrientation") is None


def library_view(ds: Dataset) -> Dataset:
    """The dataset to give highdicom's image library for ``ds`` (``ds`` itself when safe)."""
    if not needs_library_guard(ds):
        return ds
    view = Dataset()
    for element in ds:
        view.add(element)
    # A new element, not ``view.Modality = ...``: that would change the shared element of ``ds``.
    view.add_new(_MODALITY_TAG, "CS", "OT")
    return view


def add_orientation_descriptors(library_container: Dataset, sources: Sequence[Dataset]) -> None:
    """Give guarded images their Patient Orientation descriptors back, in place.

    Args:
        library_container: the "Image Library" CONTAINER item highdicom built.
        sources: the real source datasets (only guarded ones with a valid orientation change).
    """
    wanted = {
        str(ds.SOPInstanceUID): orientation
        for ds in sources
        if needs_library_guard(ds) and (orientation := _pair(ds, "PatientOrientation")) is not None
    }
    if not wanted:
        return
    for group in library_container.ContentSequence:
        for image_item in group.get("ContentSequence", []):
            if image_item.get("ValueType") != "IMAGE":
                continue
            uid = str(image_item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            orientation = wanted.get(uid)
            if orientation is None:
                continue
            if "ContentSequence" not in image_item:
                image_item.ContentSequence = ContentSequence()
            for name, value in ((_ORIENTATION_ROW, orientation[0]), (_ORIENTATION_COLUMN, orientation[1])):
                image_item.ContentSequence.append(
                    TextContentItem(
                        name=name,
                        value=value,
                        relationship_type=RelationshipTypeValues.HAS_ACQ_CONTEXT,
                    )
                )


def redact_names(message: str, datasets: Sequence[Dataset]) -> str:
    """``message`` with the datasets' patient names (and their parts) replaced.

    Library error texts can quote attribute values; patient names must never reach a log.
    """
    for ds in datasets:
        name = str(ds.get("PatientName", "") or "")
        parts = {name, *name.split("^")} if name else set()
        for part in sorted((p for p in parts if len(p.strip()) > 1), key=len, reverse=True):
            message = message.replace(part, "<patient name>")
    return message


def evidence_header(ds: Dataset) -> Dataset:
    """A shallow copy of ``ds`` with every type 2 patient/study attribute present (maybe empty)."""
    if all(keyword in ds for keyword in _TYPE2_EVIDENCE):
        return ds
    header = Dataset()
    for element in ds:
        header.add(element)
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    for keyword in _TYPE2_EVIDENCE:
        if keyword not in header:
            setattr(header, keyword, None)
    return header
