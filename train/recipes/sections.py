"""The recipes' own config tables, ``[detr]`` and ``[refiner]``, without torch.

They live apart from their recipes (which import torch) so that :func:`train.train_config.
load_train_config` validates a whole file when it reads it: a bad ``[detr]`` value is refused
before any model is built or any data is read. The recipes parse their table again with
:meth:`train.train_config.TrainConfig.section`.

``[detr]``'s architecture fields are :class:`ensembles.detr_arch.DetrArchitecture`'s (declared
once, there: the demo models and the recipe build DETRs with the same
:func:`ensembles.detr_arch.build_detr`); its Hungarian costs are :class:`MatcherWeights`'.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from ensembles.config_model import ConfigModel, check
from ensembles.detr_arch import DetrArchitecture
from ensembles.errors import EnsembleError
from ensembles.members.refiner import RefinerConfig
from ensembles.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig
from ensembles.types import ResizeMode
from train.config_base import NonNegative, TrainTable, Unit

__all__ = ["DetrSection", "MatcherWeights", "RECIPE_TABLES", "REFINER_LOSSES", "RefinerSection"]

REFINER_LOSSES: tuple[str, ...] = ("smooth_l1", "l1")


class MatcherWeights(ConfigModel):
    """DETR's Hungarian matching costs and loss coefficients (transformers' defaults;
    transformers types the costs and coefficients as integers).

    Attributes:
        class_cost: matching cost of the class probability.
        bbox_cost: matching cost of the L1 box distance.
        giou_cost: matching cost of the GIoU.
        bbox_loss_coefficient: weight of the L1 box loss.
        giou_loss_coefficient: weight of the GIoU loss.
        eos_coefficient: class weight of "no object" in the cross-entropy.
        auxiliary_loss: repeat the losses on every decoder layer's output.
    """

    class_cost: Annotated[int, Field(ge=0)] = 1
    bbox_cost: Annotated[int, Field(ge=0)] = 5
    giou_cost: Annotated[int, Field(ge=0)] = 2
    bbox_loss_coefficient: Annotated[int, Field(ge=0)] = 5
    giou_loss_coefficient: Annotated[int, Field(ge=0)] = 2
    eos_coefficient: NonNegative = 0.1
    auxiliary_loss: bool = True

    def matcher(self) -> "MatcherWeights":
        """Just the matching fields (a subclass's extra settings dropped)."""
        return MatcherWeights(**{name: getattr(self, name) for name in MatcherWeights.model_fields})


class DetrSection(TrainTable, DetrArchitecture, MatcherWeights):
    """The ``[detr]`` table: :class:`~ensembles.detr_arch.DetrArchitecture` (``backbone``,
    ``feature_level``, ``dilation``, ``num_queries``, ``d_model``, ``encoder_layers``,
    ``decoder_layers``, ``ffn_dim``, ``attention_heads``, ``labels``: the classes, which box
    labels in ``boxes.jsonl`` must be among), :class:`MatcherWeights`, and the training and
    member settings below. Defaults are DETR-ResNet-50's architecture at 512 px.

    Attributes:
        base: a local DETR ``save_pretrained`` directory to fine-tune; empty: build from
            scratch with the architecture fields.
        image_size: side of the letterboxed square input.
        train_batchnorm: put trainable BatchNorm back in the backbone (needed from scratch; a
            pretrained base usually keeps transformers' frozen BatchNorm: set false).
        heatmap_weight: weight of the backbone heat-map loss (0: off).
        heatmap_pos_weight: BCE weight of cells that overlap a truth box (they are rare).
        heatmap_feature: which backbone feature map the heat-map head reads, as a Python index
            (-1: the last, which DETR reads; -2: the one before, twice as fine).
        position_weight: weight of the position loss: a 1x1 head on the same feature map
            predicts each cell's own centre, so the features carry the position DETR's
            attention values lack (training-only; 0: off).
        aux_warmup_steps: optimizer steps that train only the backbone with the auxiliary
            losses (heat-map, position) before DETR's own losses join: a from-scratch backbone
            learns to see fractures from the dense loss in a few hundred steps, while DETR's
            sparse, clipped gradients would starve it (0: from the first step).
        backbone_lr: learning rate of the backbone (0: ``[optim] lr``; DETR fine-tunes a
            pretrained one at a tenth of the rest).
        augment: random transposes and flips of the square input (with its boxes).
        name: the member's display name in ``member.json``.
        threshold: the member's image threshold (best box score), also used for val F1.
        box_floor: boxes scoring below this are not reported by the member.
        top_k: most boxes the member reports per image.
        canny_blend: Canny-edge blend weight (0: off), as inference applies it.
        clahe: CLAHE preprocessing (warns; explicit opt-in).
        cache_images: keep the preprocessed squares in memory between epochs.
        max_val_images: validate on at most this many images (0: all).
    """

    TABLE: ClassVar[str] = "detr"

    base: str = ""
    image_size: Annotated[int, Field(ge=32)] = 512
    train_batchnorm: bool = True
    heatmap_weight: NonNegative = 0.0
    heatmap_pos_weight: Annotated[float, Field(gt=0)] = 1.0
    heatmap_feature: int = -1
    position_weight: NonNegative = 0.0
    aux_warmup_steps: Annotated[int, Field(ge=0)] = 0
    backbone_lr: NonNegative = 0.0
    augment: bool = True
    name: str = "detr"
    threshold: Unit = 0.5
    box_floor: Unit = 0.05
    top_k: Annotated[int, Field(ge=1)] = 20
    canny_blend: Unit = 0.0
    clahe: bool = False
    cache_images: bool = True
    max_val_images: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _warmup_needs_an_auxiliary_loss(self) -> "DetrSection":
        if self.aux_warmup_steps and not (self.heatmap_weight > 0 or self.position_weight > 0):
            raise ValueError("aux_warmup_steps needs an auxiliary loss: set heatmap_weight or "
                             "position_weight > 0")
        return self

    def preprocess(self) -> PreprocessConfig:
        """Letterbox, ImageNet normalisation and the enhancement switches (as the member)."""
        return PreprocessConfig(image_size=self.image_size, resize=ResizeMode.LETTERBOX,
                                mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                canny_blend=self.canny_blend, clahe=self.clahe)


class RefinerSection(TrainTable):
    """The ``[refiner]`` table.

    Attributes:
        base: a refiner checkpoint directory to fine-tune; empty: build from scratch.
        architecture: timm model name of the regressor (from scratch).
        crop_size: side of the square crop the regressor sees.
        in_chans: 1 (grey) or 3 (grey copied to three channels).
        pad_ratio: context around the box on each side, as a fraction of its size.
        max_delta: largest correction per corner, as a fraction of the crop window's side.
        jitter: training proposals move each edge by up to this fraction of the box's side.
        shift: before the edge jitter, proposals move their centre by up to this many box
            sides on each axis (0: off): what a coarse detector's misses look like (the demo
            DETR's centres were off by about one box side, often two).
        scale: before the edge jitter, each side is scaled by a log-uniform factor in
            ``[1 / (1 + scale), 1 + scale]`` (0: off).
        samples_per_box: jittered proposals per truth box per epoch.
        loss: ``smooth_l1`` or ``l1`` on the corner corrections.
        smooth_l1_beta: where the smooth L1 turns linear (window units).
        augment: random transposes and flips of the crops (with their corrections).
        name: the refiner's display name in ``member.json``.
        cache_images: keep the decoded positive images in memory (float16) between epochs.
        max_val_boxes: validate on at most this many truth boxes (0: all).
    """

    TABLE: ClassVar[str] = "refiner"

    base: str = ""
    architecture: str = "resnet18"
    crop_size: int = 96
    in_chans: int = 1
    pad_ratio: float = 0.25
    max_delta: float = 0.25
    jitter: Annotated[float, check(lambda v: 0 < v <= 1, "must be in (0, 1]")] = 0.2
    shift: Annotated[float, check(lambda v: 0 <= v <= 4, "must be in [0, 4]")] = 0.0
    scale: Annotated[float, check(lambda v: 0 <= v <= 4, "must be in [0, 4]")] = 0.0
    samples_per_box: Annotated[int, Field(ge=1)] = 4
    loss: Literal["smooth_l1", "l1"] = "smooth_l1"
    smooth_l1_beta: Annotated[float, Field(gt=0)] = 0.02
    augment: bool = True
    name: str = "refiner"
    cache_images: bool = True
    max_val_boxes: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _fits_the_member(self) -> "RefinerSection":
        if self.shift > self.pad_ratio:
            raise ValueError(
                f"shift ({self.shift}) must not exceed pad_ratio ({self.pad_ratio}): a proposal "
                "moved further than the crop's padding leaves the true box outside its crop"
            )
        self._geometry()
        return self

    def _geometry(self) -> RefinerConfig:
        try:
            return RefinerConfig(architecture=self.architecture, crop_size=self.crop_size,
                                 in_chans=self.in_chans, pad_ratio=self.pad_ratio,
                                 max_delta=self.max_delta)
        except EnsembleError as exc:  # the member's own validation, worded as a table check
            raise ValueError(str(exc)) from None

    def refiner_config(self) -> RefinerConfig:
        """The member's geometry (valid: the table was checked against it when read)."""
        return self._geometry()


RECIPE_TABLES: dict[str, type[BaseModel]] = {"detr": DetrSection, "refiner": RefinerSection}
"""The recipes' tables by name, as a training TOML holds them."""
