"""bench.shift_factors: its variants, archives (drawn once, reused), AUC table and arguments;
the evaluation itself is ``screen eval`` (tests/screen)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_io.phantom.style_ranges import FACTOR_GROUPS, RANDOMISED, SHIFTED, SHIFTED_2, WIDE
from tests.bench.test_bench_smoke import _load

shift_factors = _load("shift_factors")


def test_variants_are_the_baseline_each_group_and_the_whole_shift() -> None:
    found = shift_factors.variants(("window", "markers"))
    assert list(found) == ["randomised", "+window", "+markers", "shifted"]
    assert found["randomised"] == RANDOMISED and found["shifted"] == SHIFTED
    assert found["+window"].window_low == SHIFTED.window_low
    assert found["+window"].marker_styles == RANDOMISED.marker_styles


def test_the_second_held_out_style_gives_its_own_variants_and_folders() -> None:
    found = shift_factors.variants(("window",), "shifted-2")
    assert list(found) == ["randomised", "+window", "shifted-2"]
    assert found["shifted-2"] == SHIFTED_2 and found["+window"].window_low == SHIFTED_2.window_low
    assert found["+window"].window_low != SHIFTED.window_low
    # shifted's folders keep their names; shifted-2's groups get their own beside them
    names = {shift_factors.folder_name(v, h) for h in ("shifted", "shifted-2")
             for v in shift_factors.variants(("window",), h)}
    assert names == {"randomised", "window", "shifted", "shifted-2+window", "shifted-2"}


def test_a_wide_baseline_puts_the_groups_into_wide_under_its_own_folder(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    found = shift_factors.variants(("markers",), "shifted-2", "wide")
    assert list(found) == ["wide", "+markers", "shifted-2"]
    assert found["wide"] == WIDE and found["+markers"].marker_height == SHIFTED_2.marker_height
    assert found["+markers"].noise_textures == WIDE.noise_textures != RANDOMISED.noise_textures
    names = {shift_factors.folder_name(v, "shifted-2", "wide") for v in found}
    assert names == {"base-wide/wide", "base-wide/shifted-2+markers", "base-wide/shifted-2"}
    styles: list[str] = []

    def fake_write(archive: Path, labels: Path, config: object, **kwargs: object) -> None:
        styles.append(config.style)  # type: ignore[attr-defined]
        labels.write_text("x\n")

    monkeypatch.setattr(shift_factors, "write_phantom_archive", fake_write)
    shift_factors.draw(tmp_path / "w", found["+markers"], 4, 1, "wide")
    shift_factors.draw(tmp_path / "w", found["+markers"], 4, 1)  # another baseline: drawn again
    assert styles == ["wide", "randomised"]


@pytest.mark.parametrize("base", ["shifted", "shifted-2", "rods"])
def test_a_baseline_must_be_a_varied_training_style(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    base: str) -> None:
    with pytest.raises(SystemExit):
        shift_factors.main(["--out", str(tmp_path), "--base", base])
    assert "invalid choice" in capsys.readouterr().err


def test_an_unknown_held_out_style_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        shift_factors.main(["--out", str(tmp_path), "--held-out", "randomised"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The ranges of each archive ``shift_factors.draw`` writes (a stand-in writer, labels only)."""
    calls: list[object] = []

    def fake_write(archive: Path, labels: Path, config: object, **kwargs: object) -> None:
        calls.append(kwargs["ranges"])
        labels.write_text("x\n")

    monkeypatch.setattr(shift_factors, "write_phantom_archive", fake_write)
    return calls


def test_an_archive_is_drawn_once_per_variant(tmp_path: Path, drawn: list[object]) -> None:
    for _ in range(2):
        shift_factors.draw(tmp_path / "v", SHIFTED, 4, 1)
    shift_factors.draw(tmp_path / "v", RANDOMISED, 4, 1)  # other ranges: drawn again
    shift_factors.draw(tmp_path / "v", RANDOMISED, 4, 2)  # another seed
    shift_factors.draw(tmp_path / "v", RANDOMISED, 5, 2)  # another study count
    assert drawn == [SHIFTED, RANDOMISED, RANDOMISED, RANDOMISED]


def test_a_new_generator_version_draws_the_archive_again(tmp_path: Path, drawn: list[object],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The same ranges from another generator (``PHANTOM_VERSION``) are other pixels: not reused."""
    import dicom_io.phantom.config as phantom_config

    shift_factors.draw(tmp_path / "v", SHIFTED, 4, 1)
    monkeypatch.setattr(phantom_config, "PHANTOM_VERSION", "phantom-next")
    shift_factors.draw(tmp_path / "v", SHIFTED, 4, 1)
    assert drawn == [SHIFTED, SHIFTED]


def test_aucs_with_intervals_from_predictions(tmp_path: Path) -> None:
    rows = ["study_instance_uid,label,n_images,score:pg-cls,fused_score"]
    for i in range(40):
        label = "fracture" if i % 2 else "normal"
        rows.append(f"1.2.{i},{label},1,{(i % 2) * 0.5 + i / 100:.3f},{0.5 + ((i * 7) % 11) / 30:.3f}")
    path = tmp_path / "predictions.csv"
    path.write_text("\n".join(rows) + "\n")
    found = shift_factors.aucs(path, resamples=200)
    assert set(found) == {"pg-cls", "ensemble"}
    value, low, high = found["pg-cls"]
    assert value == 1.0 and low <= value <= high
    value, low, high = found["ensemble"]
    assert 0.2 < value < 0.8 and low < value < high


def test_table_shows_each_change_from_the_baseline() -> None:
    lines = shift_factors.table({"randomised": {"pg-cls": (0.9, 0.85, 0.95)},
                                 "+blur": {"pg-cls": (0.7, 0.6, 0.8)}})
    assert lines[2] == "| randomised | 0.900 (0.85-0.95) |"
    assert lines[3] == "| +blur | 0.700 (0.60-0.80; -0.200) |"


def test_unknown_groups_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert shift_factors.main(["--out", str(tmp_path), "--groups", "window,lighting"]) == 2
    assert "unknown group(s) lighting" in capsys.readouterr().err
    assert set(FACTOR_GROUPS) >= {"window", "markers", "exposure"}
