"""Map-style datasets over the canonical per-user sequences, cut on the fly.

Training does not materialise every prefix as its own row (RecBole's way, whose memory grows as
interactions x length): each user's training sequence is tiled from its end into windows of at most
``max_seq_len`` inputs, and every position of a window predicts the next item, so one epoch sees every
training target exactly once. Only three integers are stored per window.
"""

from typing import Literal, Optional

import numpy as np
from torch.utils.data import Dataset

from molar_lightning.data.same_target import SameTargetPrefixes

HELD_OUT = {"valid": 2, "test": 1, "predict": 0}  # items at the end of a sequence the split keeps out of its input


class TrainWindowDataset(Dataset):
    """Training windows of the leave-one-out training part (all but the last two items) of each sequence.

    Args:
        offsets: ``[U + 1]`` start of each user's sequence in ``items``.
        items: ``[I]`` all sequences concatenated, chronological per user.
        max_seq_len: most inputs per window.
        same_target_positives: also return, per window, a same-target partner prefix of each of its
            positions (``all``) or of its last (``last``): DuoRec's supervised views
            (:class:`~molar_lightning.data.same_target.SameTargetPrefixes`); ``None`` returns none.
    """

    def __init__(self, offsets: np.ndarray, items: np.ndarray, max_seq_len: int,
                 same_target_positives: Optional[Literal["all", "last"]] = None) -> None:
        self.items = items
        lengths = np.diff(offsets) - HELD_OUT["valid"]  # training part of each sequence
        windows_per_user = np.maximum(np.ceil((lengths - 1) / max_seq_len), 0).astype(np.int64)
        self.users = np.repeat(np.arange(len(lengths)), windows_per_user)
        rank_from_end = np.arange(len(self.users)) - np.repeat(np.cumsum(windows_per_user) - windows_per_user,
                                                               windows_per_user)
        # Inputs are items[start:end] of the user's sequence, targets items[start + 1:end + 1].
        self.ends = offsets[self.users] + lengths[self.users] - 1 - rank_from_end * max_seq_len
        self.starts = np.maximum(self.ends - max_seq_len, offsets[self.users])
        self.same_target: Optional[SameTargetPrefixes] = None
        if same_target_positives is not None:
            self.same_target = SameTargetPrefixes(items, self.starts, self.ends, same_target_positives)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, int, Optional[list[np.ndarray]]]:
        start, end = self.starts[index], self.ends[index]
        positives = None if self.same_target is None else self.same_target.positives(index)
        return self.items[start:end], self.items[start + 1:end + 1], int(self.users[index]), positives


def items_in_training(offsets: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """``[N + 1]`` booleans: whether each item occurs in some user's training part (all but the items that
    validation and test hold out), so that a held-out item that is False never appeared in training (a cold
    item); row 0, the padding id, is False."""
    lengths = np.diff(offsets)
    training_end = offsets[1:] - np.minimum(lengths, HELD_OUT["valid"])
    user_of_position = np.repeat(np.arange(len(lengths)), lengths)
    in_training = np.arange(len(items)) < training_end[user_of_position]
    seen = np.zeros(num_items + 1, dtype=bool)
    seen[items[in_training]] = True
    seen[0] = False
    return seen


class LeaveOneOutDataset(Dataset):
    """One row per user: the history before the held-out item, and that item.

    Args:
        offsets: ``[U + 1]`` start of each user's sequence in ``items``.
        items: ``[I]`` all sequences concatenated, chronological per user.
        max_seq_len: most recent history items given to the model (the full history is returned too).
        split: ``valid`` holds out the second-last item, ``test`` the last one (the validation item joins the
            history), ``predict`` holds out nothing and returns target 0.
    """

    def __init__(self, offsets: np.ndarray, items: np.ndarray, max_seq_len: int,
                 split: Literal["valid", "test", "predict"]) -> None:
        self.offsets, self.items, self.max_seq_len = offsets, items, max_seq_len
        self.held_out = HELD_OUT[split]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, user: int) -> tuple[np.ndarray, int, int, np.ndarray]:
        end = self.offsets[user + 1] - self.held_out
        history = self.items[self.offsets[user]:end]
        target = int(self.items[end]) if self.held_out else 0
        return history[-self.max_seq_len:], target, user, history
