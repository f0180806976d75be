"""DuoRec: the SASRec encoder unchanged, and its contrastive regulariser (``losses.DuoRecContrastiveLoss``, its
``auxiliary_loss``) checked against a recomputation."""

import pytest
import torch
import torch.nn.functional as F

from molar_lightning.losses import DuoRecContrastiveLoss, FullSoftmaxCrossEntropy, info_nce
from molar_lightning.models.id.duorec import DuoRec
from molar_lightning.models.id.sasrec import SASRec

TINY = dict(max_seq_len=32, hidden_size=32, inner_size=64, dropout=0.2, attention_dropout=0.2)


@pytest.fixture
def model(synthetic) -> DuoRec:
    torch.manual_seed(0)
    return DuoRec(synthetic.num_items, **TINY)


@pytest.fixture
def batch(synthetic):
    """Eight training rows: ``item_seq``, ``mask``, ``positive_seq`` and the last targets."""
    item_seq = synthetic.train_seq[:8]
    return item_seq, item_seq != 0, synthetic.positive_seq[:8], synthetic.train_targets[:8, -1]


def reference_info_nce(first, second, temperature, targets=None, cos=False):
    """Per-view loop: the positive against the other 2B - 2 views, minus views sharing the target."""
    views = torch.cat([first, second])
    if cos:
        views = F.normalize(views, dim=-1)
    count, half = views.shape[0], first.shape[0]
    losses = []
    for row in range(count):
        partner = (row + half) % count
        negatives = [
            col
            for col in range(count)
            if col not in (row, partner) and (targets is None or targets[col % half] != targets[row % half])
        ]
        logits = views[row] @ views[[partner] + negatives].T / temperature
        losses.append(-torch.log_softmax(logits, 0)[0])
    return torch.stack(losses).mean()


def test_encoder_is_sasrec(synthetic, batch) -> None:
    item_seq, mask, _, _ = batch
    torch.manual_seed(0)
    sasrec = SASRec(synthetic.num_items, **TINY).eval()
    torch.manual_seed(0)
    duorec = DuoRec(synthetic.num_items, **TINY).eval()
    assert isinstance(duorec, SASRec)
    assert isinstance(duorec.auxiliary_loss, DuoRecContrastiveLoss) and sasrec.auxiliary_loss is None
    assert duorec.state_dict().keys() == sasrec.state_dict().keys()
    torch.testing.assert_close(duorec.encode_sequence(item_seq, mask), sasrec.encode_sequence(item_seq, mask))


def test_is_causal(model, check_causal) -> None:
    check_causal(model)


def test_left_padding_changes_nothing(model, check_padding_invariant) -> None:
    check_padding_invariant(model)


@pytest.mark.parametrize("cos", [False, True], ids=["dot", "cos"])
def test_info_nce_matches_a_per_view_recomputation(cos) -> None:
    torch.manual_seed(0)
    first, second = torch.randn(4, 8), torch.randn(4, 8)
    similarity = "cos" if cos else "dot"
    expected = reference_info_nce(first, second, 0.5, cos=cos)
    torch.testing.assert_close(info_nce(first, second, 0.5, similarity), expected)


def test_same_target_views_are_not_negatives() -> None:
    torch.manual_seed(0)
    first, second = torch.randn(3, 8), torch.randn(3, 8)
    shared = torch.tensor([5, 5, 7])
    masked = info_nce(first, second, 1.0, "dot", shared)
    torch.testing.assert_close(masked, reference_info_nce(first, second, 1.0, shared))
    assert not torch.allclose(masked, info_nce(first, second, 1.0, "dot"))
    distinct = torch.tensor([5, 6, 7])
    torch.testing.assert_close(info_nce(first, second, 1.0, "dot", distinct), info_nce(first, second, 1.0, "dot"))


def test_views_are_the_dropout_pass_and_the_supervised_sequence(model, batch) -> None:
    """Without dropout both passes are deterministic, so the pairing shows: (second pass, positive_seq)
    when a positive is given, (user_repr, second pass) otherwise."""
    item_seq, mask, positive_seq, targets = batch
    model.eval()
    with torch.no_grad():
        user_repr = model.encode_sequence(item_seq, mask)
        positive = model.encode_sequence(positive_seq, positive_seq != 0)
        shifted = user_repr + 1.0
        supervised = model.auxiliary_loss(model, item_seq, mask, shifted, positive_seq, targets=targets)
        unsupervised = model.auxiliary_loss(model, item_seq, mask, shifted, None, targets=targets)
    cos = model.auxiliary_loss.similarity == "cos"
    torch.testing.assert_close(supervised, 0.1 * reference_info_nce(user_repr, positive, 1.0, targets, cos=cos))
    torch.testing.assert_close(unsupervised, 0.1 * reference_info_nce(shifted, user_repr, 1.0, targets, cos=cos))


@pytest.mark.parametrize("with_positive", [True, False], ids=["supervised", "unsupervised"])
def test_auxiliary_loss_is_positive_and_trains_the_encoder(model, batch, with_positive) -> None:
    item_seq, mask, positive_seq, targets = batch
    model.train()
    user_repr = model.encode_sequence(item_seq, mask)
    loss = model.auxiliary_loss(model, item_seq, mask, user_repr, positive_seq if with_positive else None,
                                targets=targets)
    loss.backward()
    assert loss.ndim == 0 and bool(torch.isfinite(loss)) and loss.item() > 0
    assert float(model.item_embedding.weight.grad.abs().sum()) > 0
    assert float(model.transformer.blocks[0].qkv.weight.grad.abs().sum()) > 0


def test_zero_weight_gives_zero_loss(synthetic, batch) -> None:
    item_seq, mask, positive_seq, targets = batch
    model = DuoRec(synthetic.num_items, **TINY, contrastive_weight=0.0).train()
    loss = model.auxiliary_loss(model, item_seq, mask, model.encode_sequence(item_seq, mask), positive_seq,
                                targets=targets)
    assert loss.item() == 0.0


def test_rejects_an_unknown_similarity(synthetic) -> None:
    with pytest.raises(ValueError, match="'euclid'"):
        DuoRec(synthetic.num_items, similarity="euclid")


def test_learns_the_transitions_with_the_regulariser(model, fit_and_rank, popularity_ndcg) -> None:
    result = fit_and_rank(model, FullSoftmaxCrossEntropy(), steps=150)
    assert result.last_loss < 0.6 * result.first_loss
    assert result.ndcg > popularity_ndcg + 0.5, (result.ndcg, popularity_ndcg)
