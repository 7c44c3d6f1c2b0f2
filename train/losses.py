"""The losses of the PaliGemma recipes, each a switch in ``[loss]`` (see :mod:`train.train_config`).

All work on next-token logits under teacher forcing: ``logits[:, t]`` predicts ``labels[:, t+1]``
(:func:`shift_logits_labels`), with ``labels`` ``-100`` on image, prompt and padding, as
:func:`ensembles.members.paligemma_inputs.encode_prompts` builds them.

- Token cross-entropy over the answer (:func:`token_cross_entropy`), optionally with smoothed
  location targets: a loc position's target is a Gaussian over neighbouring bins
  (:func:`smoothed_loc_targets`) so a near miss costs less than a far one; one-hot targets
  leave the 1,024 bins unrelated, and a tiny model then guesses a constant box.
- The class decision (the answer's first token) read the way the member scores it: the
  positive answer (classifier) or *any* loc token (detector) against ``Normal``, renormalised
  over the two (:func:`decision_logits`), with plain CE, class-weighted CE
  (:func:`weighted_cross_entropy`) or focal loss (:func:`focal_loss`).
- CIoU on boxes whose corners are the soft-argmax expected coordinates of the four loc
  positions (:func:`expected_coordinates`, :func:`loc_box_predictions`), using torchvision's
  ``complete_box_iou_loss``; unlike CE it knows that bin 500 is close to bin 501.
- The auxiliary SigLIP patch loss (:class:`PatchHead`, :func:`patch_targets`,
  :func:`patch_loss`): a linear head on the patch tokens predicts whether each patch overlaps
  a truth box; it gave a from-scratch tiny model its signal on the CPU (docs/stack-notes.md).
- The dense box auxiliary (:class:`PatchBoxHead`, :func:`patch_box_targets`,
  :func:`patch_box_loss`): each patch inside a truth box regresses its distances to the box's
  four edges (FCOS's assignment, L1 in patches).

Bins decode as ``bin / 1024`` (:func:`ensembles.loc_tokens.decode_bin`); the expected
coordinate uses the same mapping, so a distribution peaked on the target bin has zero error.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import complete_box_iou_loss

from ensembles.loc_tokens import NUM_LOC_BINS

IGNORE_INDEX = -100
MIN_BOX_SIDE = 1.0 / NUM_LOC_BINS
"""Predicted boxes are kept at least one bin wide so CIoU's aspect term stays finite."""


def shift_logits_labels(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits[:, :-1], labels[:, 1:])``: each position paired with the token it predicts."""
    if logits.ndim != 3 or labels.ndim != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits must be (B, T, V) and labels (B, T) with the same B, T; got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    return logits[:, :-1, :], labels[:, 1:]


def loc_bin_lookup(loc_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """A ``(vocab_size,)`` long tensor: the bin of each loc token id, -1 for other tokens."""
    if loc_ids.numel() != NUM_LOC_BINS:
        raise ValueError(f"need the {NUM_LOC_BINS} loc token ids in bin order, got {loc_ids.numel()}")
    lookup = torch.full((vocab_size,), -1, dtype=torch.long, device=loc_ids.device)
    lookup[loc_ids] = torch.arange(NUM_LOC_BINS, device=loc_ids.device)
    return lookup


def smoothed_loc_targets(target_bins: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(N, 1024)`` target distributions: a Gaussian of ``sigma`` bins around each target bin.

    ``sigma <= 0`` gives one-hot rows. Mass beyond the first/last bin is dropped and each row
    renormalised, so rows always sum to 1.
    """
    bins = torch.arange(NUM_LOC_BINS, device=target_bins.device, dtype=torch.float32)
    if sigma <= 0:
        return F.one_hot(target_bins.long(), NUM_LOC_BINS).float()
    diff = bins.unsqueeze(0) - target_bins.float().unsqueeze(1)
    weights = torch.exp(-0.5 * (diff / sigma) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def token_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    loc_ids: torch.Tensor | None = None,
    loc_sigma: float = 0.0,
) -> torch.Tensor:
    """Mean next-token CE over the answer tokens (``labels != -100``).

    Args:
        logits: ``(B, T, V)`` model logits (unshifted).
        labels: ``(B, T)`` token ids, -100 where not supervised (unshifted).
        loc_ids: the 1,024 ``<locNNNN>`` ids in bin order; needed when ``loc_sigma > 0``.
        loc_sigma: smoothing of loc targets in bins (0: plain one-hot CE everywhere).

    Returns:
        A scalar; 0 (with a graph) when nothing is supervised.
    """
    shifted, targets = shift_logits_labels(logits, labels)
    mask = targets != IGNORE_INDEX
    if not bool(mask.any()):
        return shifted.sum() * 0.0
    flat_logits = shifted[mask].float()
    flat_targets = targets[mask]
    log_probs = F.log_softmax(flat_logits, dim=-1)
    losses = -log_probs.gather(1, flat_targets.unsqueeze(1)).squeeze(1)
    if loc_sigma > 0:
        if loc_ids is None:
            raise ValueError("loc_sigma > 0 needs loc_ids")
        lookup = loc_bin_lookup(loc_ids.to(flat_targets.device), flat_logits.shape[-1])
        bins = lookup[flat_targets]
        is_loc = bins >= 0
        if bool(is_loc.any()):
            soft = smoothed_loc_targets(bins[is_loc], loc_sigma)
            loc_log_probs = log_probs[is_loc][:, loc_ids.to(log_probs.device)]
            losses = losses.clone()
            losses[is_loc] = -(soft * loc_log_probs).sum(dim=1)
    return losses.mean()


def first_answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """``(B,)`` index into the *shifted* sequence of each row's first answer token.

    Raises:
        ValueError: a row has no answer token.
    """
    targets = labels[:, 1:] != IGNORE_INDEX
    if not bool(targets.any(dim=1).all()):
        raise ValueError("every row needs an answer (labels != -100) for the decision loss")
    return targets.float().argmax(dim=1)


def decision_logits(
    logits: torch.Tensor, positive_ids: torch.Tensor, negative_ids: torch.Tensor
) -> torch.Tensor:
    """``(N, 2)`` logits ``[positive, negative]`` from ``(N, V)`` vocabulary logits.

    Each side is the log-sum-exp of its tokens' logits, so softmax over the pair is
    ``P(positive) / (P(positive) + P(negative))``: exactly the classifier's score (one token
    each side) and the detector's (all loc tokens against ``Normal``).
    """
    pos = torch.logsumexp(logits.float()[:, positive_ids], dim=-1)
    neg = torch.logsumexp(logits.float()[:, negative_ids], dim=-1)
    return torch.stack([pos, neg], dim=-1)


def weighted_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Class-weighted CE: ``sum_i w[y_i] * CE_i / sum_i w[y_i]`` (torch's ``weight=`` mean)."""
    weight = torch.as_tensor(weights, dtype=torch.float32, device=logits.device)
    if weight.numel() != logits.shape[-1]:
        raise ValueError(f"need one weight per class ({logits.shape[-1]}), got {weight.numel()}")
    return F.cross_entropy(logits.float(), targets.long(), weight=weight)


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 2.0,
    alpha: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-class focal loss ``mean_i a[y_i] (1 - p_i)^gamma (-log p_i)``; ``p_i`` is the
    probability of the true class. ``gamma = 0`` and no ``alpha`` give plain CE."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    log_pt = log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    pt = log_pt.exp()
    loss = -((1.0 - pt).clamp(min=0.0) ** gamma) * log_pt
    if alpha is not None:
        weight = torch.as_tensor(alpha, dtype=torch.float32, device=logits.device)
        loss = loss * weight[targets.long()]
    return loss.mean()


def decision_loss(
    pair_logits: torch.Tensor,
    positive: torch.Tensor,
    mode: str,
    *,
    class_weights: Sequence[float] = (1.0, 1.0),
    gamma: float = 2.0,
) -> torch.Tensor:
    """The decision loss on ``(N, 2)`` ``[positive, negative]`` logits.

    Args:
        pair_logits: from :func:`decision_logits`.
        positive: ``(N,)`` 1 for a fracture image, 0 for a normal one.
        mode: ``ce``, ``wce`` (``class_weights`` as ``[fracture, normal]``), ``focal`` or
            ``none`` (a zero loss).
        class_weights: WCE weights; focal uses them as alpha unless they are all 1.
        gamma: focal focusing parameter.
    """
    targets = 1 - positive.long()  # class 0 = positive (fracture), 1 = negative (normal)
    if mode == "none":
        return pair_logits.sum() * 0.0
    if mode == "ce":
        return F.cross_entropy(pair_logits.float(), targets)
    if mode == "wce":
        return weighted_cross_entropy(pair_logits, targets, class_weights)
    if mode == "focal":
        alpha = None if all(w == 1.0 for w in class_weights) else class_weights
        return focal_loss(pair_logits, targets, gamma, alpha)
    raise ValueError(f"decision loss must be ce, wce, focal or none, got {mode!r}")


def expected_coordinates(loc_logits: torch.Tensor, window: int = 0) -> torch.Tensor:
    """Soft-argmax: ``sum_b softmax(loc_logits)_b * b / 1024`` per row of ``(N, 1024)`` logits.

    The softmax runs over the loc tokens only: under teacher forcing the position *is* a loc
    position, so this is the coordinate the model expects given that it writes a loc token.
    With ``window > 0`` it runs over the bins within ``window`` of the row's most likely bin
    only (a local soft-argmax: the coordinate greedy decoding writes, refined by its
    neighbours); the choice of that bin carries no gradient.
    """
    if loc_logits.shape[-1] != NUM_LOC_BINS:
        raise ValueError(f"need {NUM_LOC_BINS} loc logits per row, got {loc_logits.shape[-1]}")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    logits = loc_logits.float()
    centres = torch.arange(NUM_LOC_BINS, device=loc_logits.device, dtype=torch.float32)
    if window:
        mode = logits.detach().argmax(dim=-1, keepdim=True).float()
        logits = logits.masked_fill((centres.unsqueeze(0) - mode).abs() > window, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return probs @ centres / NUM_LOC_BINS


def loc_box_predictions(
    logits: torch.Tensor, labels: torch.Tensor, loc_ids: torch.Tensor, window: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and target boxes ``(K, 4)`` xyxy for every box in the teacher-forced answers.

    Each run of four loc targets ``y_min x_min y_max x_max`` in a row is one box. The predicted
    box has the expected coordinates of those four positions; corners are sorted and kept one
    bin apart, so an untrained model's crossed corners still give a finite CIoU.
    """
    shifted, targets = shift_logits_labels(logits, labels)
    lookup = loc_bin_lookup(loc_ids.to(targets.device), shifted.shape[-1])
    safe = targets.clamp(min=0)
    bins = torch.where(targets >= 0, lookup[safe], torch.full_like(targets, -1))
    rows, cols = [], []
    for row in range(bins.shape[0]):
        positions = torch.nonzero(bins[row] >= 0).flatten().tolist()
        for start in range(0, len(positions) - len(positions) % 4, 4):
            group = positions[start : start + 4]
            if group[-1] - group[0] != 3:  # not four consecutive loc tokens: not a box
                continue
            rows.extend([row] * 4)
            cols.extend(group)
    if not rows:
        empty = shifted.new_zeros((0, 4), dtype=torch.float32)
        return empty, empty.clone()
    row_index = torch.tensor(rows, device=shifted.device)
    col_index = torch.tensor(cols, device=shifted.device)
    picked = shifted[row_index, col_index][:, loc_ids.to(shifted.device)]
    coords = expected_coordinates(picked, window).view(-1, 4)  # y0, x0, y1, x1
    target = (bins[row_index, col_index].float() / NUM_LOC_BINS).view(-1, 4)
    pred = _ordered_xyxy(coords[:, 1], coords[:, 0], coords[:, 3], coords[:, 2])
    truth = torch.stack([target[:, 1], target[:, 0], target[:, 3], target[:, 2]], dim=1)
    return pred, truth


def _ordered_xyxy(x0: torch.Tensor, y0: torch.Tensor, x1: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
    lo_x, hi_x = torch.minimum(x0, x1), torch.maximum(x0, x1)
    lo_y, hi_y = torch.minimum(y0, y1), torch.maximum(y0, y1)
    hi_x = torch.maximum(hi_x, lo_x + MIN_BOX_SIDE)
    hi_y = torch.maximum(hi_y, lo_y + MIN_BOX_SIDE)
    return torch.stack([lo_x, lo_y, hi_x, hi_y], dim=1)


def ciou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - CIoU`` of matching ``(K, 4)`` xyxy boxes (torchvision); 0 when ``K == 0``."""
    if pred.shape != target.shape or (pred.ndim != 2 or pred.shape[-1] != 4):
        raise ValueError(
            f"pred and target must both be (K, 4) xyxy, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    return complete_box_iou_loss(pred.float(), target.float(), reduction="mean")


def patch_targets(boxes: Sequence[torch.Tensor], grid: int) -> torch.Tensor:
    """``(B, grid * grid)`` 0/1: does each patch (row-major, as SigLIP orders them) overlap a box?

    Args:
        boxes: per image, ``(n, 4)`` normalised xyxy boxes in the model's input frame.
        grid: patches per side (``image_size // patch_size``).
    """
    out = torch.zeros((len(boxes), grid, grid), dtype=torch.float32)
    for index, image_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in torch.as_tensor(image_boxes, dtype=torch.float32).reshape(-1, 4).tolist():
            c0, c1 = int(max(0.0, x0) * grid), int(min(1.0, x1) * grid - 1e-9)
            r0, r1 = int(max(0.0, y0) * grid), int(min(1.0, y1) * grid - 1e-9)
            if c1 >= c0 and r1 >= r0:
                out[index, r0 : r1 + 1, c0 : c1 + 1] = 1.0
    return out.view(len(boxes), grid * grid)


class PatchHead(nn.Module):
    """A linear probe on SigLIP patch tokens: one logit per patch, "overlaps a truth box".

    Training-only: it is not part of the member checkpoint; it shapes SigLIP's features.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, 1)
        nn.init.zeros_(self.linear.bias)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(patch_tokens.float()).squeeze(-1)


def patch_loss(
    patch_logits: torch.Tensor, targets: torch.Tensor, pos_weight: float = 1.0
) -> torch.Tensor:
    """Mean BCE of ``(B, P)`` patch logits against :func:`patch_targets`."""
    if patch_logits.shape != targets.shape:
        raise ValueError(
            f"patch logits {tuple(patch_logits.shape)} and targets {tuple(targets.shape)} differ; "
            "is the grid image_size // patch_size?"
        )
    weight = torch.tensor(pos_weight, dtype=torch.float32, device=patch_logits.device)
    return F.binary_cross_entropy_with_logits(
        patch_logits.float(), targets.to(patch_logits.device), pos_weight=weight
    )


def patch_box_targets(boxes: Sequence[torch.Tensor], grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense box targets of the SigLIP patches, as FCOS assigns them.

    Returns ``(B, grid * grid, 4)``: the distances from each patch's centre to the left, top,
    right and bottom edges of the smallest truth box that holds the centre, in patches; and
    ``(B, grid * grid)`` bool, whether a box holds the centre (the rest have no target).

    Args:
        boxes: per image, ``(n, 4)`` normalised xyxy boxes in the model's input frame.
        grid: patches per side (``image_size // patch_size``).
    """
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    cx, cy = cx.reshape(-1), cy.reshape(-1)
    targets = torch.zeros((len(boxes), grid * grid, 4), dtype=torch.float32)
    held = torch.zeros((len(boxes), grid * grid), dtype=torch.bool)
    for index, image_boxes in enumerate(boxes):
        area = torch.full((grid * grid,), math.inf)
        for x0, y0, x1, y1 in torch.as_tensor(image_boxes, dtype=torch.float32).reshape(-1, 4).tolist():
            inside = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)
            smaller = inside & ((x1 - x0) * (y1 - y0) < area)
            if not bool(smaller.any()):
                continue
            area[smaller] = (x1 - x0) * (y1 - y0)
            edges = torch.stack([cx - x0, cy - y0, x1 - cx, y1 - cy], dim=1) * grid
            targets[index, smaller] = edges[smaller]
            held[index, smaller] = True
    return targets, held


class PatchBoxHead(nn.Module):
    """A linear head on SigLIP patch tokens: each patch's distances to the four edges of the
    box that holds it, in patches (:func:`patch_box_targets`).

    Training-only, as :class:`PatchHead`: dense geometry for SigLIP's features, which the
    loc tokens alone teach one box at a time.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, 4)
        nn.init.zeros_(self.linear.bias)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(patch_tokens.float())


def patch_box_loss(pred: torch.Tensor, targets: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """Mean L1 of ``(B, P, 4)`` predicted edge distances against :func:`patch_box_targets` over
    the patches a box holds (0 when none does)."""
    if pred.shape != targets.shape or held.shape != pred.shape[:2]:
        raise ValueError(
            f"patch box predictions {tuple(pred.shape)}, targets {tuple(targets.shape)} and mask "
            f"{tuple(held.shape)} differ; is the grid image_size // patch_size?"
        )
    held = held.to(pred.device)
    if not bool(held.any()):
        return pred.sum() * 0.0
    return F.l1_loss(pred[held].float(), targets.to(pred.device)[held])
