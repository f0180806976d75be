"""DuoRec's supervised views, drawn from the whole training data as its authors draw them.

The authors' RecBole data (``semantic_augmentation`` in RuihongQiu/DuoRec) makes every training prefix a
sample and, each time a sample is batched, pairs it with a uniformly drawn other training prefix that has the
same next item (the sample itself when none has). Here a sample is a prefix of a training window: each of its
positions (``samples="all"``, the authors' every prefix) or only its last (``samples="last"``). A prefix is
the window's items from its start to that position, the same inputs that the position's state reads in the
main pass, so a positive is a sample of the same kind as its anchor.
"""

from typing import Literal

import numpy as np
import torch


class SameTargetPrefixes:
    """For each training window, a same-target partner prefix of each of its samples, drawn anew per call.

    Args:
        items: ``[I]`` all sequences concatenated.
        starts: ``[W]`` first input of each training window in ``items``.
        ends: ``[W]`` one past its last input; its targets are ``items[starts + 1:ends + 1]``.
        samples: ``all`` positions of a window are samples, or only its ``last``.
    """

    def __init__(self, items: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 samples: Literal["all", "last"]) -> None:
        self.items = items
        self.per_window = ends - starts if samples == "all" else np.ones_like(starts)
        self.first = np.cumsum(self.per_window) - self.per_window  # each window's first sample
        # Sample k is the prefix items[prefix_start[k]:prefix_end[k]]; its target is items[prefix_end[k]].
        self.prefix_start = np.repeat(starts, self.per_window)
        self.prefix_end = np.repeat(ends - self.per_window, self.per_window) + 1 + (
            np.arange(len(self.prefix_start)) - np.repeat(self.first, self.per_window))
        targets = items[self.prefix_end]
        # Samples sorted by target; each knows its group's start and size in that order, and its own slot.
        self.order = np.argsort(targets, kind="stable")
        sorted_targets = targets[self.order]
        self.group_start = np.searchsorted(sorted_targets, targets, side="left")
        self.group_size = np.searchsorted(sorted_targets, targets, side="right") - self.group_start
        slot = np.empty_like(self.order)
        slot[self.order] = np.arange(len(self.order))
        self.own_slot = slot - self.group_start

    def partners(self, samples: np.ndarray) -> np.ndarray:
        """A uniformly drawn other sample with the same target for each of ``samples``; itself if none has.

        Draws with torch's generator, which Lightning seeds in each DataLoader worker."""
        others = self.group_size[samples] - 1
        slot = (torch.rand(len(samples), dtype=torch.float64).numpy() * others).astype(np.int64)
        slot += (slot >= self.own_slot[samples]) & (others > 0)  # skip the sample itself
        return self.order[self.group_start[samples] + slot]

    def positives(self, window: int) -> list[np.ndarray]:
        """The partner prefixes of ``window``'s samples, in the order of its positions."""
        first = self.first[window]
        chosen = self.partners(np.arange(first, first + self.per_window[window]))
        return [self.items[start:end] for start, end in zip(self.prefix_start[chosen], self.prefix_end[chosen])]
