"""Select: declarative rules deciding which instances are screenable radiographs.

Rules are data (:class:`SelectionRules`, loadable from the site config's ``[selection]``
table); :func:`select_instance` applies them in a fixed order and returns the first reason
that skips an instance, so every skip carries exactly one reason code:

    ``non-image-object``      SR, PR, KO, SEG and other non-image objects (by SOP class or modality)
    ``modality``              modality not in ``modalities``
    ``secondary-capture``     a Secondary Capture SOP class (screenshots, scanned film)
    ``no-pixel-data``         an image object whose file has no Pixel Data
    ``localizer``             ImageType contains LOCALIZER (scout images)
    ``derived-image``         ImageType value 2 is SECONDARY (DERIVED\\SECONDARY: reformats,
                              copies made after the examination). DERIVED\\PRIMARY is screened:
                              vendor-processed and lossy-compressed radiographs carry it
                              (pydicom-data's RG1 chest CR does).
    ``burned-in-annotation``  BurnedInAnnotation is YES and ``allow_burned_in`` is false
    ``body-part``             BodyPartExamined not in ``body_parts`` (when that filter is set)
    ``for-processing``        a FOR PROCESSING image when ``allow_for_processing`` is false
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any

from pydantic import field_validator

from dicom_io.errors import DicomIOError
from dicom_io.index import DEFAULT_MAX_PIXEL_BYTES, Instance
from ensembles.config_model import ConfigModel, Problem, Wording, check, parse_model, show

#: Modalities of objects that are never images to screen.
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "PR", "KO", "SEG", "REG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "DOC", "AU", "ECG", "OT-SR"}
)
#: SOP class UID prefixes of non-image objects (SR family, presentation states, KO, SEG, ...).
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports and key object selection
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, segmentation, ...
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF/CDA
    "1.2.840.10008.5.1.4.1.1.481.",  # radiotherapy objects
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
)
#: Secondary Capture SOP classes (single- and multi-frame).
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"

#: A DICOM CS value (Modality, BodyPartExamined): 1 to 16 of upper-case letters, digits, space, ``_``.
_CODE_STRING = re.compile(r"[A-Z0-9 _]{1,16}")
CODE_STRINGS = "a list of DICOM code strings (1 to 16 of A-Z, 0-9, space and _ each)"


class SelectionConfigError(DicomIOError, ValueError):
    """The ``[selection]`` configuration has an unknown key or a bad value."""

    reason = "config"


def code_strings(value: Any, *, wildcard: bool = False) -> tuple[str, ...]:
    """``value`` (a list of strings) as upper-case DICOM CS values, stripped.

    Raises:
        ValueError: not a list of strings, or a value that is no CS value (``"*"`` passes
            with ``wildcard``); the message says what is expected.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(v, str) for v in value):
        raise ValueError("a list of strings")
    codes = tuple(v.strip().upper() for v in value)
    if not all(_CODE_STRING.fullmatch(c) or (wildcard and c == "*") for c in codes):
        raise ValueError(CODE_STRINGS)
    return codes


def _selection_where(problem: Problem) -> str:
    return "selection." + ".".join(str(part) for part in problem.loc) if problem.loc else "selection"


SELECTION_WORDING = Wording(
    unknown=lambda p: f"unknown selection key(s) {', '.join(p.keys)}; valid keys: {', '.join(sorted(p.valid))}",
    invalid=lambda p: f"{_selection_where(p)} must be {p.expected}, got {show(p.value)}",
    missing=lambda p: f"{_selection_where(p)} is missing",
)
"""How selection problems read (``[selection]`` of the site config prefixes them)."""


class SelectionRules(ConfigModel):
    """Which instances are screened. Every field maps to a ``[selection]`` key of the site config.

    Building one in code (``SelectionRules(modalities=("CR",))``) validates it as reading the
    site config does and raises :class:`SelectionConfigError` naming the key.

    Attributes:
        modalities: modalities that are projection radiographs to screen; ``"*"`` accepts
            any image modality (for scanning an archive, not for screening).
        body_parts: when set, only these BodyPartExamined values (upper case) are screened;
            an empty tuple screens every body part.
        allow_burned_in: screen images that declare burned-in annotation (text on the pixels
            can mislead a model and leak identity into crops).
        allow_derived: screen SECONDARY image types (copies derived after the examination).
        allow_secondary_capture: screen Secondary Capture objects (screenshots, digitised film).
        allow_for_processing: screen DX "FOR PROCESSING" images (raw detector data; decoded
            with an automatic window since they usually carry none).
        max_pixel_bytes: refuse headers that claim more decoded pixel bytes than this.
        deduplicate: skip a file whose SOPInstanceUID an earlier file (in path order) already
            has (``duplicate-sop-instance``), so one image is never screened or reported twice.
    """

    modalities: tuple[str, ...] = ("CR", "DX", "DR")
    body_parts: tuple[str, ...] = ()
    allow_burned_in: bool = False
    allow_derived: bool = False
    allow_secondary_capture: bool = False
    allow_for_processing: bool = True
    max_pixel_bytes: Annotated[int, check(lambda v: v > 0, "a positive number of bytes")] = DEFAULT_MAX_PIXEL_BYTES
    deduplicate: bool = True

    @classmethod
    def code_problems(cls) -> tuple[type[SelectionConfigError], Wording]:
        return SelectionConfigError, SELECTION_WORDING

    @field_validator("modalities", mode="before")
    @classmethod
    def _modalities(cls, value: Any) -> tuple[str, ...]:
        codes = code_strings(value, wildcard=True)
        if not codes:
            raise ValueError('a non-empty list: with none, nothing would be screened; list e.g. ["CR", "DX"]')
        return codes

    @field_validator("body_parts", mode="before")
    @classmethod
    def _body_parts(cls, value: Any) -> tuple[str, ...]:
        return code_strings(value)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "SelectionRules":
        """Build rules from a config table, naming any unknown key and the valid ones.

        Raises:
            SelectionConfigError: an unknown key or a bad value.
        """
        return parse_model(cls, values, error=SelectionConfigError, wording=SELECTION_WORDING)


@dataclass(frozen=True)
class Selection:
    """The verdict on one instance: selected, or skipped with one reason code and a message."""

    selected: bool
    reason: str = ""
    message: str = ""


SELECTED = Selection(True)


def _skip(reason: str, message: str) -> Selection:
    return Selection(False, reason, message)


def is_screenable_image(inst: Instance, rules: SelectionRules = SelectionRules()) -> bool:
    """Whether ``inst`` is a radiograph ``rules`` would screen, were its pixel data readable.

    A view refused for its pixel data (too large, truncated, cut short before Pixel Data) is
    part of what must be screened: its study cannot be screened whole without it.
    """
    return select_instance(replace(inst, has_pixel_data=True), rules).selected


def select_instance(inst: Instance, rules: SelectionRules = SelectionRules()) -> Selection:
    """Apply ``rules`` to one indexed instance."""
    sop = inst.sop_class_uid
    if inst.modality in NON_IMAGE_MODALITIES or sop.startswith(NON_IMAGE_SOP_PREFIXES):
        return _skip("non-image-object", f"not an image: {inst.sop_class_name or sop or inst.modality}")
    if sop.startswith(SECONDARY_CAPTURE_PREFIX) and not rules.allow_secondary_capture:
        return _skip("secondary-capture", f"secondary capture object ({inst.sop_class_name or sop})")
    if "*" not in rules.modalities and inst.modality not in rules.modalities:
        shown = inst.modality or "(none)"
        return _skip("modality", f"modality {shown} not in {list(rules.modalities)}")
    if not inst.has_pixel_data:
        return _skip("no-pixel-data", "image object without Pixel Data")
    if "LOCALIZER" in inst.image_type:
        return _skip("localizer", "ImageType marks a localizer")
    if inst.image_type[1:2] == ("SECONDARY",) and not rules.allow_derived:
        image_type = "\\".join(inst.image_type)
        return _skip("derived-image", f"ImageType {image_type} is a secondary (derived) image")
    if inst.burned_in_annotation == "YES" and not rules.allow_burned_in:
        return _skip("burned-in-annotation", "BurnedInAnnotation is YES")
    if rules.body_parts and inst.body_part not in rules.body_parts:
        shown = inst.body_part or "(none)"
        return _skip("body-part", f"BodyPartExamined {shown} not in {list(rules.body_parts)}")
    if inst.presentation_intent == "FOR PROCESSING" and not rules.allow_for_processing:
        return _skip("for-processing", "DX image FOR PROCESSING (raw detector data)")
    return SELECTED
