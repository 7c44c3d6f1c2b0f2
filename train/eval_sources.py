"""Where ``screen eval`` gets its labelled images: a prepared data split or a DICOM archive.

A data split's images are its PNGs (the pixel pipeline's output, stored by ``screen prepare``)
with the truth of its ``boxes.jsonl`` (or of a labels CSV, when one is given). An archive is
scanned and selected like ``screen run`` and decoded by :func:`dicom_io.pixels.load_radiograph`
in worker processes. What is not evaluated is counted by reason, never silently dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dicom_io.pixels import PixelPolicy
from dicom_io.decode import DecodeTask, decode_one
from dicom_io.scan import SELECTED, scan_archive
from dicom_io.select import SelectionRules
from dicom_io.tables import ACQUISITION_COLUMNS
from dicom_io.workers import run_tasks
from train.datasets import load_image, load_records
from train.errors import TrainError
from train.labels import ImageLabel
from train.manifest import read_manifest

__all__ = ["EvalImage", "PixelBox", "images_from_archive", "images_from_data", "iter_pixels"]

PixelBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class EvalImage:
    """One labelled image to evaluate: its ids, truth, and where its pixels are."""

    sop: str
    study: str
    fracture: bool
    boxes_px: tuple[PixelBox, ...]
    path: Path
    record: dict[str, Any] | None = None
    acquisition: dict[str, str] | None = None  # manufacturer, model, body_part, modality (if known)

    def acquisition_fields(self) -> dict[str, str]:
        """The study's acquisition columns of ``predictions.csv`` (from the record or the header)."""
        source = self.acquisition or self.record or {}
        return {key: str(source.get(key) or "") for key in ACQUISITION_COLUMNS}


def images_from_data(data_dir: Path, split: str, labels: dict[str, ImageLabel] | None,
                     skipped: Counter[str]) -> list[EvalImage]:
    """The images of one split of a prepared data folder (truth from ``labels`` when given)."""
    read_manifest(data_dir)
    images = []
    for record in load_records(data_dir, split, "boxes"):
        sop = str(record["sop_instance_uid"])
        if labels is None:
            truth = ImageLabel(str(record["study_instance_uid"]), sop, record.get("label") == "fracture",
                               tuple(_pixel_box(b) for b in record.get("boxes_px", [])))
        elif sop in labels:
            truth = labels[sop]
        else:
            skipped["unlabelled"] += 1
            continue
        images.append(EvalImage(sop, truth.study_instance_uid, truth.fracture, truth.boxes_px,
                             data_dir / str(record["image"]), record))
    return images


def _pixel_box(values: Sequence[Any]) -> PixelBox:
    col0, row0, col1, row1 = (float(v) for v in values)
    return (col0, row0, col1, row1)


def images_from_archive(archive: Path, labels: dict[str, ImageLabel], rules: SelectionRules, workers: int,
                        skipped: Counter[str]) -> list[EvalImage]:
    """The archive's selected, labelled images; other files and labels are counted in ``skipped``."""
    scan = scan_archive(archive, rules=rules, workers=workers)
    images, seen = [], set()
    for row in scan.rows:
        inst = row.instance
        label = labels.get(inst.sop_instance_uid) if inst is not None else None
        if inst is None or row.outcome != SELECTED:
            if label is not None:
                seen.add(label.sop_instance_uid)
                skipped[f"labelled but {row.outcome}: {row.reason}"] += 1
            continue
        if label is None:
            skipped["unlabelled"] += 1
            continue
        seen.add(label.sop_instance_uid)
        if label.study_instance_uid != inst.study_instance_uid:
            skipped["label-study-mismatch"] += 1
            continue
        images.append(EvalImage(label.sop_instance_uid, inst.study_instance_uid, label.fracture, label.boxes_px, inst.path,
                                acquisition={"manufacturer": inst.manufacturer, "model": inst.model_name,
                                             "body_part": inst.body_part, "modality": inst.modality}))
    missing = sum(1 for sop in labels if sop not in seen)
    if missing:
        skipped["not-in-archive"] += missing
    return images


def iter_pixels(images: list[EvalImage], data_dir: Path | None, rules: SelectionRules, workers: int
                ) -> Iterator[tuple[EvalImage, np.ndarray | None, str]]:
    """Each image's pixels (or ``None`` and the failure reason), in order."""
    if data_dir is not None:
        for image in images:
            try:
                yield image, load_image(data_dir, image.record or {}), ""
            except TrainError as exc:
                yield image, None, f"unreadable: {exc}"
        return
    by_path = {image.path: image for image in images}
    policy = PixelPolicy(max_pixel_bytes=rules.max_pixel_bytes)
    tasks = [DecodeTask(image.path, policy) for image in images]
    for outcome in run_tasks(decode_one, tasks, workers=workers):
        image = by_path[outcome.item.path]
        if outcome.result is None:
            failure = outcome.failure
            yield image, None, f"{failure.reason}: {failure.message}" if failure else "error"
        else:
            yield image, outcome.result.pixels, ""

