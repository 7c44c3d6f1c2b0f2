"""Per-member preprocessing: a grey radiograph in ``[0, 1]`` to the tensor layout a member expects.

Steps, in order (each is set by the member's checkpoint, see :class:`PreprocessConfig`):

1. validate: a 2-D, finite float image in ``[0, 1]`` (values within 1e-3 outside are clipped).
2. resize to a square side ``S`` by the project's one convention (``dicom_io.geometry`` maps
   boxes back with the same arithmetic, see :func:`letterbox_geometry`):

   - *squash*: each axis resized to ``S`` independently (PaliGemma's own preprocessing).
   - *letterbox*: ``s = min(S/H, S/W)``, content ``round(H*s) x round(W*s)`` placed at
     ``((S-new_h)//2, (S-new_w)//2)``; the padding is 0 (black) before normalisation.

   ``cv2.INTER_AREA`` when an axis shrinks (anti-aliasing), ``cv2.INTER_LINEAR`` otherwise.
3. optional CLAHE (explicit opt-in, with a warning: the paper saw it collapse a PaliGemma model
   to always answering "Normal", F1 0), on the 8-bit image with clip limit 2 and 8x8 tiles.
4. optional Canny blend: ``(1 - a) * image + a * edges`` with edges in ``{0, 1}`` from
   ``cv2.Canny`` on the 8-bit image (the paper used ``a = 0.3``).
5. grey to three channels, then ``(x - mean) / std`` per channel, giving float32 ``(3, S, S)``.

CLAHE and Canny act on the resized content *before* letterbox padding, so the padding border
does not become a Canny edge or a CLAHE tile. CLAHE comes before Canny so edges are found in the
image the model sees, not enhanced after the fact.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ensembles.checkpoint import MemberSpec
from ensembles.errors import EnsembleError
from ensembles.types import Box, ResizeMode

RANGE_TOLERANCE = 1e-3
"""How far outside ``[0, 1]`` an input pixel may lie (rounding in the pixel pipeline) before it
is refused; values within it are clipped."""

CANNY_LOW = 50
CANNY_HIGH = 150
"""Hysteresis thresholds of ``cv2.Canny`` on the 8-bit image; override per checkpoint with
``options["canny_low"]`` / ``options["canny_high"]``."""

CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = 8

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""ImageNet's per-channel mean and standard deviation: DETR's own normalisation, recorded in a
DETR member's ``member.json`` by the recipe and by the demo architecture."""

CLAHE_WARNING = (
    "CLAHE preprocessing is enabled; the paper saw CLAHE collapse a fine-tuned PaliGemma model "
    "to always answering 'Normal' (F1 0). Use it only for a member trained with it."
)


class PreprocessError(EnsembleError, ValueError):
    """An image or preprocessing setting is invalid (also a ``ValueError`` for callers)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How one member turns a radiograph into its input tensor.

    Attributes:
        image_size: side ``S`` of the square model input.
        resize: :class:`~ensembles.types.ResizeMode` (``"squash"`` or ``"letterbox"``).
        mean: per-channel mean subtracted after the grey image is copied to three channels.
        std: per-channel std divided by (all > 0).
        canny_blend: weight ``a`` of Canny edges in ``(1 - a) * image + a * edges``; 0 = off.
        clahe: apply CLAHE (warns on construction; see the module docstring).
        canny_low: lower hysteresis threshold of ``cv2.Canny`` (8-bit scale).
        canny_high: upper hysteresis threshold of ``cv2.Canny`` (8-bit scale).
    """

    image_size: int
    resize: ResizeMode = ResizeMode.SQUASH
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    canny_blend: float = 0.0
    clahe: bool = False
    canny_low: int = CANNY_LOW
    canny_high: int = CANNY_HIGH

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int):
            raise PreprocessError(f"image_size must be an integer, got {self.image_size!r}")
        if self.image_size < 1:
            raise PreprocessError(f"image_size must be >= 1, got {self.image_size}")
        if self.resize not in tuple(ResizeMode):
            raise PreprocessError(
                f"resize must be one of {', '.join(ResizeMode)}, got {self.resize!r}"
            )
        object.__setattr__(self, "resize", ResizeMode(self.resize))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in value
            ):
                raise PreprocessError(f"{name} must be three finite numbers, got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if any(v <= 0 for v in self.std):
            raise PreprocessError(f"std must be > 0 per channel, got {self.std!r}")
        if not 0.0 <= float(self.canny_blend) <= 1.0:
            raise PreprocessError(f"canny_blend must be in [0, 1], got {self.canny_blend!r}")
        if not 0 <= self.canny_low <= self.canny_high:
            raise PreprocessError(
                f"Canny thresholds must satisfy 0 <= canny_low <= canny_high, got "
                f"{self.canny_low!r}, {self.canny_high!r}"
            )
        if self.clahe:
            warnings.warn(CLAHE_WARNING, UserWarning, stacklevel=3)

    @classmethod
    def from_spec(cls, spec: MemberSpec) -> "PreprocessConfig":
        """The preprocessing a checkpoint's ``member.json`` asks for."""
        return cls(
            image_size=spec.image_size,
            resize=spec.resize,
            mean=spec.mean,
            std=spec.std,
            canny_blend=spec.canny_blend,
            clahe=spec.clahe,
            canny_low=int(spec.options.get("canny_low", CANNY_LOW)),
            canny_high=int(spec.options.get("canny_high", CANNY_HIGH)),
        )


@dataclass(frozen=True)
class LetterboxGeometry:
    """Where the resized content sits inside the square input (squash: the whole square)."""

    new_h: int
    new_w: int
    pad_top: int
    pad_left: int


def letterbox_geometry(height: int, width: int, size: int) -> LetterboxGeometry:
    """The project's letterbox arithmetic for an ``height x width`` image into ``size``.

    ``s = min(size/height, size/width)``; ``new_h = round(height*s)``, ``new_w =
    round(width*s)`` (Python's ``round``, clamped to ``1..size``); the content is centred with
    ``pad_top = (size-new_h)//2`` and ``pad_left = (size-new_w)//2``.
    """
    if height < 1 or width < 1 or size < 1:
        raise PreprocessError(
            f"letterbox needs positive sizes, got height={height}, width={width}, size={size}"
        )
    scale = min(size / height, size / width)
    new_h = min(size, max(1, round(height * scale)))
    new_w = min(size, max(1, round(width * scale)))
    return LetterboxGeometry(new_h, new_w, (size - new_h) // 2, (size - new_w) // 2)


def _resize(image: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    height, width = image.shape
    if (height, width) == (new_h, new_w):
        return image.copy()
    shrinking = new_h < height or new_w < width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _apply_clahe(image: np.ndarray) -> np.ndarray:
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=(CLAHE_TILES, CLAHE_TILES))
    return clahe.apply(_to_uint8(image)).astype(np.float32) / 255.0


def _apply_canny_blend(image: np.ndarray, weight: float, low: int, high: int) -> np.ndarray:
    edges = cv2.Canny(_to_uint8(image), low, high).astype(np.float32) / 255.0
    return ((1.0 - weight) * image + weight * edges).astype(np.float32)


def validate_image(image: np.ndarray) -> np.ndarray:
    """Check a radiograph array and return it as contiguous float32 clipped to ``[0, 1]``.

    Raises:
        PreprocessError: not a non-empty 2-D numeric array, non-finite values, or values
            outside ``[0, 1]`` by more than :data:`RANGE_TOLERANCE`.
    """
    if not isinstance(image, np.ndarray):
        raise PreprocessError(
            f"image must be a numpy array (float32 H x W in [0, 1]), got {type(image).__name__}"
        )
    if image.ndim != 2 or image.shape[0] < 1 or image.shape[1] < 1:
        raise PreprocessError(
            f"image must be a grey H x W array, got shape {image.shape}; select one frame and "
            "one channel first"
        )
    if not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)
            or image.dtype == np.bool_):
        raise PreprocessError(f"image must be numeric, got dtype {image.dtype}")
    data = np.ascontiguousarray(image, dtype=np.float32)
    if not np.isfinite(data).all():
        raise PreprocessError("image contains NaN or infinite values")
    low, high = float(data.min()), float(data.max())
    if low < -RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        raise PreprocessError(
            f"image values must be in [0, 1], got min {low:.4g} and max {high:.4g}; "
            "scale the pixel data to [0, 1] (the dicom_io pixel pipeline does)"
        )
    return np.clip(data, 0.0, 1.0)


def to_square(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Steps 1 to 4: the resized, optionally enhanced grey ``S x S`` float32 image in ``[0, 1]``."""
    data = validate_image(image)
    size = cfg.image_size
    if cfg.resize == ResizeMode.SQUASH:
        geometry = LetterboxGeometry(size, size, 0, 0)
    else:
        geometry = letterbox_geometry(data.shape[0], data.shape[1], size)
    content = _resize(data, geometry.new_h, geometry.new_w)
    if cfg.clahe:
        content = _apply_clahe(content)
    if cfg.canny_blend > 0:
        content = _apply_canny_blend(content, cfg.canny_blend, cfg.canny_low, cfg.canny_high)
    if (geometry.new_h, geometry.new_w) == (size, size):
        return np.clip(content, 0.0, 1.0).astype(np.float32, copy=False)
    canvas = np.zeros((size, size), dtype=np.float32)
    top, left = geometry.pad_top, geometry.pad_left
    canvas[top : top + geometry.new_h, left : left + geometry.new_w] = np.clip(content, 0, 1)
    return canvas


def preprocess_image(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """A float32 ``H x W`` radiograph in ``[0, 1]`` to a normalised float32 ``(3, S, S)`` array."""
    return normalise_square(to_square(image, cfg), cfg)


def normalise_square(grey: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Step 5: a grey ``S x S`` square from :func:`to_square` to normalised ``(3, S, S)``."""
    mean = np.asarray(cfg.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(cfg.std, dtype=np.float32).reshape(3, 1, 1)
    return ((grey[None, :, :] - mean) / std).astype(np.float32, copy=False)


def preprocess_batch(images: Sequence[np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    """Preprocess each image; returns ``(N, 3, S, S)`` float32 (``N`` may be 0)."""
    size = cfg.image_size
    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    for index, image in enumerate(images):
        try:
            out[index] = preprocess_image(image, cfg)
        except PreprocessError as exc:
            raise PreprocessError(f"image {index} of the batch: {exc}") from None
    return out


def letterbox_box_to_image(box: Box, height: int, width: int, size: int) -> Box | None:
    """Map a Box from a letterboxed ``size`` input to the normalised frame of the whole image.

    Boxes of members with different resize modes must share one frame before they are fused;
    the squash frame (normalised image coordinates) is that frame, since a squash member's Box
    already is one. Returns ``None`` when the box lies entirely in the padding.
    """
    g = letterbox_geometry(height, width, size)
    x0 = min(1.0, max(0.0, (box.x0 * size - g.pad_left) / g.new_w))
    x1 = min(1.0, max(0.0, (box.x1 * size - g.pad_left) / g.new_w))
    y0 = min(1.0, max(0.0, (box.y0 * size - g.pad_top) / g.new_h))
    y1 = min(1.0, max(0.0, (box.y1 * size - g.pad_top) / g.new_h))
    if not (x0 < x1 and y0 < y1):
        return None
    return Box(x0, y0, x1, y1)


def image_box_to_letterbox(box: Box, height: int, width: int, size: int) -> Box:
    """The inverse of :func:`letterbox_box_to_image`: a Box normalised to the whole image,
    placed in the letterboxed ``size`` input's frame (it lies inside the content area)."""
    g = letterbox_geometry(height, width, size)
    return Box((g.pad_left + box.x0 * g.new_w) / size, (g.pad_top + box.y0 * g.new_h) / size,
               (g.pad_left + box.x1 * g.new_w) / size, (g.pad_top + box.y1 * g.new_h) / size)
