"""The base of every table of a training config, and how their problems are worded.

Every table (``[train]``, ``[optim]``, ``[loss]``, ``[paligemma]``, the recipes' ``[detr]`` and
``[refiner]``) and the file's top level are :class:`TrainTable` s: :class:`~ensembles.config_model.
ConfigModel` s (the project's one typed-config mechanism) whose problems are
:class:`~train.errors.TrainConfigError` s worded as the training configs always were::

    [train] has unknown key(s) epoch; valid keys: batch_size, grad_accum, ...
    [train] batch_size must be an integer, got 'two'
    [optim] lr must be > 0, got -1.0
    [loss] decision must be one of ce, wce, focal, none, got 'hinge'
    [paligemma] needs base = "<local PaliGemma directory>" or a [paligemma.tiny] table ...

Reading a file (:func:`parse_table`) and building a table in code (``DetrSection(top_k=0)``)
fail alike. This module imports pydantic only (no torch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, Field

from ensembles.config_model import (
    ConfigModel,
    Problem,
    Wording,
    check,
    parse_model,
    show,
)
from train.errors import TrainConfigError

__all__ = ["Count", "NonNegative", "Off", "Positive", "TrainTable", "Unit", "parse_table", "wording"]

M = TypeVar("M", bound=BaseModel)

_BOUNDS = (">", ">=", "<", "<=")

Count = Annotated[int, Field(ge=1)]
"""A count of at least one (``batch_size``, ``epochs`` ...)."""
Off = Annotated[int, check(lambda v: v >= 0, "must be >= 0 (0 = off/default)")]
"""A count where 0 switches the feature off or keeps the default (``max_steps``, ``threads``)."""
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Unit = Annotated[float, check(lambda v: 0 <= v <= 1, "must be in [0, 1]")]
"""A number in ``[0, 1]`` (a threshold, a blend weight)."""


class TrainTable(ConfigModel):
    """Base of the training configs' tables (see the module docstring).

    Attributes:
        TABLE: the table's name in the file (``"train"``, ``"detr"``); empty for the top level.

    Raises:
        TrainConfigError: (building one) an unknown key, a wrong type, a value out of range.
    """

    TABLE: ClassVar[str] = ""

    @classmethod
    def code_problems(cls) -> tuple[type[TrainConfigError], Wording]:
        return TrainConfigError, wording(cls.TABLE)


def _name(parts: tuple[str | int, ...]) -> str:
    """``("train", "batch_size")`` -> ``[train] batch_size``; ``("seed",)`` -> ``seed``;
    ``("loss", "class_weights", 0)`` -> ``[loss] class_weights[0]``."""
    if len(parts) == 1:
        return str(parts[0])
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts[1:]).lstrip(".")
    return f"[{parts[0]}] {key}"


def _table(parts: tuple[str | int, ...]) -> str:
    return f"[{'.'.join(str(p) for p in parts)}]" if parts else "the config"


def _phrase(expected: str) -> str:
    """pydantic's ``expected`` as today's messages say it after ``must``."""
    if expected.startswith("must "):
        return expected.removeprefix("must ")
    if expected.startswith("a number ") and expected.split()[2] in _BOUNDS:
        expected = re.sub(r"(\d)\.0$", r"\1", expected.removeprefix("a number "))  # "> 0.0" -> "> 0"
    elif expected.startswith("one of "):
        expected = expected.replace(" or ", ", ")  # "one of a, b or c" -> "one of a, b, c"
    return f"be {expected}"


def wording(table: str = "") -> Wording:
    """How a training config words a problem in ``table`` (``""``: locations from the top)."""
    prefix: tuple[str | int, ...] = (table,) if table else ()

    def unknown(problem: Problem) -> str:
        parts = prefix + problem.loc
        keys, valid = ", ".join(problem.keys), ", ".join(problem.valid)
        if not parts:
            return f"unknown top-level key(s) {keys}; valid keys: {valid}"
        return f"{_table(parts)} has unknown key(s) {keys}; valid keys: {valid}"

    def invalid(problem: Problem) -> str:
        parts = prefix + problem.loc
        if not parts or (problem.type == "value_error" and isinstance(problem.value, Mapping)):
            return f"{_table(parts)} {problem.expected}"  # a check of the whole table
        if problem.expected == "a table":
            return f"{_table(parts)} must be a table, got {show(problem.value)}"
        return f"{_name(parts)} must {_phrase(problem.expected)}, got {show(problem.value)}"

    def missing(problem: Problem) -> str:
        return f"{_table(prefix + problem.loc)} needs {', '.join(problem.keys)}"

    return Wording(unknown=unknown, invalid=invalid, missing=missing)


def parse_table(model: type[M], data: Any, table: str | None = None) -> M:
    """``data`` (a parsed TOML table) as ``model``, or a :class:`TrainConfigError`.

    Args:
        model: the table's model (a :class:`TrainTable`, or any ``ConfigModel``).
        data: the table as TOML gave it.
        table: the table's name for messages (default: the model's ``TABLE``).

    Raises:
        TrainConfigError: an unknown key, a wrong type or a value out of range, worded as the
            module docstring shows.
    """
    name = table if table is not None else str(getattr(model, "TABLE", ""))
    return parse_model(model, data, error=TrainConfigError, wording=wording(name))
