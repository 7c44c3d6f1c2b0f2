"""Each member kind declares its options once (a MemberOptions model); create_member checks them in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from ensembles.config_model import valid_keys
from ensembles.errors import CheckpointError
from ensembles.registry import BUILTIN_KINDS, MemberOptions, create_member, member_kind, missing_requirements

KINDS = [info.kind for info in BUILTIN_KINDS]
EXTRA = {
    "paligemma-classifier": ("name",),
    "paligemma-detector": ("name", "max_boxes", "max_new_tokens", "threshold", "symmetries"),
    "detr": ("box_floor", "top_k"),
    "refiner": (),
}


def _registered(kind: str):  # type: ignore[no-untyped-def]
    if missing_requirements(kind):
        pytest.skip(f"{kind} cannot run here: missing {missing_requirements(kind)}")
    return member_kind(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_declares_the_common_options_and_its_own(kind: str) -> None:
    options = _registered(kind).options
    assert issubclass(options, MemberOptions)
    assert valid_keys(options) == ("device", "dtype", "quantization", "batch_size", *EXTRA[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_option_is_refused_before_the_checkpoint_is_read(kind: str, tmp_path: Path) -> None:
    valid = ", ".join(valid_keys(_registered(kind).options))
    with pytest.raises(CheckpointError) as info:
        create_member(kind, tmp_path / "never-read", colour="red", bach_size=2)
    assert str(info.value) == f"{kind} got unknown option(s) bach_size, colour; valid: {valid}"


@pytest.mark.parametrize("kind", KINDS)
def test_an_option_of_the_wrong_type_is_refused(kind: str, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        create_member(kind, tmp_path / "never-read", batch_size="8")
    assert str(info.value) == f"{kind} option 'batch_size' must be an integer, got '8'"


def test_defaults_are_the_kinds_own() -> None:
    assert _registered("refiner").parse_options({}).batch_size == 32
    detector = _registered("paligemma-detector").parse_options({"threshold": 1, "device": "cpu"})
    assert detector.threshold == 1.0 and detector.batch_size == 8  # type: ignore[attr-defined]
