"""Evaluation shards: one length on every process, the padding row marked and never counted."""

import torch

from molar_lightning.batch import PADDING_USER, EvalBatch
from molar_lightning.callbacks.evaluation import _update
from molar_lightning.data.even_shards import EvenShardSampler, PaddedEvalDataset
from molar_lightning.metrics.ranking import RankingMetrics


class Rows(torch.utils.data.Dataset):
    """``(inputs, target, user, history)`` rows, user ``i`` at row ``i``."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, row: int):
        return [row + 1], row + 2, row, [row + 1]


def test_eleven_users_over_two_processes_give_six_rows_each_one_of_them_a_marked_repeat() -> None:
    dataset = PaddedEvalDataset(Rows(11))
    shares = [list(EvenShardSampler(dataset, 2, rank)) for rank in range(2)]
    assert [len(share) for share in shares] == [6, 6]
    users = [[dataset[index][2] for index in share] for share in shares]
    assert users == [[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9, PADDING_USER]]
    assert dataset[shares[1][-1]][1] == dataset[9][1]  # the repeat is a real row: finite model outputs
    assert sorted(user for share in users for user in share if user != PADDING_USER) == list(range(11))


def test_the_ranking_metric_skips_padding_rows() -> None:
    items = torch.eye(4)
    users = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    batch = EvalBatch(item_seq=torch.tensor([[1], [1]]), target=torch.tensor([1, 2]),
                      user_ids=torch.tensor([0, PADDING_USER]), history=torch.zeros(2, 1, dtype=torch.long))
    metric = RankingMetrics(ks=(1,), exclude_history=False)
    _update(metric, {"user_emb": users, "item_emb": items}, batch)
    values = metric.compute()
    assert values["users"] == 1 and values["recall@1"] == 1.0  # the padding row (a miss) is not counted
