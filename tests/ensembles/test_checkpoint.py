"""member.json round trips and the errors a broken checkpoint gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ensembles.checkpoint import (
    FORMAT_VERSION,
    MEMBER_JSON,
    MemberSpec,
    read_member_spec,
    save_paligemma_checkpoint,
    write_member_spec,
)
from ensembles.errors import CheckpointError, EnsembleError
from ensembles.types import ResizeMode


def _spec(**overrides: object) -> MemberSpec:
    values: dict[str, object] = dict(
        kind="paligemma-detector",
        name="pg2-10b-det",
        image_size=448,
        resize="letterbox",
        mean=(0.1, 0.2, 0.3),
        std=(0.4, 0.5, 0.6),
        prompt="Detect Fracture",
        labels=("Fracture", "Normal"),
        canny_blend=0.3,
        threshold=0.25,
        options={"task_head": True, "max_new_tokens": 40, "nested": {"a": [1, 2]}},
    )
    values.update(overrides)
    return MemberSpec(**values)  # type: ignore[arg-type]


def test_round_trip_is_identical(tmp_path: Path) -> None:
    spec = _spec()
    path = write_member_spec(tmp_path / "ckpt", spec)
    assert path == tmp_path / "ckpt" / MEMBER_JSON
    loaded = read_member_spec(tmp_path / "ckpt")
    assert loaded == spec
    assert loaded.mean == (0.1, 0.2, 0.3) and isinstance(loaded.labels, tuple)


def test_json_is_sorted_indented_and_leaves_no_temp_file(tmp_path: Path) -> None:
    write_member_spec(tmp_path, _spec())
    text = (tmp_path / MEMBER_JSON).read_text()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert text.startswith("{\n  \"")
    assert data["format_version"] == FORMAT_VERSION
    assert [p.name for p in tmp_path.iterdir()] == [MEMBER_JSON]


def test_overwrite_replaces_content(tmp_path: Path) -> None:
    write_member_spec(tmp_path, _spec(threshold=0.1))
    write_member_spec(tmp_path, _spec(threshold=0.9))
    assert read_member_spec(tmp_path).threshold == 0.9


def test_defaults_for_a_minimal_file(tmp_path: Path) -> None:
    (tmp_path / MEMBER_JSON).write_text(json.dumps({"kind": "detr", "name": "d", "image_size": 64}))
    spec = read_member_spec(tmp_path)
    assert (spec.resize, spec.prompt, spec.clahe, spec.canny_blend) == ("squash", None, False, 0.0)
    assert spec.labels == ("fracture",) and spec.options == {}


def test_missing_directory_and_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_member_spec(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="has no member.json"):
        read_member_spec(tmp_path)


def test_malformed_json(tmp_path: Path) -> None:
    (tmp_path / MEMBER_JSON).write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_member_spec(tmp_path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "image_size": 64}, "missing required field.*kind"),
        ({"kind": "detr", "name": "x", "image_size": 64, "imagesize": 3}, "unknown field.*imagesize"),
        ({"kind": "detr", "name": "x", "image_size": "64"}, "'image_size' must be an integer"),
        ({"kind": "detr", "name": "x", "image_size": 0}, "'image_size' must be >= 1"),
        ({"kind": "detr", "name": "x", "image_size": 64, "resize": "crop"}, "'resize' must be one of"),
        ({"kind": "detr", "name": "x", "image_size": 64, "std": [1, 0, 1]}, "'std' must be > 0"),
        ({"kind": "detr", "name": "x", "image_size": 64, "mean": [1, 2]}, "'mean' must list three"),
        ({"kind": "detr", "name": "x", "image_size": 64, "threshold": 1.5}, "'threshold' must be in"),
        ({"kind": "detr", "name": "x", "image_size": 64, "canny_blend": -0.1}, "'canny_blend'"),
        ({"kind": "detr", "name": "x", "image_size": 64, "clahe": "yes"}, "'clahe' must be true"),
        ({"kind": "detr", "name": "x", "image_size": 64, "labels": []}, "'labels' must list"),
        ({"kind": "Detr!", "name": "x", "image_size": 64}, "'kind' must be a registry kind"),
        ({"kind": "detr", "name": " ", "image_size": 64}, "'name' must be a non-empty"),
        ({"kind": "detr", "name": "x", "image_size": 64, "format_version": 99}, "newer than"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_invalid_fields_are_named(tmp_path: Path, data: object, message: str) -> None:
    (tmp_path / MEMBER_JSON).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=message) as info:
        read_member_spec(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_constructor_validates_and_errors_are_ensemble_errors() -> None:
    with pytest.raises(EnsembleError, match="options"):
        _spec(options={"bad": object()})
    with pytest.raises(CheckpointError, match="format_version"):
        _spec(format_version=FORMAT_VERSION + 1)


def test_write_refuses_a_non_spec(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="needs a MemberSpec"):
        write_member_spec(tmp_path, {"kind": "detr"})  # type: ignore[arg-type]


MINIMAL = {"kind": "detr", "name": "x", "image_size": 64}
SAMPLE_MODELS = Path(__file__).resolve().parents[2] / "sample_data" / "models"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"imagesize": 3}, "member spec has unknown field(s) imagesize; valid fields: kind, name, "
                           "image_size, resize,"),
        ({"image_size": 6.5}, "member spec field 'image_size' must be an integer, got 6.5"),
        ({"image_size": 0}, "member spec field 'image_size' must be >= 1, got 0"),
        ({"threshold": 1.5}, "member spec field 'threshold' must be in [0, 1], got 1.5"),
        ({"clahe": 1}, "member spec field 'clahe' must be true or false, got 1"),
        ({"resize": "crop"}, "member spec field 'resize' must be one of squash or letterbox, got 'crop'"),
        ({"intended_use": "hospital"},
         "member spec field 'intended_use' must be one of clinical, research or demo, got 'hospital'"),
        ({"kind": "toy"}, "member spec field 'kind' must be a registered member kind (detr, "),
        ({"format_version": 0}, "member spec field 'format_version' must be >= 1, got 0"),
        ({"labels": ["Fracture", 3]}, "member spec field 'labels[1]' must be a string, got 3"),
    ],
)
def test_each_problem_is_one_line_naming_field_value_and_fix(
        tmp_path: Path, change: dict[str, object], message: str) -> None:
    (tmp_path / MEMBER_JSON).write_text(json.dumps({**MINIMAL, **change}))
    with pytest.raises(CheckpointError) as info:
        read_member_spec(tmp_path)
    assert str(info.value).startswith(f"invalid {str(tmp_path / MEMBER_JSON)!r}: {message}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ['"mean": [NaN, 0.5, 0.5]', '"threshold": NaN', '"canny_blend": Infinity'])
def test_nan_and_infinity_are_refused(tmp_path: Path, text: str) -> None:
    body = json.dumps(MINIMAL)[:-1] + ", " + text + "}"
    (tmp_path / MEMBER_JSON).write_text(body)
    with pytest.raises(CheckpointError, match="must be a finite number, got (nan|inf)"):
        read_member_spec(tmp_path)


def test_a_version_1_file_reads_as_research(tmp_path: Path) -> None:
    """Version 1 had no intended_use; it reads as research, and writing it back says version 2."""
    (tmp_path / MEMBER_JSON).write_text(json.dumps({**MINIMAL, "format_version": 1, "code_version": "0.0.9"}))
    spec = read_member_spec(tmp_path)
    assert (spec.format_version, spec.intended_use, spec.code_version) == (1, "research", "0.0.9")
    write_member_spec(tmp_path, spec)
    assert json.loads((tmp_path / MEMBER_JSON).read_text())["format_version"] == FORMAT_VERSION


def test_a_newer_version_is_refused_before_its_fields(tmp_path: Path) -> None:
    (tmp_path / MEMBER_JSON).write_text(json.dumps({**MINIMAL, "format_version": FORMAT_VERSION + 1,
                                                    "field_of_the_future": 1}))
    with pytest.raises(CheckpointError, match=f"'format_version' {FORMAT_VERSION + 1} is newer than this "
                                              "fracture-screen supports"):
        read_member_spec(tmp_path)


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in SAMPLE_MODELS.glob("*/member.json")))
def test_the_committed_demo_members_load_and_write_back_unchanged(tmp_path: Path, folder: str) -> None:
    source = SAMPLE_MODELS / folder
    spec = read_member_spec(source)
    assert spec.intended_use == "demo" and spec.resize in ("squash", "letterbox")
    write_member_spec(tmp_path, spec)
    assert (tmp_path / MEMBER_JSON).read_bytes() == (source / MEMBER_JSON).read_bytes()


def test_sample_members_exist() -> None:
    assert len(list(SAMPLE_MODELS.glob("*/member.json"))) == 4


def test_values_are_typed_when_read(tmp_path: Path) -> None:
    (tmp_path / MEMBER_JSON).write_text(json.dumps({**MINIMAL, "resize": "letterbox", "mean": [0, 0.5, 1]}))
    spec = read_member_spec(tmp_path)
    assert spec.resize is ResizeMode.LETTERBOX and spec.mean == (0.0, 0.5, 1.0)
    assert all(isinstance(v, float) for v in spec.mean) and isinstance(spec.labels, tuple)


def test_replace_validates_like_a_new_spec() -> None:
    spec = _spec()
    assert spec.replace(threshold=0.75).threshold == 0.75 and spec.threshold == 0.25
    with pytest.raises(CheckpointError, match="'threshold' must be in"):
        spec.replace(threshold=2.0)


class _Saves:
    def __init__(self, name: str) -> None:
        self.name = name

    def save_pretrained(self, directory: Path, **_: object) -> None:
        (Path(directory) / f"{self.name}.json").write_text("{}")


def test_save_paligemma_checkpoint_writes_weights_processor_and_member_json(tmp_path: Path) -> None:
    spec = _spec()
    out = save_paligemma_checkpoint(tmp_path / "new", _Saves("model"), _Saves("processor"), spec)
    assert sorted(p.name for p in out.iterdir()) == [MEMBER_JSON, "model.json", "processor.json"]
    assert read_member_spec(out) == spec
