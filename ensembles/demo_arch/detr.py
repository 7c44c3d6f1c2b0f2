"""Tiny random-init DETR and refiner checkpoints, built offline, for tests, benches and demos.

These are real checkpoints of the same architectures the screener runs (a transformers
``DetrForObjectDetection`` with a timm backbone; a timm regressor for the refiner), only small
and untrained. They are written the way a trained member is (``save_pretrained`` /
safetensors plus ``member.json``), so tests exercise the same loading code as production.

Offline by construction: the timm backbone is built with ``use_pretrained_backbone=False`` and
the refiner with ``pretrained=False``, so nothing is downloaded (a pretrained timm model would
retry a hub for about 46 s before failing here). With a timm backbone transformers swaps every
``BatchNorm2d`` for a frozen one (``DetrFrozenBatchNorm2d``): irrelevant at inference, but a
recipe that trains from scratch must put trainable BatchNorm back (see docs/stack-notes.md).

Geometry of the tiny DETR checkpoint: ``resize="letterbox"`` (keeps the aspect ratio, as
DETR's own processor does), ImageNet mean/std (DETR's own normalisation); its boxes are
normalised to the whole square letterboxed input, padding included (no ``pixel_mask``), and
``dicom_io.geometry`` undoes the letterbox.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ensembles.detr_arch import DetrArchitecture, build_detr, save_detr_checkpoint
from ensembles.types import ResizeMode

if TYPE_CHECKING:
    from transformers import DetrForObjectDetection


def build_tiny_detr(
    backbone: str = "resnet18",
    *,
    labels: Sequence[str] = ("fracture",),
    num_queries: int = 16,
    d_model: int = 64,
    layers: int = 1,
    seed: int | None = 0,
) -> "DetrForObjectDetection":
    """A tiny random-init DETR (:func:`ensembles.detr_arch.build_detr`, in eval mode): timm
    ``backbone``, ``layers`` encoder and decoder layers, two attention heads.

    About 11 M parameters with resnet18 (almost all in the backbone); a forward at 128 px takes
    tens of milliseconds on one CPU core.
    """
    arch = DetrArchitecture(backbone=backbone, labels=tuple(labels), num_queries=num_queries,
                            d_model=d_model, encoder_layers=layers, decoder_layers=layers,
                            ffn_dim=2 * d_model, attention_heads=2)
    return build_detr(arch, seed=seed).eval()


def write_tiny_detr_checkpoint(
    checkpoint_dir: Path,
    *,
    backbone: str = "resnet18",
    image_size: int = 128,
    resize: ResizeMode | str = ResizeMode.LETTERBOX,
    num_queries: int = 16,
    d_model: int = 64,
    seed: int = 0,
    name: str = "tiny-detr",
    threshold: float = 0.5,
    box_floor: float = 0.05,
    top_k: int = 20,
) -> Path:
    """Build a tiny DETR and write it as a ``detr`` member checkpoint; returns the directory."""
    model = build_tiny_detr(backbone, num_queries=num_queries, d_model=d_model, seed=seed)
    return save_detr_checkpoint(
        checkpoint_dir,
        model,
        name=name,
        image_size=image_size,
        resize=resize,
        threshold=threshold,
        box_floor=box_floor,
        top_k=top_k,
    )


def write_tiny_refiner_checkpoint(
    checkpoint_dir: Path,
    *,
    architecture: str = "resnet18",
    crop_size: int = 64,
    in_chans: int = 1,
    pad_ratio: float = 0.25,
    max_delta: float = 0.25,
    seed: int = 0,
    zero_head: bool = False,
    name: str = "tiny-refiner",
) -> Path:
    """Build a tiny random-init refiner and write it as a ``refiner`` checkpoint.

    Args:
        checkpoint_dir: where to write ``model.safetensors`` and ``member.json``.
        architecture: timm model name of the regressor.
        crop_size: side of the square crop the regressor sees.
        in_chans: 1 (grey) or 3 (grey copied to three channels).
        pad_ratio: context added around the box on each side, as a fraction of its size.
        max_delta: largest corner correction, as a fraction of the crop side.
        seed: torch seed for the initialisation.
        zero_head: zero the regression head so every correction is 0 (an identity refiner).
        name: display name.

    Returns:
        The checkpoint directory.
    """
    from ensembles.members.refiner import RefinerConfig, build_refiner_model, save_refiner

    config = RefinerConfig(
        architecture=architecture,
        crop_size=crop_size,
        in_chans=in_chans,
        pad_ratio=pad_ratio,
        max_delta=max_delta,
    )
    model = build_refiner_model(config, seed=seed, zero_head=zero_head)
    return save_refiner(checkpoint_dir, model, config, name=name)
