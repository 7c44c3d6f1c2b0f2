"""Readers of a prepared data folder (``screen prepare``): JSONL records, images, torch datasets.

Layout of ``DATA`` (written by :mod:`train.prepare`)::

    images/<SOPInstanceUID>.png     16-bit grey PNG of the decoded radiograph ([0,1] -> 0..65535)
    <split>/classifier.jsonl        {"image", "prefix": CLASSIFIER_PROMPT, "suffix": "Fracture"|"Normal", ...}
    <split>/detector.jsonl          {"image", "prefix": "Detect Fracture", "suffix": "<loc..>x4 Fracture; ..."|"Normal", ...}
    <split>/boxes.jsonl             {"image", "rows", "cols", "boxes", "boxes_px", "labels", "label", ...}
    manifest.json

Every record also carries ``study_instance_uid``, ``sop_instance_uid``, ``patient_key``,
``rows``, ``cols``, ``label`` (``fracture``/``normal``) and ``boxes``: the truth boxes
normalised to the whole source image (the *image frame*, which is also a squash member's input
frame), so auxiliary losses (the SigLIP patch loss) can use them with any prompt.

The datasets apply the member's preprocessing with :mod:`ensembles.preprocess`, the very
functions inference uses, so a model is trained on exactly what it will be shown. Boxes are
mapped into the member's input frame with :class:`dicom_io.geometry.ResizeSpec` (the one
resize convention). torch is imported only when an item is built, so this module stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dicom_io.geometry import ResizeSpec
from ensembles.preprocess import PreprocessConfig, preprocess_image
from train.errors import TrainError

__all__ = [
    "CLASSIFIER_PROMPT", "DETECTOR_PROMPT", "POSITIVE_ANSWER", "NEGATIVE_ANSWER", "KINDS",
    "BoxDataset", "DataFormatError", "PaliGemmaTextDataset", "Transform", "collate_boxes",
    "boxes_inside", "collate_text", "input_boxes", "load_image", "load_records", "prefixes",
    "read_jsonl", "record_boxes_px",
    "split_path",
]

#: The paper's classifier question and detector prompt (``ensembles.demo_arch.paligemma`` uses the same).
CLASSIFIER_PROMPT = "Is there a fracture in this x-ray?"
DETECTOR_PROMPT = "Detect Fracture"
POSITIVE_ANSWER = "Fracture"
NEGATIVE_ANSWER = "Normal"
#: The record files of each split.
KINDS: tuple[str, str, str] = ("classifier", "detector", "boxes")

#: ``transform(image, boxes_px) -> (image, boxes_px)``: augmentation on the source image (float32
#: ``H x W`` in [0, 1]) and its pixel-edge boxes ``(n, 4)``, before the member's preprocessing.
Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class DataFormatError(TrainError, ValueError):
    """A prepared data file is missing or malformed; the message names the file and line."""


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every JSON object of a JSONL file, in order (blank lines are skipped).

    Raises:
        DataFormatError: the file is missing, a line is not JSON, or a line is not an object.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataFormatError(
            f"{str(file)!r} not found; prepare the data with `screen prepare ARCHIVE --labels "
            "labels.csv --out DATA`"
        ) from None
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{file}:{number}: not valid JSON: {exc}") from None
        if not isinstance(record, dict):
            raise DataFormatError(f"{file}:{number}: each line must be a JSON object")
        records.append(record)
    return records


def split_path(data_dir: str | Path, split: str, kind: str) -> Path:
    """``DATA/<split>/<kind>.jsonl`` (``kind`` in :data:`KINDS`)."""
    if kind not in KINDS:
        raise DataFormatError(f"record kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return Path(data_dir) / split / f"{kind}.jsonl"


def load_records(data_dir: str | Path, split: str, kind: str) -> list[dict[str, Any]]:
    """The records of one split and kind, e.g. ``load_records(DATA, "train", "detector")``."""
    return read_jsonl(split_path(data_dir, split, kind))


def prefixes(records: Sequence[dict[str, Any]]) -> set[str]:
    """The distinct prompts of PaliGemma records (the paper found mixing prompts hurts)."""
    return {str(r.get("prefix", "")) for r in records}


def _field(record: dict[str, Any], key: str) -> Any:
    if key not in record:
        shown = record.get("sop_instance_uid") or record.get("image") or "?"
        raise DataFormatError(f"record {shown} lacks {key!r}; re-run screen prepare")
    return record[key]


def load_image(data_dir: str | Path, record: dict[str, Any]) -> np.ndarray:
    """The record's radiograph as float32 ``H x W`` in ``[0, 1]`` (16-bit PNG / 65535).

    Raises:
        DataFormatError: the path leaves the data folder, the file is missing or unreadable,
            or it is not a one-channel 8/16-bit image.
    """
    root = Path(data_dir).resolve()
    relative = str(_field(record, "image"))
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise DataFormatError(f"image path {relative!r} points outside the data folder {str(root)!r}")
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise DataFormatError(f"cannot read image {str(path)!r} (missing or not a PNG); re-run screen prepare")
    if pixels.ndim != 2:
        raise DataFormatError(f"image {str(path)!r} must be one grey channel, got shape {pixels.shape}")
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / np.float32(65535.0)
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255.0)
    raise DataFormatError(f"image {str(path)!r} must be 8- or 16-bit, got {pixels.dtype}")


def record_boxes_px(record: dict[str, Any]) -> np.ndarray:
    """Pixel-edge truth boxes ``(n, 4)`` of a record: ``boxes_px`` if present, else the
    normalised ``boxes`` scaled by ``cols``/``rows``."""
    if "boxes_px" in record:
        boxes = np.asarray(record["boxes_px"], dtype=np.float64).reshape(-1, 4)
        return boxes
    rows, cols = int(_field(record, "rows")), int(_field(record, "cols"))
    boxes = np.asarray(record.get("boxes", []), dtype=np.float64).reshape(-1, 4)
    return boxes * np.array([cols, rows, cols, rows], dtype=np.float64)


def boxes_inside(boxes_px: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Which pixel-edge boxes ``(n, 4)`` have something inside a ``rows x cols`` image (a bool
    mask): the boxes :func:`input_boxes` keeps."""
    boxes = np.asarray(boxes_px, dtype=np.float64).reshape(-1, 4)
    return ((np.minimum(boxes[:, 2], cols) > np.maximum(boxes[:, 0], 0.0))
            & (np.minimum(boxes[:, 3], rows) > np.maximum(boxes[:, 1], 0.0)))


def input_boxes(boxes_px: np.ndarray, rows: int, cols: int, cfg: PreprocessConfig) -> np.ndarray:
    """Pixel-edge boxes ``(n, 4)`` to normalised ``(x0, y0, x1, y1)`` of the member's input.

    Boxes with nothing inside the image are dropped (an augmentation may push one out;
    :func:`boxes_inside`).
    """
    spec = ResizeSpec(rows, cols, cfg.image_size, cfg.resize)
    boxes = np.asarray(boxes_px, dtype=np.float64).reshape(-1, 4)
    out = [spec.source_to_box(*box) for box in boxes[boxes_inside(boxes, rows, cols)]]
    return np.asarray(out, dtype=np.float32).reshape(-1, 4)


class _RecordDataset:
    """Shared loading: record → (preprocessed image, boxes in the input frame)."""

    def __init__(
        self,
        data_dir: str | Path,
        records: Sequence[dict[str, Any]] | str | Path,
        preprocess: PreprocessConfig,
        transform: Transform | None = None,
    ) -> None:
        if not isinstance(preprocess, PreprocessConfig):
            raise DataFormatError(
                f"preprocess must be an ensembles.preprocess.PreprocessConfig (e.g. "
                f"PreprocessConfig.from_spec(member_spec)), got {type(preprocess).__name__}"
            )
        self.data_dir = Path(data_dir)
        self.records = read_jsonl(records) if isinstance(records, (str, Path)) else list(records)
        self.preprocess = preprocess
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, index: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        record = self.records[index]
        image = load_image(self.data_dir, record)
        boxes = record_boxes_px(record)
        if self.transform is not None:
            image, boxes = self.transform(image, boxes)
        rows, cols = image.shape
        pixels = preprocess_image(image, self.preprocess)
        return record, pixels, input_boxes(boxes, rows, cols, self.preprocess)


def _ids(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record.get(key, "") for key in ("study_instance_uid", "sop_instance_uid", "patient_key")}


class PaliGemmaTextDataset(_RecordDataset):
    """Items of a classifier or detector JSONL for PaliGemma training (a map-style dataset).

    Each item: ``pixel_values`` float tensor ``(3, S, S)`` preprocessed as the member's
    ``member.json`` says, ``prefix`` and ``suffix`` strings (tokenised by the recipe's
    processor), ``boxes`` float tensor ``(n, 4)`` of truth boxes in the member's input frame,
    ``label`` (1 fracture, 0 normal) and the record's ids.

    Args:
        data_dir: the prepared data folder.
        records: records (see :func:`load_records`) or a JSONL path.
        preprocess: the member's preprocessing (``PreprocessConfig.from_spec(spec)``).
        transform: optional augmentation on the source image and pixel boxes.
        prefix: keep only records with this prompt (``None`` keeps all).
    """

    def __init__(
        self,
        data_dir: str | Path,
        records: Sequence[dict[str, Any]] | str | Path,
        preprocess: PreprocessConfig,
        transform: Transform | None = None,
        prefix: str | None = None,
    ) -> None:
        super().__init__(data_dir, records, preprocess, transform)
        for record in self.records:
            _field(record, "prefix")
            _field(record, "suffix")
        if prefix is not None:
            self.records = [r for r in self.records if r["prefix"] == prefix]

    def __getitem__(self, index: int) -> dict[str, Any]:
        record, pixels, boxes = self._load(index)
        return self.item(record, pixels, boxes)

    @staticmethod
    def item(record: dict[str, Any], pixels: np.ndarray, boxes: np.ndarray) -> dict[str, Any]:
        """The item of ``record`` with preprocessed ``pixels`` ``(3, S, S)`` and ``boxes`` in the
        input frame (also for a re-rendered image, :mod:`train.appearance`)."""
        import torch

        return {
            "pixel_values": torch.from_numpy(pixels),
            "prefix": str(record["prefix"]),
            "suffix": str(record["suffix"]),
            "boxes": torch.from_numpy(boxes),
            "label": int(record.get("label") == "fracture"),
            **_ids(record),
        }


class BoxDataset(_RecordDataset):
    """Items of ``boxes.jsonl`` for box models (DETR, the refiner's sampler).

    Each item: ``pixel_values`` ``(3, S, S)``; ``boxes`` ``(n, 4)`` xyxy in the member's input
    frame; ``class_labels`` ``(n,)`` indices into ``label_names``; ``target``, the dict
    ``DetrForObjectDetection`` takes as a label (``class_labels`` and ``boxes`` as normalised
    ``(cx, cy, w, h)``); ``label`` (1/0), ``rows``, ``cols`` and the record's ids.

    Args:
        data_dir, records, preprocess, transform: as for :class:`PaliGemmaTextDataset`.
        label_names: the model's classes; every record label must be one of them.
    """

    def __init__(
        self,
        data_dir: str | Path,
        records: Sequence[dict[str, Any]] | str | Path,
        preprocess: PreprocessConfig,
        transform: Transform | None = None,
        label_names: Sequence[str] = ("fracture",),
    ) -> None:
        super().__init__(data_dir, records, preprocess, transform)
        self.label_names = tuple(label_names)
        for record in self.records:
            for name in record.get("labels", []):
                if name not in self.label_names:
                    raise DataFormatError(
                        f"record {record.get('sop_instance_uid')} has box label {name!r}, not one of "
                        f"the model's labels {self.label_names}"
                    )

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        record, pixels, boxes = self._load(index)
        names = list(record.get("labels", []))
        if len(names) != len(boxes):  # a box dropped by the transform: labels follow the default
            names = [self.label_names[0]] * len(boxes)
        classes = torch.tensor([self.label_names.index(n) for n in names], dtype=torch.long)
        xyxy = torch.from_numpy(boxes)
        cxcywh = torch.stack(
            [(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
             xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], dim=1,
        ) if len(boxes) else torch.zeros((0, 4), dtype=torch.float32)
        return {
            "pixel_values": torch.from_numpy(pixels),
            "boxes": xyxy,
            "class_labels": classes,
            "target": {"class_labels": classes, "boxes": cxcywh},
            "label": int(record.get("label") == "fracture"),
            "rows": int(record.get("rows", 0)),
            "cols": int(record.get("cols", 0)),
            **_ids(record),
        }


def _collate(batch: Sequence[dict[str, Any]], stacked: tuple[str, ...]) -> dict[str, Any]:
    import torch

    if not batch:
        raise DataFormatError("cannot collate an empty batch")
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if key in stacked:
            out[key] = torch.stack(values)
        elif key == "label":
            out[key] = torch.tensor(values, dtype=torch.long)
        else:
            out[key] = values
    return out


def collate_text(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`PaliGemmaTextDataset` items: stacked ``pixel_values`` and ``label``;
    lists of strings, ragged ``boxes`` and ids."""
    return _collate(batch, ("pixel_values",))


def collate_boxes(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`BoxDataset` items: stacked ``pixel_values``; ``target`` a list of dicts
    (``DetrForObjectDetection(pixel_values, labels=batch["target"])``)."""
    return _collate(batch, ("pixel_values",))

