"""``screen run --operating-point bad.json``: exit 2 and one ``Error:`` line naming the file and the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner

from screen.cli import cli


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(op: dict[str, Any]) -> None:
        *tables, key = path.split(".")
        target = op
        for table in tables:
            target = target[table]
        target[key] = value

    return change


@pytest.mark.parametrize(
    ("change", "text", "named"),
    [
        (_set("treshold", 0.5), None, "unknown key(s) treshold"),
        (_set("thresholds.detr", 1.5), None, "'thresholds.detr' must be a number in [0, 1], got 1.5"),
        (_set("vote.rule", "most"), None, "vote rule 'most' is unknown"),
        (_set("provenance", {"guard": {"guard": "oof", "free_parameters": "3"}}), None,
         "'provenance.guard.free_parameters' must be an integer, got '3'"),
        (_set("schema_version", 7), None, "schema_version 7 is newer than this fracture-screen supports"),
        (None, '{"schema_version": 1, "thresholds": {"detr": NaN}}', "is not valid JSON"),
    ],
)
def test_a_bad_operating_point_is_one_error_line_and_exit_2(
        small_archive: Path, site: Path, tmp_path: Path, change: Any, text: str | None, named: str) -> None:
    bad = tmp_path / "bad.json"
    if text is None:
        op = json.loads((site.parent / "op.json").read_text(encoding="utf-8"))
        change(op)
        text = json.dumps(op)
    bad.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(small_archive), "--config", str(site), "--out",
                                      str(tmp_path / "o"), "--operating-point", str(bad), "--dry-run"])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(bad) in lines[0]
    assert named in lines[0]
