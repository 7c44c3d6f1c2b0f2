"""``screen eval``: run the site's members and the fused ensemble on a labelled set, and score them.

Sources:

- a prepared data folder (it has ``manifest.json``): the images of one split (``test`` by
  default) with the truth in its ``boxes.jsonl``; the PNGs hold the very pixels the pixel
  pipeline produced;
- a DICOM archive plus a labels CSV: scanned and selected like ``screen run`` (the site's
  ``[selection]``), decoded by :func:`dicom_io.pixels.load_radiograph` in worker processes.

Members are loaded exactly as ``screen run`` loads them (:func:`screen.nightly.site_members.load_members`
is the runner's; it is passed in by the CLI so ``train`` never imports ``screen``), they see
the same float images, and the study decision is :meth:`OperatingPoint.decide`, the runner's
own fusion. A member's study score is the maximum of its image scores. Studies with an image
that failed to decode are counted as failed and left out of every metric (the runner fails
them too). Sources are read by :mod:`train.eval_sources`; outputs are described in
:mod:`train.eval_report`.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Protocol

import numpy as np

from dicom_io.atomic import atomic_write_text
from dicom_io.geometry import ResizeSpec
from dicom_io.select import SelectionRules
from dicom_io.tables import ACQUISITION_COLUMNS, IMAGE_PREDICTIONS, PREDICTIONS
from ensembles.checkpoint import MemberSpec
from ensembles.fusion import StudyDecision
from ensembles.operating_point.op_json import load_deciding_point
from ensembles.operating_point.point import OperatingPoint
from ensembles.preprocess import letterbox_box_to_image
from ensembles.registry import Member
from ensembles.types import Box, MemberOutput, ResizeMode
from train.box_metrics import BoxMetrics, ImageBoxes, box_metrics
from train.errors import TrainError
from train.eval_report import (
    ClassificationResult, calibration_report, classification_result, render_report, write_csv, write_metrics_json,
)
from train.eval_sources import EvalImage, PixelBox, images_from_archive, images_from_data, iter_pixels
from train.labels import read_labels
from train.manifest import MANIFEST_NAME

__all__ = ["DETECTOR_KINDS", "EvalError", "EvalMember", "EvalOptions", "EvalResult", "evaluate"]

#: Member kinds whose boxes are judged even when they report none on the set.
DETECTOR_KINDS: tuple[str, ...] = ("paligemma-detector", "detr")
ProgressFn = Callable[[Iterator[Any], str, int], Iterable[Any]]


class EvalError(TrainError):
    """The evaluation set, labels or members cannot be evaluated; the message says the fix."""


class EvalMember(Protocol):
    """What evaluation needs of a loaded member (``screen.nightly.site_members.LoadedMember`` fits)."""

    @property
    def name(self) -> str: ...

    spec: MemberSpec
    member: Member
    version: str


@dataclass(frozen=True)
class EvalOptions:
    """Choices of one evaluation.

    Attributes:
        split: which split of a prepared data folder (``train``, ``val``, ``test``).
        batch_size: images per member forward pass.
        workers: decode processes for an archive.
        rules: selection rules for an archive (the site's ``[selection]``).
        bootstrap: resamples of the AUC intervals (0: no intervals).
        seed: bootstrap seed.
    """

    split: str = "test"
    batch_size: int = 8
    workers: int = 1
    rules: SelectionRules = SelectionRules()
    bootstrap: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise EvalError(f"batch size must be an integer >= 1, got {self.batch_size!r}")
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise EvalError(f"bootstrap resamples must be an integer >= 0, got {self.bootstrap!r}")


@dataclass
class EvalResult:
    """What :func:`evaluate` measured and wrote.

    Attributes:
        out_dir: where the files are.
        rows: the paper's table: each member, then ``ensemble``.
        boxes: box metrics of each detector member, then of the ensemble.
        n_studies: studies scored (failed ones excluded).
        n_positive: positive studies among them.
        n_images: images scored.
        failed_studies: studies left out because an image failed to decode.
        skipped: reasons files or labels were not evaluated, with counts.
        operating_point_id: the operating point that decided.
        files: name → path of everything written.
    """

    out_dir: Path
    rows: list[ClassificationResult]
    boxes: list[BoxMetrics]
    n_studies: int
    n_positive: int
    n_images: int
    failed_studies: int
    skipped: Counter[str]
    operating_point_id: str
    files: dict[str, Path] = field(default_factory=dict)

    def row(self, name: str) -> ClassificationResult:
        """The table row of a member (or ``ensemble``)."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def box(self, name: str) -> BoxMetrics:
        """The box metrics of a detector member (or ``ensemble``)."""
        for item in self.boxes:
            if item.name == name:
                return item
        raise KeyError(name)


def _member_config(member: EvalMember, source: str) -> str:
    spec = member.spec
    return f"{spec.kind} {spec.image_size}px {spec.resize}; threshold from {source}"


def _image_frame(output: MemberOutput, member: EvalMember, rows: int, cols: int, *,
                 proposals: bool = False) -> list[tuple[Box, float]]:
    """A member's boxes in the image frame (letterbox members mapped back); with
    ``proposals``, the boxes before a refiner stage corrected them (``extras["proposals"]``)."""
    boxes = [d.box for d in output.detections]
    if proposals:
        boxes = [Box(*b) for b in output.extras.get("proposals", [])]
    out = []
    for raw, d in zip(boxes, output.detections):
        box: Box | None = raw
        if member.spec.resize == ResizeMode.LETTERBOX:
            box = letterbox_box_to_image(raw, rows, cols, member.spec.image_size)
        if box is not None:
            out.append((box, float(d.score)))
    return out


def _to_px(box: Box, rows: int, cols: int) -> PixelBox:
    return ResizeSpec(rows, cols, 1, ResizeMode.SQUASH).box_to_source(tuple(box))


@dataclass
class _Scores:
    """Every image's member outputs, its shape, or why it could not be scored."""

    outputs: dict[str, dict[str, MemberOutput]] = field(default_factory=dict)
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def _score(images: list[EvalImage], members: Sequence[EvalMember], data_dir: Path | None, options: EvalOptions,
           progress: ProgressFn | None) -> _Scores:
    """Run every member on every image, ``batch_size`` images per call."""
    scores = _Scores()
    stream: Iterable[Any] = iter_pixels(images, data_dir, options.rules, options.workers)
    if progress is not None:
        stream = progress(iter(stream), "eval", len(images))
    batch: list[tuple[EvalImage, np.ndarray]] = []

    def flush() -> None:
        pixels = [p for _, p in batch]
        for member in members:
            results = member.member.predict(pixels)
            if len(results) != len(batch):
                raise EvalError(f"member {member.name!r} returned {len(results)} outputs for {len(batch)} images")
            for (image, _), result in zip(batch, results):
                scores.outputs.setdefault(image.sop, {})[member.name] = result
        batch.clear()

    for image, pixels, reason in stream:
        if pixels is None:
            scores.failures[image.sop] = reason
            continue
        scores.shapes[image.sop] = (int(pixels.shape[0]), int(pixels.shape[1]))
        batch.append((image, pixels))
        if len(batch) >= options.batch_size:
            flush()
    if batch:
        flush()
    return scores


def _decide(images: list[EvalImage], scores: _Scores, op: OperatingPoint, members: Sequence[EvalMember],
            split: str | None) -> tuple[list[dict[str, Any]], dict[str, StudyDecision], int]:
    """Per study (sorted by UID): the ``predictions.csv`` row and the ensemble's decision.

    Returns the rows, the decisions, and how many studies failed (an image not decoded).
    """
    by_study: dict[str, list[EvalImage]] = defaultdict(list)
    for image in images:
        by_study[image.study].append(image)
    letterboxed = {m.name: m.spec.image_size for m in members if m.spec.resize == ResizeMode.LETTERBOX}
    rows: list[dict[str, Any]] = []
    decisions: dict[str, StudyDecision] = {}
    for study in sorted(by_study):
        group = by_study[study]
        if any(image.sop in scores.failures for image in group):
            continue
        per_image: dict[Hashable, dict[str, MemberOutput]] = {i.sop: scores.outputs[i.sop] for i in group}
        decision = op.decide(per_image, letterboxed=letterboxed,
                             image_shapes={i.sop: scores.shapes[i.sop] for i in group})
        decisions[study] = decision
        row: dict[str, Any] = {"study_instance_uid": study,
                               "label": "fracture" if any(i.fracture for i in group) else "normal",
                               "n_images": len(group), "fused_score": decision.score}
        for member in members:
            row[f"score:{member.name}"] = max(scores.outputs[i.sop][member.name].score for i in group)
        row.update(group[0].acquisition_fields())
        if split is not None:
            row["split"] = split
        rows.append(row)
    return rows, decisions, len(by_study) - len(rows)


def _classification(study_rows: list[dict[str, Any]], decisions: dict[str, StudyDecision], op: OperatingPoint,
                    members: Sequence[EvalMember], origin: str, options: EvalOptions) -> list[ClassificationResult]:
    """The paper's table: each member at its threshold, then the ensemble's vote."""
    truth = [r["label"] == "fracture" for r in study_rows]
    rows = [
        classification_result(
            m.name, _member_config(m, origin), truth, [r[f"score:{m.name}"] for r in study_rows],
            op.thresholds[m.name], bootstrap=options.bootstrap, seed=options.seed)
        for m in members
    ]
    calls = [decisions[r["study_instance_uid"]].positive for r in study_rows]
    rows.append(classification_result(
        "ensemble", f"{op.vote.label} over {len(members)} members ({op.id})", truth,
        [r["fused_score"] for r in study_rows], math.nan, decisions=calls, bootstrap=options.bootstrap,
        seed=options.seed))
    return rows


Placed = dict[str, list[tuple[PixelBox, float]]]


def _boxes(scored: list[EvalImage], scores: _Scores, decisions: dict[str, StudyDecision],
           members: Sequence[EvalMember]) -> tuple[list[EvalMember], dict[str, Placed], Placed]:
    """Detector members, each one's boxes per image, and the ensemble's, in source pixel edges."""
    detectors = [m for m in members if m.spec.kind in DETECTOR_KINDS
                 or any(scores.outputs[i.sop][m.name].detections for i in scored)]
    per_member: dict[str, Placed] = {m.name: {} for m in detectors}
    for image in scored:
        rows, cols = scores.shapes[image.sop]
        for m in detectors:
            per_member[m.name][image.sop] = [
                (_to_px(b, rows, cols), s) for b, s in _image_frame(scores.outputs[image.sop][m.name], m, rows, cols)]
    fused: Placed = defaultdict(list)
    for decision in decisions.values():
        for finding in decision.findings:
            if finding.box is not None:
                rows, cols = scores.shapes[str(finding.image)]
                fused[str(finding.image)].append((_to_px(finding.box, rows, cols), float(finding.score)))
    return detectors, per_member, fused


def _placed_proposals(scored: list[EvalImage], scores: _Scores, member: EvalMember) -> Placed:
    """A refined detector's boxes as it proposed them, before the refiner, in source pixels."""
    placed: Placed = {}
    for image in scored:
        rows, cols = scores.shapes[image.sop]
        output = scores.outputs[image.sop][member.name]
        placed[image.sop] = [(_to_px(b, rows, cols), s)
                             for b, s in _image_frame(output, member, rows, cols, proposals=True)]
    return placed


def _image_boxes(scored: list[EvalImage], scores: _Scores, found: Placed) -> list[ImageBoxes]:
    items = []
    for image in scored:
        rows, cols = scores.shapes[image.sop]
        pairs = found.get(image.sop, [])
        items.append(ImageBoxes(image.sop, np.asarray(image.boxes_px, dtype=np.float64).reshape(-1, 4),
                                np.asarray([p for p, _ in pairs], dtype=np.float64).reshape(-1, 4),
                                np.asarray([s for _, s in pairs], dtype=np.float64), cols, rows))
    return items


def _image_rows(images: list[EvalImage], scores: _Scores, decisions: dict[str, StudyDecision],
                members: Sequence[EvalMember], detectors: list[EvalMember], per_member: dict[str, Placed],
                fused: Placed) -> list[dict[str, Any]]:
    """``image_predictions.csv``: truth, scores and boxes per image; failures with their reason."""
    out = []
    for image in images:
        row: dict[str, Any] = {"study_instance_uid": image.study, "sop_instance_uid": image.sop,
                               "label": "fracture" if image.fracture else "normal",
                               "truth_boxes": json.dumps([list(b) for b in image.boxes_px])}
        if image.sop in scores.failures:
            row.update(status="failed", reason=scores.failures[image.sop])
        elif image.study not in decisions:
            row.update(status="study-failed", reason="another image of the study failed to decode")
        else:
            rows, cols = scores.shapes[image.sop]
            row.update(status="scored", rows=rows, cols=cols)
            for m in members:
                row[f"score:{m.name}"] = scores.outputs[image.sop][m.name].score
            for m in detectors:
                row[f"boxes:{m.name}"] = _boxes_json(per_member[m.name][image.sop])
            row["fused_boxes"] = _boxes_json(fused.get(image.sop, []))
        out.append(row)
    return out


UNTUNED_POINT_ID = "member-thresholds"
"""The id of the point :func:`evaluate` uses when none is given (before any tuning)."""
UNTUNED_NOTE = ("no operating point given: each member's own member.json threshold with the "
                "any-vote (tune one with screen tune on this evaluation's predictions.csv)")


def _resolve_point(members: Sequence[EvalMember], operating_point: OperatingPoint | str | Path | None
                   ) -> tuple[OperatingPoint, str]:
    if operating_point is None:
        untuned = OperatingPoint(thresholds={m.name: m.spec.threshold for m in members},
                                 id=UNTUNED_POINT_ID)
        return untuned, "member.json"
    if isinstance(operating_point, OperatingPoint):
        op = operating_point
    else:
        op = load_deciding_point(operating_point)
    return op, f"operating point {op.id}"


def evaluate(
    source: str | Path,
    out_dir: str | Path,
    *,
    members: Sequence[EvalMember],
    operating_point: OperatingPoint | str | Path | None = None,
    labels_csv: str | Path | None = None,
    options: EvalOptions = EvalOptions(),
    progress: ProgressFn | None = None,
) -> EvalResult:
    """Evaluate ``members`` and their fusion on a labelled set and write the outputs.

    Args:
        source: a prepared data folder or a DICOM archive.
        out_dir: folder for ``predictions.csv``, ``image_predictions.csv``, ``report.md``,
            ``metrics.json`` (created).
        members: loaded members (``screen.nightly.site_members.load_members(site)``); their names are the
            ``score:<name>`` columns.
        operating_point: the point deciding the ensemble (object or JSON path). ``None`` uses
            every member's ``member.json`` threshold with the ``any`` vote.
        labels_csv: the truth; required for an archive, optional for a data folder (whose
            ``boxes.jsonl`` holds the labels it was prepared from).
        options: split, batch size, workers, selection, bootstrap.
        progress: wraps the image pass (``progress(iterator, "eval", total)``).

    Raises:
        EvalError: no members, an archive without labels, nothing to evaluate, or every study
            failed.
        OperatingPointError: the operating point does not name exactly these members.
    """
    source, out_dir = Path(source), Path(out_dir)
    if not members:
        raise EvalError("no members to evaluate; give a site config with [members.NAME] tables")
    if not source.exists():
        raise EvalError(f"{str(source)!r} does not exist; give a prepared data folder or a DICOM archive")
    op, origin = _resolve_point(members, operating_point)
    op.check_members([m.name for m in members])
    labels = read_labels(labels_csv) if labels_csv is not None else None
    skipped: Counter[str] = Counter()
    is_data = (source / MANIFEST_NAME).is_file()
    if is_data:
        images = images_from_data(source, options.split, labels, skipped)
    elif labels is None:
        raise EvalError(
            f"{str(source)!r} is not a prepared data folder (no {MANIFEST_NAME}); evaluating an "
            "archive needs --labels labels.csv"
        )
    else:
        images = images_from_archive(source, labels, options.rules, options.workers, skipped)
    if not images:
        where = f"split {options.split!r} of {source}" if is_data else str(source)
        raise EvalError(f"nothing to evaluate in {where} (skipped: {dict(skipped) or 'nothing found'})")

    scores = _score(images, members, source if is_data else None, options, progress)
    study_rows, decisions, failed = _decide(images, scores, op, members, options.split if is_data else None)
    if not study_rows:
        raise EvalError(f"every study failed to decode ({failed}); see the reasons with screen scan --decode")
    rows = _classification(study_rows, decisions, op, members, origin, options)
    scored = [i for i in images if i.study in decisions]
    detectors, per_member, fused = _boxes(scored, scores, decisions, members)
    box_rows = [box_metrics(m.name, _image_boxes(scored, scores, per_member[m.name]),
                            score_threshold=op.thresholds[m.name]) for m in detectors]
    for m in detectors:  # a refined detector: its boxes before the refiner too, for comparison
        if any("proposals" in scores.outputs[i.sop][m.name].extras for i in scored):
            before = _placed_proposals(scored, scores, m)
            box_rows.append(box_metrics(f"{m.name} (before refiner)", _image_boxes(scored, scores, before),
                                        score_threshold=op.thresholds[m.name]))
    if detectors:
        box_rows.append(box_metrics("ensemble", _image_boxes(scored, scores, fused), score_threshold=0.0))
    if scores.failures:
        skipped["image decode failed"] += len(scores.failures)

    out_dir.mkdir(parents=True, exist_ok=True)
    names = [m.name for m in members]
    n_positive = sum(r["label"] == "fracture" for r in study_rows)
    result = EvalResult(out_dir, rows, box_rows, len(study_rows), n_positive, len(scores.shapes), failed,
                        skipped, str(op.id))
    columns = ["study_instance_uid", "label", "n_images", *(f"score:{n}" for n in names), "fused_score",
               *ACQUISITION_COLUMNS]
    result.files["predictions"] = write_csv(out_dir / "predictions.csv", PREDICTIONS,
                                            columns + (["split"] if is_data else []), study_rows)
    image_columns = ["study_instance_uid", "sop_instance_uid", "label", "status", "reason", "rows", "cols",
                     *(f"score:{n}" for n in names), "truth_boxes", *(f"boxes:{m.name}" for m in detectors),
                     "fused_boxes"]
    result.files["image_predictions"] = write_csv(
        out_dir / "image_predictions.csv", IMAGE_PREDICTIONS, image_columns,
        _image_rows(images, scores, decisions, members, detectors, per_member, fused))
    facts = [
        ("source", f"{source}" + (f" (prepared data, split {options.split})" if is_data else " (DICOM archive)")),
        ("studies", f"{len(study_rows)} ({n_positive} fracture, {len(study_rows) - n_positive} normal); "
                    f"{failed} failed"),
        ("images", str(len(scores.shapes))),
        ("operating point", f"{op.id}, vote {op.vote.label}"),
        ("members", ", ".join(f"{m.name} ({m.version})" for m in members)),
    ]
    notes = [UNTUNED_NOTE] if operating_point is None else []
    if skipped:
        notes.append("not evaluated: " + ", ".join(f"{r} {n}" for r, n in sorted(skipped.items())))
    result.files["report"] = out_dir / "report.md"
    calibration, calibration_data, result.files["reliability"] = calibration_report(
        study_rows, names, op.calibration, out_dir)
    atomic_write_text(result.files["report"], render_report(
        title="fracture-screen evaluation", facts=facts, rows=rows, boxes=box_rows, notes=notes)
        + "\n".join(calibration))
    result.files["metrics"] = write_metrics_json(out_dir / "metrics.json", {
        "source": str(source), "split": options.split if is_data else None, "operating_point_id": op.id,
        "n_studies": len(study_rows), "n_positive_studies": n_positive, "n_images": len(scores.shapes),
        "failed_studies": failed, "skipped": dict(skipped),
        "members": {m.name: {"kind": m.spec.kind, "version": m.version} for m in members},
        "classification": [r.to_dict() for r in rows], "boxes": [b.to_dict() for b in box_rows],
        "calibration": calibration_data,
    })
    return result


def _boxes_json(pairs: Sequence[tuple[PixelBox, float]]) -> str:
    """``[[col0, row0, col1, row1, score], ...]``: pixels to 0.01, scores to 1e-4."""
    return json.dumps([[*(round(float(v), 2) for v in box), round(float(score), 4)] for box, score in pairs])
