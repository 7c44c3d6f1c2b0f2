"""screen tune: exact search on sets with a known optimum, honest figures, round trips, refusals."""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedKFold

from ensembles.fusion import VoteRule, decide_study
from ensembles.operating_point.levels import finding_level
from ensembles.operating_point.op_json import load_deciding_point, load_points
from ensembles.types import MemberOutput
from screen.cli import _DomainErrorGroup
from screen.errors import ConfigError
from screen.tune.tuner import TuneSettings, decide_predictions, run_tune, tune
from screen.commands.tune import tune_cmd
from screen.tune.inputs import Predictions, TuneError, read_predictions
from screen.tune.search import decide, fused_scores, search, weight_grid
from train.metrics import bootstrap_metrics, confusion

WriteCsv = Callable[..., Path]


@pytest.fixture
def write_predictions(tmp_path: Path) -> WriteCsv:
    """``write_predictions(labels, {member: scores}, name=..., extra=...) -> Path``."""

    def _write(labels: Sequence[bool], scores: dict[str, Sequence[float | None]],
               name: str = "predictions.csv", split: Sequence[str] | None = None) -> Path:
        path = tmp_path / name
        header = ["study_instance_uid", "label", "n_images"] + [f"score:{m}" for m in scores]
        header += ["split"] if split is not None else []
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for i, label in enumerate(labels):
                row = [f"1.2.826.0.1.{i}", "fracture" if label else "normal", "2"]
                row += ["" if s[i] is None else repr(float(s[i])) for s in scores.values()]  # type: ignore[arg-type]
                row += [split[i]] if split is not None else []
                writer.writerow(row)
        return path

    return _write


def _predictions(labels: Sequence[bool], scores: dict[str, Sequence[float]]) -> Predictions:
    y = np.asarray(labels, dtype=bool)
    return Predictions(study_uids=tuple(str(i) for i in range(y.size)), labels=y,
                       members=tuple(scores), scores=np.array(list(scores.values())).T)


def _random_set(seed: int, n: int = 14, m: int = 3) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) < n // 2 - 1
    rng.shuffle(y)
    scores = np.round(np.clip(rng.random((n, m)) * 0.7 + 0.3 * y[:, None] * rng.random((n, m)),
                              0, 1), 1)
    return scores, y


# ---------------------------------------------------------------- known optimum by construction

def test_any_rule_wins_when_members_see_different_fractures() -> None:
    # A sees fractures 0-4, B sees 5-9; each is fooled (0.5) by different normals
    y = [True] * 10 + [False] * 10
    a = [0.9] * 5 + [0.1] * 5 + [0.5, 0.5, 0.2, 0.2, 0.1, 0.1, 0.3, 0.3, 0.0, 0.0]
    b = [0.1] * 5 + [0.8] * 5 + [0.2, 0.2, 0.5, 0.5, 0.1, 0.1, 0.3, 0.3, 0.0, 0.0]
    found = search(np.array([a, b]).T, np.array(y), ["a", "b"], min_recall=1.0)
    assert found.exact and found.best is not None
    assert found.best.rule == VoteRule("any")
    assert found.best.thresholds == {"a": 0.9, "b": 0.8}
    assert (found.best.tp, found.best.fp) == (10, 0)


def test_two_of_two_wins_and_beats_an_equal_weighted_mean_on_simplicity() -> None:
    # every normal fools exactly one member; both members see every fracture a little
    y = [True] * 6 + [False] * 8
    a = [0.6] * 6 + [0.9] * 4 + [0.1] * 4
    b = [0.6] * 6 + [0.1] * 4 + [0.9] * 4
    found = search(np.array([a, b]).T, np.array(y), ["a", "b"], min_recall=1.0)
    assert found.best is not None and (found.best.tp, found.best.fp) == (6, 0)
    # the equal weighted mean separates too (0.6 vs 0.5), but k-of-n is the simpler rule
    assert found.best.rule == VoteRule("k-of-n", k=2)
    only_mean = search(np.array([a, b]).T, np.array(y), ["a", "b"], min_recall=1.0,
                       rules=("weighted-mean",))
    assert only_mean.best is not None and only_mean.best.fp == 0
    assert only_mean.best.rule.weights == {"a": 0.5, "b": 0.5}


def test_weighted_mean_wins_when_no_vote_rule_separates() -> None:
    pos = [(0.7, 0.3), (0.3, 0.7), (0.5, 0.5)] * 3
    neg = [(0.6, 0.2), (0.2, 0.6), (0.4, 0.4)] * 3
    scores = np.array(pos + neg)
    y = np.array([True] * 9 + [False] * 9)
    found = search(scores, y, ["a", "b"], min_recall=1.0)
    assert found.best is not None and found.best.rule.rule == "weighted-mean"
    assert found.best.rule.weights == {"a": 0.5, "b": 0.5} and (found.best.tp, found.best.fp) == (9, 0)
    votes_only = search(scores, y, ["a", "b"], min_recall=1.0, rules=("any", "k-of-n"))
    assert votes_only.best is not None and votes_only.best.fp >= 1


def _brute_force(scores: NDArray[np.float64], y: NDArray[np.bool_], members: list[str],
                 objective: str, min_recall: float, min_spec: float) -> tuple[float, int, int] | None:
    """Every threshold in every member's full score range (not just positives), every rule."""
    p, n = int(y.sum()), int((~y).sum())
    best: tuple[float, int, int] | None = None

    def consider(decisions: NDArray[np.bool_], complexity: int) -> None:
        nonlocal best
        tp, fp = int((decisions & y).sum()), int((decisions & ~y).sum())
        if tp / p < min_recall or (n - fp) / n < min_spec:
            return
        value = {"precision": tp / (tp + fp) if tp + fp else 0.0, "f1": 2 * tp / (tp + fp + p),
                 "youden": float(tp * n - fp * p), "specificity": float(-fp),
                 "sensitivity": float(tp)}[objective]
        key = (value, -fp, -complexity)
        best = key if best is None or key > best else best

    grids = [np.unique(np.r_[scores[:, j], 0.0, 1.0]) for j in range(len(members))]
    for cut in itertools.product(*grids):
        votes = (scores >= np.array(cut)).sum(axis=1)
        for k in range(1, len(members) + 1):
            consider(votes >= k, k - 1)
    for weights in weight_grid(len(members), 0.1):
        rule = VoteRule("weighted-mean", weights=dict(zip(members, weights)), threshold=0.0)
        fused = fused_scores(scores, members, rule, {})
        for t in np.unique(np.r_[fused, 1.0]):
            consider(fused >= t, len(members))
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("objective", ["precision", "specificity", "f1", "youden"])
def test_search_matches_brute_force(seed: int, objective: str) -> None:
    scores, y = _random_set(seed, m=2 + seed % 2)
    members = [f"m{j}" for j in range(scores.shape[1])]
    target = (0.5, 0.8, 0.9, 1.0)[seed]
    found = search(scores, y, members, objective=objective, min_recall=target)
    assert found.exact and found.best is not None
    best = found.best
    decisions = decide(scores, members, best.rule, best.thresholds)
    tp, fp = int((decisions & y).sum()), int((decisions & ~y).sum())
    assert (tp, fp) == (best.tp, best.fp) and tp / y.sum() >= target
    expected = _brute_force(scores, y, members, objective, target, 0.0)
    assert expected is not None
    p, n = int(y.sum()), int((~y).sum())
    value = {"precision": tp / (tp + fp), "f1": 2 * tp / (tp + fp + p),
             "youden": float(tp * n - fp * p), "specificity": float(-fp)}[objective]
    assert (value, -fp, -best.complexity) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(3))
def test_specificity_constrained_search_matches_brute_force(seed: int) -> None:
    scores, y = _random_set(10 + seed)
    members = ["a", "b", "c"]
    found = search(scores, y, members, objective="sensitivity", min_specificity=0.75)
    expected = _brute_force(scores, y, members, "sensitivity", 0.0, 0.75)
    assert expected is not None and found.best is not None
    assert (float(found.best.tp), -found.best.fp, -found.best.complexity) == expected


def test_capped_search_says_so_and_still_meets_the_target() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.4
    scores = np.clip(rng.random((200, 3)) * 0.8 + 0.2 * y[:, None], 0, 1)
    capped = search(scores, y, ["a", "b", "c"], min_recall=0.9, max_combinations=100,
                    rules=("any", "k-of-n"))
    assert not capped.exact and capped.best is not None
    assert capped.best.tp / y.sum() >= 0.9


def test_vectorised_decisions_and_fused_scores_equal_decide_study() -> None:
    scores, y = _random_set(3, n=30)
    members = ["a", "b", "c"]
    rules = [(VoteRule("any"), {"a": 0.5, "b": 0.6, "c": 0.2}),
             (VoteRule("k-of-n", k=2), {"a": 0.5, "b": 0.6, "c": 0.2}),
             (VoteRule("weighted-mean", weights={"a": 0.2, "b": 0.3, "c": 0.5}, threshold=0.41),
              {"a": 0.41, "b": 0.41, "c": 0.41})]
    for rule, thresholds in rules:
        decisions = decide(scores, members, rule, thresholds)
        fused = fused_scores(scores, members, rule, thresholds)
        for i, row in enumerate(scores):
            expected = decide_study(dict(zip(members, row)), thresholds, rule)
            assert decisions[i] == expected.positive and fused[i] == expected.score


# ----------------------------------------------------------------------- figures and intervals

def test_tune_meets_the_target_and_reports_matching_figures(write_predictions: WriteCsv) -> None:
    rng = np.random.default_rng(4)
    y = rng.random(120) < 0.4
    scores = {m: np.round(np.clip(rng.random(120) * 0.7 + 0.35 * y * rng.random(120), 0, 1), 3)
              for m in ("pg-cls", "pg-det", "detr")}
    preds = read_predictions(write_predictions(y, scores))
    for objective in ("precision", "specificity", "f1", "youden"):
        result = tune(preds, TuneSettings(target_recall=0.85, objective=objective, folds=3))
        point = result.decision_point
        conf = confusion(y, point.decisions)
        assert conf.sensitivity >= 0.85
        assert point.in_sample["sensitivity"].value == conf.sensitivity
        assert point.in_sample["ppv"].value == conf.ppv
        prov = point.operating_point.provenance
        assert prov.sensitivity is not None and prov.sensitivity.value == conf.sensitivity
        assert prov.f1 is not None and prov.f1.value == conf.f1
        assert prov.source_sha256 == preds.sha256 and prov.objective == objective
        assert prov.out_of_fold is not None and prov.out_of_fold.folds == 3


def test_out_of_fold_is_chosen_on_the_other_folds(write_predictions: WriteCsv) -> None:
    rng = np.random.default_rng(8)
    y = rng.random(60) < 0.5
    scores = {m: np.round(rng.random(60) * 0.8 + 0.2 * y, 2) for m in ("a", "b")}
    preds = read_predictions(write_predictions(y, scores))
    # unguarded: the out-of-fold estimate of the plain search (guard oof cross-validates
    # each rule family and margin instead; see test_tune_guard.py)
    settings = TuneSettings(target_recall=0.9, folds=4, seed=3, guard="none")
    result = tune(preds, settings)
    s = preds.filled()
    expected = np.zeros(60, dtype=bool)
    for train, held in StratifiedKFold(4, shuffle=True, random_state=3).split(s, y):
        best = search(s[train], y[train], ["a", "b"], min_recall=0.9).best
        assert best is not None
        expected[held] = decide(s[held], ["a", "b"], best.rule, best.thresholds)
    point = result.decision_point
    assert point.oof_decisions is not None and (point.oof_decisions == expected).all()
    assert point.out_of_fold is not None
    assert point.out_of_fold["sensitivity"].value == confusion(y, expected).sensitivity


def test_bootstrap_interval_coverage_in_a_small_simulation() -> None:
    """95 % intervals of a fixed rule's sensitivity cover the true value about 95 % of the time."""
    rng = np.random.default_rng(2024)
    truth, covered = 0.85, 0
    for i in range(200):
        y = rng.random(300) < 0.5
        calls = np.where(y, rng.random(300) < truth, rng.random(300) < 0.3)
        interval = bootstrap_metrics(y, calls, n_resamples=2000, seed=i)["sensitivity"]
        covered += interval.low <= truth <= interval.high
    assert 0.90 <= covered / 200 <= 0.98


# ------------------------------------------------------------------------------ the round trip

def _decide_like_screen_run(op_path: Path, preds: Predictions, level: int = 0) -> list[bool]:
    """Build per-image MemberOutputs (two images; the study score is the max) and decide."""
    points = load_points(op_path)
    op = points[level]
    decisions = []
    for row in preds.filled():
        outputs = {
            "img-1": {m: MemberOutput(member=m, score=float(s)) for m, s in zip(preds.members, row)},
            "img-2": {m: MemberOutput(member=m, score=float(s) / 2) for m, s in zip(preds.members, row)},
        }
        decisions.append(op.decide(outputs).positive)
    return decisions


@pytest.mark.parametrize("rules", [("any",), ("k-of-n",), ("weighted-mean",),
                                   ("any", "k-of-n", "weighted-mean")])
def test_op_json_round_trips_into_the_runner(tmp_path: Path, write_predictions: WriteCsv,
                                             rules: tuple[str, ...]) -> None:
    rng = np.random.default_rng(len(rules))
    y = rng.random(80) < 0.4
    scores = {m: rng.random(80) * 0.7 + 0.3 * y * rng.random(80) for m in ("cls", "det", "detr")}
    path = write_predictions(y, scores)
    out = tmp_path / "op.json"
    # 25-32 fracture studies of noisy members: the default guard refuses them (no rule holds
    # 0.9 out of fold), and this test is about the file, so the point is tuned unguarded
    result, written = run_tune(path, out, TuneSettings(target_recall=0.9, rules=rules, folds=2,
                                                       guard="none", allow_small=True))
    assert written[0] == out
    op = load_deciding_point(out)
    assert op == result.decision_point.operating_point and op.vote.rule in ("any", "k-of-n", "weighted-mean")
    preds = read_predictions(path)
    decisions = _decide_like_screen_run(out, preds)
    assert decisions == result.decision_point.decisions.tolist()
    assert (decide_predictions(op, preds) == result.decision_point.decisions).all()
    assert confusion(y, decisions).sensitivity >= 0.9


def test_dual_writes_two_points_and_grades_findings(tmp_path: Path, write_predictions: WriteCsv) -> None:
    rng = np.random.default_rng(5)
    y = rng.random(100) < 0.4
    scores = {m: rng.random(100) * 0.6 + 0.4 * y * rng.random(100) for m in ("cls", "det")}
    path = write_predictions(y, scores)
    out = tmp_path / "op.json"
    result, _ = run_tune(path, out, TuneSettings(target_recall=0.9, dual=True,
                                                 target_specificity=0.9, folds=2))
    points = load_points(out)
    assert [p.level for p in points] == ["high-sensitivity", "high-specificity"]
    assert load_deciding_point(out) == points[0]
    sens, spec = result.points
    assert confusion(y, spec.decisions).specificity >= 0.9
    assert confusion(y, spec.decisions).specificity > confusion(y, sens.decisions).specificity
    preds = read_predictions(path)
    strict = _decide_like_screen_run(out, preds, level=1)
    assert strict == spec.decisions.tolist()
    levels = [finding_level(points, [a, b]) for a, b in zip(sens.decisions, strict)]
    assert levels.count("high-specificity") == int((sens.decisions & spec.decisions).sum())
    assert levels.count(None) == int((~sens.decisions).sum())
    prov = points[1].provenance
    assert prov.target_specificity == 0.9 and prov.target_recall is None


# ----------------------------------------------------------------------------------- the report

def _table_rows(markdown: str) -> dict[str, list[str]]:
    section = markdown.split("## Results (percent)")[1].split("##")[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_report_table_numbers_equal_recomputed_metrics(tmp_path: Path,
                                                       write_predictions: WriteCsv) -> None:
    rng = np.random.default_rng(6)
    y = rng.random(90) < 0.4
    scores = {m: np.round(rng.random(90) * 0.7 + 0.3 * y, 3) for m in ("cls", "det")}
    path = write_predictions(y, scores)
    report_dir = tmp_path / "report"
    result, written = run_tune(path, tmp_path / "op.json",
                               TuneSettings(target_recall=0.9, folds=3, allow_small=True),
                               report_dir=report_dir)
    assert [p.name for p in written] == ["op.json", "report.md", "roc.png", "pr.png"]
    for png in written[2:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    rows = _table_rows((report_dir / "report.md").read_text())
    op = load_deciding_point(tmp_path / "op.json")
    conf = confusion(y, decide_predictions(op, read_predictions(path)))
    fused = rows["fused (high-sensitivity)"]
    expected = [f"{100 * v:.1f}" for v in (conf.accuracy, conf.ppv, conf.sensitivity, conf.f1)]
    assert fused[1:] == expected
    for j, member in enumerate(("cls", "det")):
        threshold = float(re.search(r">= ([0-9.e-]+)", rows[member][0]).group(1))  # type: ignore[union-attr]
        alone = confusion(y, np.asarray(scores[member]) >= result.members_alone[member].thresholds[member])
        assert threshold == pytest.approx(result.members_alone[member].thresholds[member], rel=1e-3)
        assert rows[member][1:] == [f"{100 * v:.1f}" for v in (alone.accuracy, alone.ppv,
                                                                alone.sensitivity, alone.f1)]
    oof = result.decision_point.oof_decisions
    assert oof is not None
    oof_conf = confusion(y, oof)
    assert rows["fused (high-sensitivity), out of fold"][1:] == [
        f"{100 * v:.1f}" for v in (oof_conf.accuracy, oof_conf.ppv, oof_conf.sensitivity, oof_conf.f1)]


# ------------------------------------------------------------------------------------ refusals

def _run(path: Path, tmp_path: Path, **settings: object) -> None:
    run_tune(path, tmp_path / "op.json", TuneSettings(**settings))  # type: ignore[arg-type]


def test_refuses_a_set_without_positives_or_negatives(tmp_path: Path,
                                                      write_predictions: WriteCsv) -> None:
    only_normal = write_predictions([False] * 6, {"a": [0.1] * 6}, name="normal.csv")
    with pytest.raises(TuneError) as info:
        _run(only_normal, tmp_path, folds=0, guard="none")
    assert str(info.value) == (
        f"{only_normal} has no fracture studies (0 fracture, 6 normal); sensitivity and "
        "specificity need both: tune on a labelled set with fracture and normal studies")
    only_fracture = write_predictions([True] * 6, {"a": [0.9] * 6}, name="fracture.csv")
    with pytest.raises(TuneError, match=r"has no normal studies \(6 fracture, 0 normal\)"):
        _run(only_fracture, tmp_path, folds=0, guard="none")


def test_refuses_a_missing_member_column(tmp_path: Path, write_predictions: WriteCsv) -> None:
    path = write_predictions([True, False], {"pg-cls": [0.9, 0.1]})
    with pytest.raises(TuneError) as info:
        run_tune(path, tmp_path / "op.json", TuneSettings(folds=0, guard="none"),
                 members=["pg-cls", "detr"])
    assert str(info.value) == (
        f"predictions file {str(path)!r} has no column 'score:detr' for member 'detr' that the "
        "operating point needs (members in the file: pg-cls); run `screen eval` with that "
        "member or leave it out of --members")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1.2.3,maybe,1,0.5", "line 3: column 'label' must be 'fracture' or 'normal', got 'maybe'"),
        ("1.2.3,normal,1,1.5", "line 3: column 'score:a' must be a number in [0, 1] or empty, got '1.5'"),
        ("1.2.3,normal,1,nan", "line 3: column 'score:a' must be a number in [0, 1] or empty, got 'nan'"),
        ("1.2.1,normal,1,0.5", "line 3: study '1.2.1' already appeared on line 2; one row per study"),
        (",normal,1,0.5", "line 3: column 'study_instance_uid' is empty"),
        ("1.2.3,normal,two,0.5", "line 3: column 'n_images' must be a count >= 0, got 'two'"),
        ("1.2.3,normal,1,0.5,9", "line 3: more fields than the header's 4"),
    ],
)
def test_refuses_a_malformed_file_naming_line_and_column(tmp_path: Path, line: str,
                                                         message: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text(f"study_instance_uid,label,n_images,score:a\n1.2.1,fracture,1,0.9\n{line}\n")
    with pytest.raises(TuneError) as info:
        read_predictions(path)
    assert str(info.value).startswith(f"{path}, {message}")


def test_refuses_missing_columns_and_files(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("study_instance_uid,label,score:a\n1,fracture,0.5\n")
    with pytest.raises(TuneError, match=r"lacks column\(s\) n_images \(it has: study_instance_uid"):
        read_predictions(path)
    path.write_text("study_instance_uid,label,n_images\n1,fracture,1\n")
    with pytest.raises(TuneError, match=r"has no member score columns \(score:<member>\)"):
        read_predictions(path)
    path.write_text("study_instance_uid,label,n_images,score:a\n1,fracture,1,\n")
    with pytest.raises(TuneError, match="member 'a' has no score in any row"):
        read_predictions(path)
    with pytest.raises(TuneError, match="does not exist; write it with `screen eval"):
        read_predictions(tmp_path / "none.csv")
    with pytest.raises(TuneError, match="has no 'split' column; drop --split"):
        read_predictions(path, split="tune")


def test_unreachable_specificity_and_a_dual_point_that_is_not_stricter(
        tmp_path: Path, write_predictions: WriteCsv) -> None:
    # a normal study scores 1.0 on every member: specificity 1.0 is out of reach
    y = [True, True, True, False, False, False]
    path = write_predictions(y, {"a": [0.9, 0.8, 0.7, 1.0, 0.2, 0.1], "b": [0.9, 0.8, 0.7, 1.0, 0.1, 0.1]})
    with pytest.raises(TuneError) as info:
        _run(path, tmp_path, target_recall=0.9, dual=True, target_specificity=1.0, folds=0,
             guard="none", allow_small=True)
    assert str(info.value) == (
        "no operating point reaches specificity >= 1 with rules any, k-of-n, weighted-mean; "
        "the best reachable is 0.6667; lower --target-specificity")
    # the decision point already has specificity 0.6667 >= 0.5: no stricter point exists
    with pytest.raises(TuneError, match=r"already has specificity 0.6667, so the best point with "
                                        r"specificity >= 0.5 is no stricter \(0.6667\); raise "
                                        r"--target-specificity above 0.6667 or drop --dual"):
        _run(path, tmp_path, target_recall=0.9, dual=True, target_specificity=0.5, folds=0,
             guard="none", allow_small=True)


def test_refuses_too_few_studies_for_the_folds(tmp_path: Path, write_predictions: WriteCsv) -> None:
    path = write_predictions([True, True, False, False, False], {"a": [0.9, 0.8, 0.1, 0.2, 0.3]})
    with pytest.raises(TuneError, match=r"--folds 5 needs at least 5 fracture and 5 normal "
                                        r"studies, .* has 2 and 3; lower --folds"):
        _run(path, tmp_path, folds=5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"target_recall": 0.0}, r"--target-recall must be in \(0, 1\], e.g. 0.90; got 0.0"),
        ({"target_recall": 1.5}, r"--target-recall must be in \(0, 1\]"),
        ({"objective": "auc"}, "--objective 'auc' is unknown; choose one of precision, "
                               "specificity, f1, youden"),
        ({"rules": ("any", "majority")}, "--rules 'any,majority' is invalid"),
        ({"folds": 1}, r"--folds must be 0 \(skip the out-of-fold estimate\) or >= 2, got 1"),
        ({"n_bootstrap": 500}, "--bootstrap must be at least 2000 resamples, got 500"),
        ({"weight_step": 0.3}, r"--weight-step must divide 1 into at most 100 steps"),
        ({"max_combinations": 0}, "--max-combinations must be >= 1, got 0"),
    ],
)
def test_bad_settings_are_config_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TuneSettings(**settings)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- CLI

def test_cli_tunes_and_refuses_with_exit_code_2(tmp_path: Path, write_predictions: WriteCsv) -> None:
    group = _DomainErrorGroup(name="screen", commands={"tune": tune_cmd})
    rng = np.random.default_rng(9)
    y = rng.random(60) < 0.5
    path = write_predictions(y, {"a": rng.random(60) * 0.8 + 0.2 * y, "b": rng.random(60)},
                             split=["tune"] * 50 + ["test"] * 10)
    out = tmp_path / "cli" / "op.json"
    result = CliRunner().invoke(group, ["tune", str(path), "--target-recall", "0.9", "--out",
                                        str(out), "--folds", "3", "--split", "tune",
                                        "--rules", "any,k-of-n", "--objective", "f1",
                                        "--allow-small"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "out of fold: sensitivity" in result.output
    data = json.loads(out.read_text())
    assert data["provenance"]["objective"] == "f1" and data["vote"]["rule"] in ("any", "k-of-n")
    assert "split 'tune'" in data["provenance"]["notes"] and "50 studies" in data["provenance"]["notes"]
    assert (tmp_path / "cli" / "op-report" / "report.md").is_file()
    bad = CliRunner().invoke(group, ["tune", str(path), "--target-recall", "1.5", "--out", str(out)])
    assert bad.exit_code == 2
    assert bad.output == "Error: --target-recall must be in (0, 1], e.g. 0.90; got 1.5\n"
    lacking = CliRunner().invoke(group, ["tune", str(path), "--target-recall", "0.9", "--out",
                                         str(out), "--members", "a,detr"])
    assert lacking.exit_code == 2 and "no column 'score:detr' for member 'detr'" in lacking.output


def test_empty_scores_count_as_zero_and_are_noted(tmp_path: Path, write_predictions: WriteCsv) -> None:
    y = [True] * 6 + [False] * 6
    a: list[float | None] = [0.9, 0.8, 0.7, 0.6, 0.9, None, 0.1, 0.2, 0.3, None, 0.1, 0.2]
    path = write_predictions(y, {"a": a, "b": [0.5] * 12})
    result, _ = run_tune(path, tmp_path / "op.json",
                         TuneSettings(target_recall=0.8, folds=2, guard="none",
                                      allow_small=True))
    assert read_predictions(path).empty_counts() == {"a": 2}
    notes = result.decision_point.operating_point.provenance.notes or ""
    assert "empty scores counted as 0.0: a 2" in notes
    assert "Empty member scores, counted as 0.0: a: 2" in (tmp_path / "op-report" / "report.md").read_text()
