"""The three next-item losses against values computed by hand on two- and three-row examples, and the
signature the tasks' ``NextItemLoss`` type asks of them."""

import inspect
import math

import pytest
import torch

from molar_lightning.losses import BPRLoss, FullSoftmaxCrossEntropy, NextItemLoss, SampledSoftmaxLoss

# Item 0 is padding and is given a huge embedding: if any loss ranked it, the values below would change.
ITEM_TABLE = torch.tensor([[50.0, 50.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
STATES = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
TARGETS = torch.tensor([1, 3])


def test_full_softmax_matches_hand_computation() -> None:
    # Row 1 scores items 1..3 as [1, 0, 0] with target 1; row 2 as [0, 2, 0] with target 3.
    expected = ((math.log(math.e + 2) - 1) + math.log(2 + math.e**2)) / 2
    loss = FullSoftmaxCrossEntropy()(STATES, TARGETS, ITEM_TABLE)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_sampled_softmax_matches_a_recomputation_from_the_same_draw() -> None:
    loss_fn = SampledSoftmaxLoss(num_negatives=5)
    torch.manual_seed(3)
    loss = loss_fn(STATES, TARGETS, ITEM_TABLE)
    torch.manual_seed(3)
    negatives = torch.randint(1, 4, (5,)).tolist()
    assert {1, 3} <= set(negatives), "pick a seed whose pool holds both targets, so the mask is exercised"
    expected = 0.0
    for state, target in zip(STATES, TARGETS.tolist()):
        positive = float(state @ ITEM_TABLE[target])
        kept = [float(state @ ITEM_TABLE[item]) for item in negatives if item != target]
        expected += -positive + math.log(sum(math.exp(score) for score in [positive] + kept))
    assert float(loss) == pytest.approx(expected / 2, rel=1e-6)


def test_sampled_softmax_masks_negatives_equal_to_the_positive() -> None:
    # With one item every negative is the positive: all are masked and the loss is exactly 0, where
    # counting them would give log(1 + num_negatives).
    table = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    loss = SampledSoftmaxLoss(num_negatives=8)(STATES, torch.tensor([1, 1]), table)
    assert float(loss) == 0.0


def test_sampled_softmax_rejects_an_empty_pool() -> None:
    with pytest.raises(ValueError, match="got 0"):
        SampledSoftmaxLoss(num_negatives=0)


def test_bpr_is_minus_log_sigmoid_of_the_margin_to_the_drawn_negative() -> None:
    states = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    targets = torch.tensor([1, 3, 2])
    torch.manual_seed(0)
    loss = BPRLoss()(states, targets, ITEM_TABLE)
    torch.manual_seed(0)
    negatives = torch.randint(1, 4, (3,)).tolist()
    assert all(n != t for n, t in zip(negatives, targets.tolist())), "pick a seed whose draw needs no redraw"
    expected = 0.0
    for state, target, negative in zip(states, targets.tolist(), negatives):
        margin = float(state @ ITEM_TABLE[target] - state @ ITEM_TABLE[negative])
        expected += -math.log(1 / (1 + math.exp(-margin)))
    assert float(loss) == pytest.approx(expected / 3, rel=1e-6)


def test_bpr_with_one_item_is_log_two() -> None:
    # The only negative is the positive itself, so every margin is 0 and -log(sigmoid(0)) = log 2.
    table = torch.tensor([[0.0, 0.0], [3.0, -1.0]])
    loss = BPRLoss()(STATES, torch.tensor([1, 1]), table)
    assert float(loss) == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize("loss", [FullSoftmaxCrossEntropy, SampledSoftmaxLoss, BPRLoss], ids=lambda cls: cls.__name__)
def test_next_item_losses_spell_the_protocol_signature(loss: type) -> None:
    """The CLI accepts a ``loss`` class_path only when its ``forward`` matches ``NextItemLoss`` exactly."""
    assert inspect.signature(loss.forward) == inspect.signature(NextItemLoss.forward)

