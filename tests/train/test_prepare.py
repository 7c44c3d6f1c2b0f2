"""``screen prepare``: labels CSV, patient split, the DATA layout, manifest, skips and the command."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from dicom_io.phantom import PhantomConfig, write_phantom_archive
from dicom_io.pixels import load_radiograph
from ensembles.loc_tokens import parse_detections
from screen.commands.prepare import prepare_cmd
from train.datasets import DETECTOR_PROMPT, CLASSIFIER_PROMPT, load_image, load_records
from train.labels import LabelsError, read_labels, study_labels
from train.manifest import ManifestError, data_fingerprint, read_manifest
from train.prepare import PrepareError, PrepareOptions, prepare_dataset
from train.splits import SplitError, patient_key, split_patients

LABEL_HEADER = "StudyInstanceUID,SOPInstanceUID,label,x0,y0,x1,y1\n"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Twelve small phantom studies, some patients with two studies (read-only)."""
    root = tmp_path_factory.mktemp("prep-archive")
    config = PhantomConfig(n_studies=12, seed=21, size_range=(96, 144), views_range=(1, 2),
                           repeat_patient_fraction=0.4)
    write_phantom_archive(root / "archive", root / "labels.csv", config)
    return root / "archive", root / "labels.csv"


@pytest.fixture(scope="module")
def prepared(phantom: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    archive, labels = phantom
    out = tmp_path_factory.mktemp("prep-out") / "data"
    prepare_dataset(archive, labels, out, PrepareOptions(seed=3, val=0.25, test=0.25))
    return out


def _label_rows(labels: Path) -> list[dict[str, str]]:
    with labels.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _all_records(data: Path, kind: str) -> dict[str, list[dict[str, Any]]]:
    return {split: load_records(data, split, kind) for split in ("train", "val", "test")}


def test_every_labelled_image_lands_in_exactly_one_split(prepared: Path, phantom: tuple[Path, Path]) -> None:
    rows = _label_rows(phantom[1])
    sops = {r["SOPInstanceUID"] for r in rows}
    boxes = _all_records(prepared, "boxes")
    seen = [r["sop_instance_uid"] for records in boxes.values() for r in records]
    assert sorted(seen) == sorted(sops)
    classifier = _all_records(prepared, "classifier")
    assert {s: len(v) for s, v in classifier.items()} == {s: len(v) for s, v in boxes.items()}
    assert all(len(v) > 0 for v in boxes.values())


def test_split_is_by_patient_and_leaks_nothing(prepared: Path, phantom: tuple[Path, Path]) -> None:
    rows = _label_rows(phantom[1])
    patient_of = {r["SOPInstanceUID"]: r["PatientID"] for r in rows}
    assert len(set(patient_of.values())) < len({r["StudyInstanceUID"] for r in rows})  # repeat patients exist
    splits_of_patient: dict[str, set[str]] = defaultdict(set)
    for split, records in _all_records(prepared, "classifier").items():
        for record in records:
            pid = patient_of[record["sop_instance_uid"]]
            assert record["patient_key"] == patient_key(pid)
            splits_of_patient[pid].add(split)
    assert all(len(s) == 1 for s in splits_of_patient.values())
    # no PatientID or patient name in the training records; the manifest has them only where
    # the archive's own folder names do (its source_path, relative to the archive)
    text = "".join(p.read_text(encoding="utf-8") for p in prepared.rglob("*.jsonl"))
    assert not any(pid in text for pid in patient_of.values()) and "PHANTOM^" not in text
    manifest = read_manifest(prepared)
    for entry in manifest["images"]:
        entry.pop("source_path")
    assert not any(pid in json.dumps(manifest) for pid in patient_of.values())


def test_split_is_stratified_and_seeded() -> None:
    positive = {f"P{i:03d}": i % 4 == 0 for i in range(200)}  # 50 positive, 150 negative
    split = split_patients(positive, val=0.2, test=0.1, seed=7)
    counts = Counter((split[p], flag) for p, flag in positive.items())
    assert counts[("test", True)] == 5 and counts[("val", True)] == 10 and counts[("train", True)] == 35
    assert counts[("test", False)] == 15 and counts[("val", False)] == 30 and counts[("train", False)] == 105
    assert split_patients(positive, val=0.2, test=0.1, seed=7) == split
    assert split_patients(positive, val=0.2, test=0.1, seed=8) != split
    # the assignment does not depend on insertion order
    assert split_patients(dict(reversed(list(positive.items()))), val=0.2, test=0.1, seed=7) == split


@pytest.mark.parametrize(("val", "test", "message"), [(0.6, 0.5, "sum < 1"), (-0.1, 0.1, "--val"), (0.1, 1.0, "--test")])
def test_bad_fractions_are_refused(val: float, test: float, message: str) -> None:
    with pytest.raises(SplitError, match=message):
        split_patients({"a": True}, val=val, test=test)


def test_patient_key_is_salted() -> None:
    assert patient_key("PID-1", "a") == patient_key("PID-1", "a") != patient_key("PID-1", "b")
    assert len(patient_key("PID-1")) == 16 and "PID" not in patient_key("PID-1")


def test_texts_and_boxes_match_the_labels(prepared: Path, phantom: tuple[Path, Path]) -> None:
    truth = read_labels(phantom[1])
    detector = {r["sop_instance_uid"]: r for rs in _all_records(prepared, "detector").values() for r in rs}
    classifier = {r["sop_instance_uid"]: r for rs in _all_records(prepared, "classifier").values() for r in rs}
    boxes = {r["sop_instance_uid"]: r for rs in _all_records(prepared, "boxes").values() for r in rs}
    assert any(t.fracture for t in truth.values()) and any(not t.fracture for t in truth.values())
    for sop, label in truth.items():
        cls, det, box = classifier[sop], detector[sop], boxes[sop]
        assert cls["prefix"] == CLASSIFIER_PROMPT and det["prefix"] == DETECTOR_PROMPT
        assert cls["suffix"] == ("Fracture" if label.fracture else "Normal")
        assert box["label"] == ("fracture" if label.fracture else "normal")
        assert box["boxes_px"] == [list(b) for b in label.boxes_px]
        rows, cols = box["rows"], box["cols"]
        expected = [[b[0] / cols, b[1] / rows, b[2] / cols, b[3] / rows] for b in label.boxes_px]
        np.testing.assert_allclose(np.array(box["boxes"]).reshape(-1, 4), np.array(expected).reshape(-1, 4), atol=1e-9)
        if not label.fracture:
            assert det["suffix"] == "Normal"
            continue
        parsed = parse_detections(det["suffix"])
        assert len(parsed) == len(expected) and parsed.dropped == 0
        for item, want in zip(parsed, expected):  # loc bins floor the coordinate: within one bin
            got = np.array(tuple(item.box))
            assert np.all(got <= np.array(want) + 1e-9) and np.all(got > np.array(want) - 1 / 1024 - 1e-9)


def test_pngs_hold_the_pixel_pipeline_output(prepared: Path, phantom: tuple[Path, Path]) -> None:
    manifest = read_manifest(prepared)
    for entry in manifest["images"][:3]:
        record = {"image": f"images/{entry['sop_instance_uid']}.png"}
        stored = load_image(prepared, record)
        decoded = load_radiograph(phantom[0] / entry["source_path"]).pixels
        assert stored.shape == decoded.shape
        assert np.abs(stored - decoded).max() <= 0.5 / 65535 + 1e-7


def test_manifest_hashes_and_counts(prepared: Path, phantom: tuple[Path, Path]) -> None:
    archive, labels = phantom
    manifest = read_manifest(prepared)
    assert manifest["format_version"] == 1 and manifest["seed"] == 3
    assert manifest["split_fractions"] == {"val": 0.25, "test": 0.25}
    assert manifest["labels_sha256"] == hashlib.sha256(labels.read_bytes()).hexdigest()
    assert manifest["created_by"].startswith("fracture-screen ")
    for entry in manifest["images"]:
        assert entry["source_sha256"] == hashlib.sha256((archive / entry["source_path"]).read_bytes()).hexdigest()
        png = prepared / "images" / f"{entry['sop_instance_uid']}.png"
        assert entry["png_sha256"] == hashlib.sha256(png.read_bytes()).hexdigest()
    records = _all_records(prepared, "boxes")
    for split, stats in manifest["splits"].items():
        assert stats["images"] == len(records[split])
        assert stats["positives"] == sum(r["label"] == "fracture" for r in records[split])
        assert stats["studies"] == len({r["study_instance_uid"] for r in records[split]})
        assert stats["patients"] == len({r["patient_key"] for r in records[split]})
    assert manifest["skipped"] == []
    assert len(data_fingerprint(manifest)) == 16 and data_fingerprint(manifest, "test") != data_fingerprint(manifest)


def test_same_seed_same_data_other_seed_other_split(phantom: tuple[Path, Path], prepared: Path, tmp_path: Path) -> None:
    archive, labels = phantom
    prepare_dataset(archive, labels, tmp_path / "again", PrepareOptions(seed=3, val=0.25, test=0.25))
    first, again = read_manifest(prepared), read_manifest(tmp_path / "again")
    assert data_fingerprint(first) == data_fingerprint(again)
    assert (prepared / "test" / "detector.jsonl").read_bytes() == (tmp_path / "again" / "test" / "detector.jsonl").read_bytes()
    splits = []
    for seed in (4, 5, 6):
        prepare_dataset(archive, labels, tmp_path / f"s{seed}", PrepareOptions(seed=seed, val=0.25, test=0.25))
        splits.append({i["sop_instance_uid"]: i["split"] for i in read_manifest(tmp_path / f"s{seed}")["images"]})
    base = {i["sop_instance_uid"]: i["split"] for i in first["images"]}
    assert any(s != base for s in splits)


def test_unlabelled_missing_and_undecodable_images_become_skip_rows(
    tmp_path: Path, write_dicom: Callable[..., Path]
) -> None:
    pixels = np.tile(np.arange(32, dtype=np.uint16) * 100, (24, 1))
    a = write_dicom("arch/a.dcm", rows=24, cols=32, pixels=pixels, study_uid="1.2.3", sop_uid="1.2.3.1", PatientID="P1")
    write_dicom("arch/b.dcm", rows=24, cols=32, pixels=pixels, study_uid="1.2.4", sop_uid="1.2.4.1", PatientID="P2")
    write_dicom("arch/flat.dcm", rows=24, cols=32, pixels=np.full((24, 32), 7, dtype=np.uint16),
                study_uid="1.2.5", sop_uid="1.2.5.1", PatientID="P3")
    labels = tmp_path / "labels.csv"
    labels.write_text(LABEL_HEADER + "1.2.3,1.2.3.1,fracture,4,5,20,15\n1.2.5,1.2.5.1,normal,,,,\n"
                      "1.9,1.9.1,normal,,,,\n", encoding="utf-8")
    summary = prepare_dataset(a.parent, labels, tmp_path / "data", PrepareOptions(val=0.0, test=0.0))
    assert summary.n_images == 1 and summary.splits["train"]["images"] == 1
    assert summary.skipped == Counter({"unlabelled": 1, "not-in-archive": 1, "constant-image": 1})
    skipped = {s["reason"]: s for s in read_manifest(tmp_path / "data")["skipped"]}
    assert skipped["unlabelled"]["source_path"] == "b.dcm"
    assert skipped["not-in-archive"]["sop_instance_uid"] == "1.9.1"
    assert skipped["constant-image"]["sop_instance_uid"] == "1.2.5.1"
    record = load_records(tmp_path / "data", "train", "boxes")[0]
    assert record["boxes_px"] == [[4.0, 5.0, 20.0, 15.0]] and (record["rows"], record["cols"]) == (24, 32)


def test_out_folder_must_be_empty_unless_overwrite(phantom: tuple[Path, Path], tmp_path: Path) -> None:
    archive, labels = phantom
    out = tmp_path / "data"
    (out / "images").mkdir(parents=True)
    (out / "images" / "stale.png").write_bytes(b"x")
    with pytest.raises(PrepareError, match="not empty; choose a new folder or pass --overwrite"):
        prepare_dataset(archive, labels, out)
    prepare_dataset(archive, labels, out, PrepareOptions(overwrite=True))
    assert not (out / "images" / "stale.png").exists()


def test_labels_that_match_nothing_fail_clearly(phantom: tuple[Path, Path], tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(LABEL_HEADER + "9.9,9.9.9,normal,,,,\n", encoding="utf-8")
    with pytest.raises(PrepareError, match="no labelled image .* not-in-archive 1"):
        prepare_dataset(phantom[0], labels, tmp_path / "data")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("StudyInstanceUID,SOPInstanceUID\n1,2\n", "lacks column\\(s\\) label"),
        (LABEL_HEADER + "1,1.1,broken,,,,\n", ":2: label must be one of fracture, normal"),
        (LABEL_HEADER + "1,1.1,normal,1,2,3,4\n", ":2: a normal image must have empty"),
        (LABEL_HEADER + "1,1.1,fracture,1,2,,\n", ":2: give all of x0, y0, x1, y1 or none"),
        (LABEL_HEADER + "1,1.1,fracture,5,2,3,4\n", ":2: box needs x0 < x1"),
        (LABEL_HEADER + "1,1.1,fracture,1,2,3,4\n1,1.1,normal,,,,\n", ":3: .* both fracture and normal"),
        (LABEL_HEADER + "1,1.1,normal,,,,\n2,1.1,normal,,,,\n", ":3: .* listed under studies 1 and 2"),
    ],
    ids=["no-label-column", "bad-label", "normal-with-box", "partial-box", "inverted-box", "both-ways", "two-studies"],
)
def test_labels_errors_name_line_and_fix(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(LabelsError, match=message):
        read_labels(path)


def test_labels_group_boxes_per_image(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(LABEL_HEADER + "1,1.1,Fracture,1,2,3,4\n1,1.1,fracture,5,6,7,8\n1,1.2,normal,,,,\n"
                    "2,2.1,fracture,,,,\n", encoding="utf-8")
    labels = read_labels(path)
    assert labels["1.1"].boxes_px == ((1, 2, 3, 4), (5, 6, 7, 8)) and labels["1.1"].fracture
    assert labels["2.1"].fracture and labels["2.1"].boxes_px == ()
    assert study_labels(labels) == {"1": True, "2": True}


def test_not_a_data_folder(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not a data folder written by `screen prepare"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99}), encoding="utf-8")
    with pytest.raises(ManifestError, match="format_version 99"):
        read_manifest(tmp_path)


def test_prepare_command(phantom: tuple[Path, Path], tmp_path: Path) -> None:
    archive, labels = phantom
    result = CliRunner().invoke(prepare_cmd, [str(archive), "--labels", str(labels), "--out", str(tmp_path / "d"),
                                              "--seed", "3", "--val", "0.25", "--test", "0.25"])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "manifest.json" in result.output
    assert read_manifest(tmp_path / "d")["seed"] == 3
    bad = CliRunner().invoke(prepare_cmd, [str(archive), "--labels", str(labels), "--out", str(tmp_path / "e"),
                                           "--val", "1.5"])
    assert bad.exit_code == 2 and "--val" in bad.output
