"""The DETR recipe's model: load a ``DetrForObjectDetection``, make it trainable, save it.

A model from scratch comes from the project's one DETR builder,
:func:`ensembles.detr_arch.build_detr` (the demo models' too). Why training needs more:

- transformers swaps every ``BatchNorm2d`` of a timm backbone for a frozen one
  (``DetrFrozenBatchNorm2d``: fixed statistics and affine, docs/stack-notes.md). That is right when the
  backbone is pretrained; from scratch the backbone then never normalises, so
  :func:`thaw_batchnorm` puts trainable ``BatchNorm2d`` back (same statistics), and
  :func:`save_detr_member` freezes them again in the saved copy so the checkpoint is exactly
  what ``DetrForObjectDetection.from_pretrained`` builds (the keys are the same either way).
- the backbone's last feature level is a choice (``feature_level``): level 3 of a ResNet is
  stride 16, which keeps a 15 px fracture box on more than one cell at 256 px, and skips the
  most expensive stage on a CPU.
- an optional *heat-map head* (a 1x1 convolution on the last feature map predicting whether
  each cell overlaps a truth box) gives the backbone a dense signal from the first step; it is
  training-only and never saved (the member is a plain DETR).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ensembles.detr_arch import save_detr_checkpoint
from train.errors import RecipeError
from train.recipes.sections import MatcherWeights


def load_detr_model(base: Path, labels: Sequence[str]) -> Any:
    """A ``DetrForObjectDetection`` from a local ``save_pretrained`` directory (fine-tuning).

    Raises:
        RecipeError: the directory cannot be loaded, or its classes are not ``labels``.
    """
    from transformers import DetrForObjectDetection

    try:
        model = DetrForObjectDetection.from_pretrained(
            base, local_files_only=True, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        raise RecipeError(f"[detr] base {str(base)!r} is not a DETR checkpoint: {exc}") from None
    id2label: dict[Any, str] = dict(model.config.id2label or {})
    have = tuple(str(id2label[i]) for i in range(len(id2label)))
    if have != tuple(labels):
        raise RecipeError(
            f"[detr] base {str(base)!r} has classes {have}, but labels = {list(labels)}; make "
            "them agree (a different label set needs a model built from scratch)"
        )
    return model


def apply_matcher_weights(model: Any, weights: MatcherWeights) -> None:
    """Set the Hungarian costs and loss coefficients the transformers loss reads from config."""
    for key, value in weights.matcher().model_dump().items():
        setattr(model.config, key, value)


def thaw_batchnorm(module: nn.Module) -> int:
    """Replace every ``DetrFrozenBatchNorm2d`` by a trainable ``BatchNorm2d`` (same stats).

    Returns:
        How many were replaced.
    """
    from transformers.models.detr.modeling_detr import DetrFrozenBatchNorm2d

    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, DetrFrozenBatchNorm2d):
            features = int(child.weight.shape[0])
            fresh: Any = nn.BatchNorm2d(features).to(child.weight.device)
            with torch.no_grad():
                fresh.weight.copy_(child.weight)
                fresh.bias.copy_(child.bias)
                fresh.running_mean.copy_(child.running_mean)
                fresh.running_var.copy_(child.running_var)
            setattr(module, name, fresh)
            count += 1
        else:
            count += thaw_batchnorm(child)
    return count


def frozen_copy(model: Any) -> Any:
    """A copy of ``model`` for saving, with its BatchNorm frozen again.

    ``auxiliary_loss`` stays as trained: transformers' decoder then applies its final layer
    norm twice to the last layer's output, so switching it off would change the answers.
    """
    from transformers.models.detr.modeling_detr import replace_batch_norm

    clone = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        replace_batch_norm(clone)
    return clone


def save_detr_member(
    directory: Path,
    model: Any,
    *,
    name: str,
    image_size: int,
    threshold: float,
    box_floor: float,
    top_k: int,
    canny_blend: float,
    clahe: bool,
) -> None:
    """Write ``model`` as a ``detr`` member checkpoint (safetensors + ``member.json``).

    The preprocessing recorded is the one the recipe trained with: letterbox to
    ``image_size``, ImageNet mean/std, the Canny blend and CLAHE switches.
    """
    save_detr_checkpoint(directory, frozen_copy(model), name=name, image_size=image_size,
                         threshold=threshold, box_floor=box_floor, top_k=top_k,
                         canny_blend=canny_blend, clahe=clahe)


class HeatmapHead(nn.Module):
    """Training-only 1x1 convolution: one logit per backbone cell, "overlaps a truth box"."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        bias: Any = self.conv.bias
        nn.init.constant_(bias, -2.0)  # cells are mostly negative: start there

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` features to ``(B, h * w)`` logits, row-major."""
        return self.conv(features.float()).flatten(1)


class PositionHead(nn.Module):
    """Training-only 1x1 convolution predicting each backbone cell's own ``(x, y)`` centre.

    Why: DETR's attention adds position embeddings to queries and keys only, never to the
    values, so a box can be regressed only from position the CNN features carry themselves.
    A pretrained backbone has learnt that; from scratch this head asks for it directly.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 2, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        bias: Any = self.conv.bias
        nn.init.zeros_(bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` features to ``(B, 2, h, w)`` predicted centres in ``[0, 1]``."""
        return torch.sigmoid(self.conv(features.float()))


def position_loss(predicted: torch.Tensor) -> torch.Tensor:
    """Mean L1 between :class:`PositionHead` outputs and the true normalised cell centres."""
    _, _, height, width = predicted.shape
    ys = (torch.arange(height, device=predicted.device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=predicted.device, dtype=torch.float32) + 0.5) / width
    grid = torch.stack([xs.view(1, width).expand(height, width),
                        ys.view(height, 1).expand(height, width)])
    return (predicted - grid.unsqueeze(0)).abs().mean()


class FeatureCapture:
    """Keeps the feature maps the DETR backbone produced last (a forward hook), finest first."""

    def __init__(self, model: Any) -> None:
        self.features: list[torch.Tensor] | None = None
        self.handle = model.model.backbone.register_forward_hook(self._hook)

    def _hook(self, module: Any, inputs: Any, output: Any) -> None:
        self.features = [feature_map for feature_map, _mask in output]

    def take(self) -> list[torch.Tensor] | None:
        """The captured maps (then forgotten, so stale maps are never reused)."""
        features, self.features = self.features, None
        return features


def feature_channels(model: Any, index: int = -1) -> int:
    """Channels of one of the backbone's feature maps (``-1``: the last, which DETR reads)."""
    sizes = list(model.model.backbone.intermediate_channel_sizes)
    try:
        return int(sizes[index])
    except IndexError:
        raise RecipeError(
            f"[detr] heatmap_feature {index} is not one of the backbone's {len(sizes)} feature "
            f"maps; use -1 (the last) to -{len(sizes)}"
        ) from None
