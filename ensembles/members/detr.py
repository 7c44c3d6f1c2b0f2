"""The ``detr`` member: a transformers ``DetrForObjectDetection`` (timm backbone) from a checkpoint.

Per image: preprocess as the checkpoint says (:mod:`ensembles.preprocess`, letterbox for the
tiny factory's checkpoints), one forward, then the equivalent of transformers'
``post_process_object_detection``: softmax over the classes plus DETR's "no object", the box
score is the best real class's probability, boxes go from ``(cx, cy, w, h)`` normalised to the
Box convention ``(x0, y0, x1, y1)`` of the square model input, clipped to the image content
(the letterbox content area, or the whole input for squash); boxes that are empty after
clipping (e.g. wholly in the letterbox padding) or not finite are dropped and counted. Boxes
scoring at least ``box_floor`` are kept, best first, at most ``top_k``. The image score is the
best kept box's score (0 when none), so a study threshold on it means "some box at least this
confident".

No ``pixel_mask`` is passed (DETR then attends to the whole input, as in training with the same
preprocessing): boxes are normalised to the whole square input, padding included, which is the
Box convention ``dicom_io.geometry`` undoes.

Memory: DETR-ResNet-50 holds about 41 M parameters (about 0.17 GB in float32, 0.08 GB in
bf16); activations come on top and grow with batch and input size (``bench/gpu_members.py``
measures the peak per batch size). It is never quantised.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ensembles.batching import AdaptiveBatches
from ensembles.checkpoint import MemberSpec, read_member_spec
from ensembles.errors import CheckpointError, EnsembleError
from ensembles.preprocess import PreprocessConfig, letterbox_geometry, preprocess_batch
from ensembles.registry import MemberOptions, register_member
from ensembles.types import Box, Detection, MemberKind, MemberOutput, ResizeMode

if TYPE_CHECKING:
    import torch
    from transformers import DetrForObjectDetection

KIND: str = MemberKind.DETR.value
DEFAULT_BOX_FLOOR = 0.05
DEFAULT_TOP_K = 20


def resolve_device_dtype(device: str, dtype: str | None) -> tuple["torch.device", "torch.dtype"]:
    """The project's device/dtype policy (:mod:`ensembles.quant`): bf16 on CUDA, float32 on CPU.

    Raises:
        MemberUnavailableError: CUDA was asked for but is not available here.
        EnsembleError: the device or dtype name is not understood.
    """
    from ensembles.quant import resolve_device, resolve_dtype

    torch_device = resolve_device(device)
    return torch_device, resolve_dtype(torch_device, dtype)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def decode_detr_outputs(
    logits: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[str],
    *,
    box_floor: float = DEFAULT_BOX_FLOOR,
    top_k: int = DEFAULT_TOP_K,
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
) -> tuple[list[Detection], int]:
    """One image's DETR outputs to detections in the Box convention.

    Args:
        logits: ``(Q, C + 1)`` class logits; the last column is DETR's "no object".
        boxes: ``(Q, 4)`` predicted ``(cx, cy, w, h)`` normalised to the model input.
        labels: the ``C`` class names.
        box_floor: keep boxes scoring at least this.
        top_k: keep at most this many boxes (best first).
        region: ``(x0, y0, x1, y1)`` of the input that holds image content (the letterbox
            content area; the whole input for squash): boxes are clipped to it.

    Returns:
        The kept detections, best first (ties by query order), and how many boxes were dropped
        as invalid (not finite, or empty after clipping to ``region``).
    """
    logits = np.asarray(logits, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != len(labels) + 1:
        raise EnsembleError(
            f"DETR logits must be (queries, {len(labels) + 1}) for labels {tuple(labels)}, "
            f"got shape {logits.shape}"
        )
    if boxes.shape != (logits.shape[0], 4):
        raise EnsembleError(f"DETR boxes must be ({logits.shape[0]}, 4), got {boxes.shape}")
    probs = _softmax(logits)[:, :-1]
    classes = probs.argmax(axis=1)
    scores = probs.max(axis=1)
    cx, cy, w, h = boxes.T
    low = np.array(region[:2] * 2, dtype=np.float64)
    high = np.array(region[2:] * 2, dtype=np.float64)
    corners = np.clip(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1), low, high)
    valid = (
        np.isfinite(boxes).all(axis=1)
        & np.isfinite(scores)
        & (corners[:, 2] > corners[:, 0])
        & (corners[:, 3] > corners[:, 1])
    )
    dropped = int((~valid).sum())
    keep = np.flatnonzero(valid & (scores >= box_floor))
    order = keep[np.argsort(-scores[keep], kind="stable")][:top_k]
    detections = [
        Detection(
            box=Box(*(float(v) for v in corners[i])),
            label=labels[int(classes[i])],
            score=float(min(1.0, max(0.0, scores[i]))),
        )
        for i in order
    ]
    return detections, dropped


class DetrMember:
    """A DETR detector as an ensemble member (plain constructor: already-built objects).

    Args:
        model: a ``DetrForObjectDetection`` whose classes are ``spec.labels``.
        spec: the checkpoint's member spec (kind ``detr``): input size, resize, normalisation.
        device: torch device to run on (the model is moved there).
        dtype: ``None`` for the policy (bf16 on CUDA, float32 on CPU), or a dtype name.
        batch_size: images per forward.
        box_floor: keep boxes scoring at least this (default: ``spec.options`` or 0.05).
        top_k: at most this many boxes per image (default: ``spec.options`` or 20).
    """

    kind: str = KIND

    def __init__(
        self,
        model: "DetrForObjectDetection",
        spec: MemberSpec,
        *,
        device: str = "cpu",
        dtype: str | None = None,
        batch_size: int = 8,
        box_floor: float | None = None,
        top_k: int | None = None,
    ) -> None:
        if spec.kind != KIND:
            raise CheckpointError(f"DetrMember needs a spec of kind {KIND!r}, got {spec.kind!r}")
        num_labels = len(dict(model.config.id2label or {}))
        if num_labels != len(spec.labels):
            raise CheckpointError(
                f"DETR model has {num_labels} classes but member.json lists labels "
                f"{spec.labels}; make 'labels' match the model's classes"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EnsembleError(f"batch_size must be a positive integer, got {batch_size!r}")
        floor = spec.options.get("box_floor", DEFAULT_BOX_FLOOR) if box_floor is None else box_floor
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor <= 1:
            raise EnsembleError(f"box_floor must be a number in [0, 1], got {floor!r}")
        k = spec.options.get("top_k", DEFAULT_TOP_K) if top_k is None else top_k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise EnsembleError(f"top_k must be a positive integer, got {k!r}")
        self.spec = spec
        self.name = spec.name
        self.batch_size = batch_size
        self.batches = AdaptiveBatches(batch_size)
        self.box_floor = float(floor)
        self.top_k = k
        self.preprocess = PreprocessConfig.from_spec(spec)
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        module: Any = model  # transformers' decorated .to() confuses mypy
        self.model: Any = module.to(device=self.device, dtype=self.dtype).eval()

    def predict(self, images: Sequence[np.ndarray]) -> list[MemberOutput]:
        """Score and box each radiograph (float32 ``H x W`` in ``[0, 1]``), in order."""
        import torch

        def step(chunk: Sequence[np.ndarray]) -> list[MemberOutput]:
            batch = preprocess_batch(chunk, self.preprocess)
            pixels = torch.from_numpy(batch).to(device=self.device, dtype=self.dtype)
            result = self.model(pixel_values=pixels)
            logits = result.logits.float().cpu().numpy()
            boxes = result.pred_boxes.float().cpu().numpy()
            return [self._output(logits[index], boxes[index], self.content_region(image.shape[0], image.shape[1]))
                    for index, image in enumerate(chunk)]

        with torch.inference_mode():  # out of device memory: the batch halves (ensembles.batching)
            return self.batches.run(images, step, owner=self.name)

    def content_region(self, height: int, width: int) -> tuple[float, float, float, float]:
        """Where an ``height x width`` image's content lies in the square input (normalised).

        Letterbox padding holds no anatomy, so boxes are clipped to the content; squash fills
        the whole input.
        """
        if self.preprocess.resize != ResizeMode.LETTERBOX:
            return (0.0, 0.0, 1.0, 1.0)
        size = self.preprocess.image_size
        geometry = letterbox_geometry(height, width, size)
        return (
            geometry.pad_left / size,
            geometry.pad_top / size,
            (geometry.pad_left + geometry.new_w) / size,
            (geometry.pad_top + geometry.new_h) / size,
        )

    def _output(
        self, logits: np.ndarray, boxes: np.ndarray, region: tuple[float, float, float, float]
    ) -> MemberOutput:
        detections, dropped = decode_detr_outputs(
            logits,
            boxes,
            self.spec.labels,
            box_floor=self.box_floor,
            top_k=self.top_k,
            region=region,
        )
        score = max((d.score for d in detections), default=0.0)
        return MemberOutput(
            member=self.name,
            score=score,
            detections=detections,
            extras={"dropped_boxes": dropped, "queries": int(logits.shape[0])},
        )


class DetrOptions(MemberOptions):
    """The options of a ``detr`` member (see :class:`~ensembles.registry.MemberOptions`;
    ``quantization`` must stay unset: DETR is small and always runs unquantised).

    Attributes:
        box_floor: keep boxes scoring at least this (overrides ``member.json``'s options).
        top_k: at most this many boxes per image (overrides ``member.json``'s options).
    """

    box_floor: float | None = None
    top_k: int | None = None


# requirements and description: ensembles.registry.BUILTIN_KINDS
@register_member(KIND, options=DetrOptions)
def from_checkpoint(checkpoint_dir: Path, options: DetrOptions) -> DetrMember:
    """Load a ``detr`` member from a local ``save_pretrained`` directory with ``member.json``.

    Args:
        checkpoint_dir: the checkpoint directory (never a hub id).
        options: device, dtype (``None`` for the policy: bf16 on CUDA, float32 on CPU), batch
            size, and ``box_floor``/``top_k`` overriding ``member.json``'s options.

    Raises:
        CheckpointError: the directory, ``member.json`` or weights are missing or invalid.
        EnsembleError: a quantisation was asked for.
    """
    from transformers import DetrForObjectDetection

    quantization = options.quantization
    if quantization is not None:
        raise EnsembleError(
            f"detr does not support quantization={quantization!r}: it is small (about 41 M "
            "parameters for ResNet-50); leave quantization unset for this member"
        )
    directory = Path(checkpoint_dir)
    spec = read_member_spec(directory)
    if spec.kind != KIND:
        raise CheckpointError(
            f"checkpoint {str(directory)!r} is of kind {spec.kind!r}, not {KIND!r}; "
            f"load it with create_member({spec.kind!r}, ...)"
        )
    from ensembles.member_check.detr import check_detr

    check_detr(directory, spec).raise_for_problems()  # files, classes, shapes: before loading
    torch_device, torch_dtype = resolve_device_dtype(options.device, options.dtype)
    try:
        model = DetrForObjectDetection.from_pretrained(
            directory, local_files_only=True, use_safetensors=True, dtype=torch_dtype
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load DETR weights from {str(directory)!r}: {exc}") from None
    dtype_name = str(torch_dtype).removeprefix("torch.")
    return DetrMember(
        model,
        spec,
        device=str(torch_device),
        dtype=dtype_name,
        batch_size=options.batch_size,
        box_floor=options.box_floor,
        top_k=options.top_k,
    )
