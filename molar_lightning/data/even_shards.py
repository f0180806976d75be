"""Evaluation shards of one length on every process, with the padding rows marked so nothing counts them twice.

Lightning's ``UnrepeatedDistributedSampler`` gives processes shares that differ by a row, so one process may
run a batch more than another. A sharded model (FSDP) cannot: every forward gathers weights from all
processes together. :class:`EvenShardSampler` pads the short shares with a repeat of one of their rows,
under an index past the data set's end, which :class:`PaddedEvalDataset` turns into that row's sample with
user id :data:`PADDING_USER`; the ranking metrics and the recommendation writer skip such rows.
"""

import math
from typing import Iterator

from torch.utils.data import Dataset, DistributedSampler

from molar_lightning.batch import PADDING_USER


class EvenShardSampler(DistributedSampler):
    """Rows ``rank, rank + world, ...`` of the data set, then padding markers up to ``ceil(n / world)``."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.length = math.ceil(len(dataset) / num_replicas)

    def __iter__(self) -> Iterator[int]:
        size = len(self.dataset)
        rows = list(range(self.rank, size, self.num_replicas))
        repeated = rows[-1] if rows else 0
        return iter(rows + [size + repeated] * (self.length - len(rows)))

    def __len__(self) -> int:
        return self.length


class PaddedEvalDataset(Dataset):
    """An evaluation data set of ``(inputs, target, user, history)`` rows where index ``n + i`` (``n`` its
    length) is row ``i`` again under user id :data:`PADDING_USER`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if index < len(self.dataset):
            return self.dataset[index]
        inputs, target, _, history = self.dataset[index - len(self.dataset)]
        return inputs, target, PADDING_USER, history
