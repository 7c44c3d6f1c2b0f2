"""screen tune's guards against a point that over-fits its tuning set: exact intervals, the
fracture studies a target needs, the refusals, and the issue's 40-study over-fitting case."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from scipy.stats import binomtest
from sklearn.model_selection import StratifiedKFold

from ensembles.errors import OperatingPointError
from ensembles.fusion import VoteRule
from ensembles.operating_point.op_json import load_deciding_point, load_points
from ensembles.operating_point.point import OperatingPoint, TuneGuard
from screen.cli import cli
from screen.site_config import PROJECT_ROOT
from screen.errors import ConfigError
from screen.tune.tuner import TuneSettings, tune
from screen.tune.inputs import Predictions, read_predictions
from screen.tune.search import (
    decide, exact_interval, free_parameters, min_tp_shown, positives_needed, search,
)

Rows = Sequence[tuple[float, float, float]]

# The case, drawn once (numpy default_rng(2), scores beta(2, 2) * 0.8 plus a weak
# 0.15 * uniform lift on fractures, rounded to 0.01) and written out here so a numpy upgrade
# cannot change it: 13 fracture and 27 normal studies, three barely informative members.
OVERFIT_FRACTURE: Rows = (
    (0.58, 0.66, 0.43), (0.33, 0.50, 0.57), (0.23, 0.08, 0.58), (0.67, 0.60, 0.48),
    (0.14, 0.42, 0.70), (0.54, 0.77, 0.50), (0.30, 0.23, 0.27), (0.51, 0.72, 0.50),
    (0.55, 0.42, 0.31), (0.64, 0.63, 0.25), (0.47, 0.72, 0.51), (0.69, 0.36, 0.32),
    (0.49, 0.59, 0.68),
)
OVERFIT_NORMAL: Rows = (
    (0.25, 0.52, 0.24), (0.39, 0.19, 0.27), (0.20, 0.62, 0.04), (0.11, 0.58, 0.45),
    (0.73, 0.55, 0.46), (0.46, 0.06, 0.16), (0.58, 0.48, 0.14), (0.56, 0.07, 0.56),
    (0.12, 0.54, 0.34), (0.32, 0.18, 0.48), (0.37, 0.03, 0.17), (0.55, 0.33, 0.61),
    (0.57, 0.59, 0.65), (0.03, 0.58, 0.30), (0.73, 0.47, 0.42), (0.65, 0.32, 0.52),
    (0.44, 0.49, 0.40), (0.65, 0.09, 0.47), (0.49, 0.27, 0.11), (0.49, 0.70, 0.12),
    (0.17, 0.58, 0.77), (0.47, 0.13, 0.55), (0.16, 0.34, 0.21), (0.69, 0.35, 0.14),
    (0.22, 0.23, 0.12), (0.27, 0.37, 0.17), (0.48, 0.25, 0.37),
)
MEMBERS = ("a", "b", "c")


def _csv(path: Path, fracture: Rows, normal: Rows) -> Path:
    """A predictions.csv as `screen eval` writes it (fracture studies first)."""
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["study_instance_uid", "label", "n_images"] + [f"score:{m}" for m in MEMBERS])
        for i, (label, row) in enumerate([("fracture", r) for r in fracture]
                                         + [("normal", r) for r in normal]):
            out.writerow([f"2.25.{i}", label, 1] + [f"{v:.2f}" for v in row])
    return path


def _tune_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, ["tune", *args, "--target-recall", "0.9"])


@pytest.fixture
def overfit(tmp_path: Path) -> Path:
    return _csv(tmp_path / "predictions.csv", OVERFIT_FRACTURE, OVERFIT_NORMAL)


# ------------------------------------------------------------------------ exact intervals

def test_13_of_13_has_an_exact_interval_not_a_point() -> None:
    low, high = exact_interval(13, 13)
    assert low == pytest.approx(0.752947, abs=1e-6) and high == 1.0
    for hits, n in ((13, 13), (12, 13), (0, 7), (31, 40)):
        reference = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="exact")
        assert exact_interval(hits, n) == pytest.approx((reference.low, reference.high), abs=1e-9)
    assert all(np.isnan(exact_interval(0, 0)))


@pytest.mark.parametrize(("target", "needed"), [(0.9, 36), (0.95, 72), (0.8, 17), (0.5, 6),
                                                (0.01, 1), (1.0, None)])
def test_positives_needed_is_the_fewest_whose_best_case_shows_the_target(
        target: float, needed: int | None) -> None:
    assert positives_needed(target) == needed
    if needed is not None:  # n/n shows it, (n-1)/(n-1) does not
        assert exact_interval(needed, needed)[0] >= target
        assert needed == 1 or exact_interval(needed - 1, needed - 1)[0] < target
    assert min_tp_shown(0.9, 13) is None and min_tp_shown(0.9, 36) == 36


def test_free_parameters_are_counted_on_the_rule() -> None:
    assert free_parameters(VoteRule("any"), 3) == 3
    assert free_parameters(VoteRule("k-of-n", k=2), 3) == 4
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    assert free_parameters(VoteRule("weighted-mean", weights=weights, threshold=0.4), 3) == 3


# ------------------------------------------------------------------------------ refusals

def test_a_set_too_small_for_the_target_is_refused_with_the_count_needed(
        overfit: Path, tmp_path: Path) -> None:
    result = _tune_cli(str(overfit), "--out", str(tmp_path / "op.json"))
    assert result.exit_code == 2
    assert result.output == (
        f"Error: {overfit} has 13 fracture studies, too few to show sensitivity >= 0.9: even "
        "13/13 found has an exact 95 % lower bound of 0.7529 (two-sided Clopper-Pearson), and "
        "36 are needed (the fewest n whose n/n has a lower bound >= 0.9); add fracture studies, "
        "lower --target-recall, or give --allow-small to tune anyway (op.json and the report "
        "record it)\n")
    assert not (tmp_path / "op.json").exists()
    perfect = CliRunner().invoke(cli, ["tune", str(overfit), "--target-recall", "1",
                                       "--out", str(tmp_path / "op.json")])
    assert perfect.exit_code == 2 and perfect.output == (
        f"Error: {overfit} has 13 fracture studies, too few to show sensitivity >= 1: even "
        "13/13 found has an exact 95 % lower bound of 0.7529 (two-sided Clopper-Pearson), and no "
        "number is enough for a target of 1 (n/n always has a lower bound below 1); lower "
        "--target-recall below 1, or give --allow-small to tune anyway (op.json and the report "
        "record it)\n")


def test_the_guard_refuses_when_nothing_holds_out_of_fold(overfit: Path, tmp_path: Path) -> None:
    """With folds drawn by seed 2 no rule family holds 0.9 out of fold on the issue's set (with
    seed 0 one does, below): on 13 fracture studies even the guard's verdict is a coin toss
    of the fold split, which is why the set is refused as too small by default."""
    result = _tune_cli(str(overfit), "--out", str(tmp_path / "op.json"), "--allow-small",
                       "--seed", "2")
    assert result.exit_code == 2
    assert result.output == (
        "Error: no operating point reaches sensitivity >= 0.9 out of fold (--guard oof, 5 "
        "folds): in sample the best point reaches 0.9231 (12/13 fracture studies), out of fold "
        "at most 0.8462 (11/13) over 9 ways of choosing it; add fracture studies, lower "
        "--target-recall, or give --guard none to accept the in-sample figure knowingly\n")
    assert not (tmp_path / "op.json").exists()


def test_lower_ci_cannot_pass_on_a_small_set_and_oof_needs_folds(overfit: Path,
                                                                 tmp_path: Path) -> None:
    out = str(tmp_path / "op.json")
    result = _tune_cli(str(overfit), "--out", out, "--allow-small", "--guard", "lower-ci")
    assert result.exit_code == 2
    assert result.output == (
        "Error: no operating point shows sensitivity >= 0.9 at the lower bound of its exact "
        "95 % interval (--guard lower-ci): in sample the best point reaches 0.9231 (12/13 "
        "fracture studies), and even 13/13 has a lower bound of 0.7529; add fracture studies, "
        "lower --target-recall, or give --guard oof (or --guard none, knowingly)\n")
    no_folds = _tune_cli(str(overfit), "--out", out, "--folds", "0")
    assert no_folds.exit_code == 2 and no_folds.output == (
        "Error: --guard oof needs the out-of-fold estimate, but --folds is 0; give --folds >= 2 "
        "(default 5), or choose --guard lower-ci or --guard none\n")
    with pytest.raises(ConfigError, match="--guard 'holdout' is unknown; choose one of oof, "
                                          "lower-ci, none"):
        TuneSettings(guard="holdout")


# --------------------------------------------------------------- the over-fitting case

def test_unguarded_search_over_fits_and_is_marked_unguarded(overfit: Path, tmp_path: Path) -> None:
    """Today's search (`--guard none`): a 3-of-3 rule with three free thresholds and k, 12/13 in
    sample, 7/13 out of fold, exactly what the issue saw, now said out loud."""
    out = tmp_path / "op.json"
    result = _tune_cli(str(overfit), "--out", str(out), "--allow-small", "--guard", "none")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "high-sensitivity: k-of-n(k=3); a >= 0.14, b >= 0.23, c >= 0.25"
    assert lines[1] == ("  guard none: UNGUARDED, chosen on in-sample sensitivity 0.9231 only; "
                        "out-of-fold sensitivity 0.5385 is below the target; 4 free parameters")
    assert lines[2].startswith("  in sample: sensitivity 0.923 [0.640, 0.998], ")
    assert lines[3].startswith("  out of fold: sensitivity 0.538 [0.251, 0.808], ")
    assert lines[4] == ("warning: small set: 13 fracture studies, 36 needed to show sensitivity "
                        ">= 0.9 with an exact 95 % lower bound; tuned anyway (--allow-small)")
    provenance = json.loads(out.read_text())["provenance"]
    assert provenance["guard"] == {"guard": "none", "free_parameters": 4,
                                   "fitted_recall": 0.9, "positives": 13,
                                   "positives_needed": 36, "allowed_small": True}
    assert "guard none: UNGUARDED" in provenance["notes"]
    assert provenance["out_of_fold"]["sensitivity"]["value"] == pytest.approx(7 / 13)
    report = (tmp_path / "op-report" / "report.md").read_text()
    assert "- **Unguarded** (`--guard none`): the decision point was chosen on its in-sample" \
        in report
    assert "- **Small set**: 13 fracture studies, 36 needed" in report


def test_default_guard_takes_a_point_that_holds_out_of_fold(overfit: Path, tmp_path: Path) -> None:
    out = tmp_path / "op.json"
    result = _tune_cli(str(overfit), "--out", str(out), "--allow-small")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] == (
        "  guard oof: out-of-fold sensitivity 0.9231 >= target 0.9, the rule fitted in sample "
        "to sensitivity >= 0.9231; 3 free parameters")
    op = load_deciding_point(out)
    assert op.vote.rule == "weighted-mean"
    guard = op.provenance.guard
    assert guard == TuneGuard("oof", free_parameters=3, fitted_recall=12 / 13, positives=13,
                              positives_needed=36, allowed_small=True)
    oof = op.provenance.out_of_fold
    assert oof is not None and oof.sensitivity is not None and oof.sensitivity.value >= 0.9
    assert op.provenance.sensitivity is not None
    assert op.provenance.sensitivity.method == "Clopper-Pearson exact, two-sided 95 %"
    assert oof.sensitivity.method == ("5-fold out-of-fold (stratified, seed 0), "
                                      "Clopper-Pearson exact, two-sided 95 %")
    # the held-out decisions are the chosen family's, fitted to 12/13 on the other four folds
    preds = read_predictions(overfit)
    s, y = preds.filled(), preds.labels
    expected = np.zeros(y.size, dtype=bool)
    for train, held in StratifiedKFold(5, shuffle=True, random_state=0).split(s, y):
        best = search(s[train], y[train], MEMBERS, rules=("weighted-mean",),
                      min_recall=12 / 13).best
        assert best is not None
        expected[held] = decide(s[held], MEMBERS, best.rule, best.thresholds)
    point = tune(preds, TuneSettings(allow_small=True)).decision_point
    assert point.oof_decisions is not None and (point.oof_decisions == expected).all()
    assert int((expected & y).sum()) == 12


# ------------------------------------------------------------------ lower-ci and ties

def _two_copies(seed: int, fracture: int, normal: int) -> Predictions:
    """Members a and b give the same scores and c gives none: any, k-of-n and the weighted
    mean can all draw the same line."""
    rng = np.random.default_rng(seed)
    y = np.arange(fracture + normal) < fracture
    a = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.12), 0, 1), 2)
    return Predictions(tuple(f"2.25.{i}" for i in range(y.size)), y, MEMBERS,
                       np.c_[a, a, np.zeros(y.size)])


def test_lower_ci_takes_a_point_whose_exact_lower_bound_meets_the_target() -> None:
    preds = _two_copies(7, 45, 30)
    point = tune(preds, TuneSettings(guard="lower-ci", folds=3)).decision_point
    sens = point.in_sample["sensitivity"]
    assert min_tp_shown(0.9, 45) == 45 and point.choice.tp == 45
    assert sens.low >= 0.9 and sens.low == pytest.approx(exact_interval(45, 45)[0])
    assert point.guard.guard == "lower-ci" and point.guard.fitted_recall == 1.0
    unguarded = tune(preds, TuneSettings(guard="none", folds=3)).decision_point
    assert unguarded.choice.tp < 45 and unguarded.in_sample["sensitivity"].low < 0.9


def test_fewer_free_parameters_win_when_families_do_equally_well() -> None:
    preds = _two_copies(7, 40, 20)
    alone = {rules: tune(preds, TuneSettings(rules=rules)).decision_point
             for rules in (("any",), ("weighted-mean",), ("any", "k-of-n"))}
    counts = {(p.choice.tp, p.choice.fp, int((p.oof_decisions & preds.labels).sum()))
              for p in alone.values() if p.oof_decisions is not None}
    assert len(counts) == 1  # in sample and out of fold alike: a tie
    both = search(preds.filled(), preds.labels, MEMBERS, rules=("k-of-n",), ks=(2, 3),
                  min_recall=0.9).best
    assert both is not None and (both.tp, both.fp) == (alone[("any",)].choice.tp,
                                                       alone[("any",)].choice.fp)
    point = tune(preds, TuneSettings()).decision_point
    assert point.choice.rule == VoteRule("any") and point.guard.free_parameters == 3


# ------------------------------------------------------------------------ op.json schema

def test_files_without_a_guard_still_load_and_the_guard_round_trips(tmp_path: Path) -> None:
    # the committed sample op.json, as a file written before the guard (and schema 2) existed
    legacy = json.loads((PROJECT_ROOT / "sample_data" / "op.json").read_text())
    for key in ("id", "calibration", "reference", "group_by", "group_points"):
        legacy.pop(key, None)
    legacy["provenance"].pop("guard", None)
    legacy["schema_version"] = 1
    (tmp_path / "op.json").write_text(json.dumps(legacy))
    old = load_points(tmp_path / "op.json")
    assert old and all(p.provenance.guard is None for p in old)
    assert "guard" not in old[0].provenance.to_dict()
    data = old[0].to_dict()
    data["provenance"]["guard"] = {"guard": "lower-ci", "free_parameters": 4,
                                   "fitted_recall": 0.95, "positives": 80,
                                   "positives_needed": 72, "allowed_small": False}
    again = OperatingPoint.from_dict(data)
    assert again.provenance.guard == TuneGuard("lower-ci", 4, 0.95, 80, 72, False)
    assert again.to_dict() == data and again.id == old[0].id  # provenance decides nothing


@pytest.mark.parametrize(("guard", "message"), [
    ({"guard": "maybe", "free_parameters": 3},
     "'provenance.guard.guard' must be one of oof, lower-ci, none, got 'maybe'"),
    ({"guard": "oof"}, "'provenance.guard.free_parameters' is missing"),
    ({"guard": "oof", "free_parameters": -1},
     "'provenance.guard.free_parameters' must be an integer >= 0, got -1"),
    ({"guard": "oof", "free_parameters": 3, "positives_needed": 0},
     "'provenance.guard.positives_needed' must be an integer >= 1 or null, got 0"),
    ({"guard": "oof", "free_parameters": 3, "allowed_small": "yes"},
     "'provenance.guard.allowed_small' must be true or false, got 'yes'"),
    ({"guard": "oof", "free_parameters": 3, "margin": 1},
     "provenance.guard has unknown key(s) margin; valid keys: guard, free_parameters"),
])
def test_a_malformed_guard_is_refused(guard: dict[str, object], message: str) -> None:
    data = {"schema_version": 1, "thresholds": {"a": 0.5}, "provenance": {"guard": guard}}
    with pytest.raises(OperatingPointError) as info:
        OperatingPoint.from_dict(data)
    assert message in str(info.value)
