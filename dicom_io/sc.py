"""An annotated copy of one flagged image as a Secondary Capture (opt-in: ``[output] write_sc``).

Why: a viewer without presentation-state support still shows an image. The SC (highdicom
``sc``) holds the source pixels *as the pipeline saw them* (:class:`dicom_io.pixels.Radiograph`:
its window applied, MONOCHROME1 inverted, bone bright), the boxes and their texts burned in by
:func:`dicom_io.annotate.burn_in` (the same colours and words as the GSPS and the morning page)
and a banner above the image, "AI screening result, not for primary diagnosis".

It is a new object in the source's study and in the SC series of the run: new SOP Instance
UID, ``ImageType DERIVED\\SECONDARY``, ``BurnedInAnnotation YES``, a Source Image Sequence naming
the image it was made from. The source file is only read, never written. ``screen run`` skips
it when it comes back in a later export (secondary capture, burned-in annotation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from highdicom.sc import SCImage
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_io.annotate import BoxLabel, burn_in, finding_text, level_style
from dicom_io.errors import InvalidArgumentError, SRError
from dicom_io.gsps import copy_series_context, presentation_description
from dicom_io.sr.build import with_valid_dates
from dicom_io.sr.library import evidence_header, redact_names
from dicom_io.sr.model import AlgorithmInfo, SRFinding

__all__ = ["SERIES_DESCRIPTION", "build_sc", "sc_labels"]

SERIES_DESCRIPTION = "AI fracture screen annotated images"
_BIPED = frozenset("AHLFPR")  # letters of a biped Patient Orientation value


def sc_labels(findings: Sequence[SRFinding], levels: Sequence[str]) -> list[BoxLabel]:
    """The boxes, texts and styles :func:`~dicom_io.annotate.burn_in` draws for ``findings``."""
    return [(f.box, finding_text(f.score, f.level), level_style(f.level, levels)) for f in findings]


def _orientation(ds: Dataset) -> tuple[str, str] | None:
    value = ds.get("PatientOrientation")
    try:
        pair = tuple(str(v).strip().upper() for v in value) if value is not None and not isinstance(value, str) else ()
    except TypeError:
        return None
    if len(pair) == 2 and all(part and set(part) <= _BIPED for part in pair):
        return pair[0], pair[1]
    return None


def build_sc(
    source: Dataset,
    pixels: np.ndarray,
    findings: Sequence[SRFinding],
    *,
    levels: Sequence[str],
    algorithm: AlgorithmInfo,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    sop_instance_uid: str | None = None,
    institution_name: str | None = None,
    manufacturer: str = "fracture-screen",
) -> Dataset:
    """Build the annotated Secondary Capture of one image.

    Args:
        source: the image's header (patient, study, orientation and laterality are copied).
        pixels: the image as the pipeline saw it (``Radiograph.pixels``, float in ``[0, 1]``).
        findings: the image's findings (at least one), all on ``source``.
        levels: the operating points' level names, most sensitive first (``[]`` for one point).
        algorithm: the screener's identification (its intended use words the banner).
        series_instance_uid: the SC series of the run (never the source's).
        series_number: its number.
        instance_number: the image's number within the series.
        sop_instance_uid: its UID; a new one when ``None``.
        institution_name: Institution Name of the equipment, when given.
        manufacturer: Manufacturer of the equipment.

    Returns:
        The SC dataset (RGB, 8 bits), ready for :func:`dicom_io.sr.write_sr`.

    Raises:
        InvalidArgumentError: no findings, a finding on another image, pixels that do not
            match the source's size, or the source's own series.
        SRError: highdicom could not build the image.
    """
    ds = with_valid_dates(source)
    uid = str(ds.get("SOPInstanceUID", ""))
    if not findings:
        raise InvalidArgumentError("an annotated image shows findings: pass at least one")
    if any(f.source_sop_instance_uid != uid for f in findings):
        raise InvalidArgumentError(f"every finding must be on the source image {uid}")
    if np.shape(pixels) != (int(ds.Rows), int(ds.Columns)):
        raise InvalidArgumentError(
            f"pixels have shape {np.shape(pixels)}, the source is {ds.Rows} x {ds.Columns}; pass its Radiograph.pixels"
        )
    if str(ds.get("SeriesInstanceUID", "")) == series_instance_uid:
        raise InvalidArgumentError("series_instance_uid is the source's series; the SC image needs a new one")
    banner = presentation_description(algorithm.intended_use)
    rgb = burn_in(pixels, sc_labels(findings, levels), banner=banner)
    orientation = _orientation(ds)
    try:
        sc = SCImage.from_ref_dataset(
            ref_dataset=evidence_header(ds), pixel_array=rgb, photometric_interpretation="RGB",
            bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=series_instance_uid,
            series_number=series_number, sop_instance_uid=sop_instance_uid or generate_uid(),
            instance_number=instance_number, manufacturer=manufacturer,
            patient_orientation=orientation or ("A", "F"),  # highdicom insists; emptied just below
            series_description=SERIES_DESCRIPTION, institution_name=institution_name,
            software_versions=f"{algorithm.name} {algorithm.version}"[:64],
        )
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        detail = f"{type(exc).__name__}: {redact_names(str(exc), [ds])}"
        raise SRError(f"cannot build the annotated image of {uid}: {detail}") from exc
    if orientation is None:
        del sc.PatientOrientation  # type 2C: present and empty, unknown rather than invented
        sc.add_new(0x00200020, "CS", None)
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = banner
    sc.DerivationDescription = "window of the AI screening pipeline applied; AI findings burned in"
    reference = Dataset()
    reference.ReferencedSOPClassUID = ds.SOPClassUID
    reference.ReferencedSOPInstanceUID = uid
    sc.SourceImageSequence = [reference]
    copy_series_context(sc, [ds])
    return sc
