"""FPMC: the protocol's dot product is the paper's score, user ids are required, padding, learning."""

import pytest
import torch

from molar_lightning.losses import BPRLoss
from molar_lightning.models.id.fpmc import FPMC
from molar_lightning.models.protocol import IDSequenceEncoder


@pytest.fixture
def model(synthetic) -> FPMC:
    torch.manual_seed(0)
    return FPMC(synthetic.num_users, synthetic.num_items, embedding_size=16)


def test_dot_product_is_the_fpmc_score(model) -> None:
    item_seq = torch.tensor([[0, 3, 9], [4, 5, 6]])
    user_ids = torch.tensor([11, 250])
    with torch.no_grad():
        scores = model.encode_sequence(item_seq, item_seq != 0, user_ids) @ model.item_embeddings().T
    num_items = model.item_user_factors.num_embeddings - 1
    assert isinstance(model, IDSequenceEncoder) and model.auxiliary_loss is None
    assert scores.shape == (2, num_items + 1)
    for row, (user, last) in enumerate([(11, 9), (250, 6)]):
        for item in (1, 17, num_items):
            expected = (
                model.user_factors.weight[user] @ model.item_user_factors.weight[item]
                + model.item_last_factors.weight[item] @ model.last_item_factors.weight[last]
            )
            torch.testing.assert_close(scores[row, item], expected.detach())


def test_requires_user_ids(model) -> None:
    item_seq = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="user_ids"):
        model.sequence_states(item_seq, item_seq != 0)


def test_state_depends_only_on_the_user_and_the_current_item(model) -> None:
    item_seq = torch.tensor([[0, 3, 9, 4]])
    changed = torch.tensor([[0, 3, 12, 4]])
    user_ids = torch.tensor([0])
    with torch.no_grad():
        before = model.sequence_states(item_seq, item_seq != 0, user_ids)
        after = model.sequence_states(changed, changed != 0, user_ids)
    torch.testing.assert_close(after[:, [0, 1, 3]], before[:, [0, 1, 3]], rtol=0, atol=0)
    assert not torch.equal(after[:, 2], before[:, 2])


def test_left_padding_changes_nothing(model, check_padding_invariant) -> None:
    check_padding_invariant(model)


def test_learns_the_transitions_with_bpr(model, fit_and_rank, popularity_ndcg) -> None:
    result = fit_and_rank(model, BPRLoss(), steps=150)
    assert result.last_loss < 0.6 * result.first_loss
    assert result.ndcg > popularity_ndcg + 0.5, (result.ndcg, popularity_ndcg)
