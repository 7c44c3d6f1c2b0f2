"""dicom_io.tables: every declared table round-trips awkward values; one format; clear errors;
the predictions ``screen eval`` writes are what ``screen tune`` reads."""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dicom_io.atomic import file_mode
from dicom_io.errors import DicomIOError
from dicom_io.tables import (
    FINDINGS, LABELS, OUTPUT_FORMAT_VERSION, PREDICTIONS, SCHEMAS, STUDIES, TRAINING_METRICS, Column,
    TableError, TableSchema, format_float, read_table, records, spreadsheet_safe, spreadsheet_text,
    write_table,
)
from ensembles.types import ResizeMode

# -- awkward values per column type ------------------------------------------------------------

TEXTS = ["=cmd|' /C calc'!A0", 'café, "quoted"\nsecond line', None, "'=already quoted", "-2+3",
         "carriage\rreturn", "@SUM(A1)", "ünïcødé ✓ 骨折", "00123", "\ttab"]
FLOATS = [1e-300, 1.7976931348623157e308, None, 0.1 + 0.2, 284.0, 5e-324, -0.0, math.inf, -1234.5678, 1e16]
UNIT = [0.1 + 0.2, 5e-324, None, 1.0, 0.0, 0.7345123291015625, 1e-9, 0.5, 0.999999999999, 0.25]
INTS = [0, -7, None, 2**62, 1, 12, -(2**62), 3, 4, 5]
BOOLS = [True, False, None, True, False, True, False, None, True, True]


def _values(column: Column) -> list[Any]:
    if column.dtype == "str":
        values = [column.choices[i % len(column.choices)] for i in range(10)] if column.choices else list(TEXTS)
    elif column.dtype == "int":
        values = [abs(v) if v is not None and column.low is not None else v for v in INTS]
    elif column.dtype == "float":
        values = list(UNIT if column.low is not None or column.high is not None else FLOATS)
    else:
        values = list(BOOLS)
    if not column.nullable:
        values = [values[0] if v is None else v for v in values]
    return values


def _columns(schema: TableSchema) -> list[Column]:
    members = [family.member(family.prefix + ("pg-cls" if family.prefix else "val_f1")) for family in schema.families]
    return list(schema.columns) + members


def _studies_text(rows: list[dict[str, str]], members: tuple[str, ...] = ("a",), newline: str = "\n") -> str:
    """A studies.csv as text: every column of the schema, the given cells, the others empty."""
    header = list(STUDIES.names) + [f"{kind}:{m}" for m in members for kind in ("score", "vote")]
    lines = [",".join(header)] + [",".join(row.get(name, "") for name in header) for row in rows]
    return newline.join(lines) + newline


def _missing_as_none(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


@pytest.mark.parametrize("schema", SCHEMAS, ids=[s.name for s in SCHEMAS])
def test_every_declared_table_round_trips_awkward_values(schema: TableSchema, tmp_path: Path) -> None:
    columns = _columns(schema)
    data = {c.name: _values(c) for c in columns}
    rows = [{name: values[i] for name, values in data.items()} for i in range(10)]
    path = write_table(tmp_path / schema.name, schema, rows, [c.name for c in columns])
    frame = read_table(path, schema)
    assert list(frame.columns) == [c.name for c in columns]
    assert list(frame.index) == list(range(2, 12)) and frame.index.name == "line"
    assert records(frame) == [{k: _missing_as_none(v) for k, v in row.items()} for row in rows]
    expected_dtypes = {"str": "string", "int": "Int64", "float": "float64", "bool": "boolean"}
    assert {str(k): str(v) for k, v in frame.dtypes.items()} == {c.name: expected_dtypes[c.dtype] for c in columns}
    # the typed frame written again gives the same bytes (a frame is a writer's input too)
    again = write_table(tmp_path / f"again-{schema.name}", schema, frame)
    assert again.read_bytes() == path.read_bytes()
    # no rows: the header alone, read back as an empty frame with the same columns
    empty = write_table(tmp_path / f"empty-{schema.name}", schema, [], [c.name for c in columns])
    assert empty.read_text() == ",".join(c.name for c in columns) + "\n"
    assert read_table(empty, schema).empty and list(read_table(empty, schema).columns) == list(frame.columns)


def test_one_format_in_bytes(tmp_path: Path) -> None:
    rows = [
        {"study_instance_uid": "1.2", "status": "screened", "accession_number": "=HYPERLINK(x)",
         "fused_score": 0.1 + 0.2, "n_images": 2, "score:a": 284.0, "vote:a": True, "reason": 'a, "b"\nc'},
        {"study_instance_uid": "1.3", "status": "failed", "accession_number": None, "fused_score": math.nan,
         "n_images": 1, "score:a": None, "vote:a": False, "reason": "decode-failed", "unknown key": "ignored"},
    ]
    columns = ["study_instance_uid", "accession_number", "status", "reason", "fused_score", "n_images",
               "score:a", "vote:a"]
    path = write_table(tmp_path / "studies.csv", STUDIES, rows, columns)
    assert path.read_bytes() == (
        b"study_instance_uid,accession_number,status,reason,fused_score,n_images,score:a,vote:a\n"
        b'1.2,\'=HYPERLINK(x),screened,"a, ""b""\nc",0.30000000000000004,2,284,1\n'
        b"1.3,,failed,decode-failed,,1,,0\n"
    )


def test_enum_text_is_written_as_its_value(tmp_path: Path) -> None:
    class Mixin(str, Enum):
        FAILED = "failed"

    path = write_table(tmp_path / "findings.csv", FINDINGS, [{"level": ResizeMode.LETTERBOX, "members": Mixin.FAILED}],
                       ["level", "members"])
    assert path.read_text() == "level,members\nletterbox,failed\n"


def test_float_format_round_trips_every_double() -> None:
    rng = np.random.default_rng(13)
    values = np.concatenate([rng.random(2000), rng.standard_normal(2000) * 10.0 ** rng.integers(-300, 300, 2000)])
    for value in values:
        assert float(format_float(float(value))) == value
    assert [format_float(v) for v in (284.0, 0.5, 1e-300, 1e16, -0.0, math.inf, math.nan)] == [
        "284", "0.5", "1e-300", "1e+16", "-0", "inf", ""]


def test_the_spreadsheet_guard_is_undone_exactly() -> None:
    for text in TEXTS[:2] + TEXTS[3:] + ["", "'", "''=", "'plain quote", "safe", "1.2.840"]:
        guarded = spreadsheet_safe(text)
        assert not guarded.startswith(("=", "+", "-", "@", "\t", "\r"))
        assert spreadsheet_text(guarded) == text
    assert spreadsheet_safe(-2.5) == -2.5  # a number is not text
    assert spreadsheet_text("'not a guard") == "'not a guard"  # files from format 1 read as written


# -- errors ----------------------------------------------------------------------------------

def test_reader_errors_name_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "findings.csv"
    header = ",".join(FINDINGS.names)
    path.write_text(header + "\n1.2,1.3,1.4,1,2,3,4,0.5,,a,r\n1.2,1.3,1.4,1,2,three,4,0.5,,a,r\n")
    with pytest.raises(TableError) as info:
        read_table(path, FINDINGS)
    assert str(info.value) == f"{path}, line 3: column 'col1' must be a number or empty, got 'three'"
    assert isinstance(info.value, DicomIOError)

    path.write_text(header.replace(",score", "") + "\n")
    with pytest.raises(TableError, match=r"findings file '.*' lacks column\(s\) score \(it has: study_instance_uid,"):
        read_table(path, FINDINGS)
    path.write_text(header + ",extra\n")
    with pytest.raises(TableError, match="has column\\(s\\) extra that a findings.csv does not have"):
        read_table(path, FINDINGS)
    path.write_text(header + ",score\n")
    with pytest.raises(TableError, match="repeats column\\(s\\) score in its header"):
        read_table(path, FINDINGS)
    path.write_text(header + "\n1.2,1.3,1.4,1,2,3,4,0.5,,a,r,surplus\n")
    with pytest.raises(TableError, match=f"^{path}, line 2: more fields than the header's 11$"):
        read_table(path, FINDINGS)
    path.write_text("")
    with pytest.raises(TableError, match="is empty: it needs a header row"):
        read_table(path, FINDINGS)
    path.write_bytes(header.encode() + b"\n\xff\xfe,\n")
    with pytest.raises(TableError, match="is not UTF-8 text"):
        read_table(path, FINDINGS)
    with pytest.raises(TableError, match="does not exist"):
        read_table(tmp_path / "none.csv", FINDINGS)


def test_reader_checks_types_ranges_and_empties_in_the_callers_error(tmp_path: Path) -> None:
    class CallerError(Exception):
        pass

    path = tmp_path / "p.csv"
    cases = [
        ("1,fracture,1,1.5", "column 'score:a' must be a number in [0, 1] or empty, got '1.5'"),
        ("1,fracture,1,nan", "column 'score:a' must be a number in [0, 1] or empty, got 'nan'"),
        ("1,fracture,-1,0.5", "column 'n_images' must be a count >= 0, got '-1'"),
        ("1,fracture,1.0,0.5", "column 'n_images' must be a count >= 0, got '1.0'"),
        ("1,broken,1,0.5", "column 'label' must be 'fracture' or 'normal', got 'broken'"),
        ("  ,fracture,1,0.5", "column 'study_instance_uid' is empty"),
    ]
    for line, message in cases:
        path.write_text(f"study_instance_uid,label,n_images,score:a\n{line}\n")
        with pytest.raises(CallerError) as info:
            read_table(path, PREDICTIONS, error=CallerError)
        assert str(info.value) == f"{path}, line 2: {message}"
    path.write_text("\ufeffstudy_instance_uid,label,n_images,score:a,note\r\n1,FRACTURE,,0.5,kept as text\r\n")
    frame = read_table(path, PREDICTIONS)  # a BOM, CRLF, any case of a choice, an undeclared column (open)
    assert records(frame) == [{"study_instance_uid": "1", "label": "fracture", "n_images": None, "score:a": 0.5,
                               "note": "kept as text"}]
    bools = tmp_path / "studies.csv"
    bools.write_text(_studies_text([{"vote:a": "true"}, {"vote:a": "False"}, {"vote:a": "0"}]))
    assert read_table(bools, STUDIES)["vote:a"].tolist() == [True, False, False]
    bools.write_text(_studies_text([{"vote:a": "1"}, {"vote:a": "yes"}]))
    with pytest.raises(TableError, match="line 3: column 'vote:a' must be 1 or 0 or empty, got 'yes'"):
        read_table(bools, STUDIES)


def test_writer_refuses_undeclared_columns_and_wrong_types_without_quoting_values(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="findings.csv has no column 'colour'; declare it in dicom_io/tables.py"):
        write_table(tmp_path / "f.csv", FINDINGS, [{}], ["study_instance_uid", "colour"])
    with pytest.raises(TableError) as info:
        write_table(tmp_path / "f.csv", FINDINGS, [{"score": 0.5}, {"score": "PID-12345"}])
    assert str(info.value) == (f"cannot write {tmp_path / 'f.csv'}: row 2, column 'score' must hold a number or "
                               "nothing, got a str")
    with pytest.raises(TableError, match="row 1, column 'n_images' must hold an integer or nothing, got a float"):
        write_table(tmp_path / "p.csv", PREDICTIONS, [{"study_instance_uid": "1", "label": "normal", "n_images": 1.5}])
    with pytest.raises(TableError, match="row 1, column 'label' must hold text, got a NoneType"):
        write_table(tmp_path / "p.csv", PREDICTIONS, [{"study_instance_uid": "1", "label": None}])
    with pytest.raises(TableError, match="column 'fused_score' must hold a number or nothing, got a bool"):
        write_table(tmp_path / "s.csv", STUDIES, [{"fused_score": True}], ["fused_score"])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_writes_are_atomic_and_follow_the_file_mode(tmp_path: Path) -> None:
    with file_mode(0o640):
        path = write_table(tmp_path / "out" / "metrics.csv", TRAINING_METRICS, [{"epoch": 1, "train_loss": 0.5}],
                           ["epoch", "train_loss"])
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]  # no temporary file left


# -- the tool's files --------------------------------------------------------------------------

def test_studies_csv_writes_nan_as_empty_and_reads_format_1_nan_as_missing(tmp_path: Path) -> None:
    from screen.nightly.tables import study_columns, write_run_json, write_studies_csv

    columns = study_columns(["a"], patient_id=False, accession=False)
    path = write_studies_csv(tmp_path / "studies.csv", [
        {"study_instance_uid": "1.2", "status": "screened", "fused_score": math.nan, "score:a": 0.25, "vote:a": None},
    ], columns)
    header, row = path.read_text().splitlines()
    cells = dict(zip(header.split(","), row.split(",")))
    assert cells["fused_score"] == "" and cells["score:a"] == "0.25" and cells["vote:a"] == ""
    assert "nan" not in path.read_text()
    format_1 = {"study_instance_uid": "1.2", "status": "screened", "fused_score": "nan", "score:a": "0.250000",
                "n_images": "2"}
    path.write_text(_studies_text([format_1], newline="\r\n"))
    (row,) = records(read_table(path, STUDIES))
    assert {k: v for k, v in row.items() if v is not None} == {
        "study_instance_uid": "1.2", "status": "screened", "score:a": 0.25, "n_images": 2}
    run = write_run_json(tmp_path / "run.json", {"run_id": "r"})
    assert json.loads(run.read_text()) == {"run_id": "r", "format_version": OUTPUT_FORMAT_VERSION}
    assert OUTPUT_FORMAT_VERSION == 2


def test_labels_written_by_the_phantom_writer_read_back_as_labels(tmp_path: Path) -> None:
    from train.labels import read_labels

    rows = [
        {"StudyInstanceUID": "1.2", "SOPInstanceUID": "1.2.1", "label": "fracture", "x0": 284, "y0": 291,
         "x1": 316.5, "y1": 354, "PatientID": "PH1", "SeriesInstanceUID": "1.2.9"},
        {"StudyInstanceUID": "1.2", "SOPInstanceUID": "1.2.2", "label": "normal", "x0": "", "y0": "", "x1": "",
         "y1": "", "PatientID": "PH1", "SeriesInstanceUID": "1.2.9"},
    ]
    path = write_table(tmp_path / "labels.csv", LABELS, rows)
    assert path.read_text().splitlines()[1].endswith(",fracture,284,291,316.5,354,PH1,1.2.9")
    labels = read_labels(path)
    assert labels["1.2.1"].boxes_px == ((284.0, 291.0, 316.5, 354.0),) and labels["1.2.1"].patient_id == "PH1"
    assert not labels["1.2.2"].fracture and labels["1.2.2"].boxes_px == ()


def test_the_predictions_eval_writes_are_what_tune_reads(tmp_path: Path) -> None:
    """End to end: rows shaped as ``train.evaluate`` builds them, written by the eval report's
    writer, read by ``screen tune``'s reader: every score the same double, every row kept."""
    from screen.tune.inputs import read_predictions
    from train.eval_report import write_csv

    rng = np.random.default_rng(6)
    members = ["pg-cls", "detr"]
    rows: list[dict[str, Any]] = []
    for i in range(40):
        row: dict[str, Any] = {"study_instance_uid": f"1.2.826.0.1.{i}", "label": "fracture" if i % 3 else "normal",
                               "n_images": int(rng.integers(1, 5)), "fused_score": float(rng.random()),
                               "split": "val" if i % 4 else "test"}
        for name in members:
            row[f"score:{name}"] = float(rng.random()) ** 7  # down to ~1e-20: a fixed %.6f would lose them
        row["score:detr"] = None if i == 5 else row["score:detr"]
        rows.append(row)
    rows[0]["score:pg-cls"] = 1.0
    columns = ["study_instance_uid", "label", "n_images", *(f"score:{n}" for n in members), "fused_score", "split"]
    path = write_csv(tmp_path / "predictions.csv", PREDICTIONS, columns, rows)

    preds = read_predictions(path)
    assert preds.members == tuple(members) and preds.source == path
    assert preds.study_uids == tuple(r["study_instance_uid"] for r in rows)
    assert preds.labels.tolist() == [r["label"] == "fracture" for r in rows]
    assert preds.n_images == tuple(r["n_images"] for r in rows)
    expected = np.array([[math.nan if r[f"score:{n}"] is None else r[f"score:{n}"] for n in members] for r in rows])
    np.testing.assert_array_equal(preds.scores, expected)  # bit for bit, NaN where empty
    assert preds.empty_counts() == {"detr": 1}
    val = read_predictions(path, split="val", members=["detr"])
    assert val.study_uids == tuple(r["study_instance_uid"] for r in rows if r["split"] == "val")
    assert val.members == ("detr",)
    # the frame the table module reads is the same table, typed
    frame = read_table(path, PREDICTIONS)
    assert frame["score:pg-cls"].tolist()[0] == 1.0 and frame["n_images"].dtype == pd.Int64Dtype()
