"""Can the detector training path learn boxes at all? A check a reviewer runs on a CPU in minutes.

A toy archive (``screen phantom --style toy``: one or two bright rectangles or ellipses on noise,
random size and place, some images with none) goes through the real path:

    screen phantom OUT/archive --style toy ...      the DICOM archive and its labels CSV
    screen prepare OUT/archive --out OUT/data ...   PNGs and detector.jsonl, split by patient
    screen train detector --config train/configs/tiny-detector.toml --data OUT/data ...
    screen eval OUT/data --split test ...           the member's own boxes on held-out images

and prints, on the held-out test split: the share of truth boxes the detector's own boxes match
at IoU >= 0.5 (aim >= 0.80) and at IoU >= 0.3, and the share of empty images whose image score is
below the member's threshold (aim >= 0.90), the own boxes' mean corner errors, and the
training time. The member places each box at the median of its decodes under the square's 8
symmetries, as the demo's pg-det does (``--symmetries 1``: one decode). The toy archive is made once per work folder (``toy.json`` stamps its size and
seed) and reused by later checks there. The config is the committed
tiny detector config as it is (pass ``--set`` to try another setting); nothing is tuned here.

    python -m bench.learnability --out /tmp/learnability            # the full check
    python -m bench.learnability --out /tmp/l --epochs 10 --studies 600  # the slow test's one

Exit status 0 when both aims are met, 1 when not (the figures are printed either way).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from train.demo import TOY_SEED, TOY_STUDIES, TOY_TWO_SHAPES, toy_phantom_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "train" / "configs" / "tiny-detector.toml"
#: The aims of the check (issue 14): held-out box recall at IoU 0.5, empty images below threshold.
AIM_RECALL_50 = 0.80
AIM_EMPTY_BELOW = 0.90
# The toy (train.demo.toy_phantom_config) is the one screen train-demo's toy stage trains
# pg-det's start on. TOY_STUDIES of it (about 1,700 training images): with 240 (320 training
# images) the same config overfitted (validation loss rose from epoch 21) and matched fewer boxes.

#: Decodes per positive image whose median places each box (the member's ``symmetries``
#: option; the demo's site.toml uses 8). ``--symmetries 1`` measures a single decode.
SYMMETRIES = 8

#: (x0, y0, x1, y1).
Corners = tuple[float, float, float, float]


@dataclass(frozen=True)
class Learnability:
    """What one check measured on the held-out split.

    Attributes:
        recall_50: truth boxes matched by the member's own boxes at IoU >= 0.5.
        recall_30: the same at IoU >= 0.3.
        n_truth: truth boxes in the held-out split.
        empty_below: share of held-out images without a box whose score is below the threshold.
        n_empty: such images.
        image_auc: the member's image-level AUC there.
        train_seconds: wall time of ``screen train detector``.
        steps: optimiser steps it ran.
        corner_bias: mean signed error of (x0, y0, x1, y1) of each truth box's best-overlapping
            own box, in % of the image side (negative x0/y0 and positive x1/y1: boxes too big).
        corner_error: mean absolute error of the same, in % of the image side.
        by_boxes: ``{truth boxes per image: (matched at IoU 0.5, truth boxes)}``.
    """

    recall_50: float
    recall_30: float
    n_truth: int
    empty_below: float
    n_empty: int
    image_auc: float
    train_seconds: float
    steps: int
    corner_bias: Corners = (math.nan,) * 4
    corner_error: Corners = (math.nan,) * 4
    by_boxes: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Both aims met."""
        return self.recall_50 >= AIM_RECALL_50 and self.empty_below >= AIM_EMPTY_BELOW


def _site_config(folder: Path, checkpoint: Path, workers: int, symmetries: int = 1) -> Path:
    path = folder / "site.toml"
    path.write_text(
        "schema_version = 1\n\n"
        f"[run]\ndevice = \"cpu\"\nworkers = {workers}\nbatch_size = 16\n\n"
        f"[members.det]\nkind = \"paligemma-detector\"\ncheckpoint = {json.dumps(str(checkpoint))}\n"
        f"options = {{ symmetries = {symmetries} }}\n\n"
        "[output]\npatient_id = \"omit\"\n\n"
        "[scope]\nbody_parts = []\nrequire_body_part = false\n",
        encoding="utf-8")
    return path


def corner_errors(image_predictions: Path) -> tuple[Corners, Corners]:
    """Mean signed and absolute corner errors (x0, y0, x1, y1) in % of the image side, of each
    truth box against the member's own box that overlaps it most (truth boxes no box overlaps
    are left out: recall counts them)."""
    import numpy as np

    from dicom_io.tables import IMAGE_PREDICTIONS, read_table
    from train.box_metrics import iou_matrix

    frame = read_table(image_predictions, IMAGE_PREDICTIONS)
    errors = []
    for _, row in frame[frame["status"] == "scored"].iterrows():
        truth = np.asarray(json.loads(row["truth_boxes"]), dtype=float).reshape(-1, 4)
        own = np.asarray([b[:4] for b in json.loads(row["boxes:det"])], dtype=float).reshape(-1, 4)
        if not len(truth) or not len(own):
            continue
        overlap = iou_matrix(truth, own)
        side = np.array([row["cols"], row["rows"], row["cols"], row["rows"]], dtype=float)
        for index, best in enumerate(overlap.argmax(axis=1)):
            if overlap[index, best] > 0:
                errors.append((own[best] - truth[index]) / side * 100.0)
    if not errors:
        return (math.nan,) * 4, (math.nan,) * 4
    stacked = np.stack(errors)
    bias, error = stacked.mean(axis=0).tolist(), np.abs(stacked).mean(axis=0).tolist()
    return (bias[0], bias[1], bias[2], bias[3]), (error[0], error[1], error[2], error[3])


def recall_by_boxes(image_predictions: Path, iou_threshold: float = 0.5) -> dict[int, tuple[int, int]]:
    """Truth boxes matched by the member's own boxes at ``iou_threshold``, by how many truth
    boxes their image holds: ``{boxes per image: (matched, truth boxes)}`` (the same greedy
    matching as the eval's recall, so the groups add up to it). The toy's images with two shapes
    are where the detector fails: it mixes the two shapes' corners into one box."""
    import numpy as np

    from dicom_io.tables import IMAGE_PREDICTIONS, read_table
    from train.box_metrics import ImageBoxes, match_counts

    frame = read_table(image_predictions, IMAGE_PREDICTIONS)
    groups: dict[int, list[ImageBoxes]] = {}
    for _, row in frame[frame["status"] == "scored"].iterrows():
        truth = np.asarray(json.loads(row["truth_boxes"]), dtype=float).reshape(-1, 4)
        if not len(truth):
            continue
        own = json.loads(row["boxes:det"])
        boxes = np.asarray([b[:4] for b in own], dtype=float).reshape(-1, 4)
        scores = np.asarray([b[4] if len(b) > 4 else 1.0 for b in own], dtype=float)
        groups.setdefault(len(truth), []).append(
            ImageBoxes(str(row["sop_instance_uid"]), truth, boxes, scores, float(row["cols"]), float(row["rows"])))
    found: dict[int, tuple[int, int]] = {}
    for count, images in sorted(groups.items()):
        counts = match_counts(images, iou_threshold)
        found[count] = (counts.tp, counts.tp + counts.fn)
    return found


def _empty_images(image_predictions: Path, threshold: float) -> tuple[float, int]:
    """Share of images without a truth box whose score is below ``threshold``, and their count."""
    from dicom_io.tables import IMAGE_PREDICTIONS, read_table

    frame = read_table(image_predictions, IMAGE_PREDICTIONS)
    frame = frame[frame["status"] == "scored"]
    empty = frame[frame["truth_boxes"] == "[]"]
    scores = empty["score:det"].astype(float)
    if len(scores) == 0:
        return math.nan, 0
    return float((scores < threshold).mean()), int(len(scores))


def run_check(out: Path, *, studies: int = TOY_STUDIES, seed: int = TOY_SEED, epochs: int | None = None,
              overrides: Sequence[str] = (), workers: int = 2,
              two_shapes: float = TOY_TWO_SHAPES, symmetries: int = SYMMETRIES) -> Learnability:
    """Generate, prepare, train and measure (the member decoding its boxes under ``symmetries``
    of the square's symmetries, as the demo's pg-det does); the work files stay in ``out``."""
    from dicom_io.phantom import write_phantom_archive
    from ensembles.checkpoint import read_member_spec
    from screen.commands.eval import run_eval
    from screen.commands.prepare import run_prepare
    from screen.commands.train import run_train

    out.mkdir(parents=True, exist_ok=True)
    archive, labels, data = out / "archive", out / "labels.csv", out / "data"
    stamp, wanted = out / "toy.json", {"studies": studies, "seed": seed, "two_shapes": two_shapes}
    made = stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == wanted
    if not (made and (data / "manifest.json").is_file()):  # another size or seed: made again
        write_phantom_archive(archive, labels, toy_phantom_config(studies, seed, two_shapes=two_shapes),
                              overwrite=True)
        run_prepare(archive, labels, data, seed=seed, workers=workers, overwrite=True)
        stamp.write_text(json.dumps(wanted), encoding="utf-8")
    sets = [f"train.threads={workers}", *overrides]
    if epochs is not None:
        sets.append(f"train.epochs={epochs}")
    start = time.perf_counter()
    best = run_train("detector", CONFIG, data=data, out=out / "run", overrides=sets, resume=False)
    seconds = time.perf_counter() - start
    steps = _last_step(out / "run" / "metrics.csv")
    threshold = float(read_member_spec(best).threshold)
    result = run_eval(data, out / "eval", config_path=_site_config(out, best, workers, symmetries), split="test",
                      bootstrap=0, workers=workers)
    boxes = result.box("det")
    empty_below, n_empty = _empty_images(result.files["image_predictions"], threshold)
    bias, error = corner_errors(result.files["image_predictions"])
    return Learnability(recall_50=boxes.at_50.recall, recall_30=boxes.recall_30, n_truth=boxes.n_truth,
                        empty_below=empty_below, n_empty=n_empty, image_auc=_image_auc(result),
                        train_seconds=seconds, steps=steps, corner_bias=bias, corner_error=error,
                        by_boxes=recall_by_boxes(result.files["image_predictions"]))


def _last_step(metrics_csv: Path) -> int:
    from dicom_io.tables import TRAINING_METRICS, read_table

    frame = read_table(metrics_csv, TRAINING_METRICS)
    return int(frame["step"].max()) if len(frame) else 0


def _image_auc(result: object) -> float:
    from sklearn.metrics import roc_auc_score

    from dicom_io.tables import IMAGE_PREDICTIONS, read_table

    frame = read_table(result.files["image_predictions"], IMAGE_PREDICTIONS)  # type: ignore[attr-defined]
    frame = frame[frame["status"] == "scored"]
    labels = (frame["label"] == "fracture").astype(int)
    if labels.nunique() < 2:
        return math.nan
    return float(roc_auc_score(labels, frame["score:det"].astype(float)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Work folder (archive, data, run, eval).")
    parser.add_argument("--studies", type=int, default=TOY_STUDIES, help="Toy studies (1-3 images each).")
    parser.add_argument("--seed", type=int, default=TOY_SEED)
    parser.add_argument("--epochs", type=int, default=None, help="In place of the config's [train] epochs.")
    parser.add_argument("--two-shapes", type=float, default=TOY_TWO_SHAPES,
                        help="Share of the toy images with a shape that hold two.")
    parser.add_argument("--symmetries", type=int, choices=(1, 2, 4, 8), default=SYMMETRIES,
                        help="Decodes per positive image under the square's symmetries, whose median "
                             "places each box (the member's symmetries option).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="A config override, as screen train --set (repeatable).")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    found = run_check(args.out, studies=args.studies, seed=args.seed, epochs=args.epochs,
                      overrides=args.overrides, workers=args.workers, two_shapes=args.two_shapes,
                      symmetries=args.symmetries)
    print(f"held-out truth boxes: {found.n_truth}; empty images: {found.n_empty}")
    print(f"box recall at IoU >= 0.5: {found.recall_50:.3f} (aim >= {AIM_RECALL_50}); "
          f"at IoU >= 0.3: {found.recall_30:.3f}")
    print(f"empty images below the threshold: {found.empty_below:.3f} (aim >= {AIM_EMPTY_BELOW}); "
          f"image AUC {found.image_auc:.3f}")
    print("box recall at IoU >= 0.5 by truth boxes per image: " + ", ".join(
        f"{count}: {hit / max(total, 1):.3f} ({hit}/{total})" for count, (hit, total) in found.by_boxes.items()))
    print("own boxes' corners (x0, y0, x1, y1) against truth, % of the image side: mean "
          + " ".join(f"{v:+.2f}" for v in found.corner_bias) + "; mean absolute "
          + " ".join(f"{v:.2f}" for v in found.corner_error))
    print(f"training: {found.steps} steps in {found.train_seconds:.0f} s on {args.workers} thread(s); "
          f"boxes placed by the median of {args.symmetries} decode(s)")
    print("PASSED" if found.passed else "NOT MET")
    return 0 if found.passed else 1


if __name__ == "__main__":
    sys.exit(main())
