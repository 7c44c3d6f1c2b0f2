"""bench.shift_factors: its variants, archives (drawn once, reused), AUC table and arguments;
the evaluation itself is ``screen eval`` (tests/screen)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_io.phantom.style_ranges import FACTOR_GROUPS, RANDOMISED, SHIFTED
from tests.bench.test_bench_smoke import _load

shift_factors = _load("shift_factors")


def test_variants_are_the_baseline_each_group_and_the_whole_shift() -> None:
    found = shift_factors.variants(("window", "markers"))
    assert list(found) == ["randomised", "+window", "+markers", "shifted"]
    assert found["randomised"] == RANDOMISED and found["shifted"] == SHIFTED
    assert found["+window"].window_low == SHIFTED.window_low
    assert found["+window"].marker_styles == RANDOMISED.marker_styles


def test_an_archive_is_drawn_once_per_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def fake_write(archive: Path, labels: Path, config: object, **kwargs: object) -> None:
        calls.append(kwargs["ranges"])
        labels.write_text("x\n")

    monkeypatch.setattr(shift_factors, "write_phantom_archive", fake_write)
    for _ in range(2):
        shift_factors.draw(tmp_path / "v", SHIFTED, 4, 1)
    shift_factors.draw(tmp_path / "v", RANDOMISED, 4, 1)  # other ranges: drawn again
    assert calls == [SHIFTED, RANDOMISED]


def test_table_shows_each_change_from_the_baseline() -> None:
    metrics = {"classification": [{"name": "pg-cls", "auc": 0.9}, {"name": "ensemble", "auc": 0.95},
                                  {"name": "none", "auc": None}]}
    base = shift_factors.aucs(metrics)
    assert base == {"pg-cls": 0.9, "ensemble": 0.95}
    lines = shift_factors.table({"randomised": base, "+blur": {"pg-cls": 0.7, "ensemble": 0.96}})
    assert lines[2] == "| randomised | 0.900 | 0.950 |"
    assert lines[3] == "| +blur | 0.700 (-0.200) | 0.960 (+0.010) |"


def test_unknown_groups_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert shift_factors.main(["--out", str(tmp_path), "--groups", "window,lighting"]) == 2
    assert "unknown group(s) lighting" in capsys.readouterr().err
    assert set(FACTOR_GROUPS) >= {"window", "markers", "exposure"}
