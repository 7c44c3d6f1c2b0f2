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
    write_member_spec,
)
from ensembles.errors import CheckpointError, EnsembleError


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
