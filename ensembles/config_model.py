"""The one typed-config mechanism: strict pydantic models for every file the tool reads.

The site config (``screen.site_config``), the training configs (``train.train_config``),
``member.json`` (``ensembles.checkpoint``) and ``op.json`` (``ensembles.operating_point``) are
:class:`ConfigModel` subclasses. A model is

- **strict**: an unknown key is refused with the list of valid keys, so a typo never silently
  falls back to a default; a string is not a number and ``true`` is not ``1``;
- **complete**: every value is validated when the file is read (finite, in range, one of the
  allowed words, fit for the DICOM attribute it goes into), never later in the night;
- **frozen**: a loaded config cannot change under the run that read it.

:func:`parse_model` turns pydantic's ``ValidationError`` into the project's own error (a
:class:`~ensembles.errors.ScreenError` subclass chosen by the caller) with one message a person
can act on; each file kind words its messages through a :class:`Wording`, so today's messages
(``unknown key(s) wokers in [run]; valid keys: ...``) stay as they are.

This module imports pydantic only (no torch): ``dicom_io`` and ``screen`` may use it freely.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Self, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from ensembles.errors import ScreenError

__all__ = ["CHECK_ERRORS", "ConfigModel", "ListAsTuple", "Problem", "Wording", "check", "code_init",
           "is_predicate", "parse_model", "problems", "raise_problem", "show", "valid_keys"]

M = TypeVar("M", bound=BaseModel)


InitT = TypeVar("InitT", bound=Callable[..., None])


def code_init(init: InitT) -> InitT:
    """Mark a model's own ``__init__`` (say one that raises the project's error, or takes
    positional arguments) as the door for code only.

    Pydantic calls a model's custom ``__init__`` for nested tables too, which would lose where
    in the file a problem is; marked like pydantic's own ``BaseModel.__init__``, nested tables
    are validated as data and only ``Model(...)`` in code goes through ``init``.
    """
    setattr(init, "__pydantic_base_init__", True)
    return init


class ConfigModel(BaseModel):
    """Base of every config model: unknown keys refused, no NaN/inf, frozen, no coercion from
    strings (``"5"`` is not an int, ``true`` is not a number); ints are accepted where a float
    is expected. Fields that take a path declare ``Path`` with ``Field(strict=False)`` (TOML has no
    path type), and fields that take a mode declare its ``StrEnum`` with ``Field(strict=False)`` so
    the file's plain string (``"letterbox"``) is accepted and anything else is refused with the
    list of words."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              validate_default=True, populate_by_name=True)

    @classmethod
    def code_problems(cls) -> tuple[type[ScreenError], Wording] | None:
        """How building this model in code reports a problem: the project error and the
        wording its file uses, so ``Model(x=bad)`` fails as reading ``x = bad`` does. ``None``
        (the default): pydantic's ``ValidationError``. Nested tables read from a file never go
        through here (see :func:`code_init`): their problems keep their place in the file."""
        return None

    @code_init
    def __init__(self, /, **data: Any) -> None:
        reporting = type(self).code_problems()
        if reporting is None:
            super().__init__(**data)
            return
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise_problem(type(self), exc, error=reporting[0], wording=reporting[1])

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated like a fresh one (``model_copy`` does not validate).

        Raises:
            pydantic.ValidationError: or the project error a subclass's ``__init__`` raises.
        """
        return type(self)(**{**{name: getattr(self, name) for name in type(self).model_fields},
                             **changes})


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config file.

    Attributes:
        kind: ``unknown`` (keys not in the model), ``missing`` (a required key), ``invalid``
            (a value of the wrong type or out of range).
        loc: where, as keys from the top of the file (``("run", "workers")``); for ``unknown``
            the table that holds the unknown keys.
        keys: for ``unknown``: the unknown keys (sorted); for others the one key, or empty.
        valid: for ``unknown``: the keys the table takes, in the model's order.
        value: the value found (``invalid``), else ``None``.
        expected: what the value must be, in words (``an integer``, ``a number >= 1`` ...).
        type: pydantic's error type (``int_type``, ``greater_than_equal``, ``value_error`` for a
            model's own check, whose ``expected`` is then that check's own sentence).
    """

    kind: str
    loc: tuple[str | int, ...]
    keys: tuple[str, ...] = ()
    valid: tuple[str, ...] = ()
    value: Any = None
    expected: str = ""
    type: str = ""


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "finite_number": "a finite number",
    "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table",
    "list_type": "a list", "tuple_type": "a list", "path_type": "a path string",
}


def _expected(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()), "")
        return f"a number {bounds[kind]} {limit}"
    if kind == "literal_error" or kind == "enum":
        return f"one of {ctx.get('expected', '')}".replace("'", "")
    if kind in ("string_too_long", "too_long"):
        return f"at most {ctx.get('max_length', '?')} characters long"
    if kind in ("string_too_short", "too_short"):
        return f"at least {ctx.get('min_length', '?')} long"
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that the value at ``loc`` is parsed with (``None`` if not a model)."""
    hint: Any = model
    for part in loc:
        if isinstance(hint, type) and issubclass(hint, BaseModel):
            field = hint.model_fields.get(str(part)) or next(  # errors name a field by its alias
                (f for f in hint.model_fields.values() if f.alias == part), None)
            if field is None:
                return None
            hint = field.annotation
            continue
        hint = _container_item(hint)
        if hint is None:
            return None
    hint = _unwrap_optional(hint)
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None


def _unwrap_optional(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType")) and len(args) == 1:
        return args[0]
    return hint


def _container_item(hint: Any) -> Any:
    hint = _unwrap_optional(hint)
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (dict, Mapping, typing.Mapping) and len(args) == 2:
        return args[1]
    if origin in (list, tuple, Sequence) and args:
        return args[0]
    return None


def valid_keys(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a table parsed by ``model`` takes (aliases where declared), in declared order."""
    return tuple(f.alias or name for name, f in model.model_fields.items())


def problems(model: type[BaseModel], exc: ValidationError) -> list[Problem]:
    """``exc``'s errors as :class:`Problem` s: unknown keys grouped per table and listed first,
    then the others in pydantic's order."""
    out: list[Problem] = []
    unknown: dict[tuple[str | int, ...], list[str]] = {}
    for error in exc.errors(include_url=False):
        loc = tuple(error.get("loc", ()))
        kind = error.get("type")
        if kind == "extra_forbidden":
            table = loc[:-1]
            if table not in unknown:
                unknown[table] = []
                out.append(Problem("unknown", table))
            unknown[table].append(str(loc[-1]))
        elif kind == "missing":
            out.append(Problem("missing", loc[:-1], keys=(str(loc[-1]),)))
        else:
            loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith(("function-", "union["))))
            out.append(Problem("invalid", loc, keys=(str(loc[-1]),) if loc else (),
                               value=error.get("input"), expected=_expected(error),
                               type=str(kind)))
    result = []
    for problem in out:
        if problem.kind == "unknown":
            table_model = _model_at(model, problem.loc)
            valid = valid_keys(table_model) if table_model is not None else ()
            problem = Problem("unknown", problem.loc, keys=tuple(sorted(unknown[problem.loc])), valid=valid)
        result.append(problem)
    # a misspelt key first: its value may be what the other problems are about
    return sorted(result, key=lambda problem: problem.kind != "unknown")


@dataclass(frozen=True)
class Wording:
    """How one file kind words its problems (keeps each file's established messages).

    Each callable gets the :class:`Problem` and returns the message; ``where`` names a location
    (``("run", "workers")`` -> ``[run].workers`` for TOML, ``'thresholds.detr'`` for JSON ...).
    """

    unknown: Callable[[Problem], str]
    invalid: Callable[[Problem], str]
    missing: Callable[[Problem], str]

    def message(self, problem: Problem) -> str:
        """The one-line message for ``problem``."""
        return {"unknown": self.unknown, "missing": self.missing}.get(problem.kind, self.invalid)(problem)


CHECK_ERRORS = ("value_error", "assertion_error")
"""Error types of a model's own checks (a validator that raised): their ``expected`` is the
check's sentence, not a noun phrase."""

_PREDICATE_STARTS = ("must ", "needs ")


def is_predicate(sentence: str) -> bool:
    """Whether a check's sentence reads after the key (``must be ...``, ``needs ...``) rather
    than standing alone (``vote rule 'x' is unknown ...``); wordings put ``key: `` before the
    latter."""
    return sentence.startswith(_PREDICATE_STARTS)


def show(value: Any) -> str:
    """A value as messages quote it (``nan`` for a float NaN, else ``repr``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return repr(value)


def parse_model(model: type[M], data: Any, *, error: type[ScreenError], wording: Wording,
                context: Mapping[str, Any] | None = None) -> M:
    """``data`` (parsed TOML or JSON) as ``model``, or ``error`` with the first problem's message.

    Raises:
        ScreenError: (the ``error`` subclass) unknown key, wrong type, missing key or a value out
            of range, worded by ``wording``.
    """
    try:
        return model.model_validate(data, context=dict(context) if context else None)
    except ValidationError as exc:
        raise_problem(model, exc, error=error, wording=wording)


def raise_problem(model: type[BaseModel], exc: ValidationError, *, error: type[ScreenError],
                  wording: Wording) -> NoReturn:
    """Raise ``error`` with ``exc``'s first problem worded by ``wording`` (what
    :func:`parse_model` does; for a model whose ``__init__`` turns its own errors into the
    project's, so building one in code fails as reading its file does).

    Raises:
        ScreenError: always (the ``error`` subclass).
    """
    found = problems(model, exc)
    raise error(wording.message(found[0]) if found else str(exc)) from None


def _list_as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


ListAsTuple = BeforeValidator(_list_as_tuple)
"""Put on a tuple field (``Annotated[tuple[str, ...], ListAsTuple]``): TOML and JSON arrays
arrive as lists, which a strict tuple refuses; the items are still checked strictly."""


def check(test: Callable[[Any], bool], phrase: str) -> AfterValidator:
    """A field validator refusing every value ``test`` rejects, with ``phrase`` as the problem's
    ``expected`` (``Annotated[float, check(lambda v: 0 <= v <= 1, "in [0, 1]")]``): for a rule
    a plain bound cannot say, in the words the file kind's :class:`Wording` puts it in."""

    def validate(value: Any) -> Any:
        if not test(value):
            raise ValueError(phrase)
        return value

    return AfterValidator(validate)
