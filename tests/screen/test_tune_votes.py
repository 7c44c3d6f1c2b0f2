"""screen tune: each member's votes at a tuned point, and the votes that carry no information
(a rubber stamp that votes yes on nearly every study, a silent member that finds almost
nothing) named in the report, the CLI and op.json's notes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ensembles.fusion import VoteRule
from screen.commands.tune import tune_cmd
from screen.tune.inputs import Predictions, TuneSettings
from screen.tune.report import write_report
from screen.tune.search import search
from screen.tune.tuner import tune
from screen.tune.votes import RUBBER_STAMP, SILENT, member_votes, vote_warnings


def _stamp_set() -> tuple[np.ndarray, np.ndarray]:
    """a finds fractures 0-9, b fractures 10-19; each is fooled by 15 of the 40 normals, 10
    fool neither. c scores 0.6 on every study but two normals (0.1): at 0.6 it votes yes on 38
    of 40 normals. The one best 2-of-3 rule at recall 1 is "a or b", with c at 0.6 taking out
    the two normals: 28 false positives (c alone, or with a or b at 0, keeps 38)."""
    y = np.array([True] * 20 + [False] * 40)
    a = np.r_[np.full(10, 0.9), np.full(10, 0.0), np.tile([0.95, 0.0], 15), np.zeros(10)]
    b = np.r_[np.full(10, 0.0), np.full(10, 0.8), np.tile([0.0, 0.85], 15), np.zeros(10)]
    c = np.full(60, 0.6)
    c[[20, 21]] = 0.1
    return np.stack([a, b, c], axis=1), y


def test_counts_follow_the_fusion_vote_arithmetic() -> None:
    scores = np.array([[0.5, 0.2], [0.49, 0.9], [0.7, 0.1], [0.1, 0.1]])
    labels = np.array([True, True, False, False])
    votes = member_votes(scores, labels, ["a", "b"], VoteRule("any"), {"a": 0.5, "b": 1.0})
    a, b = votes
    assert (a.yes_fracture, a.fracture, a.yes_normal, a.normal) == (1, 2, 1, 2)  # >= counts 0.5
    assert a.role is None and a.fracture_rate == 0.5 and a.normal_rate == 0.5
    assert b.role == "off" and (b.yes_fracture, b.yes_normal) == (0, 0)
    assert member_votes(scores, labels, ["a", "b"],
                        VoteRule("weighted-mean", weights={"a": 0.5, "b": 0.5}, threshold=0.5),
                        {"a": 0.5, "b": 0.5}) == ()


@pytest.mark.parametrize("normal_yes, role", [(19, "rubber stamp"), (20, "rubber stamp"), (18, None)])
def test_rubber_stamp_edge(normal_yes: int, role: str | None) -> None:
    # 20 normals: 19/20 = 0.95 is the edge (RUBBER_STAMP), 18/20 is informative
    assert RUBBER_STAMP == 0.95
    labels = np.array([True] * 10 + [False] * 20)
    s = np.r_[np.full(10, 0.8), np.full(normal_yes, 0.8), np.full(20 - normal_yes, 0.1)]
    (v,) = member_votes(s[:, None], labels, ["c"], VoteRule("k-of-n", k=1), {"c": 0.5})
    assert v.role == role


@pytest.mark.parametrize("fracture_yes, role", [(0, "silent"), (1, "silent"), (2, None)])
def test_silent_edge(fracture_yes: int, role: str | None) -> None:
    # 20 fracture studies: 1/20 = 0.05 is the edge (SILENT); a member off at 1.0 is "off"
    assert SILENT == 0.05
    labels = np.array([True] * 20 + [False] * 10)
    s = np.r_[np.full(fracture_yes, 0.9), np.full(20 - fracture_yes, 0.2), np.full(10, 0.1)]
    (v,) = member_votes(s[:, None], labels, ["c"], VoteRule("any"), {"c": 0.5})
    assert v.role == role
    (off,) = member_votes(s[:, None], labels, ["c"], VoteRule("any"), {"c": 1.0})
    assert off.role == "off"


def test_the_exact_search_can_choose_a_rubber_stamp_and_it_is_named() -> None:
    scores, y = _stamp_set()
    found = search(scores, y, ["a", "b", "c"], min_recall=1.0, ks=[2])
    assert found.best is not None
    assert found.best.thresholds["c"] == pytest.approx(0.6)  # the optimum: c as a stamp
    assert found.best.thresholds == {"a": 0.9, "b": 0.8, "c": 0.6}
    assert (found.best.tp, found.best.fp) == (20, 28)
    votes = member_votes(scores, y, ["a", "b", "c"], found.best.rule, found.best.thresholds)
    assert [v.role for v in votes] == [None, None, "rubber stamp"]
    warnings = vote_warnings(votes, found.best.rule)
    assert len(warnings) == 2
    assert "c >= 0.6 votes yes on 38/40 normal and 20/20 fracture" in warnings[0]
    assert "'k-of-n(k=2)' acts as 1 of a, b" in warnings[0]
    assert warnings[1].startswith("informative votes: a, b")


def test_warning_wording_per_rule() -> None:
    labels = np.array([True] * 4 + [False] * 4)
    stamp = np.full(8, 0.9)
    quiet = np.r_[np.full(4, 0.1), np.full(4, 0.0)]
    good = np.r_[np.full(4, 0.9), np.full(4, 0.1)]
    scores = np.stack([stamp, quiet, good], axis=1)
    thresholds = {"s": 0.5, "q": 0.5, "g": 0.5}
    any_rule = vote_warnings(member_votes(scores, labels, "sqg", VoteRule("any"), thresholds),
                             VoteRule("any"))
    assert "flags nearly every study" in any_rule[0] and "adds almost no finding" in any_rule[1]
    two = VoteRule("k-of-n", k=2)
    two_rule = vote_warnings(member_votes(scores, labels, "sqg", two, thresholds), two)
    assert "acts as 1 of q, g" in two_rule[0] and "rarely supplies one of the votes" in two_rule[1]
    assert two_rule[2] == ("informative votes: g; tune again without the others (--members) or "
                           "with --rules any to get a rule that reads as it acts")
    both = {"s": 0.5, "q": 0.0, "g": 0.5}  # q at 0 votes yes everywhere: two stamps, k = 2
    assert "flags nearly every study" in vote_warnings(
        member_votes(scores, labels, "sqg", two, both), two)[0]
    off = {"s": 0.5, "q": 1.0, "g": 0.5}  # a member switched off is not one of the voters left
    assert "acts as 1 of g on most studies" in vote_warnings(
        member_votes(scores, labels, "sqg", two, off), two)[0]
    clean = member_votes(scores[:, [2]], labels, ["g"], VoteRule("any"), {"g": 0.5})
    assert vote_warnings(clean, VoteRule("any")) == []


def test_tune_names_the_stamp_in_op_notes_report_and_cli(tmp_path: Path) -> None:
    scores, y = _stamp_set()
    predictions = Predictions(study_uids=tuple(str(i) for i in range(y.size)), labels=y,
                              members=("a", "b", "c"), scores=scores)
    settings = TuneSettings(target_recall=1.0, guard="none", folds=0, allow_small=True,
                            rules=("k-of-n",), n_bootstrap=2000, calibrate="none")
    result = tune(predictions, settings)
    point = result.decision_point
    assert point.choice.rule == VoteRule("k-of-n", k=2)
    notes = point.operating_point.provenance.notes or ""
    assert "votes: c >= 0.6 votes yes on 38/40 normal" in notes
    written = write_report(result, tmp_path / "report")
    report = written[0].read_text()
    assert "### high-sensitivity: member votes" in report
    assert "| c | 0.6 | 20/20 (100.0 %) | 38/40 (95.0 %) | rubber stamp |" in report
    assert "| a | 0.9 | 10/20 (50.0 %) | 15/40 (37.5 %) | informative |" in report
    assert "- **Warning**: c >= 0.6 votes yes" in report

    csv_path = tmp_path / "predictions.csv"
    rows = ["study_instance_uid,label,n_images,score:a,score:b,score:c"]
    rows += [f"1.2.3.{i},{'fracture' if y[i] else 'normal'},1," + ",".join(map(str, scores[i]))
             for i in range(y.size)]
    csv_path.write_text("\n".join(rows) + "\n")
    out = CliRunner().invoke(tune_cmd, [str(csv_path), "--target-recall", "1.0", "--guard", "none",
                                        "--folds", "0", "--allow-small", "--rules", "k-of-n",
                                        "--calibrate", "none", "--out", str(tmp_path / "op.json")])
    assert out.exit_code == 0, out.output
    assert "  warning: c >= 0.6 votes yes on 38/40 normal" in out.output
    saved = json.loads((tmp_path / "op.json").read_text())
    assert "rubber stamp" in saved["provenance"]["notes"]


def test_an_informative_point_has_a_table_and_no_warning(tmp_path: Path) -> None:
    y = np.array([True] * 10 + [False] * 10)
    a = np.r_[np.linspace(0.6, 0.9, 10), np.linspace(0.0, 0.7, 10)]
    predictions = Predictions(study_uids=tuple(str(i) for i in range(20)), labels=y,
                              members=("a",), scores=a[:, None])
    result = tune(predictions, TuneSettings(target_recall=0.9, guard="none", folds=0,
                                            allow_small=True, n_bootstrap=2000, calibrate="none"))
    assert "votes:" not in (result.decision_point.operating_point.provenance.notes or "")
    report = write_report(result, tmp_path / "r")[0].read_text()
    assert "member votes" in report and "**Warning**" not in report
