"""``screen eval``: hand-checked metrics with scripted members, archives with failures, the real
tiny members end to end (prepare → eval through the command)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ensembles.checkpoint import MemberSpec
from ensembles.errors import OperatingPointError
from ensembles.fusion import VoteRule
from ensembles.operating_point.point import OperatingPoint
from ensembles.types import Box, Detection, MemberOutput
from train.evaluate import EvalError, EvalOptions, evaluate

# image shape -> (cls score, det score, det boxes in det's letterboxed 64 px frame)
# study S1 (fracture): A fracture + B normal; S2 (fracture): C; S3 (normal): D; S4 (normal): E, F
A, B, C, D, E, F = (30, 40), (31, 40), (32, 40), (33, 40), (34, 40), (35, 40)
TRUTH = {A: [[8.0, 6.0, 24.0, 18.0]], C: [[0.0, 0.0, 10.0, 10.0]]}
LB_A = Box(0.2, 17.6 / 64, 0.6, 36.8 / 64)  # 30x40 -> 48x64 at pad_top 8, scale 1.6
LB_C = Box(0.0, 6 / 64, 0.25, (10 * 51 / 32 + 6) / 64)  # 32x40 -> 51x64 at pad_top 6
LB_D = Box(0.5, 0.5, 0.7, 0.7)
TABLE: dict[tuple[int, int], tuple[float, float, list[Detection]]] = {
    A: (0.9, 0.8, [Detection(LB_A, score=0.8)]),
    B: (0.2, 0.1, []),
    C: (0.4, 0.3, [Detection(LB_C, score=0.3)]),
    D: (0.6, 0.45, [Detection(LB_D, score=0.45)]),
    E: (0.1, 0.05, []),
    F: (0.3, 0.05, []),
}
STUDIES = {"1.1": [A, B], "1.2": [C], "1.3": [D], "1.4": [E, F]}


class TableMember:
    """A member whose outputs are looked up by image shape (each test image has its own)."""

    def __init__(self, name: str, kind: str, column: int) -> None:
        self.name, self.kind, self.column = name, kind, column

    def predict(self, images: Sequence[np.ndarray]) -> list[MemberOutput]:
        out = []
        for image in images:
            row = TABLE[(int(image.shape[0]), int(image.shape[1]))]
            detections = row[2] if self.column == 1 else []
            out.append(MemberOutput(self.name, row[self.column], list(detections)))
        return out


@dataclass
class Loaded:
    name: str
    spec: MemberSpec
    member: Any
    version: str = "fake:0"


def _members() -> list[Loaded]:
    cls_spec = MemberSpec(kind="paligemma-classifier", name="cls", image_size=32, threshold=0.5)
    det_spec = MemberSpec(kind="detr", name="det", image_size=64, resize="letterbox", threshold=0.5)
    return [Loaded("cls", cls_spec, TableMember("cls", "paligemma-classifier", 0)),
            Loaded("det", det_spec, TableMember("det", "detr", 1))]


def _write_data(root: Path) -> Path:
    """A prepared-data folder by hand: six PNGs of distinct shapes, the test split, a manifest."""
    (root / "images").mkdir(parents=True)
    (root / "test").mkdir()
    records = []
    for study, shapes in STUDIES.items():
        for index, shape in enumerate(shapes):
            sop = f"{study}.{index + 1}"
            cv2.imwrite(str(root / "images" / f"{sop}.png"), np.full(shape, 30000, dtype=np.uint16))
            boxes_px = TRUTH.get(shape, [])
            records.append({"image": f"images/{sop}.png", "study_instance_uid": study, "sop_instance_uid": sop,
                            "rows": shape[0], "cols": shape[1], "boxes_px": boxes_px,
                            "label": "fracture" if boxes_px else "normal", "labels": ["fracture"] * len(boxes_px)})
    (root / "test" / "boxes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (root / "manifest.json").write_text(json.dumps({"format_version": 1}), encoding="utf-8")
    return root


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def evaluated(tmp_path: Path) -> Any:
    data = _write_data(tmp_path / "data")
    op = OperatingPoint(thresholds={"cls": 0.5, "det": 0.5})
    return evaluate(data, tmp_path / "out", members=_members(), operating_point=op,
                    options=EvalOptions(batch_size=4, bootstrap=200))


def test_member_and_ensemble_rows_match_hand_counts(evaluated: Any) -> None:
    cls, det, ens = evaluated.row("cls"), evaluated.row("det"), evaluated.row("ensemble")
    # cls study scores S1 .9 S2 .4 S3 .6 S4 .3 at 0.5: TP S1, FN S2, FP S3, TN S4
    assert (cls.confusion.tp, cls.confusion.fp, cls.confusion.tn, cls.confusion.fn) == (1, 1, 1, 1)
    assert cls.auc is not None and cls.auc.value == pytest.approx(0.75)  # pairs: 3 of 4 ordered
    # det study scores S1 .8 S2 .3 S3 .45 S4 .05
    assert (det.confusion.tp, det.confusion.fp, det.confusion.tn, det.confusion.fn) == (1, 0, 2, 1)
    assert det.confusion.precision == 1.0 and det.confusion.recall == 0.5
    assert det.auc is not None and det.auc.value == pytest.approx(0.75)
    # any-vote: S3 is positive through cls alone
    assert (ens.confusion.tp, ens.confusion.fp, ens.confusion.tn, ens.confusion.fn) == (1, 1, 1, 1)
    assert ens.confusion.f1 == pytest.approx(0.5) and ens.confusion.accuracy == pytest.approx(0.5)
    assert evaluated.n_studies == 4 and evaluated.n_positive == 2 and evaluated.n_images == 6
    assert evaluated.failed_studies == 0


def test_predictions_csv_is_the_tune_contract(evaluated: Any) -> None:
    path = evaluated.out_dir / "predictions.csv"
    assert path.read_text(encoding="utf-8").splitlines()[0] == \
        "study_instance_uid,label,n_images,score:cls,score:det,fused_score,manufacturer,model,body_part,modality,split"
    rows = {r["study_instance_uid"]: r for r in _csv(path)}
    assert [rows[s]["label"] for s in STUDIES] == ["fracture", "fracture", "normal", "normal"]
    assert [int(rows[s]["n_images"]) for s in STUDIES] == [2, 1, 1, 2]
    assert [float(rows[s]["score:cls"]) for s in STUDIES] == [0.9, 0.4, 0.6, 0.3]  # exact round trip
    assert [float(rows[s]["score:det"]) for s in STUDIES] == [0.8, 0.3, 0.45, 0.05]
    # fused score of 'any': the largest threshold-centred score (0.9 -> 0.5 + 0.4 = 0.9)
    assert float(rows["1.1"]["fused_score"]) == pytest.approx(0.9)
    assert float(rows["1.2"]["fused_score"]) == pytest.approx(0.4)  # below both: max(.4/1, .3/1)
    assert {r["split"] for r in rows.values()} == {"test"}


def test_box_metrics_map_letterbox_boxes_back_to_pixels(evaluated: Any) -> None:
    det = evaluated.box("det")
    # reported (>= 0.5): only A's box, exactly on its truth; C's truth is missed
    assert (det.at_50.tp, det.at_50.fp, det.at_50.fn) == (1, 0, 1)
    assert det.at_50.f1 == pytest.approx(2 / 3) and det.at_50.mean_iou == pytest.approx(1.0)
    assert det.recall_30 == pytest.approx(0.5)
    # mAP ranks all: .8 hit, .45 false, .3 hit -> precision 1 up to recall .5, 2/3 after
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert det.map_50 == pytest.approx(expected, abs=1e-6) and det.map == pytest.approx(expected, abs=1e-6)
    ens = evaluated.box("ensemble")
    # findings of positive studies S1 (A's box) and S3 (D's box, a false positive)
    assert (ens.at_50.tp, ens.at_50.fp, ens.at_50.fn) == (1, 1, 1)
    assert [b.name for b in evaluated.boxes] == ["det", "ensemble"]
    rows = {r["sop_instance_uid"]: r for r in _csv(evaluated.out_dir / "image_predictions.csv")}
    box = json.loads(rows["1.1.1"]["boxes:det"])[0]
    assert box == pytest.approx([8.0, 6.0, 24.0, 18.0, 0.8], abs=0.01)
    assert json.loads(rows["1.1.1"]["truth_boxes"]) == [[8.0, 6.0, 24.0, 18.0]]
    assert rows["1.1.1"]["status"] == "scored" and float(rows["1.1.2"]["score:cls"]) == 0.2


def test_report_and_metrics_json(evaluated: Any) -> None:
    report = (evaluated.out_dir / "report.md").read_text(encoding="utf-8")
    assert "| model | config | threshold | accuracy | precision | recall | F1 |" in report
    assert "| ensemble | any over 2 members" in report
    assert "| det | detr 64px letterbox" in report and "0.750 (" in report
    metrics = json.loads((evaluated.out_dir / "metrics.json").read_text(encoding="utf-8"))
    by_name = {r["name"]: r for r in metrics["classification"]}
    assert by_name["det"]["tp"] == 1 and by_name["det"]["precision"] == 1.0
    assert by_name["ensemble"]["threshold"] is None  # nan written as null
    assert {b["name"]: b["recall_30"] for b in metrics["boxes"]}["det"] == 0.5


def test_vote_rule_changes_only_the_ensemble(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "data")
    op = OperatingPoint(thresholds={"cls": 0.5, "det": 0.5}, vote=VoteRule("k-of-n", k=2))
    result = evaluate(data, tmp_path / "out", members=_members(), operating_point=op,
                      options=EvalOptions(bootstrap=0))
    ens = result.row("ensemble").confusion
    assert (ens.tp, ens.fp, ens.tn, ens.fn) == (1, 0, 2, 1)
    assert result.row("cls").confusion.fp == 1
    assert result.row("cls").auc is not None and math.isnan(result.row("cls").auc.low)  # no bootstrap


def test_default_point_is_member_thresholds(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "data")
    members = _members()
    members[0].spec = MemberSpec(kind="paligemma-classifier", name="cls", image_size=32, threshold=0.35)
    result = evaluate(data, tmp_path / "out", members=members, options=EvalOptions(bootstrap=0))
    assert result.row("cls").threshold == 0.35 and result.row("cls").confusion.tp == 2
    assert "member.json threshold with the any-vote" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_labels_csv_overrides_a_data_folders_truth(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "data")
    labels = tmp_path / "labels.csv"  # S3 relabelled fracture; S4's second image left out
    labels.write_text("StudyInstanceUID,SOPInstanceUID,label,x0,y0,x1,y1\n1.1,1.1.1,fracture,8,6,24,18\n"
                      "1.1,1.1.2,normal,,,,\n1.2,1.2.1,fracture,0,0,10,10\n1.3,1.3.1,fracture,,,,\n"
                      "1.4,1.4.1,normal,,,,\n", encoding="utf-8")
    result = evaluate(data, tmp_path / "out", members=_members(), labels_csv=labels,
                      operating_point=OperatingPoint(thresholds={"cls": 0.5, "det": 0.5}),
                      options=EvalOptions(bootstrap=0))
    cls = result.row("cls").confusion
    assert (cls.tp, cls.fp, cls.tn, cls.fn) == (2, 0, 1, 1) and result.skipped == {"unlabelled": 1}
    assert result.n_images == 5 and result.n_positive == 3


def test_operating_point_must_fit_the_members(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "data")
    with pytest.raises(OperatingPointError, match="lacks"):
        evaluate(data, tmp_path / "out", members=_members(),
                 operating_point=OperatingPoint(thresholds={"cls": 0.5, "other": 0.5}))


def test_archive_with_a_failing_image(tmp_path: Path, write_dicom: Callable[..., Path]) -> None:
    ramp = lambda shape: (np.arange(shape[0] * shape[1]) % 4000).reshape(shape).astype(np.uint16)  # noqa: E731
    write_dicom("arch/a.dcm", rows=A[0], cols=A[1], pixels=ramp(A), study_uid="1.1", sop_uid="1.1.1")
    write_dicom("arch/d.dcm", rows=D[0], cols=D[1], pixels=ramp(D), study_uid="1.3", sop_uid="1.3.1")
    write_dicom("arch/e.dcm", rows=E[0], cols=E[1], pixels=ramp(E), study_uid="1.4", sop_uid="1.4.1")
    write_dicom("arch/f.dcm", rows=F[0], cols=F[1], pixels=np.full(F, 9, dtype=np.uint16),
                study_uid="1.4", sop_uid="1.4.2")  # a constant image fails the pixel pipeline
    write_dicom("arch/x.dcm", rows=B[0], cols=B[1], pixels=ramp(B), study_uid="1.9", sop_uid="1.9.1")
    labels = tmp_path / "labels.csv"
    labels.write_text("StudyInstanceUID,SOPInstanceUID,label,x0,y0,x1,y1\n1.1,1.1.1,fracture,8,6,24,18\n"
                      "1.3,1.3.1,normal,,,,\n1.4,1.4.1,normal,,,,\n1.4,1.4.2,normal,,,,\n", encoding="utf-8")
    with pytest.raises(EvalError, match="needs --labels labels.csv"):
        evaluate(tmp_path / "arch", tmp_path / "out", members=_members())
    result = evaluate(tmp_path / "arch", tmp_path / "out", members=_members(), labels_csv=labels,
                      options=EvalOptions(bootstrap=0))
    assert result.n_studies == 2 and result.failed_studies == 1 and result.skipped["unlabelled"] == 1
    predictions = _csv(tmp_path / "out" / "predictions.csv")
    assert [r["study_instance_uid"] for r in predictions] == ["1.1", "1.3"] and "split" not in predictions[0]
    images = {r["sop_instance_uid"]: r for r in _csv(tmp_path / "out" / "image_predictions.csv")}
    assert images["1.4.2"]["status"] == "failed" and images["1.4.2"]["reason"].startswith("constant-image")
    assert images["1.4.1"]["status"] == "study-failed"
    assert result.box("det").at_50.tp == 1


def test_nothing_to_evaluate(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "data")
    (data / "val").mkdir()
    (data / "val" / "boxes.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(EvalError, match="nothing to evaluate in split 'val'"):
        evaluate(data, tmp_path / "out", members=_members(), options=EvalOptions(split="val"))


def test_prepare_then_eval_with_real_tiny_members(tmp_path: Path) -> None:
    """The whole path on real (random-init) checkpoints: phantom → prepare → screen eval."""
    from dicom_io.phantom import PhantomConfig, write_phantom_archive
    from ensembles.demo_arch.paligemma import write_tiny_paligemma_checkpoint
    from ensembles.demo_arch.detr import write_tiny_detr_checkpoint
    from screen.commands.eval import eval_cmd
    from train.prepare import PrepareOptions, prepare_dataset

    config = PhantomConfig(n_studies=6, seed=5, size_range=(80, 112), views_range=(1, 2), positive_fraction=0.5)
    write_phantom_archive(tmp_path / "archive", tmp_path / "labels.csv", config)
    prepare_dataset(tmp_path / "archive", tmp_path / "labels.csv", tmp_path / "data",
                    PrepareOptions(val=0.0, test=0.5, seed=1))
    write_tiny_paligemma_checkpoint(tmp_path / "models" / "pg-cls", "paligemma-classifier", name="pg-cls", seed=1)
    write_tiny_detr_checkpoint(tmp_path / "models" / "detr", name="detr", seed=3, image_size=64)
    site = tmp_path / "site.toml"
    site.write_text(
        'operating_point = "op.json"\n[run]\ndevice = "cpu"\nworkers = 1\nbatch_size = 4\n'
        f'[members.pg-cls]\nkind = "paligemma-classifier"\ncheckpoint = "{tmp_path / "models" / "pg-cls"}"\n'
        f'[members.detr]\nkind = "detr"\ncheckpoint = "{tmp_path / "models" / "detr"}"\n', encoding="utf-8")
    (tmp_path / "op.json").write_text(json.dumps({"schema_version": 1, "thresholds": {"pg-cls": 0.5, "detr": 0.3}}),
                                      encoding="utf-8")
    result = CliRunner().invoke(eval_cmd, [str(tmp_path / "data"), "--config", str(site), "--out",
                                           str(tmp_path / "out"), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    assert "ensemble" in result.output and "F1@0.5" in result.output
    rows = _csv(tmp_path / "out" / "predictions.csv")
    test_studies = {r["study_instance_uid"] for r in
                    map(json.loads, (tmp_path / "data" / "test" / "boxes.jsonl").read_text().splitlines())}
    assert {r["study_instance_uid"] for r in rows} == test_studies
    assert all(0.0 <= float(r["score:pg-cls"]) <= 1.0 and r["score:detr"] != "" for r in rows)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["operating_point_id"].startswith("op-") and metrics["split"] == "test"
    assert [b["name"] for b in metrics["boxes"]] == ["detr", "ensemble"]
