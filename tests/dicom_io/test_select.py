"""select: one reason code per skip, rules loadable from a config table with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_io.index import Instance
from dicom_io.select import SelectionConfigError, SelectionRules, select_instance


def _inst(**kw: object) -> Instance:
    base: dict[str, object] = dict(
        path=Path("x.dcm"), file_size=1, sop_class_uid="1.2.840.10008.5.1.4.1.1.1", sop_instance_uid="1",
        study_instance_uid="2", series_instance_uid="3", transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CR", image_type=("ORIGINAL", "PRIMARY"), has_pixel_data=True, rows=8, columns=8,
        bits_allocated=16, bits_stored=12, body_part="SHOULDER",
    )
    base.update(kw)
    return Instance(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({}, ""),
        ({"modality": "DX", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1.1"}, ""),
        ({"modality": "SR", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.88.33"}, "non-image-object"),
        ({"modality": "PR", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.11.1"}, "non-image-object"),
        ({"modality": "KO", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.88.59"}, "non-image-object"),
        ({"modality": "SEG", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.66.4"}, "non-image-object"),
        ({"modality": "CT", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2"}, "modality"),
        ({"modality": "OT", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7"}, "secondary-capture"),
        ({"has_pixel_data": False}, "no-pixel-data"),
        ({"image_type": ("ORIGINAL", "PRIMARY", "LOCALIZER")}, "localizer"),
        ({"image_type": ("DERIVED", "PRIMARY")}, ""),
        ({"image_type": ("DERIVED", "SECONDARY")}, "derived-image"),
        ({"image_type": ("ORIGINAL", "SECONDARY")}, "derived-image"),
        ({"burned_in_annotation": "YES"}, "burned-in-annotation"),
    ],
    ids=["cr", "dx", "sr", "pr", "ko", "seg", "ct", "secondary-capture", "no-pixels", "localizer",
         "derived-primary", "derived-secondary", "original-secondary", "burned-in"],
)
def test_default_rules(overrides: dict[str, object], reason: str) -> None:
    verdict = select_instance(_inst(**overrides))
    assert verdict.selected is (reason == "")
    assert verdict.reason == reason
    if reason:
        assert verdict.message


def test_opt_ins_and_body_part_filter() -> None:
    rules = SelectionRules(allow_burned_in=True, allow_derived=True, body_parts=("shoulder",))
    assert select_instance(_inst(burned_in_annotation="YES"), rules).selected
    assert select_instance(_inst(image_type=("DERIVED", "SECONDARY")), rules).selected
    verdict = select_instance(_inst(body_part="CHEST"), rules)
    assert (verdict.reason, verdict.message) == ("body-part", "BodyPartExamined CHEST not in ['SHOULDER']")
    strict = SelectionRules(allow_for_processing=False)
    assert select_instance(_inst(presentation_intent="FOR PROCESSING"), strict).reason == "for-processing"
    assert select_instance(_inst(modality="MR"), SelectionRules(modalities=("*",))).selected


def test_rules_from_mapping_and_errors() -> None:
    rules = SelectionRules.from_mapping({"modalities": ["cr"], "allow_burned_in": True})
    assert rules.modalities == ("CR",) and rules.allow_burned_in
    with pytest.raises(SelectionConfigError, match="unknown selection key\\(s\\) modality; valid keys: allow_burned_in"):
        SelectionRules.from_mapping({"modality": ["CR"]})
    with pytest.raises(SelectionConfigError, match="selection.allow_derived must be true or false, got 'yes'"):
        SelectionRules.from_mapping({"allow_derived": "yes"})
    with pytest.raises(SelectionConfigError, match="selection.modalities must be a list of strings"):
        SelectionRules.from_mapping({"modalities": "CR"})
    with pytest.raises(SelectionConfigError, match="nothing would be screened"):
        SelectionRules(modalities=())
