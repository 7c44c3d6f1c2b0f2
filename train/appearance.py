"""Appearance augmentation: each training image re-rendered the ways sites and devices differ.

The eight symmetries (``augment`` of ``[paligemma]`` and ``[detr]``) move a fracture around the
square; they do not change how it *looks*. A member trained on one archive then learns that
archive's scale, exposure curve, window, sharpness and noise along with the fracture. The
``[appearance]`` table of a training config draws, per training image and per epoch:

- ``zoom``: a crop of ``1/z`` of each side, placed at random but holding every truth box, then
  processed as the whole image would be: bones, fractures and boxes come out ``z`` times larger
  (a closer field of view, a smaller patient, a higher-resolution detector);
- ``window``: a narrower display window (each end moved in by up to this share of the range,
  values beyond it clipped), as another VOI preset or a tighter default window would show;
- ``gamma``: an exposure curve ``x ** g`` (``g`` log-uniform in the range);
- ``compress``: dynamic-range compression, as vendors' processing does: the image minus this
  share of its large-scale content (a Gaussian of ``compress_radius`` input pixels, about its
  mean), then stretched back to ``[0, 1]`` (its 0.1th to 99.9th percentiles): less contrast
  between background, soft tissue and bone, the same local detail;
- ``sharpen``: unsharp masking (edge enhancement) of this amount at ``sharpen_radius`` input
  pixels: ``x + a (x - blur(x))``, which changes how cortices and edges look;
- ``blur``: a Gaussian blur of ``sigma`` pixels *of the member's input* (focal spot, screen);
- ``noise``: white noise of this standard deviation (in ``[0, 1]`` units) at the member's input.

Each is applied to the image before the member's own preprocessing (resize, CLAHE, Canny
blend, letterbox), which is then done exactly as inference does it; validation images are never
re-rendered. ``probability`` is the share of training images re-rendered at all (the rest are
seen as stored). To keep an epoch fast, the re-rendering starts from a copy of each source
image reduced once to ``source_scale`` times the member's input side (``INTER_AREA``, as the
preprocessing's own shrink), kept in memory unless the recipe's ``cache_images`` is off (then
each use reads and reduces it again: slower, and no memory grows with the training set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Sequence

import cv2
import numpy as np
from pydantic import Field, model_validator

from ensembles.config_model import ListAsTuple, check
from ensembles.preprocess import PreprocessConfig, to_square
from ensembles.types import ResizeMode
from train.config_base import TrainTable, Unit
from train.datasets import input_boxes, load_image, record_boxes_px

__all__ = ["AppearanceConfig", "AppearanceSource", "render"]

Pair = Annotated[tuple[float, float], ListAsTuple,
                 check(lambda v: len(v) == 2 and v[0] <= v[1], "must be [low, high] with low <= high")]


class AppearanceConfig(TrainTable):
    """The ``[appearance]`` table (module docstring). Every default leaves the image as it is.

    Attributes:
        probability: share of training images re-rendered (0: off).
        zoom: range of the zoom factor ``z >= 1`` (a crop of ``1/z`` of each side).
        window: how far each end of the window may move in, as a share of the range (< 0.5).
        gamma: range of the exponent ``g > 0`` of ``x ** g`` (drawn log-uniform).
        compress: range of the share of large-scale content taken out (0..1).
        compress_radius: the large scale's Gaussian sigma, in pixels of the member's input.
        sharpen: range of the unsharp-masking amount (>= 0).
        sharpen_radius: range of its Gaussian sigma, in pixels of the member's input.
        blur: range of the Gaussian sigma, in pixels of the member's input.
        noise: range of the white noise's standard deviation, in ``[0, 1]`` units, at the
            member's input.
        source_scale: the kept copy of each training image has its long side at most this many
            times the member's input side (larger: sharper zooms, more memory).
    """

    TABLE: ClassVar[str] = "appearance"

    probability: Unit = 1.0
    zoom: Pair = (1.0, 1.0)
    window: Annotated[float, check(lambda v: 0 <= v < 0.5, "must be in [0, 0.5)")] = 0.0
    gamma: Pair = (1.0, 1.0)
    compress: Pair = (0.0, 0.0)
    compress_radius: Annotated[float, Field(gt=0)] = 16.0
    sharpen: Pair = (0.0, 0.0)
    sharpen_radius: Pair = (2.0, 2.0)
    blur: Pair = (0.0, 0.0)
    noise: Pair = (0.0, 0.0)
    source_scale: Annotated[float, Field(ge=1.0)] = 2.0

    @model_validator(mode="after")
    def _ranges(self) -> "AppearanceConfig":
        if self.zoom[0] < 1.0:
            raise ValueError(f"zoom must be >= 1 (a crop of 1/zoom of each side), got {list(self.zoom)}")
        if self.gamma[0] <= 0:
            raise ValueError(f"gamma must be > 0, got {list(self.gamma)}")
        if self.compress[0] < 0 or self.compress[1] > 1:
            raise ValueError(f"compress must be within [0, 1], got {list(self.compress)}")
        if self.sharpen_radius[0] <= 0:
            raise ValueError(f"sharpen_radius must be > 0, got {list(self.sharpen_radius)}")
        for name in ("blur", "noise", "sharpen"):
            if getattr(self, name)[0] < 0:
                raise ValueError(f"{name} must be >= 0, got {list(getattr(self, name))}")
        return self

    @property
    def active(self) -> bool:
        """Whether any image can change (some factor is not the identity, probability > 0)."""
        changes = (self.zoom[1] > 1.0 or self.window > 0 or self.gamma != (1.0, 1.0)
                   or self.compress[1] > 0 or self.sharpen[1] > 0 or self.blur[1] > 0
                   or self.noise[1] > 0)
        return self.probability > 0 and changes


def _uniform(rng: np.random.Generator, pair: tuple[float, float]) -> float:
    return float(pair[0]) if pair[0] == pair[1] else float(rng.uniform(pair[0], pair[1]))


def _zoom_crop(rng: np.random.Generator, image: np.ndarray, boxes_px: np.ndarray, zoom: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """A crop of ``1/zoom`` of each side (the image's aspect kept) holding every box: a smaller
    zoom where the boxes need the room; and the boxes in its frame."""
    rows, cols = image.shape
    if len(boxes_px):
        x0 = max(0.0, float(boxes_px[:, 0].min()))
        y0 = max(0.0, float(boxes_px[:, 1].min()))
        x1 = min(float(cols), float(boxes_px[:, 2].max()))
        y1 = min(float(rows), float(boxes_px[:, 3].max()))
        need_w, need_h = math.ceil(x1) - math.floor(x0), math.ceil(y1) - math.floor(y0)
        zoom = max(1.0, min(zoom, cols / max(need_w, 1), rows / max(need_h, 1)))
        width = min(cols, max(need_w, round(cols / zoom)))
        height = min(rows, max(need_h, round(rows / zoom)))
        left_range = (max(0, math.ceil(x1) - width), min(cols - width, math.floor(x0)))
        top_range = (max(0, math.ceil(y1) - height), min(rows - height, math.floor(y0)))
    else:
        height, width = max(1, round(rows / zoom)), max(1, round(cols / zoom))
        left_range, top_range = (0, cols - width), (0, rows - height)
    left = int(rng.integers(left_range[0], left_range[1] + 1))
    top = int(rng.integers(top_range[0], top_range[1] + 1))
    crop = image[top : top + height, left : left + width]
    moved = boxes_px - np.array([left, top, left, top], dtype=np.float64)
    return np.ascontiguousarray(crop), moved


def _input_pixel(shape: tuple[int, int], preprocess: PreprocessConfig) -> tuple[float, float]:
    """Source pixels per pixel of the member's input, along x and y."""
    rows, cols = shape
    size = preprocess.image_size
    if preprocess.resize == ResizeMode.SQUASH:
        return cols / size, rows / size
    per = max(rows, cols) / size
    return per, per


def _gaussian(image: np.ndarray, sigma: float, per_x: float, per_y: float) -> np.ndarray:
    """A Gaussian blur of ``sigma`` pixels of the member's input (``per_x``/``per_y`` source
    pixels each)."""
    return np.asarray(cv2.GaussianBlur(np.asarray(image, dtype=np.float32), (0, 0), sigmaX=sigma * per_x,
                                       sigmaY=sigma * per_y, borderType=cv2.BORDER_REFLECT), dtype=np.float32)


def render(image: np.ndarray, boxes_px: np.ndarray, config: AppearanceConfig,
           preprocess: PreprocessConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One re-rendering of ``image`` (float ``H x W`` in ``[0, 1]``) and its pixel-edge boxes
    ``(n, 4)``: zoom, window, gamma, compress, sharpen, blur, noise, in that order (module
    docstring).

    With probability ``1 - config.probability`` the image and boxes come back unchanged.
    """
    boxes = np.asarray(boxes_px, dtype=np.float64).reshape(-1, 4)
    out = np.asarray(image, dtype=np.float32)
    if rng.random() >= config.probability:
        return out, boxes
    if config.zoom[1] > 1.0:
        out, boxes = _zoom_crop(rng, out, boxes, _uniform(rng, config.zoom))
    if config.window > 0:
        low = float(rng.uniform(0.0, config.window))
        high = 1.0 - float(rng.uniform(0.0, config.window))
        out = np.clip((out - low) / (high - low), 0.0, 1.0)
    if config.gamma != (1.0, 1.0):
        exponent = math.exp(_uniform(rng, (math.log(config.gamma[0]), math.log(config.gamma[1]))))
        out = np.power(np.clip(out, 0.0, 1.0), exponent).astype(np.float32)
    per_x, per_y = _input_pixel(out.shape, preprocess)
    if config.compress[1] > 0:
        share = _uniform(rng, config.compress)
        if share > 0:
            large = _gaussian(out, config.compress_radius, per_x, per_y)
            out = (out - share * (large - float(large.mean()))).astype(np.float32)
            low, high = (float(v) for v in np.percentile(out, (0.1, 99.9)))
            out = ((out - low) / max(high - low, 1e-6)).astype(np.float32)
    if config.sharpen[1] > 0:
        amount = _uniform(rng, config.sharpen)
        if amount > 0:
            detail = out - _gaussian(out, _uniform(rng, config.sharpen_radius), per_x, per_y)
            out = (out + amount * detail).astype(np.float32)
    if config.blur[1] > 0:
        sigma = _uniform(rng, config.blur)
        if sigma > 0:
            out = _gaussian(out, sigma, per_x, per_y)
    if config.noise[1] > 0:
        sigma = _uniform(rng, config.noise)
        # drawn on the input's grid and spread over the source pixels each input pixel averages
        rows, cols = out.shape
        grid = (max(1, math.ceil(rows / max(per_y, 1.0))), max(1, math.ceil(cols / max(per_x, 1.0))))
        field = rng.normal(0.0, sigma, grid).astype(np.float32)
        out = out + cv2.resize(field, (cols, rows), interpolation=cv2.INTER_NEAREST)
    return np.clip(out, 0.0, 1.0).astype(np.float32), boxes


@dataclass
class AppearanceSource:
    """The training split's images kept once at ``source_scale`` times the input side, and
    each drawn anew per use: re-rendered (:func:`render`), then preprocessed as inference does.

    Args:
        data_dir: the prepared data folder.
        records: the split's records (a PaliGemma JSONL's or ``boxes.jsonl``'s).
        preprocess: the member's preprocessing.
        config: the ``[appearance]`` table.
        keep: keep each reduced source in memory after its first use (the recipe's
            ``cache_images``); ``False`` reads and reduces it again on every use.
    """

    data_dir: Path
    records: Sequence[dict[str, Any]]
    preprocess: PreprocessConfig
    config: AppearanceConfig
    keep: bool = True

    def __post_init__(self) -> None:
        self._store: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def source(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The kept copy of record ``index`` (float32 ``[0, 1]``) and its boxes in its pixels."""
        if index not in self._store:
            image, boxes = self._reduced(index)
            if not self.keep:
                return image, boxes
            self._store[index] = (image.astype(np.float16), boxes)
        image16, boxes = self._store[index]
        return image16.astype(np.float32), boxes.copy()

    def _reduced(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Record ``index`` read and reduced (float16 precision, as kept), and its boxes."""
        record = self.records[index]
        image = load_image(self.data_dir, record)
        boxes = record_boxes_px(record)
        side = max(1, round(self.config.source_scale * self.preprocess.image_size))
        rows, cols = image.shape
        if max(rows, cols) > side:
            factor = side / max(rows, cols)
            new_h, new_w = max(1, round(rows * factor)), max(1, round(cols * factor))
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
            boxes = boxes * np.array([new_w / cols, new_h / rows] * 2, dtype=np.float64)
        # float16 on every read, so a kept source and a fresh one are the same bytes
        return image.astype(np.float16).astype(np.float32), boxes

    def draw(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Record ``index`` re-rendered: the grey ``S x S`` input square (before normalisation)
        and its boxes, normalised ``(x0, y0, x1, y1)`` in the input frame."""
        image, boxes = self.source(index)
        image, boxes = render(image, boxes, self.config, self.preprocess, rng)
        rows, cols = image.shape
        return to_square(image, self.preprocess), input_boxes(boxes, rows, cols, self.preprocess)
