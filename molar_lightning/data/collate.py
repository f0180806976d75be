"""Turning per-user numpy sequences into padded batches.

Sequences are left-padded (the most recent item sits at the last column, where causal models read the
user embedding) and padded only to the longest sequence of the batch. Histories used for excluding seen
items are right-padded. Item id 0 is the padding everywhere.
"""

from typing import Optional, Sequence

import numpy as np
import torch

from molar_lightning.batch import EvalBatch, TrainBatch


def left_pad(sequences: Sequence[np.ndarray]) -> torch.Tensor:
    """``[B, max_len]`` int64, each row's items flush right."""
    width = max((len(sequence) for sequence in sequences), default=0)
    out = np.zeros((len(sequences), max(width, 1)), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        if len(sequence):
            out[row, -len(sequence):] = sequence
    return torch.from_numpy(out)


def right_pad(sequences: Sequence[np.ndarray]) -> torch.Tensor:
    """``[B, max_len]`` int64, each row's items flush left."""
    width = max((len(sequence) for sequence in sequences), default=0)
    out = np.zeros((len(sequences), max(width, 1)), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = sequence
    return torch.from_numpy(out)


def collate_train(samples: Sequence[tuple[np.ndarray, np.ndarray, int, Optional[list[np.ndarray]]]]) -> TrainBatch:
    """Samples ``(inputs, targets, user, positive prefixes or None)`` -> :class:`TrainBatch`; the windows'
    positive prefixes are stacked in window order into ``positive_seq``."""
    inputs, targets, users, positives = zip(*samples)
    return TrainBatch(
        item_seq=left_pad(inputs),
        target_seq=left_pad(targets),
        user_ids=torch.as_tensor(users, dtype=torch.int64),
        positive_seq=None if positives[0] is None else left_pad([prefix for window in positives for prefix in window]),
    )


def collate_eval(samples: Sequence[tuple[np.ndarray, int, int, np.ndarray]]) -> EvalBatch:
    """Samples ``(recent_inputs, target, user, full_history)`` -> :class:`EvalBatch`."""
    inputs, targets, users, histories = zip(*samples)
    return EvalBatch(
        item_seq=left_pad(inputs),
        target=torch.as_tensor(targets, dtype=torch.int64),
        user_ids=torch.as_tensor(users, dtype=torch.int64),
        history=right_pad(histories),
    )
