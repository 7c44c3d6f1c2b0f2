"""The one typed-config mechanism (ensembles.config_model), on a small model of its own."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field, ValidationError

from ensembles.config_model import (
    ConfigModel, ListAsTuple, Problem, Wording, check, code_init, parse_model, problems, raise_problem,
    show, valid_keys,
)
from ensembles.errors import ScreenError
from ensembles.types import ResizeMode


class _Error(ScreenError):
    pass


class Run(ConfigModel):
    workers: int = Field(2, ge=1)
    timeout_s: float = Field(300.0, gt=0)
    mode: ResizeMode = Field(ResizeMode.SQUASH, strict=False)
    folder: Path | None = Field(None, strict=False)
    parts: Annotated[tuple[str, ...], ListAsTuple] = ()
    share: Annotated[float, check(lambda v: 0 <= v <= 1, "in [0, 1]")] = 0.5


class Site(ConfigModel):
    run: Run = Run()
    members: dict[str, Run] = {}


def _where(loc: tuple[str | int, ...]) -> str:
    return "[" + ".".join(str(p) for p in loc) + "]" if loc else "the top level"


WORDING = Wording(
    unknown=lambda p: f"unknown key(s) {', '.join(p.keys)} in {_where(p.loc)}; valid keys: {', '.join(p.valid)}",
    invalid=lambda p: f"{_where(p.loc[:-1])}.{p.keys[0]} must be {p.expected}, got {show(p.value)}",
    missing=lambda p: f"{_where(p.loc)} needs {p.keys[0]}",
)


def _problems(data: Any) -> list[Problem]:
    with pytest.raises(ValidationError) as info:
        Site.model_validate(data)
    return problems(Site, info.value)


def test_unknown_keys_are_grouped_per_table_with_the_valid_keys() -> None:
    found = _problems({"run": {"wokers": 3, "x": 1}, "members": {"a": {"zz": 1}}})
    assert [(p.kind, p.loc, p.keys) for p in found] == [
        ("unknown", ("run",), ("wokers", "x")), ("unknown", ("members", "a"), ("zz",))]
    assert found[0].valid == found[1].valid == valid_keys(Run) == (
        "workers", "timeout_s", "mode", "folder", "parts", "share")


@pytest.mark.parametrize(("run", "expected"), [
    ({"workers": True}, "[run].workers must be an integer, got True"),
    ({"workers": "5"}, "[run].workers must be an integer, got '5'"),
    ({"workers": 0}, "[run].workers must be a number >= 1, got 0"),
    ({"timeout_s": math.nan}, "[run].timeout_s must be a finite number, got nan"),
    ({"timeout_s": math.inf}, "[run].timeout_s must be a finite number, got inf"),
    ({"mode": "zoom"}, "[run].mode must be one of squash or letterbox, got 'zoom'"),
    ({"share": 1.5}, "[run].share must be in [0, 1], got 1.5"),
    ({"parts": ["A", 3]}, "[run.parts].1 must be a string, got 3"),  # the item's place
])
def test_each_invalid_value_is_one_worded_message(run: dict[str, Any], expected: str) -> None:
    with pytest.raises(_Error) as info:
        parse_model(Site, {"run": run}, error=_Error, wording=WORDING)
    assert str(info.value) == expected


def test_words_paths_lists_and_ints_for_floats_are_accepted() -> None:
    site = parse_model(Site, {"run": {"mode": "letterbox", "folder": "a/b", "parts": ["X"], "timeout_s": 5}},
                       error=_Error, wording=WORDING)
    assert site.run.mode is ResizeMode.LETTERBOX and site.run.mode == "letterbox"
    assert site.run.folder == Path("a/b") and site.run.parts == ("X",)
    assert site.run.timeout_s == 5.0 and isinstance(site.run.timeout_s, float)


def test_models_are_frozen_and_replace_validates() -> None:
    run = Run()
    with pytest.raises(ValidationError):
        run.workers = 3  # type: ignore[misc]
    assert run.replace(workers=3).workers == 3 and run.workers == 2
    with pytest.raises(ValidationError):
        run.replace(workers=0)


class _Coded(ConfigModel):
    """A model whose constructor in code raises the project's error (as op.json's do)."""

    k: int = Field(1, ge=1)

    @code_init
    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise_problem(type(self), exc, error=_Error, wording=WORDING)


class _Holder(ConfigModel):
    inner: _Coded = _Coded()


def test_code_init_is_for_code_only_nested_tables_keep_their_place() -> None:
    with pytest.raises(_Error) as built:
        _Coded(k=0)
    assert str(built.value) == "the top level.k must be a number >= 1, got 0"
    # read as data, the nested table's problem names its place in the file, which a custom
    # __init__ called by pydantic would lose
    with pytest.raises(_Error) as info:
        parse_model(_Holder, {"inner": {"k": 0}}, error=_Error, wording=WORDING)
    assert str(info.value) == "[inner].k must be a number >= 1, got 0"


def test_a_misspelt_key_is_reported_before_other_problems() -> None:
    with pytest.raises(_Error) as info:
        parse_model(Site, {"run": {"timeout_s": math.nan, "wokers": 3}}, error=_Error, wording=WORDING)
    assert str(info.value).startswith("unknown key(s) wokers in [run]; valid keys: workers, ")
