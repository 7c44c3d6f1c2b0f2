"""The PaliGemma losses against hand-computed values and known distributions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from train import losses


def _ciou_by_hand(p: tuple[float, ...], g: tuple[float, ...]) -> float:
    """1 - CIoU written out from the paper's definition (Zheng et al. 2020)."""
    ix = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
    iy = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
    inter = ix * iy
    area_p = (p[2] - p[0]) * (p[3] - p[1])
    area_g = (g[2] - g[0]) * (g[3] - g[1])
    iou = inter / (area_p + area_g - inter)
    rho2 = ((p[0] + p[2]) / 2 - (g[0] + g[2]) / 2) ** 2 + ((p[1] + p[3]) / 2 - (g[1] + g[3]) / 2) ** 2
    c2 = (max(p[2], g[2]) - min(p[0], g[0])) ** 2 + (max(p[3], g[3]) - min(p[1], g[1])) ** 2
    v = 4 / math.pi**2 * (math.atan((g[2] - g[0]) / (g[3] - g[1])) - math.atan((p[2] - p[0]) / (p[3] - p[1]))) ** 2
    alpha = v / ((1 - iou) + v) if v else 0.0
    return 1 - iou + rho2 / c2 + alpha * v


@pytest.mark.parametrize(
    "pred, truth, expected",
    [
        # IoU 1/7, centre distance^2 0.02, enclosing diagonal^2 0.18, same aspect (v = 0)
        ((0.0, 0.0, 0.2, 0.2), (0.1, 0.1, 0.3, 0.3), 1 - 1 / 7 + 0.02 / 0.18),
        ((0.0, 0.0, 0.2, 0.1), (0.0, 0.0, 0.1, 0.2), None),  # aspect term active
        ((0.1, 0.1, 0.4, 0.3), (0.1, 0.1, 0.4, 0.3), 0.0),  # identical boxes
        ((0.0, 0.0, 0.1, 0.1), (0.5, 0.5, 0.7, 0.9), None),  # disjoint
    ],
    ids=["overlap", "aspect", "identical", "disjoint"],
)
def test_ciou_matches_hand_computation(pred, truth, expected) -> None:
    want = _ciou_by_hand(pred, truth) if expected is None else expected
    got = losses.ciou_loss(torch.tensor([pred]), torch.tensor([truth]))
    assert float(got) == pytest.approx(want, abs=1e-5)


def test_ciou_aspect_case_value() -> None:
    # IoU 1/3; rho^2 0.005 over c^2 0.08; v = 4/pi^2 (atan(1/2) - atan(2))^2; alpha = v/(2/3 + v)
    v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(2.0)) ** 2
    want = 1 - 1 / 3 + 0.005 / 0.08 + v * v / (2 / 3 + v)
    got = losses.ciou_loss(torch.tensor([[0.0, 0.0, 0.2, 0.1]]), torch.tensor([[0.0, 0.0, 0.1, 0.2]]))
    assert float(got) == pytest.approx(want, abs=1e-5)
    assert float(got) == pytest.approx(0.76292, abs=1e-4)


def test_ciou_empty_is_zero_with_graph() -> None:
    pred = torch.zeros((0, 4), requires_grad=True)
    loss = losses.ciou_loss(pred, torch.zeros((0, 4)))
    assert float(loss.detach()) == 0.0 and loss.requires_grad


def test_focal_against_hand_values() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.5, 1.5]])
    targets = torch.tensor([0, 0])
    p0 = math.exp(2) / (math.exp(2) + 1)
    p1 = math.exp(0.5) / (math.exp(0.5) + math.exp(1.5))
    want = ((1 - p0) ** 2 * -math.log(p0) + (1 - p1) ** 2 * -math.log(p1)) / 2
    assert float(losses.focal_loss(logits, targets, gamma=2.0)) == pytest.approx(want, rel=1e-5)
    # alpha weights the true class
    want_alpha = (0.25 * (1 - p0) ** 2 * -math.log(p0) + 0.25 * (1 - p1) ** 2 * -math.log(p1)) / 2
    got = losses.focal_loss(logits, targets, gamma=2.0, alpha=[0.25, 0.75])
    assert float(got) == pytest.approx(want_alpha, rel=1e-5)


def test_focal_gamma_zero_is_cross_entropy() -> None:
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2, 2, 1, 0])
    assert float(losses.focal_loss(logits, targets, gamma=0.0)) == pytest.approx(
        float(F.cross_entropy(logits, targets)), rel=1e-6
    )


def test_weighted_cross_entropy_hand_value() -> None:
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    targets = torch.tensor([0, 1])
    ce0 = -math.log(math.e / (math.e + 1))
    ce1 = -math.log(1 / (math.e + 1))
    want = (3 * ce0 + 1 * ce1) / 4
    assert float(losses.weighted_cross_entropy(logits, targets, [3.0, 1.0])) == pytest.approx(want, rel=1e-6)


def test_decision_logits_renormalise_over_the_two_answers() -> None:
    vocab = torch.tensor([[0.3, 1.2, -0.4, 2.0, 0.1]])
    probs = torch.softmax(vocab, dim=-1)[0]
    pair = losses.decision_logits(vocab, torch.tensor([1, 2]), torch.tensor([4]))
    p_pos = float(torch.softmax(pair, dim=-1)[0, 0])
    want = float((probs[1] + probs[2]) / (probs[1] + probs[2] + probs[4]))
    assert p_pos == pytest.approx(want, rel=1e-6)


def test_decision_loss_modes() -> None:
    pair = torch.tensor([[0.2, -0.1], [1.0, 0.5], [-2.0, 0.3]])
    positive = torch.tensor([1, 0, 1])
    targets = torch.tensor([0, 1, 0])
    assert float(losses.decision_loss(pair, positive, "ce")) == pytest.approx(
        float(F.cross_entropy(pair, targets)))
    assert float(losses.decision_loss(pair, positive, "wce", class_weights=(4.0, 1.0))) == pytest.approx(
        float(F.cross_entropy(pair, targets, weight=torch.tensor([4.0, 1.0]))))
    assert float(losses.decision_loss(pair, positive, "focal", gamma=1.5)) == pytest.approx(
        float(losses.focal_loss(pair, targets, 1.5)))
    assert float(losses.decision_loss(pair, positive, "none")) == 0.0
    with pytest.raises(ValueError, match="ce, wce, focal or none"):
        losses.decision_loss(pair, positive, "hinge")


def test_soft_argmax_of_known_distributions() -> None:
    peaked = torch.full((1, 1024), -1e4)
    peaked[0, 300] = 0.0
    assert float(losses.expected_coordinates(peaked)) == pytest.approx(300 / 1024, abs=1e-6)
    uniform = torch.zeros((1, 1024))
    assert float(losses.expected_coordinates(uniform)) == pytest.approx(1023 / 2 / 1024, abs=1e-6)
    two = torch.full((1, 1024), -1e4)
    two[0, 100] = 0.0
    two[0, 300] = math.log(3.0)  # probabilities 1/4 and 3/4
    assert float(losses.expected_coordinates(two)) == pytest.approx((0.25 * 100 + 0.75 * 300) / 1024, abs=1e-6)


def test_local_soft_argmax_ignores_mass_far_from_the_mode() -> None:
    """A peak at bin 100 with a broad floor: over all bins the floor drags the coordinate to the
    centre; within a window of the mode it stays on the peak, and only the window's logits get
    gradient."""
    logits = torch.zeros((1, 1024))
    logits[0, 98:103] = torch.tensor([4.0, 5.0, 6.0, 5.0, 3.0])
    whole = float(losses.expected_coordinates(logits))
    assert whole > 300 / 1024  # the floor's 1,019 bins outweigh the peak
    local = losses.expected_coordinates(logits.requires_grad_(), window=2)
    weights = torch.softmax(torch.tensor([4.0, 5.0, 6.0, 5.0, 3.0]), dim=0)
    assert float(local.detach()) == pytest.approx(float(weights @ torch.arange(98.0, 103.0)) / 1024, abs=1e-6)
    local.sum().backward()
    assert logits.grad is not None
    touched = torch.nonzero(logits.grad[0]).flatten().tolist()
    assert touched and min(touched) >= 98 and max(touched) <= 102
    with pytest.raises(ValueError, match="window must be >= 0"):
        losses.expected_coordinates(logits, window=-1)


def test_smoothed_loc_targets() -> None:
    one_hot = losses.smoothed_loc_targets(torch.tensor([5]), 0.0)
    assert float(one_hot[0, 5]) == 1.0 and float(one_hot.sum()) == 1.0
    soft = losses.smoothed_loc_targets(torch.tensor([500, 0]), 2.0)
    assert torch.allclose(soft.sum(dim=1), torch.ones(2))
    assert int(soft[0].argmax()) == 500
    assert float(soft[0, 501] / soft[0, 500]) == pytest.approx(math.exp(-0.5 * 0.25), rel=1e-5)
    assert float(soft[0, 499]) == pytest.approx(float(soft[0, 501]))
    assert float(soft[1, 0]) > float(soft[1, 1])  # edge bin renormalised, still the peak


def _loc_setup(offset: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(offset, offset + 1024), torch.full((1, 3), -100)


def test_token_cross_entropy_plain_matches_torch() -> None:
    logits = torch.randn(2, 5, 30, generator=torch.Generator().manual_seed(0))
    labels = torch.full((2, 5), -100)
    labels[0, 3:] = torch.tensor([4, 7])
    labels[1, 2:] = torch.tensor([1, 2, 3])
    shifted = logits[:, :-1].reshape(-1, 30)
    want = F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=-100)
    assert float(losses.token_cross_entropy(logits, labels)) == pytest.approx(float(want), rel=1e-6)


def test_smoothed_targets_make_near_misses_cheaper() -> None:
    loc_ids, labels = _loc_setup()
    labels[0, 2] = int(loc_ids[400])  # predicted from position 1

    def loss_for(peak_bin: int, sigma: float) -> float:
        logits = torch.zeros((1, 3, 1100))
        logits[0, 1, int(loc_ids[peak_bin])] = 8.0
        return float(losses.token_cross_entropy(logits, labels, loc_ids=loc_ids, loc_sigma=sigma))

    assert loss_for(402, 0.0) == pytest.approx(loss_for(900, 0.0))  # one-hot: all misses equal
    assert loss_for(402, 3.0) < loss_for(900, 3.0)
    assert loss_for(400, 3.0) < loss_for(402, 3.0)


def test_loc_box_predictions_and_ciou_gradient() -> None:
    loc_ids = torch.arange(50, 1074)
    labels = torch.full((1, 8), -100)
    bins = [100, 200, 500, 700]  # y_min x_min y_max x_max
    labels[0, 1:5] = loc_ids[bins]
    labels[0, 5] = 7  # " Fracture"
    logits = torch.zeros((1, 8, 1100), requires_grad=True)
    pred, truth = losses.loc_box_predictions(logits, labels, loc_ids)
    assert truth[0].tolist() == pytest.approx([200 / 1024, 100 / 1024, 700 / 1024, 500 / 1024])
    assert pred.shape == (1, 4)
    loss = losses.ciou_loss(pred, truth)
    loss.backward()
    assert float(loss.detach()) > 0.1 and float(logits.grad.abs().sum()) > 0
    sharp = torch.zeros((1, 8, 1100))
    for position, b in zip(range(0, 4), bins):
        sharp[0, position, int(loc_ids[b])] = 50.0
    pred2, _ = losses.loc_box_predictions(sharp, labels, loc_ids)
    assert torch.allclose(pred2, truth, atol=1e-5)
    assert float(losses.ciou_loss(pred2, truth)) == pytest.approx(0.0, abs=1e-4)


def test_patch_targets_mark_overlapping_patches() -> None:
    targets = losses.patch_targets([torch.tensor([[0.1, 0.1, 0.3, 0.2]]), torch.zeros((0, 4))], 4)
    grid = targets.view(2, 4, 4)
    assert grid[0].tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert float(grid[1].sum()) == 0.0
    whole = losses.patch_targets([torch.tensor([[0.0, 0.0, 1.0, 1.0]])], 3)
    assert float(whole.sum()) == 9.0


def test_patch_box_targets_give_each_held_patch_its_smallest_box_edges() -> None:
    """4 x 4 grid (centres at 0.125, 0.375, 0.625, 0.875): a big box holds 3 x 3 centres, a small
    one inside it the centre (0.625, 0.625); that patch takes the small box's edges."""
    big = [0.0, 0.0, 0.75, 0.75]
    small = [0.5, 0.5, 0.7, 0.75]
    edges, held = losses.patch_box_targets([torch.tensor([big, small]), torch.zeros((0, 4))], 4)
    assert edges.shape == (2, 16, 4) and held.shape == (2, 16)
    grid = held[0].view(4, 4).int().tolist()
    assert grid == [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]]
    assert not bool(held[1].any()) and float(edges[1].abs().sum()) == 0.0
    corner = edges[0, 0].tolist()  # centre (0.125, 0.125) in the big box, in patches (x 4)
    assert corner == pytest.approx([0.5, 0.5, 2.5, 2.5])
    inner = edges[0, 2 * 4 + 2].tolist()  # centre (0.625, 0.625): the small box
    assert inner == pytest.approx([0.5, 0.5, 0.3, 0.5])
    assert float(edges[0, 3].abs().sum()) == 0.0  # held by none: no target
    # the order of the boxes does not change the assignment
    swapped, held2 = losses.patch_box_targets([torch.tensor([small, big])], 4)
    assert torch.equal(held2[0], held[0]) and torch.allclose(swapped[0], edges[0])


def test_patch_box_loss_is_l1_over_held_patches_only() -> None:
    edges, held = losses.patch_box_targets([torch.tensor([[0.0, 0.0, 0.5, 0.5]])], 2)
    exact = edges.clone()
    exact[~held] = 7.0  # patches no box holds do not count
    assert float(losses.patch_box_loss(exact, edges, held)) == pytest.approx(0.0)
    off = edges + 0.25
    assert float(losses.patch_box_loss(off, edges, held)) == pytest.approx(0.25)
    nothing = torch.zeros((1, 4), dtype=torch.bool)
    pred = torch.ones((1, 4, 4), requires_grad=True)
    zero = losses.patch_box_loss(pred, torch.zeros((1, 4, 4)), nothing)
    zero.backward()
    assert float(zero.detach()) == 0.0 and pred.grad is not None
    with pytest.raises(ValueError, match="image_size // patch_size"):
        losses.patch_box_loss(torch.zeros(1, 9, 4), edges, held)


def test_patch_loss_checks_shapes() -> None:
    with pytest.raises(ValueError, match="image_size // patch_size"):
        losses.patch_loss(torch.zeros(2, 16), torch.zeros(2, 9))
    value = losses.patch_loss(torch.zeros(1, 4), torch.tensor([[1.0, 0.0, 0.0, 0.0]]), pos_weight=3.0)
    assert float(value) == pytest.approx((3 * math.log(2) + 3 * math.log(2)) / 4)
