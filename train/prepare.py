"""``screen prepare``: a labelled DICOM archive → training data, through the inference pixel pipeline.

Steps:

1. read the labels CSV (:mod:`train.labels`);
2. scan the archive with the screener's own discover → index → select (:func:`dicom_io.scan.scan_archive`),
   so training sees exactly the images ``screen run`` would screen;
3. assign patients to train/val/test (:mod:`train.splits`: by patient, stratified, seeded);
4. decode every labelled image with :func:`dicom_io.pixels.load_radiograph` in worker processes
   and write it as a 16-bit PNG;
5. write per split the classifier, detector and box JSONL (:mod:`train.datasets` documents the
   layout) and last the manifest (:mod:`train.manifest`).

Every file that does not become training data is a row in the manifest's ``skipped`` list
with a reason: ``unlabelled`` (selected, but not in the labels), ``not-in-archive`` (labelled,
never found), ``label-study-mismatch``, ``bad-box``, or the scan's or decoder's own reason code.
Member-specific resizing, normalisation, Canny and CLAHE are *not* applied here: the datasets
apply them with :mod:`ensembles.preprocess` from the member's ``member.json``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dicom_io.atomic import atomic_write_bytes, atomic_write_text
from dicom_io.errors import GeometryError
from dicom_io.geometry import ResizeSpec
from dicom_io.index import Instance
from dicom_io.pixels import PixelPolicy
from dicom_io.decode import DecodeTask, decode_one
from dicom_io.scan import SELECTED, display_path, scan_archive
from dicom_io.select import SelectionRules
from dicom_io.workers import run_tasks
from ensembles.loc_tokens import format_detections
from ensembles.types import ResizeMode
from train.datasets import (
    CLASSIFIER_PROMPT, DETECTOR_PROMPT, KINDS, NEGATIVE_ANSWER, POSITIVE_ANSWER, split_path,
)
from train.errors import TrainError
from train.labels import ImageLabel, read_labels
from train.manifest import FORMAT_VERSION, created_by, sha256_bytes, sha256_file, write_manifest
from train.splits import SPLITS, check_fractions, patient_key, split_patients

__all__ = ["PrepareError", "PrepareOptions", "PrepareSummary", "prepare_dataset", "summary_table"]

ProgressFn = Callable[[Iterator[Any], str, int], Iterable[Any]]
_SAFE_NAME = re.compile(r"^[0-9A-Za-z._-]{1,128}$")


class PrepareError(TrainError):
    """The archive, labels or output folder cannot be prepared; the message says the fix."""


@dataclass(frozen=True)
class PrepareOptions:
    """Choices of one ``screen prepare`` run.

    Attributes:
        seed: seed of the patient split.
        val: share of patients (per label stratum) for validation.
        test: share of patients (per label stratum) for the held-out test split.
        workers: decode processes (child processes even at 1: a bad file fails alone).
        rules: which instances are screenable (the site's ``[selection]``).
        policy: the pixel pipeline's settings (the same defaults as ``screen run``).
        classifier_prompt: prefix of ``classifier.jsonl``.
        detector_prompt: prefix of ``detector.jsonl``.
        overwrite: write into a non-empty output folder, replacing what an earlier prepare wrote.
        salt: salt of the patient pseudonym (default ``$FRACTURE_SCREEN_SALT`` or a fixed one).
    """

    seed: int = 0
    val: float = 0.15
    test: float = 0.15
    workers: int = 1
    rules: SelectionRules = SelectionRules()
    policy: PixelPolicy = PixelPolicy()
    classifier_prompt: str = CLASSIFIER_PROMPT
    detector_prompt: str = DETECTOR_PROMPT
    overwrite: bool = False
    salt: str | None = None

    def __post_init__(self) -> None:
        check_fractions(self.val, self.test)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise PrepareError(f"workers must be an integer >= 1, got {self.workers!r}")
        for name in ("classifier_prompt", "detector_prompt"):
            if not str(getattr(self, name)).strip():
                raise PrepareError(f"{name} must be a non-empty prompt")


@dataclass
class PrepareSummary:
    """What :func:`prepare_dataset` wrote."""

    out_dir: Path
    splits: dict[str, dict[str, int]]
    n_images: int
    skipped: Counter[str] = field(default_factory=Counter)
    manifest: Path | None = None


@dataclass
class _Item:
    instance: Instance
    label: ImageLabel
    patient: str
    split: str = ""


def _image_name(sop: str) -> str:
    return f"{sop}.png" if _SAFE_NAME.match(sop) else f"{sha256_bytes(sop.encode())[:32]}.png"


def _check_out(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise PrepareError(f"--out {str(out_dir)!r} exists and is not a folder; choose a folder path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise PrepareError(
            f"--out folder {str(out_dir)!r} is not empty; choose a new folder or pass --overwrite "
            "to replace an earlier prepare's files"
        )
    (out_dir / "images").mkdir(parents=True, exist_ok=True)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return display_path(path)


def _collect(
    archive: Path, labels: dict[str, ImageLabel], options: PrepareOptions, progress: ProgressFn | None,
    skipped: list[dict[str, str]],
) -> list[_Item]:
    """Join the scan's selected instances with the labels; everything else becomes a skip row."""
    if progress is not None:
        scan = scan_archive(archive, rules=options.rules, workers=options.workers, progress=progress)
    else:
        scan = scan_archive(archive, rules=options.rules, workers=options.workers)
    items: list[_Item] = []
    seen: set[str] = set()
    for row in scan.rows:
        inst = row.instance
        source = _relative(row.path, archive)
        if inst is None:
            skipped.append({"source_path": source, "sop_instance_uid": "", "reason": row.reason,
                            "message": row.message})
            continue
        sop = inst.sop_instance_uid
        label = labels.get(sop)
        if label is not None:
            seen.add(sop)
        if row.outcome != SELECTED:
            skipped.append({"source_path": source, "sop_instance_uid": sop, "reason": row.reason,
                            "message": row.message})
        elif label is None:
            skipped.append({"source_path": source, "sop_instance_uid": sop, "reason": "unlabelled",
                            "message": "selected image has no row in the labels CSV"})
        elif label.study_instance_uid != inst.study_instance_uid:
            skipped.append({"source_path": source, "sop_instance_uid": sop, "reason": "label-study-mismatch",
                            "message": f"labels say study {label.study_instance_uid}, the file says "
                                       f"{inst.study_instance_uid}"})
        else:
            patient = inst.patient_id or label.patient_id or f"study:{inst.study_instance_uid}"
            items.append(_Item(inst, label, patient))
    for sop, label in labels.items():
        if sop not in seen:
            skipped.append({"source_path": "", "sop_instance_uid": sop, "reason": "not-in-archive",
                            "message": f"labelled image of study {label.study_instance_uid} was not found"})
    return items


def _normalised(label: ImageLabel, rows: int, cols: int) -> tuple[list[list[float]], list[list[float]]]:
    """Truth boxes clipped to the image, as image-frame fractions and as pixel edges."""
    spec = ResizeSpec(rows, cols, 1, ResizeMode.SQUASH)
    boxes, boxes_px = [], []
    for col0, row0, col1, row1 in label.boxes_px:
        boxes.append([float(v) for v in spec.source_to_box(col0, row0, col1, row1)])
        boxes_px.append([max(0.0, col0), max(0.0, row0), min(float(cols), col1), min(float(rows), row1)])
    return boxes, boxes_px


def _records(item: _Item, image: str, rows: int, cols: int, key: str,
             options: PrepareOptions) -> dict[str, dict[str, Any] | None]:
    boxes, boxes_px = _normalised(item.label, rows, cols)
    fracture = item.label.fracture
    common: dict[str, Any] = {
        "image": image, "study_instance_uid": item.instance.study_instance_uid,
        "sop_instance_uid": item.instance.sop_instance_uid, "patient_key": key, "rows": rows,
        "cols": cols, "label": "fracture" if fracture else "normal", "boxes": boxes,
    }
    detector: dict[str, Any] | None = None
    if not fracture or boxes:  # a fracture without a box cannot teach the detector where
        suffix = format_detections([(b, POSITIVE_ANSWER) for b in boxes])
        detector = {**common, "prefix": options.detector_prompt, "suffix": suffix}
    return {
        "classifier": {**common, "prefix": options.classifier_prompt,
                       "suffix": POSITIVE_ANSWER if fracture else NEGATIVE_ANSWER},
        "detector": detector,
        "boxes": {**common, "boxes_px": boxes_px, "labels": ["fracture"] * len(boxes),
                  # the acquisition, for per-group tuning and the monitoring reference (screen eval)
                  "manufacturer": item.instance.manufacturer, "model": item.instance.model_name,
                  "body_part": item.instance.body_part, "modality": item.instance.modality},
    }


def _jsonl(records: list[dict[str, Any]]) -> str:
    import json

    return "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in records)


def prepare_dataset(
    archive: str | Path,
    labels_csv: str | Path,
    out_dir: str | Path,
    options: PrepareOptions = PrepareOptions(),
    progress: ProgressFn | None = None,
) -> PrepareSummary:
    """Turn a labelled archive into the ``DATA`` folder (see the module docstring).

    Raises:
        PrepareError: the archive is missing, the output folder is not empty (without
            ``overwrite``), or no labelled image could be prepared.
        LabelsError: the labels CSV is invalid.
    """
    archive, labels_csv, out_dir = Path(archive), Path(labels_csv), Path(out_dir)
    if not archive.exists():
        raise PrepareError(f"archive {str(archive)!r} does not exist; give the folder of DICOM files")
    labels = read_labels(labels_csv)
    _check_out(out_dir, options.overwrite)
    skipped: list[dict[str, str]] = []
    items = _collect(archive, labels, options, progress, skipped)
    patient_positive: dict[str, bool] = {}
    for item in items:
        patient_positive[item.patient] = patient_positive.get(item.patient, False) or item.label.fracture
    assignment = split_patients(patient_positive, val=options.val, test=options.test, seed=options.seed)
    for item in items:
        item.split = assignment[item.patient]

    records: dict[str, dict[str, list[dict[str, Any]]]] = {s: {k: [] for k in KINDS} for s in SPLITS}
    manifest_images: list[dict[str, Any]] = []
    written: set[str] = set()
    stats: dict[str, dict[str, set[str]]] = {
        s: {"patients": set(), "studies": set(), "positive_studies": set()} for s in SPLITS}
    counts = {s: Counter[str]() for s in SPLITS}
    by_path = {item.instance.path: item for item in items}
    tasks = [DecodeTask(item.instance.path, options.policy) for item in items]
    outcomes: Iterable[Any] = run_tasks(decode_one, tasks, workers=options.workers)
    if progress is not None:
        outcomes = progress(iter(outcomes), "prepare", len(tasks))
    for outcome in outcomes:
        item = by_path[outcome.item.path]
        source = _relative(item.instance.path, archive)
        sop = item.instance.sop_instance_uid
        if outcome.result is None:
            failure = outcome.failure
            skipped.append({"source_path": source, "sop_instance_uid": sop,
                            "reason": failure.reason if failure else "error",
                            "message": failure.message if failure else ""})
            continue
        radiograph = outcome.result
        try:
            _normalised(item.label, radiograph.rows, radiograph.cols)
        except GeometryError as exc:
            skipped.append({"source_path": source, "sop_instance_uid": sop, "reason": "bad-box",
                            "message": str(exc)})
            continue
        pixels = np.rint(np.clip(radiograph.pixels, 0.0, 1.0) * 65535.0).astype(np.uint16)
        ok, encoded = cv2.imencode(".png", pixels)
        if not ok:  # pragma: no cover - OpenCV encodes any 2-D uint16 array
            raise PrepareError(f"OpenCV could not encode {sop} as PNG")
        data = encoded.tobytes()
        name = _image_name(sop)
        atomic_write_bytes(out_dir / "images" / name, data)
        written.add(name)
        key = patient_key(item.patient, options.salt)
        for kind, record in _records(item, f"images/{name}", radiograph.rows, radiograph.cols, key, options).items():
            if record is not None:
                records[item.split][kind].append(record)
        split_stats = stats[item.split]
        split_stats["patients"].add(item.patient)
        split_stats["studies"].add(item.instance.study_instance_uid)
        if item.label.fracture:
            split_stats["positive_studies"].add(item.instance.study_instance_uid)
            counts[item.split]["positives"] += 1
        counts[item.split]["images"] += 1
        manifest_images.append({
            "sop_instance_uid": sop, "study_instance_uid": item.instance.study_instance_uid,
            "split": item.split, "source_path": source, "source_sha256": sha256_file(item.instance.path),
            "png_sha256": sha256_bytes(data),
        })
    if not manifest_images:
        reasons = Counter(s["reason"] for s in skipped)
        raise PrepareError(
            f"no labelled image of {str(archive)!r} could be prepared (skipped: "
            f"{', '.join(f'{r} {n}' for r, n in reasons.most_common()) or 'nothing found'}); check "
            "that the labels CSV belongs to this archive"
        )
    for name in (p.name for p in (out_dir / "images").glob("*.png")):
        if name not in written:
            (out_dir / "images" / name).unlink()
    for split in SPLITS:
        for kind in KINDS:
            ordered = sorted(records[split][kind], key=lambda r: (r["study_instance_uid"], r["sop_instance_uid"]))
            atomic_write_text(split_path(out_dir, split, kind), _jsonl(ordered))
    splits = {
        s: {"patients": len(stats[s]["patients"]), "studies": len(stats[s]["studies"]),
            "positive_studies": len(stats[s]["positive_studies"]), "images": counts[s]["images"],
            "positives": counts[s]["positives"]}
        for s in SPLITS
    }
    skipped.sort(key=lambda s: (s["reason"], s["source_path"], s["sop_instance_uid"]))
    manifest = {
        "format_version": FORMAT_VERSION, "archive": str(archive.resolve()),
        "labels_csv": str(labels_csv.resolve()), "labels_sha256": sha256_file(labels_csv),
        "seed": options.seed, "split_fractions": {"val": options.val, "test": options.test},
        "prompts": {"classifier": options.classifier_prompt, "detector": options.detector_prompt},
        "splits": splits,
        "images": sorted(manifest_images, key=lambda i: (i["split"], i["study_instance_uid"], i["sop_instance_uid"])),
        "skipped": skipped, "created_by": created_by(),
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    path = write_manifest(out_dir, manifest)
    return PrepareSummary(out_dir, splits, len(manifest_images), Counter(s["reason"] for s in skipped), path)


def summary_table(summary: PrepareSummary) -> str:
    """The closing table of ``screen prepare``: per split patients, studies, images, positives."""
    lines = [f"{'split':<6} {'patients':>8} {'studies':>8} {'images':>7} {'fracture':>9}", "-" * 42]
    for split in SPLITS:
        s = summary.splits[split]
        lines.append(f"{split:<6} {s['patients']:>8} {s['studies']:>8} {s['images']:>7} {s['positives']:>9}")
    if summary.skipped:
        lines.append("skipped: " + ", ".join(f"{r} {n}" for r, n in sorted(summary.skipped.items())))
    return "\n".join(lines)
