"""Every CSV the tool writes or reads, declared once, written and read through pandas.

A :class:`TableSchema` names a table's columns in order, each with its type (``str``, ``int``,
``float``, ``bool``), whether it may be empty, whether a file must have it, and the range or
values a reader accepts; a :class:`Family` declares per-member columns (``score:<member>``).
:func:`write_table` and :func:`read_table` are the only ways in and out. The tables:
:data:`STUDIES`, :data:`FINDINGS` and :data:`SCAN` (``screen run`` and ``screen scan``),
:data:`PREDICTIONS` and :data:`IMAGE_PREDICTIONS` (``screen eval``; ``screen tune`` reads
the first), :data:`TRAINING_METRICS` (a training run's ``metrics.csv``) and :data:`LABELS`
(the labels CSV: written by ``screen phantom``, read by ``screen prepare`` and ``screen eval``).

One format for every file (:data:`OUTPUT_FORMAT_VERSION` 2, the ``format_version`` of
``run.json``):

- UTF-8 without a byte-order mark (one is accepted on reading, as spreadsheets write it),
  ``\\n`` line endings, a header row, fields quoted only where needed (comma, quote, line
  break);
- the one missing value is the empty cell: ``None``, ``NaN`` and ``""`` are written empty, and
  an empty or blank cell is read back as missing (``NaN`` in a float column, ``<NA>`` in the others);
- floats are written as Python's shortest round-trip text (``repr``) with a trailing ``.0``
  dropped (``0.1``, ``1e-300``, ``284``), so a value read back is the same double: a threshold
  tuned on ``predictions.csv`` reproduces the same decisions, and whole pixel coordinates stay
  ``284`` as people write them. A fixed ``%.6g`` or ``%.6f`` would round scores (two studies
  one ulp apart could swap sides of a threshold) and write ``1e-9`` as ``0.000000``;
  infinities are ``inf`` and ``-inf``;
- ints as digits, bools as ``1`` and ``0`` (``true``/``false`` are accepted on reading);
- every text cell passes :func:`spreadsheet_safe` on writing and :func:`spreadsheet_text` on
  reading, so a header value such as ``=cmd|' /C calc'!A0`` is never a formula in a
  spreadsheet and still reads back as itself.

Writes are atomic (:mod:`dicom_io.atomic`) and follow the process's file mode (``[output]
file_mode`` through :func:`dicom_io.atomic.file_mode`). Readers check the header and every cell
against the schema and raise :class:`TableError` (or the caller's error class) naming the file,
the line (the header is line 1, each row one line) and the column. A row's type is checked on
writing too (a wrong type is a bug of the writer, named by row and column, never by value);
ranges and allowed values are checked on reading.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from dicom_io.atomic import atomic_write_text
from dicom_io.errors import DicomIOError

__all__ = [
    "ACQUISITION_COLUMNS", "FINDINGS", "FORMULA_STARTS", "IMAGE_PREDICTIONS", "LABELS", "OUTPUT_FORMAT_VERSION",
    "PREDICTIONS", "READS", "SCAN", "SCHEMAS", "STUDIES", "TRAINING_METRICS", "Column", "Family",
    "TableError", "TableSchema", "format_float", "read_table", "records", "spreadsheet_safe",
    "spreadsheet_text", "write_table",
]

#: Version of the output files' format: the CSVs here and ``run.json`` (``format_version``).
#: 1: everything before 2026-12-06; 2: this module's one format (README, "Changelog").
OUTPUT_FORMAT_VERSION = 2

Dtype = Literal["str", "int", "float", "bool"]

#: A text cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets.
FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
_QUOTED_STARTS = FORMULA_STARTS + ("'",)
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INFINITIES = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf}
_TRUE, _FALSE = ("1", "true"), ("0", "false")
_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")

ErrorClass = Callable[[str], Exception]


class TableError(DicomIOError):
    """A table cannot be written as declared, or a file does not read as its schema says."""

    reason = "bad-table"


def spreadsheet_safe(value: Any) -> Any:
    """``value``, or ``"'" + value`` when it is text a spreadsheet would evaluate.

    OWASP's rule for CSV injection: a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
    carriage return is prefixed with a single quote, which the spreadsheet shows and does not
    evaluate. Text already starting with a quote gets one too, so :func:`spreadsheet_text`
    gives back exactly what was written. Numbers (a negative score) are not text and pass.
    """
    if isinstance(value, str) and value.startswith(_QUOTED_STARTS):
        return "'" + value
    return value


def spreadsheet_text(cell: str) -> str:
    """The text :func:`spreadsheet_safe` guarded: one leading quote off where it added one."""
    if cell.startswith("'") and cell[1:].startswith(_QUOTED_STARTS):
        return cell[1:]
    return cell


def format_float(value: float) -> str:
    """The one float format: shortest round-trip text, a trailing ``.0`` dropped; ``""`` for NaN."""
    if math.isnan(value):
        return ""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Column:
    """One column of a table.

    Attributes:
        name: the header text.
        dtype: ``str``, ``int``, ``float`` or ``bool``.
        nullable: whether a cell may be empty.
        required: whether a file must have the column (a reader refuses one without it); a
            column added in a later version, or written only with some settings, is not.
        low: the least number a reader accepts (``None``: no bound).
        high: the greatest number a reader accepts.
        choices: the texts a reader accepts (any case; read back as written here).
        expected: what a reader's error says the cell must be (derived when empty).
    """

    name: str
    dtype: Dtype
    nullable: bool = True
    required: bool = True
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    expected: str = ""

    def expectation(self) -> str:
        """``must be ...`` in a reader's error: ``a number in [0, 1] or empty``."""
        if self.expected:
            return self.expected
        if self.choices:
            quoted = [repr(c) for c in self.choices]
            phrase = " or ".join(quoted) if len(quoted) == 2 else "one of " + ", ".join(quoted)
        else:
            phrase = {"str": "text", "int": "an integer", "float": "a number", "bool": "1 or 0"}[self.dtype]
        if self.low is not None and self.high is not None:
            phrase += f" in [{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            phrase += f" >= {self.low:g}"
        elif self.high is not None:
            phrase += f" <= {self.high:g}"
        return phrase + (" or empty" if self.nullable else "")


@dataclass(frozen=True)
class Family:
    """Columns named ``<prefix><member>``, one per member, all typed as ``column``.

    Attributes:
        prefix: what the names start with (``score:``); ``""`` matches any other column.
        column: the members' type; its name documents the pattern (``score:<member>``).
    """

    prefix: str
    column: Column

    def matches(self, name: str) -> bool:
        """Whether ``name`` is one of this family's columns."""
        return name.startswith(self.prefix) and len(name) > len(self.prefix)

    def member(self, name: str) -> Column:
        """The column ``name`` of this family (not required: members vary per file)."""
        return replace(self.column, name=name, required=False)


@dataclass(frozen=True)
class TableSchema:
    """One table: its columns in order, its column families, and how its errors are worded.

    Attributes:
        name: the file it describes (``studies.csv``).
        title: how an error names a file of this kind (``predictions file``).
        columns: the fixed columns, in the order they are written.
        families: per-member column families.
        closed: whether a reader refuses a column the schema does not declare (an open table's
            other columns are read as text).
        fix: what an error about the header tells the reader to do.
        legacy_missing: texts read as missing besides the empty cell (what format 1 wrote).
    """

    name: str
    title: str
    columns: tuple[Column, ...]
    families: tuple[Family, ...] = ()
    closed: bool = True
    fix: str = ""
    legacy_missing: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The fixed columns' names, in order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column | None:
        """The declared column ``name`` (fixed or of a family), or ``None``."""
        for column in self.columns:
            if column.name == name:
                return column
        for family in self.families:
            if family.matches(name):
                return family.member(name)
        return None


def _str(name: str, **options: Any) -> Column:
    return Column(name, "str", **options)


def _float(name: str, **options: Any) -> Column:
    return Column(name, "float", **options)


def _int(name: str, **options: Any) -> Column:
    return Column(name, "int", **options)


_RUN_FIX = "use the file `screen run` wrote (rebuild reads the folder's own CSVs)"

#: ``studies.csv``: one row per study the output folder has seen, its latest state.
STUDIES = TableSchema(
    "studies.csv", "studies file",
    columns=(
        _str("study_instance_uid"), _str("patient_id", required=False),
        _str("accession_number", required=False), _str("study_date"), _str("status"), _str("reason"),
        _str("decision"), _str("level"), _float("fused_score"), _int("n_images"), _int("n_boxes"),
        _str("sr_path"), _str("sr_sop_instance_uid"), _str("gsps_path", required=False),
        _str("gsps_sop_instance_uid", required=False), _str("sc_paths", required=False),
        _str("sc_sop_instance_uids", required=False), _str("gap_sr_path", required=False),
        _str("gap_sr_sop_instance_uid", required=False), _str("model_version"), _str("operating_point_id"),
        _str("intended_use", required=False), _str("run_id"), _str("screened_at"),
        _str("content_hash", required=False),
    ),
    families=(Family("score:", _float("score:<member>")), Family("vote:", Column("vote:<member>", "bool"))),
    fix=_RUN_FIX, legacy_missing=("nan",),
)
#: ``findings.csv``: one fused box (or image-level finding) per row, in source pixel edges.
FINDINGS = TableSchema(
    "findings.csv", "findings file",
    columns=(
        _str("study_instance_uid"), _str("series_instance_uid"), _str("sop_instance_uid"),
        _float("col0"), _float("row0"), _float("col1"), _float("row1"), _float("score"), _str("level"),
        _str("members"), _str("run_id"),
    ),
    fix=_RUN_FIX, legacy_missing=("nan",),
)
#: ``scan.csv``: one row per file of an archive; ``path_key`` replaces ``path`` when paths are hidden.
SCAN = TableSchema(
    "scan.csv", "scan file",
    columns=(
        _str("path"), _str("outcome"), _str("reason"), _str("message"), _str("study_instance_uid"),
        _str("series_instance_uid"), _str("sop_instance_uid"), _str("sop_class"), _str("modality"),
        _str("body_part"), _str("transfer_syntax"), _str("photometric"), _int("rows"), _int("columns"),
        _int("frames"), _int("bits_stored"), _str("spacing_source"), _int("file_size"), _str("voi_source"),
        _float("decode_ms"), _str("path_key", required=False),
    ),
    fix="use the file `screen scan` wrote",
)
#: ``predictions.csv``: one row per study, written by ``screen eval``, read by ``screen tune``.
#: ``predictions.csv``'s acquisition columns: Manufacturer, ManufacturerModelName,
#: BodyPartExamined and Modality of a study's first image.
ACQUISITION_COLUMNS: tuple[str, ...] = ("manufacturer", "model", "body_part", "modality")
PREDICTIONS = TableSchema(
    "predictions.csv", "predictions file",
    columns=(
        _str("study_instance_uid", nullable=False), _str("label", nullable=False, choices=("fracture", "normal")),
        _int("n_images", low=0, expected="a count >= 0"), _float("fused_score", required=False),
        _str("split", required=False),
        # the study's acquisition (its first image's header), for per-group tuning and the
        # monitoring reference; files written before these columns existed have none
        *(_str(name, required=False) for name in ACQUISITION_COLUMNS),
    ),
    families=(Family("score:", _float("score:<member>", low=0.0, high=1.0)),),
    closed=False, fix="use the file `screen eval` writes",
)
#: ``image_predictions.csv``: one row per image of an evaluation (boxes as JSON text).
IMAGE_PREDICTIONS = TableSchema(
    "image_predictions.csv", "image predictions file",
    columns=(
        _str("study_instance_uid"), _str("sop_instance_uid"), _str("label"), _str("status"), _str("reason"),
        _int("rows"), _int("cols"), _str("truth_boxes"), _str("fused_boxes"),
    ),
    families=(Family("score:", _float("score:<member>")), Family("boxes:", _str("boxes:<member>"))),
    fix="use the file `screen eval` writes",
)
#: A training run's ``metrics.csv``: one row per epoch; every other column is a float metric.
TRAINING_METRICS = TableSchema(
    "metrics.csv", "training metrics file",
    columns=(_int("epoch", nullable=False), _int("step"), _float("lr"), _float("seconds")),
    families=(Family("", _float("<metric>")),),
    fix="use the metrics.csv `screen train` writes",
)
#: The labels CSV: one row per fracture box, one with empty coordinates per normal image.
LABELS = TableSchema(
    "labels.csv", "labels CSV",
    columns=(
        _str("StudyInstanceUID"), _str("SOPInstanceUID"), _str("label"),
        _float("x0", required=False), _float("y0", required=False), _float("x1", required=False),
        _float("y1", required=False), _str("PatientID", required=False),
        _str("SeriesInstanceUID", required=False),
    ),
    closed=False,
    fix="the header must include StudyInstanceUID, SOPInstanceUID, label, x0, y0, x1, y1 "
        "(coordinates may be empty)",
)
#: The radiologists' final reads ``screen monitor --reads`` compares the decisions with: one row
#: per study, named by StudyInstanceUID or accession number (either column may be left out).
READS = TableSchema(
    "reads.csv", "reads file",
    columns=(
        _str("study_instance_uid", required=False), _str("accession_number", required=False),
        _str("fracture", nullable=False, choices=("yes", "no")), _str("read_date", nullable=False),
    ),
    closed=False,
    fix="the header must include fracture (yes or no), read_date (YYYY-MM-DD) and "
        "study_instance_uid or accession_number",
)
#: Every table the tool writes or reads.
SCHEMAS: tuple[TableSchema, ...] = (
    STUDIES, FINDINGS, SCAN, PREDICTIONS, IMAGE_PREDICTIONS, TRAINING_METRICS, LABELS, READS,
)


# -- writing ---------------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or (isinstance(value, str) and value == ""):
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _format(value: Any, column: Column) -> str | None:
    """The cell's text, or ``None`` when ``value`` does not fit ``column``'s type."""
    if _missing(value):
        return "" if column.nullable else None
    if column.dtype == "str":
        return spreadsheet_safe(str.__str__(value)) if isinstance(value, str) else None  # an enum: its text
    if isinstance(value, (bool, np.bool_)):
        return ("1" if value else "0") if column.dtype == "bool" else None
    if column.dtype == "int":
        if isinstance(value, (int, np.integer)):
            return str(int(value))
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))  # an int column of a frame with gaps is float64
        return None
    if column.dtype == "float" and isinstance(value, (int, float, np.integer, np.floating)):
        return format_float(float(value))
    return None


def _kind(column: Column) -> str:
    return {"str": "text", "int": "an integer", "float": "a number", "bool": "a bool"}[column.dtype] + (
        " or nothing" if column.nullable else "")


def write_table(
    path: str | Path,
    schema: TableSchema,
    rows: pd.DataFrame | Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
) -> Path:
    """Write ``rows`` as ``schema`` says, atomically, and return the path.

    Args:
        path: the file (replaced whole).
        schema: the table's declaration.
        rows: a frame, or mappings (a key missing from a row is an empty cell; keys that are
            not columns are left out).
        columns: the header, in order: declared columns and family members (default: the
            frame's columns, or the schema's fixed columns).

    Raises:
        TableError: a column the schema does not declare, or a value that does not fit its
            column's type (named by row and column, never by value: values may identify a
            patient).
    """
    if isinstance(rows, pd.DataFrame):
        frame, listed = rows, []
    else:
        frame, listed = None, [dict(row) for row in rows]
    header = list(columns) if columns is not None else (
        [str(c) for c in frame.columns] if frame is not None else list(schema.names))
    declared = []
    for name in header:
        column = schema.column(name)
        if column is None:
            raise TableError(f"cannot write {path}: {schema.name} has no column {name!r}; declare it in "
                             "dicom_io/tables.py")
        declared.append(column)
    if frame is None:
        values = {name: [row.get(name) for row in listed] for name in header}
    else:
        values = {name: (frame[name].tolist() if name in frame.columns else [None] * len(frame))
                  for name in header}
    cells: dict[str, list[str]] = {}
    for column in declared:
        texts = []
        for index, value in enumerate(values[column.name]):
            text = _format(value, column)
            if text is None:
                raise TableError(f"cannot write {path}: row {index + 1}, column {column.name!r} must hold "
                                 f"{_kind(column)}, got a {type(value).__name__}")
            texts.append(text)
        cells[column.name] = texts
    table = pd.DataFrame(cells, columns=header, dtype=object)
    # Python's csv writer quotes a field for the characters of its line terminator only, so a
    # lone carriage return in a text would end the row early under "\n": write "\r\n" (every
    # \r and \n inside a text is then quoted) and turn the row ends, outside quotes, into "\n".
    text = table.to_csv(index=False, lineterminator="\r\n")
    parts = text.split('"')
    parts[::2] = [part.replace("\r\n", "\n") for part in parts[::2]]
    atomic_write_text(path, '"'.join(parts))
    return Path(path)


# -- reading ---------------------------------------------------------------------------------

def _raw(path: Path, schema: TableSchema, error: ErrorClass) -> pd.DataFrame:
    shown = f"{schema.title} {str(path)!r}"
    try:
        return pd.read_csv(path, header=None, dtype=str, keep_default_na=False, na_filter=False,
                           index_col=False, encoding="utf-8-sig", skip_blank_lines=True)
    except FileNotFoundError:
        raise error(f"{shown} does not exist") from None
    except pd.errors.EmptyDataError:
        raise error(f"{shown} is empty: it needs a header row; {schema.fix}") from None
    except pd.errors.ParserError as exc:
        found = _FIELDS.search(str(exc))
        if found:
            raise error(f"{path}, line {found.group(2)}: more fields than the header's "
                        f"{found.group(1)}") from None
        raise error(f"{shown} is not a readable CSV: {str(exc).strip()}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{shown} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    except OSError as exc:
        raise error(f"cannot read {shown}: {exc.strerror or exc}") from None


def _parse(text: str, column: Column, legacy: tuple[str, ...]) -> Any:
    """The cell's value (``None`` for missing); ``ValueError`` when it does not fit."""
    stripped = text.strip()
    if not stripped or stripped.lower() in legacy:
        if not column.nullable:
            raise ValueError("empty")
        return None
    if column.dtype == "str":
        if column.choices:
            for choice in column.choices:
                if stripped.lower() == choice.lower():
                    return choice
            raise ValueError(text)
        return spreadsheet_text(text)
    if column.dtype == "bool":
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE:
            return False
        raise ValueError(text)
    number: float
    if column.dtype == "int":
        if not _INT.fullmatch(stripped):
            raise ValueError(text)
        number = int(stripped)
    elif _FLOAT.fullmatch(stripped):
        number = float(stripped)
    elif stripped.lower() in _INFINITIES:
        number = _INFINITIES[stripped.lower()]
    else:
        raise ValueError(text)
    if (column.low is not None and number < column.low) or (column.high is not None and number > column.high):
        raise ValueError(text)
    return number


_PANDAS_DTYPES: dict[str, Any] = {"str": pd.StringDtype(), "int": "Int64", "float": "float64", "bool": "boolean"}


def read_table(path: str | Path, schema: TableSchema, *, error: ErrorClass = TableError) -> pd.DataFrame:
    """Read ``path`` as ``schema`` says: a typed frame, checked cell by cell.

    The frame's columns are the file's, in its order, typed ``string``, ``Int64``, ``float64``
    or ``boolean`` (an open schema's undeclared columns are text); missing cells are ``NaN``
    (floats) or ``<NA>``. Its index, named ``line``, is each row's line (the header is line 1).

    Args:
        path: the CSV.
        schema: the table's declaration.
        error: the exception class raised (default :class:`TableError`), so a caller's errors
            stay its own (``TuneError``, ``LabelsError``).

    Raises:
        TableError: (or ``error``) the file is missing, empty, not UTF-8 or not CSV; its header
            lacks a required column, repeats one, or (closed schema) has one the schema does
            not declare; a row has more fields than the header; a cell does not fit its column
            (named by file, line and column).
    """
    file = Path(path)
    raw = _raw(file, schema, error)
    header = [str(v) for v in raw.iloc[0].tolist()]
    shown = f"{schema.title} {str(file)!r}"
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise error(f"{shown} repeats column(s) {', '.join(repeated)} in its header; {schema.fix}")
    lacking = [c.name for c in schema.columns if c.required and c.name not in header]
    if lacking:
        raise error(f"{shown} lacks column(s) {', '.join(lacking)} (it has: {', '.join(header) or 'nothing'}); "
                    f"{schema.fix}")
    columns = {name: schema.column(name) for name in header}
    unknown = [name for name, column in columns.items() if column is None]
    if unknown and schema.closed:
        raise error(f"{shown} has column(s) {', '.join(unknown)} that a {schema.name} does not have "
                    f"(its columns: {', '.join(schema.names)}); {schema.fix}")
    lines = list(range(2, len(raw) + 1))
    frame: dict[str, pd.Series] = {}
    for position, name in enumerate(header):
        column = columns[name] or _str(name)
        texts = raw[position].tolist()[1:]
        values = []
        for line, text in zip(lines, texts):
            try:
                values.append(_parse(str(text), column, schema.legacy_missing))
            except ValueError as exc:
                what = "is empty" if str(exc) == "empty" and not str(text).strip() else \
                    f"must be {column.expectation()}, got {text!r}"
                raise error(f"{file}, line {line}: column {name!r} {what}") from None
        dtype = _PANDAS_DTYPES[column.dtype]
        if column.dtype == "float":
            values = [math.nan if v is None else v for v in values]
        frame[name] = pd.Series(values, dtype=dtype, index=pd.Index(lines, name="line"))
    return pd.DataFrame(frame, index=pd.Index(lines, name="line"), columns=header)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as dicts of plain Python values; a missing cell is ``None``."""
    out: list[dict[str, Any]] = []
    columns = [str(c) for c in frame.columns]
    for row in frame.itertuples(index=False, name=None):
        item: dict[str, Any] = {}
        for name, value in zip(columns, row):
            if _missing(value):
                item[name] = None
            elif isinstance(value, np.generic):
                item[name] = value.item()
            else:
                item[name] = value
        out.append(item)
    return out
