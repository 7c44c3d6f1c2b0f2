"""The embedded default: ``screen run sample_data/archive`` with no config runs the committed members."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner

from screen.cli import cli
from screen.site_config import DEFAULT_CONFIG, PROJECT_ROOT

ARCHIVE = PROJECT_ROOT / "sample_data" / "archive"

# Floors for the committed members on the sample archive, below what they measured there
# (`screen eval sample_data/archive --labels sample_data/labels.csv`, op-9bd22fcfebca: member
# study AUCs 0.979, 0.950, 1.000; ensemble recall 0.800, 8 of 10 fractured studies; of the 16
# true boxes matched at IoU >= 0.3: pg-det's own 0.562 (9; it placed none before issue 14's
# toy-first training), refined DETR 0.688, the fused findings 0.812) with room for a miss or two,
# never at chance level. The ensemble's floor is what it reached: its 8 caught fractures fuse to
# >= 0.855 against the point's 0.739, the 2 missed to 0.700 (the previous point caught all 10).
MIN_MEMBER_AUC = 0.90
MIN_ENSEMBLE_RECALL = 0.80
MIN_DETR_BOX_RECALL = 0.60
MIN_PG_DET_OWN_BOX_RECALL = 0.40
MIN_FUSED_BOX_RECALL = 0.65


def test_default_config_loads_and_dry_run_lists_every_study(tmp_path: Path) -> None:
    assert DEFAULT_CONFIG.is_file()
    result = CliRunner().invoke(cli, ["run", str(ARCHIVE), "--out", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.count("would screen ") == 24  # the sample archive's studies
    assert not (tmp_path / "out").exists()


def test_default_run_screens_with_the_committed_members(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(ARCHIVE), "--out", str(out), "--limit", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    with open(out / "studies.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(r["status"] == "screened" for r in rows)
    assert {"score:pg-cls", "score:pg-det", "score:detr"} <= set(rows[0])
    assert len(list((out / "sr").rglob("*.dcm"))) == 2


def test_committed_members_separate_the_sample_archive(tmp_path: Path) -> None:
    """The trained demo members, run as the embedded default runs them, on the sample archive
    (24 studies drawn from a phantom seed none of them was trained on): each must rank
    fractured studies above normal ones, and the fused ensemble must catch the fractures.

    A regression guard for the whole path from DICOM to member scores: a change to decoding,
    preprocessing or loading that the members were not trained with shows here first.
    """
    from screen.commands.eval import run_eval

    result = run_eval(ARCHIVE, tmp_path / "eval", labels_csv=PROJECT_ROOT / "sample_data" / "labels.csv",
                      workers=1, bootstrap=0)
    assert result.n_studies == 24 and result.failed_studies == 0
    rows = {row.name: row for row in result.rows}
    assert set(rows) == {"pg-cls", "pg-det", "detr", "ensemble"}
    for name in ("pg-cls", "pg-det", "detr"):
        assert rows[name].auc is not None and rows[name].auc.value >= MIN_MEMBER_AUC, (name, rows[name].auc)
    assert rows["ensemble"].confusion.recall >= MIN_ENSEMBLE_RECALL
    boxes = {b.name: b for b in result.boxes}
    assert boxes["detr"].recall_30 >= MIN_DETR_BOX_RECALL  # refined boxes on true fractures
    # the PaliGemma detector's own loc-token boxes (before the refiner) find fractures too
    assert boxes["pg-det (before refiner)"].recall_30 >= MIN_PG_DET_OWN_BOX_RECALL
    assert boxes["ensemble"].recall_30 >= MIN_FUSED_BOX_RECALL
    # the refiner is what localises: DETR's own boxes matched 0.188 there
    assert boxes["detr (before refiner)"].recall_30 < boxes["detr"].recall_30
