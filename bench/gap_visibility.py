"""How visible is each fracture at the member's input, and which ones do the members miss?

    python -m bench.gap_visibility PHANTOM_FOLDER EVAL_FOLDER [--input-size 256] [--json FILE]

PHANTOM_FOLDER is a phantom set as ``screen train-demo`` and ``bench.shift_factors`` draw it
(``archive/``, ``labels.csv`` and the ``phantom.json`` stamp of its config); EVAL_FOLDER is
``screen eval``'s output on that archive (its ``image_predictions.csv``). The phantom is drawn
again from its config (:func:`dicom_io.phantom.archive.styled_draws`: the same generators, so
the same images; the stamp and every SOP Instance UID are checked), which gives what the files
cannot: each fracture's gap mask and its bone. Per positive image, over its gaps, the most
visible one:

- ``width``: the gap's width across the bone, the short side of the gap pixels' minimum-area
  rectangle, in pixels of a member input whose long side is ``--input-size`` (the letterbox
  scale; a squashed input scales each axis apart, so for it this is the long axis's figure);
- ``contrast``: the gap's contrast-to-noise ratio in the stored pixels: the mean of the bone
  just around the gap (a ring 2-6 px out) minus the gap's mean, over the standard deviation
  of the image's fine detail (the image minus its Gaussian blur of sigma 3) in the bone away
  from the gap.

It prints, per quartile of each, how many positive images fall there and each member's image
AUC of those images against every normal image of the set: a member that reads visible
fractures but not faint or sub-pixel ones falls in the low quartiles only. One run of one set;
a quartile holds about a quarter of the positive images, so its AUC is noisy (about ±0.08 on
a 300-study set).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import binary_dilation

from dicom_io.phantom import PhantomConfig
from dicom_io.phantom.archive import styled_draws
from dicom_io.phantom.varied import StyledDraw
from dicom_io.tables import IMAGE_PREDICTIONS, read_table
from train.metrics import roc_auc

#: Ring around a gap, in stored pixels, whose bone is the gap's background.
RING = (2, 6)
#: Sigma, in stored pixels, of the blur whose residue is the noise the contrast is measured against.
DETAIL_SIGMA = 3.0


class VisibilityError(ValueError):
    """The phantom folder or the evaluation does not match what is drawn again."""


@dataclass(frozen=True)
class GapMeasure:
    """The most visible gap of one positive image (module docstring)."""

    width: float
    contrast: float


def measure_gap(draw: StyledDraw, input_size: int) -> GapMeasure | None:
    """Width (at the member's input) and contrast of ``draw``'s most visible gap; ``None`` for
    a normal image."""
    if not draw.gap_masks:
        return None
    pixels = draw.image.pixels.astype(np.float64)
    scale = input_size / max(pixels.shape)
    detail = pixels - cv2.GaussianBlur(pixels, (0, 0), DETAIL_SIGMA)
    widths, contrasts = [], []
    for gap, bone_index in zip(draw.gap_masks, draw.gap_bones):
        bone = draw.bone_masks[bone_index]
        ring = (binary_dilation(gap, iterations=RING[1]) & ~binary_dilation(gap, iterations=RING[0])
                & bone)
        away = bone & ~binary_dilation(gap, iterations=RING[1])
        ys, xs = np.nonzero(gap)
        if ys.size < 3 or not ring.any() or not away.any():
            continue
        (_, _), (w, h), _ = cv2.minAreaRect(np.stack([xs, ys], axis=1).astype(np.float32))
        widths.append((min(w, h) + 1.0) * scale)  # +1: pixel centres to pixel edges
        contrasts.append(float((pixels[ring].mean() - pixels[gap].mean()) / (detail[away].std() + 1e-9)))
    if not widths:
        return None
    return GapMeasure(width=max(widths), contrast=max(contrasts))


def _config(phantom: Path) -> PhantomConfig:
    """The config whose fingerprint ``phantom/phantom.json`` holds (drawn as the demo draws)."""
    stamp = json.loads((phantom / "phantom.json").read_text())["fingerprint"]
    fields = dict(part.split("=", 1) for part in stamp.split("|")[1:] if "=" in part)
    config = PhantomConfig(n_studies=int(fields["n_studies"]), seed=int(fields["seed"]),
                           size_range=tuple(int(v) for v in fields["size_range"].strip("()").split(",")),  # type: ignore[arg-type]
                           style=fields.get("style", "'rods'").strip("'"))
    if config.fingerprint() != stamp:
        raise VisibilityError(f"{phantom}/phantom.json is not a phantom the demo's defaults draw; "
                              "this bench redraws only those")
    return config


def _score(value: object) -> float | None:
    """An image score, or ``None`` where the evaluation has none (an image it could not read)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if np.isnan(number) else number


def _auc(positive: NDArray[np.float64], negative: NDArray[np.float64]) -> float:
    if positive.size == 0 or negative.size == 0:
        return float("nan")
    labels = np.r_[np.ones(positive.size, dtype=bool), np.zeros(negative.size, dtype=bool)]
    return roc_auc(labels, np.r_[positive, negative])


def measure(phantom: Path, evaluation: Path, input_size: int) -> dict[str, object]:
    """Every image's score per member and, for positive images, its gap measure."""
    config = _config(phantom)
    rows = read_table(evaluation / "image_predictions.csv", IMAGE_PREDICTIONS)
    members = [c.split(":", 1)[1] for c in rows.columns if c.startswith("score:")]
    scores = {str(r["sop_instance_uid"]): r for r in rows.to_dict("records")}
    images = []
    for sop, draw in styled_draws(config):
        if sop not in scores:
            raise VisibilityError(f"image {sop} of the redrawn phantom is not in {evaluation}; "
                                  "evaluate this very archive")
        found = measure_gap(draw, input_size)
        row = scores[sop]
        images.append({"positive": draw.image.positive,
                       "scores": {m: _score(row[f"score:{m}"]) for m in members},
                       "width": None if found is None else found.width,
                       "contrast": None if found is None else found.contrast})
    return {"style": config.style, "seed": config.seed, "studies": config.n_studies,
            "input_size": input_size, "members": members, "images": images}


def quartile_table(result: dict[str, object], key: str) -> list[str]:
    """Markdown rows: per quartile of ``key`` over positive images, each member's image AUC
    against every normal image."""
    images: list[dict] = result["images"]  # type: ignore[assignment]
    members: list[str] = result["members"]  # type: ignore[assignment]
    measured = [i for i in images if i["positive"] and i[key] is not None]
    normals = [i for i in images if not i["positive"]]
    values = np.array([i[key] for i in measured])
    edges = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
    lines = [f"| {key} | positive images | " + " | ".join(members) + " |",
             "|---|---|" + "---|" * len(members)]
    for q, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = [i for i in measured if (low <= i[key] <= high if q == 0 else low < i[key] <= high)]
        aucs = [_auc(np.array([i["scores"][m] for i in inside if i["scores"][m] is not None]),
                     np.array([i["scores"][m] for i in normals if i["scores"][m] is not None]))
                for m in members]
        lines.append(f"| {low:.2f}-{high:.2f} | {len(inside)} | " + " | ".join(f"{a:.3f}" for a in aucs) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phantom", type=Path, help="phantom folder (archive/, labels.csv, phantom.json)")
    parser.add_argument("evaluation", type=Path, help="screen eval output on that archive")
    parser.add_argument("--input-size", type=int, default=256,
                        help="long side of the member input the widths are given at")
    parser.add_argument("--json", type=Path, help="also write every image's measures here")
    args = parser.parse_args(argv)
    try:
        result = measure(args.phantom, args.evaluation, args.input_size)
    except (VisibilityError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    images: list[dict] = result["images"]  # type: ignore[assignment]
    widths = np.array([i["width"] for i in images if i["positive"] and i["width"] is not None])
    print(f"{result['style']} seed {result['seed']}, {result['studies']} studies: "
          f"{widths.size} positive images; gap width at a {args.input_size} px input: median "
          f"{np.median(widths):.2f} px, under 1 px in {np.mean(widths < 1.0):.0%} of them")
    for key in ("width", "contrast"):
        print()
        print("\n".join(quartile_table(result, key)))
    if args.json:
        args.json.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
