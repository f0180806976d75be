"""GRU4Rec: protocol shapes, causality, left-padding invariance (the GRU never sees padding), learning."""

import pytest
import torch

from molar_lightning.losses import FullSoftmaxCrossEntropy
from molar_lightning.models.id.gru4rec import GRU4Rec
from molar_lightning.models.protocol import IDSequenceEncoder


@pytest.fixture
def model(synthetic) -> GRU4Rec:
    torch.manual_seed(0)
    return GRU4Rec(synthetic.num_items, embedding_size=32, hidden_size=64, dropout=0.1)


def test_follows_the_protocol(model) -> None:
    model.eval()
    item_seq = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])
    states = model.sequence_states(item_seq, item_seq != 0)
    assert isinstance(model, IDSequenceEncoder) and model.auxiliary_loss is None
    assert states.shape == (2, 4, 32)
    assert model.item_embeddings().shape == (model.item_embedding.num_embeddings, 32)
    torch.testing.assert_close(model.encode_sequence(item_seq, item_seq != 0), states[:, -1])


def test_matches_a_gru_run_on_the_real_items_alone(model) -> None:
    model.eval()
    item_seq = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        states = model.sequence_states(item_seq, item_seq != 0)
        alone, _ = model.gru(model.item_embedding(torch.tensor([[5, 6, 7]])))
        reference = model.projection(alone)
    torch.testing.assert_close(states[0, 2:], reference[0])
    assert bool((states[0, :2] == 0).all())


def test_is_causal(model, check_causal) -> None:
    check_causal(model)


def test_left_padding_changes_nothing(model, check_padding_invariant) -> None:
    check_padding_invariant(model)


def test_learns_the_transitions(model, fit_and_rank, popularity_ndcg) -> None:
    result = fit_and_rank(model, FullSoftmaxCrossEntropy(), steps=150)
    assert result.last_loss < 0.6 * result.first_loss
    assert result.ndcg > popularity_ndcg + 0.5, (result.ndcg, popularity_ndcg)
