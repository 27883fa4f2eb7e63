import math

import pytest
import torch

from ranker.rankers.losses import (
    bradley_terry_loss,
    default_loss,
    get_loss,
    listwise_kl_loss,
    mse_loss,
    pairwise_bt_loss,
    pointwise_bce_loss,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_kl_hand_computed():
    # softmax([0, ln2, 0]) = [1/4, 1/2, 1/4]; pi_y from labels [1, 1, 0] = [1/2, 1/2, 0]
    # KL = 1/2 ln(2) + 1/2 ln(1) + 0 = ln(2)/2
    scores = torch.tensor([[0.0, LN2, 0.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    assert listwise_kl_loss(scores, labels).item() == pytest.approx(LN2 / 2, abs=1e-6)


def test_kl_is_zero_when_softmax_matches_labels():
    scores = torch.tensor([[LN3, 0.0]])  # softmax = [3/4, 1/4]
    labels = torch.tensor([[3.0, 1.0]])  # pi_y = [3/4, 1/4]
    assert listwise_kl_loss(scores, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_ignores_padding_and_groups_without_positives():
    scores = torch.tensor([[0.0, LN2, 0.0, 50.0], [1.0, 2.0, 3.0, 4.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    # group 0 as in the hand-computed case (the padded 4th entry must not count); group 1 has no target
    assert listwise_kl_loss(scores, labels, mask).item() == pytest.approx(LN2 / 2, abs=1e-6)


def test_kl_all_groups_without_positives_still_backprops():
    scores = torch.zeros(2, 3, requires_grad=True)
    loss = listwise_kl_loss(scores, torch.zeros(2, 3))
    loss.backward()
    assert loss.item() == 0.0 and scores.grad is not None


def test_bce_hand_computed():
    # sigmoid(0) = 1/2 with y=1 -> ln 2;  sigmoid(ln3) = 3/4 with y=0 -> -ln(1/4) = ln 4
    scores = torch.tensor([[0.0, LN3, 9.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    assert pointwise_bce_loss(scores, labels, mask).item() == pytest.approx((LN2 + math.log(4.0)) / 2, abs=1e-6)


def test_mse_hand_computed():
    scores = torch.tensor([[1.0, 0.5], [0.0, 7.0]])
    labels = torch.tensor([[0.0, 0.5], [0.5, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    assert mse_loss(scores, labels, mask).item() == pytest.approx((1.0 + 0.0 + 0.25) / 3, abs=1e-6)


def test_bradley_terry_hand_computed():
    # sigmoid(ln3) = 3/4 -> -ln(3/4); sigmoid(0) = 1/2 -> ln 2
    winners, losers = torch.tensor([LN3, 1.0]), torch.tensor([0.0, 1.0])
    expected = (-math.log(0.75) + LN2) / 2
    assert bradley_terry_loss(winners, losers).item() == pytest.approx(expected, abs=1e-6)


def test_pairwise_bt_uses_every_ordered_pair_once():
    scores = torch.tensor([[2.0, 0.0, 1.0, 5.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, True, False]])
    # real pairs with y_w > y_l: (0, 1) and (0, 2); candidate 3 is padding
    expected = bradley_terry_loss(torch.tensor([2.0, 2.0]), torch.tensor([0.0, 1.0])).item()
    assert pairwise_bt_loss(scores, labels, mask).item() == pytest.approx(expected, abs=1e-6)


def test_pairwise_bt_with_real_labels_and_no_pairs():
    scores = torch.tensor([[0.0, 1.0, 2.0]])
    labels = torch.tensor([[0.2, 0.5, 0.9]])  # pairs (1,0), (2,0), (2,1), all with margin > 0
    margins = torch.tensor([1.0, 2.0, 1.0])
    assert pairwise_bt_loss(scores, labels).item() == pytest.approx(bradley_terry_loss(margins, torch.zeros(3)).item())
    assert pairwise_bt_loss(scores, torch.ones(1, 3)).item() == 0.0


def test_loss_lookup():
    assert default_loss("list", "binary") == "kl"
    assert default_loss("point", "binary") == "bce"
    assert default_loss("list", "real") == default_loss("point", "real") == "mse"
    assert get_loss("kl") is listwise_kl_loss
    with pytest.raises(ValueError, match="hinge"):
        get_loss("hinge")
