"""The optional second stage: a small timm regressor that corrects a proposed box's corners.

Why: the PaliGemma detector's loc tokens localise coarsely (1/1024 bins at best, and a model
trained briefly lands near a constant guess). A crop around each proposed box, seen at a fixed
resolution, lets a small CNN nudge the corners.

How a box is refined (all arithmetic here, so training and serving share it):

1. The *crop window*: the box in pixels of ``image``, grown on each side by ``pad_ratio`` times
   the box's width (left/right) and height (top/bottom), rounded outwards to whole pixels
   (:func:`crop_window`). The window may reach past the image: that part of the crop is 0
   (black), so the box always sits at the same relative place in the crop, even at a border.
2. The crop is resized to ``crop_size`` squared by squash with the project's resize rule
   (``cv2.INTER_AREA`` when shrinking, ``INTER_LINEAR`` when enlarging, via
   :func:`ensembles.preprocess.to_square`), normalised with the checkpoint's mean/std
   (channel 0 for a one-channel model).
3. The model outputs four numbers; ``max_delta * tanh(output)`` are corrections
   ``(dx0, dy0, dx1, dy1)`` in units of the window's width (x) and height (y), added to the
   box's corners; the result is clipped to ``[0, 1]``. A correction that would leave an empty
   box keeps the proposed box instead, so the output is always a valid Box.

Boxes must be normalised to ``image`` itself. A squash member's boxes are (squash keeps
normalised coordinates), so the PaliGemma detector's boxes can be refined on the source
radiograph; a letterbox member's boxes must be mapped to the source image first.

Registry: kind ``refiner`` is a *stage*, not a screener member. :meth:`Refiner.predict` raises
an :class:`EnsembleError` pointing to :meth:`Refiner.refine`; the screener applies it to a
detector's boxes when the site config names one.

Checkpoint: ``model.safetensors`` (the timm model's ``state_dict``, written with
``safetensors.torch.save_file``) plus ``member.json`` (kind ``refiner``, ``image_size`` = crop
side, options ``architecture``, ``in_chans``, ``pad_ratio``, ``max_delta``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ensembles.checkpoint import MemberSpec, read_member_spec, write_member_spec
from ensembles.errors import CheckpointError, EnsembleError
from ensembles.members.detr import resolve_device_dtype
from ensembles.preprocess import PreprocessConfig, preprocess_image, validate_image
from ensembles.registry import MemberOptions, register_member
from ensembles.types import Box, Detection, MemberKind, MemberOutput, ResizeMode

if TYPE_CHECKING:
    import torch

KIND: str = MemberKind.REFINER.value
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class RefinerConfig:
    """Architecture and crop geometry of a refiner.

    Attributes:
        architecture: timm model name (built with ``pretrained=False, num_classes=4``).
        crop_size: side of the square crop the model sees.
        in_chans: 1 (grey) or 3 (grey copied to three channels).
        pad_ratio: context added on each side, as a fraction of the box's width/height.
        max_delta: largest correction per corner, as a fraction of the crop window's side.
        mean: per-channel normalisation mean (channel 0 only when ``in_chans == 1``).
        std: per-channel normalisation std.
    """

    architecture: str = "resnet18"
    crop_size: int = 96
    in_chans: int = 1
    pad_ratio: float = 0.25
    max_delta: float = 0.25
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, str) or not self.architecture:
            raise EnsembleError(
                f"refiner architecture must be a timm model name such as 'resnet18', "
                f"got {self.architecture!r}"
            )
        if isinstance(self.crop_size, bool) or not isinstance(self.crop_size, int) or not (
            16 <= self.crop_size <= 1024
        ):
            raise EnsembleError(
                f"refiner crop_size must be an integer in 16..1024 (e.g. 64, 96, 128), "
                f"got {self.crop_size!r}"
            )
        if self.in_chans not in (1, 3):
            raise EnsembleError(f"refiner in_chans must be 1 or 3, got {self.in_chans!r}")
        if not (isinstance(self.pad_ratio, (int, float)) and 0 <= self.pad_ratio <= 4):
            raise EnsembleError(
                f"refiner pad_ratio must be a number in [0, 4] (0.25 adds a quarter of the box "
                f"on each side), got {self.pad_ratio!r}"
            )
        if not (isinstance(self.max_delta, (int, float)) and 0 < self.max_delta <= 1):
            raise EnsembleError(
                f"refiner max_delta must be a number in (0, 1], got {self.max_delta!r}"
            )

    @classmethod
    def from_spec(cls, spec: MemberSpec) -> "RefinerConfig":
        """The refiner settings a ``member.json`` of kind ``refiner`` holds."""
        options = spec.options
        try:
            return cls(
                architecture=options["architecture"],
                crop_size=spec.image_size,
                in_chans=int(options.get("in_chans", 1)),
                pad_ratio=float(options.get("pad_ratio", 0.25)),
                max_delta=float(options.get("max_delta", 0.25)),
                mean=spec.mean,
                std=spec.std,
            )
        except KeyError:
            raise CheckpointError(
                "refiner member.json needs options.architecture (a timm model name)"
            ) from None
        except EnsembleError as exc:
            raise CheckpointError(f"invalid refiner member.json: {exc}") from None

    def to_spec(self, name: str) -> MemberSpec:
        """The ``member.json`` content for this configuration."""
        return MemberSpec(
            kind=KIND,
            name=name,
            image_size=self.crop_size,
            resize=ResizeMode.SQUASH,
            mean=self.mean,
            std=self.std,
            options={
                "architecture": self.architecture,
                "in_chans": self.in_chans,
                "pad_ratio": float(self.pad_ratio),
                "max_delta": float(self.max_delta),
            },
        )


@dataclass(frozen=True)
class CropWindow:
    """A crop window in whole pixels of the image (may extend past its borders)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


def crop_window(box: Box, height: int, width: int, pad_ratio: float) -> CropWindow:
    """The padded window around ``box`` in pixels of an ``height x width`` image.

    The box grows by ``pad_ratio`` of its width (height) on the left and right (top and
    bottom), then the window is rounded outwards to whole pixels; it is at least 1 px wide.
    """
    x0, x1 = box.x0 * width, box.x1 * width
    y0, y1 = box.y0 * height, box.y1 * height
    pad_x, pad_y = pad_ratio * (x1 - x0), pad_ratio * (y1 - y0)
    left, right = math.floor(x0 - pad_x), math.ceil(x1 + pad_x)
    top, bottom = math.floor(y0 - pad_y), math.ceil(y1 + pad_y)
    return CropWindow(left, top, max(right, left + 1), max(bottom, top + 1))


def extract_crop(image: np.ndarray, window: CropWindow) -> np.ndarray:
    """The pixels of ``window`` from a 2-D ``image``, 0 where the window is outside it."""
    height, width = image.shape
    crop = np.zeros((window.height, window.width), dtype=np.float32)
    src_x0, src_x1 = max(window.left, 0), min(window.right, width)
    src_y0, src_y1 = max(window.top, 0), min(window.bottom, height)
    if src_x1 > src_x0 and src_y1 > src_y0:
        crop[
            src_y0 - window.top : src_y1 - window.top, src_x0 - window.left : src_x1 - window.left
        ] = image[src_y0:src_y1, src_x0:src_x1]
    return crop


def apply_corrections(
    box: Box, window: CropWindow, deltas: Sequence[float], height: int, width: int
) -> Box | None:
    """Move ``box``'s corners by ``deltas`` (``dx0, dy0, dx1, dy1`` in window units).

    Returns:
        The corrected box clipped to ``[0, 1]``, or ``None`` when it would be empty.
    """
    dx0, dy0, dx1, dy1 = (float(d) for d in deltas)
    scale_x, scale_y = window.width / width, window.height / height
    x0 = min(1.0, max(0.0, box.x0 + dx0 * scale_x))
    y0 = min(1.0, max(0.0, box.y0 + dy0 * scale_y))
    x1 = min(1.0, max(0.0, box.x1 + dx1 * scale_x))
    y1 = min(1.0, max(0.0, box.y1 + dy1 * scale_y))
    if not (x0 < x1 and y0 < y1) or not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None
    return Box(x0, y0, x1, y1)


def build_refiner_model(
    config: RefinerConfig, *, seed: int | None = 0, zero_head: bool = False
) -> "torch.nn.Module":
    """A random-init timm regressor with four outputs (never fetches pretrained weights).

    Args:
        config: architecture and input channels.
        seed: torch seed for the initialisation (global RNG untouched); ``None``: current RNG.
        zero_head: zero the final layer, so every correction is exactly 0 (identity refiner;
            also a sensible start for training).
    """
    import timm
    import torch

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model: Any = timm.create_model(
                config.architecture, pretrained=False, num_classes=4, in_chans=config.in_chans
            )
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise EnsembleError(f"refiner architecture {config.architecture!r}: {exc}") from None
    if zero_head:
        head = model.get_classifier()
        with torch.no_grad():
            for parameter in head.parameters():
                parameter.zero_()
    return model.eval()


def save_refiner(
    checkpoint_dir: Path, model: "torch.nn.Module", config: RefinerConfig, *, name: str
) -> Path:
    """Write ``model.safetensors`` and ``member.json`` into ``checkpoint_dir``; returns it."""
    from safetensors.torch import save_file

    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "kind": KIND})
    write_member_spec(directory, config.to_spec(name))
    return directory


class Refiner:
    """Corrects proposed boxes with a crop regressor (plain constructor: built objects).

    Args:
        model: a torch module mapping ``(N, in_chans, S, S)`` crops to ``(N, 4)`` raw outputs.
        config: crop geometry and normalisation.
        name: display name.
        device: torch device.
        dtype: ``None`` for the policy (bf16 on CUDA, float32 on CPU) or a dtype name.
        batch_size: crops per forward.
    """

    kind: str = KIND

    def __init__(
        self,
        model: "torch.nn.Module",
        config: RefinerConfig,
        *,
        name: str = "refiner",
        device: str = "cpu",
        dtype: str | None = None,
        batch_size: int = 32,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EnsembleError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.config = config
        self.name = name
        self.batch_size = batch_size
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        self.model: Any = model.to(device=self.device, dtype=self.dtype).eval()
        self._preprocess = PreprocessConfig(
            image_size=config.crop_size, resize=ResizeMode.SQUASH, mean=config.mean, std=config.std
        )

    def predict(self, images: Sequence[np.ndarray]) -> list[MemberOutput]:
        """Not available: a refiner is a second stage, not a screener member."""
        raise EnsembleError(
            f"{self.name!r} is a refiner (a second stage), not a screener member: call "
            "refine(image, detections) on a detector's boxes instead of predict(images)"
        )

    def crop_inputs(
        self, image: np.ndarray, boxes: Sequence[Box]
    ) -> tuple[np.ndarray, list[CropWindow]]:
        """The model inputs ``(N, in_chans, S, S)`` for ``boxes`` and their crop windows."""
        data = validate_image(image)
        height, width = data.shape
        size = self.config.crop_size
        inputs = np.empty((len(boxes), self.config.in_chans, size, size), dtype=np.float32)
        windows: list[CropWindow] = []
        for index, box in enumerate(boxes):
            window = crop_window(box, height, width, self.config.pad_ratio)
            crop = preprocess_image(extract_crop(data, window), self._preprocess)
            inputs[index] = crop[: self.config.in_chans]
            windows.append(window)
        return inputs, windows

    def corrections(self, image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """``(N, 4)`` corrections ``(dx0, dy0, dx1, dy1)`` in window units for ``boxes``."""
        inputs, _ = self.crop_inputs(image, boxes)
        return self._run(inputs)

    def _run(self, inputs: np.ndarray) -> np.ndarray:
        import torch

        out = np.zeros((len(inputs), 4), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(inputs), self.batch_size):
                chunk = torch.from_numpy(inputs[start : start + self.batch_size])
                raw = self.model(chunk.to(device=self.device, dtype=self.dtype)).float()
                if tuple(raw.shape) != (len(chunk), 4):
                    raise EnsembleError(
                        f"refiner model must output 4 values per crop, got shape {tuple(raw.shape)}"
                    )
                deltas = self.config.max_delta * torch.tanh(raw)
                out[start : start + len(chunk)] = deltas.cpu().numpy()
        return out

    def refine(self, image: np.ndarray, detections: Sequence[Detection]) -> list[Detection]:
        """Corrected copies of ``detections`` (same order, scores and labels).

        Args:
            image: float32 ``H x W`` in ``[0, 1]``; the boxes must be normalised to it.
            detections: proposed boxes.

        Returns:
            One detection per input; a correction that would empty a box keeps the proposal.
        """
        if not detections:
            return []
        inputs, windows = self.crop_inputs(image, [d.box for d in detections])
        deltas = self._run(inputs)
        height, width = image.shape
        refined: list[Detection] = []
        for detection, window, delta in zip(detections, windows, deltas):
            box = apply_corrections(detection.box, window, delta, height, width)
            refined.append(dataclasses.replace(detection, box=box or detection.box))
        return refined


def load_refiner_model(checkpoint_dir: Path, config: RefinerConfig) -> "torch.nn.Module":
    """Build ``config``'s architecture and load ``model.safetensors`` into it (strict)."""
    from safetensors.torch import load_file

    path = Path(checkpoint_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(
            f"refiner checkpoint {str(checkpoint_dir)!r} has no {WEIGHTS_FILE}; write it with "
            "ensembles.members.refiner.save_refiner"
        )
    model = build_refiner_model(config, seed=None)
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{str(path)!r} does not fit architecture {config.architecture!r} with "
            f"in_chans={config.in_chans}: {exc}"
        ) from None
    return model.eval()


class RefinerOptions(MemberOptions):
    """The options of a ``refiner`` (see :class:`~ensembles.registry.MemberOptions`): the
    common ones only, 32 crops per forward by default; its crop geometry lives in
    ``member.json``, and ``quantization`` must stay unset."""

    batch_size: int = 32


# requirements and description: ensembles.registry.BUILTIN_KINDS
@register_member(KIND, options=RefinerOptions)
def from_checkpoint(checkpoint_dir: Path, options: RefinerOptions) -> Refiner:
    """Load a refiner from ``model.safetensors`` + ``member.json`` (kind ``refiner``).

    Raises:
        CheckpointError: missing/invalid files, or weights that do not fit the architecture.
        EnsembleError: a quantisation was asked for.
    """
    quantization = options.quantization
    if quantization is not None:
        raise EnsembleError(
            f"refiner does not support quantization={quantization!r}; leave it unset"
        )
    directory = Path(checkpoint_dir)
    spec = read_member_spec(directory)
    if spec.kind != KIND:
        raise CheckpointError(
            f"checkpoint {str(directory)!r} is of kind {spec.kind!r}, not {KIND!r}"
        )
    config = RefinerConfig.from_spec(spec)
    model = load_refiner_model(directory, config)
    return Refiner(
        model, config, name=spec.name, device=options.device, dtype=options.dtype,
        batch_size=options.batch_size,
    )
