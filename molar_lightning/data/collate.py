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


def collate_train(samples: Sequence[tuple[np.ndarray, np.ndarray, int, Optional[np.ndarray]]]) -> TrainBatch:
    """Samples ``(inputs, targets, user, positive_inputs or None)`` -> :class:`TrainBatch`."""
    inputs, targets, users, positives = zip(*samples)
    has_positives = positives[0] is not None
    width = max(max(len(seq) for seq in inputs), max(len(seq) for seq in positives) if has_positives else 0)
    pad_to = [np.zeros(width, dtype=np.int64)]  # a full-width row fixes every tensor's width, then dropped
    return TrainBatch(
        item_seq=left_pad(list(inputs) + pad_to)[:-1],
        target_seq=left_pad(list(targets) + pad_to)[:-1],
        user_ids=torch.as_tensor(users, dtype=torch.int64),
        positive_seq=left_pad(list(positives) + pad_to)[:-1] if has_positives else None,
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
