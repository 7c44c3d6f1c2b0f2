"""The one DETR builder: a random-init ``DetrForObjectDetection`` with a timm backbone, offline.

:class:`DetrArchitecture` declares what a DETR looks like, once: the demo and test models
(:mod:`ensembles.demo_arch.detr`) build one in code, and the training recipe's ``[detr]`` table
(``train.recipes.sections.DetrSection``) is a subclass that adds the training settings, so a
field is never declared twice. :func:`build_detr` is the only place a DETR is made from scratch.

Offline by construction: the timm backbone is built with ``use_pretrained_backbone=False``, so
nothing is downloaded (a pretrained timm model would retry a hub for about 46 s before failing
here). With a timm backbone transformers swaps every ``BatchNorm2d`` for a frozen one
(``DetrFrozenBatchNorm2d``): irrelevant at inference, but a recipe that trains from scratch must
put trainable BatchNorm back (``train.recipes.detr_model.thaw_batchnorm``; docs/stack-notes.md).

This module imports torch and transformers only inside :func:`build_detr`, so a config that
holds a :class:`DetrArchitecture` is read and validated without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from ensembles.checkpoint import MemberSpec, write_member_spec
from ensembles.config_model import ConfigModel, ListAsTuple, check
from ensembles.errors import EnsembleError
from ensembles.preprocess import IMAGENET_MEAN, IMAGENET_STD
from ensembles.types import MemberKind, ResizeMode

if TYPE_CHECKING:
    from transformers import DetrForObjectDetection

__all__ = ["DetrArchitecture", "build_detr"]


class DetrArchitecture(ConfigModel):
    """What a from-scratch DETR looks like (defaults: DETR-ResNet-50).

    Attributes:
        backbone: timm model name (never pretrained: there is no hub here).
        feature_level: last timm feature level fed to the transformer: a CNN's stage (4:
            stride 32, as DETR; 3: stride 16, cheaper and finer) or a ViT block index (0-based).
        dilation: DETR's DC5 (stride 16 at level 4 by dilating the last stage).
        num_queries: object queries (the most boxes one image can yield).
        d_model: transformer width.
        encoder_layers: transformer encoder depth.
        decoder_layers: transformer decoder depth.
        ffn_dim: feed-forward width of every encoder and decoder layer.
        attention_heads: heads of every attention layer (must divide ``d_model``).
        labels: class names; the model gets ``len(labels)`` classes plus DETR's "no object".

    Raises:
        pydantic.ValidationError: (building one) a value out of range, no labels, or heads that
            do not divide the width; a subclass may raise its package's error instead.
    """

    backbone: str = "resnet50"
    feature_level: Annotated[int, Field(ge=1)] = 4
    dilation: bool = False
    num_queries: Annotated[int, Field(ge=1)] = 100
    d_model: Annotated[int, Field(ge=1)] = 256
    encoder_layers: Annotated[int, Field(ge=1)] = 6
    decoder_layers: Annotated[int, Field(ge=1)] = 6
    ffn_dim: Annotated[int, Field(ge=1)] = 2048
    attention_heads: Annotated[int, Field(ge=1)] = 8
    labels: Annotated[tuple[str, ...], ListAsTuple,
                      check(bool, 'must name at least one class, e.g. ["fracture"]')] = ("fracture",)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "DetrArchitecture":
        if self.d_model % self.attention_heads:
            raise ValueError(
                f"attention_heads ({self.attention_heads}) must divide d_model ({self.d_model}), "
                "e.g. d_model = 128 with attention_heads = 4"
            )
        return self

    def architecture(self) -> "DetrArchitecture":
        """Just the architecture fields (a subclass's extra settings dropped)."""
        return DetrArchitecture(**{name: getattr(self, name) for name in DetrArchitecture.model_fields})


def build_detr(arch: DetrArchitecture, *, seed: int | None = 0) -> "DetrForObjectDetection":
    """A random-init ``DetrForObjectDetection`` as ``arch`` says (in train mode, on the CPU).

    Args:
        arch: the architecture (a subclass instance is fine: only its architecture fields count).
        seed: torch seed for the initialisation (the global RNG is left untouched); ``None``
            uses the current RNG state.

    Raises:
        EnsembleError: timm does not know the backbone or its feature level.
    """
    import torch
    from transformers import DetrConfig, DetrForObjectDetection

    backbone_config: dict[str, Any] = {
        "model_type": "timm_backbone",
        "backbone": arch.backbone,
        "num_channels": 3,
        "features_only": True,
        "use_pretrained_backbone": False,
        "out_indices": list(range(1, arch.feature_level + 1)),
    }
    if arch.dilation:
        backbone_config["output_stride"] = 16
    config = DetrConfig(
        backbone_config=backbone_config,
        dilation=arch.dilation,
        num_queries=arch.num_queries,
        d_model=arch.d_model,
        encoder_layers=arch.encoder_layers,
        decoder_layers=arch.decoder_layers,
        encoder_ffn_dim=arch.ffn_dim,
        decoder_ffn_dim=arch.ffn_dim,
        encoder_attention_heads=arch.attention_heads,
        decoder_attention_heads=arch.attention_heads,
        id2label=dict(enumerate(arch.labels)),
        label2id={name: i for i, name in enumerate(arch.labels)},
    )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            return DetrForObjectDetection(config)
        except RuntimeError as exc:  # timm: "Unknown model (...)", a feature level it lacks
            raise EnsembleError(f"DETR backbone {arch.backbone!r}: {exc}") from None


def save_detr_checkpoint(
    checkpoint_dir: Path,
    model: "DetrForObjectDetection",
    *,
    name: str = "detr",
    image_size: int = 512,
    resize: ResizeMode | str = ResizeMode.LETTERBOX,
    threshold: float = 0.5,
    box_floor: float = 0.05,
    top_k: int = 20,
    canny_blend: float = 0.0,
    clahe: bool = False,
) -> Path:
    """Save ``model`` (safetensors) and its ``member.json`` (kind ``detr``): the one DETR member
    checkpoint writer, for the demo models and the training recipe alike.

    The preprocessing recorded is what the member runs with: ``resize`` to ``image_size``,
    ImageNet mean/std, the Canny blend and CLAHE switches; ``box_floor`` and ``top_k`` go into
    the member's options.

    Returns:
        The checkpoint directory.
    """
    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    id2label: dict[Any, str] = dict(model.config.id2label or {})
    spec = MemberSpec(
        kind=MemberKind.DETR.value,
        name=name,
        image_size=image_size,
        resize=ResizeMode(resize),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        labels=tuple(str(id2label[i]) for i in range(len(id2label))),
        canny_blend=canny_blend,
        clahe=clahe,
        threshold=threshold,
        options={"box_floor": box_floor, "top_k": top_k},
    )
    write_member_spec(directory, spec)
    return directory
