"""SASRec: protocol shapes, causality, left-padding invariance, safe all-padding rows, and learning."""

import pytest
import torch

from molar_lightning.losses import FullSoftmaxCrossEntropy
from molar_lightning.models.id.sasrec import SASRec
from molar_lightning.models.protocol import IDSequenceEncoder


@pytest.fixture
def model(synthetic) -> SASRec:
    torch.manual_seed(0)
    return SASRec(
        synthetic.num_items, max_seq_len=32, hidden_size=32, inner_size=64, dropout=0.2, attention_dropout=0.2
    )


def test_follows_the_protocol(model) -> None:
    model.eval()
    item_seq = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])
    states = model.sequence_states(item_seq, item_seq != 0)
    assert isinstance(model, IDSequenceEncoder) and model.auxiliary_loss is None
    assert states.shape == (2, 4, 32)
    assert model.item_embeddings().shape == (model.item_embedding.num_embeddings, 32)
    torch.testing.assert_close(model.encode_sequence(item_seq, item_seq != 0), states[:, -1])


def test_is_causal(model, check_causal) -> None:
    check_causal(model)


def test_left_padding_changes_nothing(model, check_padding_invariant) -> None:
    check_padding_invariant(model)


def test_all_padding_rows_stay_finite_in_training(model) -> None:
    model.train()
    item_seq = torch.tensor([[0, 0, 0, 0, 0, 7], [0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    states = model.sequence_states(item_seq, item_seq != 0)
    states.sum().backward()
    assert bool(torch.isfinite(states).all())
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)


def test_rejects_sequences_longer_than_max_seq_len(model) -> None:
    item_seq = torch.ones(1, 33, dtype=torch.long)
    with pytest.raises(ValueError, match="length 33 but max_seq_len is 32"):
        model.sequence_states(item_seq, item_seq != 0)


def test_rejects_heads_that_do_not_divide_the_width() -> None:
    with pytest.raises(ValueError, match="num_heads=3"):
        SASRec(10, hidden_size=32, num_heads=3)


def test_learns_the_transitions(model, fit_and_rank, popularity_ndcg) -> None:
    result = fit_and_rank(model, FullSoftmaxCrossEntropy(), steps=150)
    assert result.last_loss < 0.6 * result.first_loss
    assert result.ndcg > popularity_ndcg + 0.5, (result.ndcg, popularity_ndcg)
