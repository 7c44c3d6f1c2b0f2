"""Fusion: box fusion against ensemble-boxes, recall-keeping modes, and study vote rules."""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_boxes import weighted_boxes_fusion

from ensembles.box_fusion import LIBRARY_CONF_TYPES, BoxSettings, FusionError, fuse_boxes
from ensembles.errors import EnsembleError
from ensembles.fusion import VoteRule, decide_study, fuse_study, threshold_centred
from ensembles.types import Box, Detection, MemberOutput


def _random_detections(rng: np.random.Generator, n: int) -> list[Detection]:
    out = []
    for _ in range(n):
        cx, cy = rng.random(2) * 0.6 + 0.2
        w, h = rng.random(2) * 0.25 + 0.05
        out.append(
            Detection(
                Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2),
                label=str(rng.choice(["fracture", "dislocation"])),
                score=float(rng.random() * 0.95 + 0.02),
            )
        )
    return out


@pytest.mark.parametrize("scoring", sorted(LIBRARY_CONF_TYPES))
def test_matches_ensemble_boxes_for_its_modes(scoring: str) -> None:
    rng = np.random.default_rng(42)
    label_ids = {"dislocation": 0, "fracture": 1}
    for trial in range(60):
        members = [f"m{i}" for i in range(int(rng.integers(1, 4)))]
        dets = {m: _random_detections(rng, int(rng.integers(0, 6))) for m in members}
        weights = {m: float(rng.random() + 0.5) for m in members} if trial % 2 else None
        iou, skip = float(rng.uniform(0.2, 0.7)), float(rng.choice([0.0, 0.3]))
        ours = fuse_boxes(dets, weights=weights, iou_threshold=iou, skip_box_threshold=skip,
                          scoring=scoring)
        boxes, scores, labels = weighted_boxes_fusion(
            [[list(d.box) for d in dets[m]] for m in members],
            [[d.score for d in dets[m]] for m in members],
            [[label_ids[d.label] for d in dets[m]] for m in members],
            weights=None if weights is None else [weights[m] for m in members],
            iou_thr=iou, skip_box_thr=skip, conf_type=LIBRARY_CONF_TYPES[scoring],
        )
        ref = sorted(
            (float(s), int(lab), *map(float, b)) for b, s, lab in zip(boxes, scores, labels)
        )
        got = sorted((d.score, label_ids[d.label], *d.box) for d in ours)
        assert len(got) == len(ref)
        if ref:
            np.testing.assert_allclose(np.array(got), np.array(ref), atol=1e-6)
        for d in ours:
            assert 0.0 <= d.score <= 1.0 and d.members and d.n_boxes >= len(d.members)


def _three_members_one_lonely_box() -> dict[str, list[Detection]]:
    shared = Box(0.1, 0.1, 0.3, 0.3)
    return {
        "pg-det": [Detection(shared, score=0.8), Detection(Box(0.6, 0.6, 0.8, 0.9), score=0.9)],
        "detr": [Detection(shared, score=0.6)],
        "other": [],
    }


def test_lonely_box_keeps_its_score_under_recall_modes_and_loses_two_thirds_under_wbf() -> None:
    dets = _three_members_one_lonely_box()
    lonely = Box(0.6, 0.6, 0.8, 0.9)

    def score_of(scoring: str) -> float:
        (match,) = [d for d in fuse_boxes(dets, scoring=scoring) if d.members == ("pg-det",)]
        assert match.box == pytest.approx(lonely)
        return match.score

    assert score_of("max") == pytest.approx(0.9)
    assert score_of("mean") == pytest.approx(0.9)
    assert score_of("wbf") == pytest.approx(0.3)
    assert score_of("absent_model_aware_avg") == pytest.approx(0.3)


def test_shared_box_scores_and_members() -> None:
    dets = _three_members_one_lonely_box()
    expected = {"max": 0.8, "mean": 0.7, "wbf": 0.7 * 2 / 3}
    for scoring, value in expected.items():
        (shared,) = [d for d in fuse_boxes(dets, scoring=scoring) if len(d.members) == 2]
        assert shared.score == pytest.approx(value, abs=1e-6)
        assert shared.members == ("pg-det", "detr") and shared.n_boxes == 2
        assert dict(shared.member_scores) == pytest.approx({"pg-det": 0.8, "detr": 0.6})
        assert shared.box == pytest.approx((0.1, 0.1, 0.3, 0.3), abs=1e-6)


def test_corners_are_score_weighted() -> None:
    dets = {
        "a": [Detection(Box(0.0, 0.0, 0.4, 0.4), score=0.75)],
        "b": [Detection(Box(0.1, 0.1, 0.5, 0.5), score=0.25)],
    }
    (fused,) = fuse_boxes(dets, iou_threshold=0.3, scoring="mean")
    assert fused.box == pytest.approx((0.025, 0.025, 0.425, 0.425), abs=1e-6)
    assert fused.score == pytest.approx(0.5)
    assert len(fuse_boxes(dets, iou_threshold=0.5)) == 2  # IoU 0.39 below 0.5: no cluster


def test_labels_fuse_case_insensitively_but_not_across_labels() -> None:
    box = Box(0.2, 0.2, 0.4, 0.4)
    same = fuse_boxes({"a": [Detection(box, "Fracture", 0.5)], "b": [Detection(box, "fracture", 0.7)]})
    assert len(same) == 1 and same[0].label == "fracture"
    other = fuse_boxes({"a": [Detection(box, "fracture", 0.5)], "b": [Detection(box, "implant", 0.7)]})
    assert sorted(d.label for d in other) == ["fracture", "implant"]


def test_thresholds_and_empty_inputs() -> None:
    dets = _three_members_one_lonely_box()
    assert [d.score for d in fuse_boxes(dets, scoring="max", score_threshold=0.85)] == [0.9]
    kept = fuse_boxes(dets, scoring="max", skip_box_threshold=0.7)
    assert sorted(d.members for d in kept) == [("pg-det",), ("pg-det",)]
    assert fuse_boxes({}) == [] and fuse_boxes({"a": [], "b": []}) == []
    assert fuse_boxes({"a": [Detection(Box(0.1, 0.1, 0.2, 0.2), score=0.0)]}) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scoring": "avg"}, "box scoring 'avg' is unknown"),
        ({"iou_threshold": 1.5}, "iou_threshold"),
        ({"weights": {"a": 1.0}}, r"lack member\(s\) \['b'\]"),
        ({"weights": {"a": 1.0, "b": 0.0}}, "must be a finite number > 0"),
    ],
)
def test_box_fusion_validation(kwargs: dict[str, object], message: str) -> None:
    dets = {"a": [Detection(Box(0.1, 0.1, 0.2, 0.2), score=0.5)], "b": []}
    with pytest.raises(FusionError, match=message):
        fuse_boxes(dets, **kwargs)  # type: ignore[arg-type]


def test_box_fusion_rejects_non_detections() -> None:
    with pytest.raises(FusionError, match="Detection objects"):
        fuse_boxes({"a": [(0.1, 0.1, 0.2, 0.2)]})  # type: ignore[list-item]


def test_threshold_centred() -> None:
    assert threshold_centred(0.3, 0.3) == 0.5
    assert threshold_centred(0.0, 0.3) == 0.0 and threshold_centred(1.0, 0.3) == 1.0
    assert threshold_centred(0.15, 0.3) == pytest.approx(0.25)
    assert threshold_centred(0.65, 0.3) == pytest.approx(0.75)
    assert threshold_centred(0.0, 0.0) == 0.5 and threshold_centred(1.0, 1.0) == 1.0
    values = [threshold_centred(s, 0.37) for s in np.linspace(0, 1, 101)]
    assert all(b >= a for a, b in zip(values, values[1:]))


THRESHOLDS = {"cls": 0.5, "det": 0.3, "detr": 0.4}


def test_any_rule() -> None:
    pos = decide_study({"cls": 0.7, "det": 0.1, "detr": 0.2}, THRESHOLDS, VoteRule("any"))
    assert pos.positive and pos.score == pytest.approx(0.7)
    assert pos.votes == {"cls": True, "det": False, "detr": False}
    assert pos.positive_members == ("cls",) and pos.rule == "any"
    neg = decide_study({"cls": 0.4, "det": 0.15, "detr": 0.2}, THRESHOLDS, VoteRule("any"))
    assert not neg.positive and neg.score == pytest.approx(0.4)
    on_threshold = decide_study({"cls": 0.5, "det": 0.0, "detr": 0.0}, THRESHOLDS, VoteRule())
    assert on_threshold.positive and on_threshold.score == 0.5


def test_k_of_n_rule() -> None:
    rule = VoteRule("k-of-n", k=2)
    one = decide_study({"cls": 0.9, "det": 0.15, "detr": 0.2}, THRESHOLDS, rule)
    assert not one.positive and one.score == pytest.approx(0.25)  # 2nd largest centred
    two = decide_study({"cls": 0.9, "det": 0.65, "detr": 0.2}, THRESHOLDS, rule)
    assert two.positive and two.score == pytest.approx(0.75) and two.rule == "k-of-n(k=2)"


def test_weighted_mean_rule() -> None:
    rule = VoteRule("weighted-mean", weights={"cls": 2, "det": 1, "detr": 1}, threshold=0.5)
    pos = decide_study({"cls": 0.9, "det": 0.3, "detr": 0.1}, THRESHOLDS, rule)
    assert pos.positive and pos.score == pytest.approx(0.55)
    neg = decide_study({"cls": 0.6, "det": 0.3, "detr": 0.1}, THRESHOLDS, rule)
    assert not neg.positive and neg.score == pytest.approx(0.4)
    assert neg.votes["cls"]  # votes still reported with each member's threshold


def test_decision_score_agrees_with_votes_on_random_cases() -> None:
    rng = np.random.default_rng(3)
    for _ in range(500):
        n = int(rng.integers(1, 5))
        names = [f"m{i}" for i in range(n)]
        thresholds = {m: float(rng.choice([0.0, 1.0, rng.random()])) for m in names}
        scores = {m: float(rng.choice([thresholds[m], rng.random()])) for m in names}
        k = int(rng.integers(1, n + 1))
        d = decide_study(scores, thresholds, VoteRule("k-of-n", k=k))
        assert 0.0 <= d.score <= 1.0
        assert d.positive == (sum(scores[m] >= thresholds[m] for m in names) >= k)
        assert d.positive == (d.score >= 0.5)
        a = decide_study(scores, thresholds, VoteRule("any"))
        assert a.positive == any(a.votes.values()) == (a.score >= 0.5)


@pytest.mark.parametrize(
    ("scores", "rule", "message"),
    [
        ({"cls": 0.5, "det": 0.5}, VoteRule(), r"no score from member\(s\) \['detr'\]"),
        ({"cls": 0.5, "det": 0.5, "detr": 0.5, "x": 0.1}, VoteRule(), "no threshold"),
        ({"cls": 1.5, "det": 0.5, "detr": 0.5}, VoteRule(), "must be in"),
        ({"cls": 0.5, "det": 0.5, "detr": 0.5}, VoteRule("k-of-n", k=4), "k <= number of members"),
        (
            {"cls": 0.5, "det": 0.5, "detr": 0.5},
            VoteRule("weighted-mean", weights={"cls": 1.0}, threshold=0.5),
            "lack member",
        ),
    ],
)
def test_decide_study_errors(scores: dict[str, float], rule: VoteRule, message: str) -> None:
    with pytest.raises(FusionError, match=message):
        decide_study(scores, THRESHOLDS, rule)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "majority"}, "vote rule 'majority' is unknown"),
        ({"rule": "k-of-n"}, "integer k >= 1"),
        ({"rule": "k-of-n", "k": 0}, "integer k >= 1"),
        ({"rule": "any", "k": 2}, "only used by the k-of-n"),
        ({"rule": "weighted-mean", "threshold": 0.5}, "needs weights"),
        ({"rule": "weighted-mean", "weights": {"a": 1}}, "threshold in"),
        ({"rule": "weighted-mean", "weights": {"a": -1}, "threshold": 0.5}, ">= 0"),
        ({"rule": "any", "threshold": 0.5}, "only used by weighted-mean"),
    ],
)
def test_vote_rule_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(EnsembleError, match=message):
        VoteRule(**kwargs)  # type: ignore[arg-type]


def _out(member: str, score: float, *boxes: tuple[Box, float]) -> MemberOutput:
    return MemberOutput(member=member, score=score,
                        detections=[Detection(b, score=s) for b, s in boxes])


def test_study_score_is_the_max_over_images_and_classifier_only_positive_is_image_level() -> None:
    outputs = {
        "img-1": {"cls": _out("cls", 0.2), "det": _out("det", 0.1), "detr": _out("detr", 0.1)},
        "img-2": {"cls": _out("cls", 0.8), "det": _out("det", 0.2), "detr": _out("detr", 0.3)},
    }
    decision = fuse_study(outputs, thresholds=THRESHOLDS, rule=VoteRule("any"))
    assert decision.member_scores == {"cls": 0.8, "det": 0.2, "detr": 0.3}
    assert decision.positive and decision.image_level_only
    (finding,) = decision.findings
    assert finding.box is None and finding.image == "img-2" and finding.members == ("cls",)
    assert finding.score == decision.score == pytest.approx(0.8)


def test_boxes_become_findings_on_their_images() -> None:
    fracture = Box(0.5, 0.5, 0.7, 0.8)
    outputs = {
        "a": {"cls": _out("cls", 0.9), "det": _out("det", 0.8, (fracture, 0.8)),
              "detr": _out("detr", 0.6, (fracture, 0.6))},
        "b": {"cls": _out("cls", 0.1), "det": _out("det", 0.0),
              "detr": _out("detr", 0.45, (Box(0.1, 0.1, 0.2, 0.2), 0.45))},
    }
    boxes = BoxSettings(score_threshold=0.5, scoring="max", members=("det", "detr"))
    decision = fuse_study(outputs, thresholds=THRESHOLDS, rule=VoteRule("any"), boxes=boxes)
    assert decision.positive and not decision.image_level_only
    (finding,) = decision.findings  # the 0.45 box on "b" is below the box threshold
    assert finding.image == "a" and finding.members == ("det", "detr")
    assert finding.score == pytest.approx(0.8) and finding.box == pytest.approx(fracture, abs=1e-6)
    low = fuse_study(outputs, thresholds=THRESHOLDS, rule=VoteRule("any"),
                     boxes=BoxSettings(score_threshold=0.4))
    assert [f.image for f in low.findings] == ["a", "b"]


def test_negative_study_has_no_findings_even_with_low_boxes() -> None:
    outputs = {"a": {"cls": _out("cls", 0.1), "det": _out("det", 0.1, (Box(0.1, 0.1, 0.3, 0.3), 0.2)),
                     "detr": _out("detr", 0.1)}}
    decision = fuse_study(outputs, thresholds=THRESHOLDS, rule=VoteRule("any"))
    assert not decision.positive and decision.findings == () and not decision.image_level_only


def test_fuse_study_needs_images() -> None:
    with pytest.raises(FusionError, match="at least one image"):
        fuse_study({}, thresholds=THRESHOLDS, rule=VoteRule())


def test_weighted_mean_scoring_uses_member_weights() -> None:
    box = Box(0.2, 0.2, 0.4, 0.4)
    dets = {"a": [Detection(box, score=0.8)], "b": [Detection(box, score=0.4)], "c": []}
    (fused,) = fuse_boxes(dets, weights={"a": 3.0, "b": 1.0, "c": 1.0}, scoring="mean")
    assert fused.score == pytest.approx((3 * 0.8 + 0.4) / 4)
    (lone,) = fuse_boxes({"a": [Detection(box, score=0.8)], "c": []},
                         weights={"a": 3.0, "c": 1.0}, scoring="mean")
    assert lone.score == pytest.approx(0.8)


def test_letterboxed_member_boxes_are_mapped_before_fusion() -> None:
    # 30 x 60 image; DETR letterboxes to 64 (content rows 16..48), the detector squashes.
    fracture = Box(0.25, 0.25, 0.5, 0.5)
    in_letterbox = Box(0.25, 24 / 64, 0.5, 32 / 64)
    outputs = {
        "img": {"cls": _out("cls", 0.1), "det": _out("det", 0.7, (fracture, 0.7)),
                "detr": _out("detr", 0.5, (in_letterbox, 0.5))},
    }
    kwargs = dict(thresholds=THRESHOLDS, rule=VoteRule("any"), boxes=BoxSettings(scoring="mean"))
    unmapped = fuse_study(outputs, **kwargs)  # type: ignore[arg-type]
    assert len(unmapped.findings) == 2  # IoU 0.5 in mixed frames: the same fracture twice
    mapped = fuse_study(outputs, letterboxed={"detr": 64}, image_shapes={"img": (30, 60)},
                        **kwargs)  # type: ignore[arg-type]
    (finding,) = mapped.findings
    assert finding.members == ("det", "detr") and finding.score == pytest.approx(0.6)
    assert finding.box == pytest.approx(fracture, abs=1e-6)
    with pytest.raises(FusionError, match="image_shapes has no"):
        fuse_study(outputs, letterboxed={"detr": 64}, **kwargs)  # type: ignore[arg-type]
