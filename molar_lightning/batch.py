"""The two batch types that flow from the DataModules into the tasks and the evaluation callback.

Dataclasses rather than dicts, so a misspelled field is an error and not a silently missing key.
Lightning moves dataclass batches between devices field by field.
"""

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class TrainBatch:
    """Causal next-item training: every position of ``item_seq`` predicts the same position of ``target_seq``.

    Attributes:
        item_seq: ``[B, L]`` item ids, left-padded with 0.
        target_seq: ``[B, L]`` the item that follows each position; 0 where there is nothing to predict.
        user_ids: ``[B]`` user indices (0-based).
        positive_seq: ``[B, L]`` another training window whose last target equals this window's last target
            (DuoRec's supervised view), present only when the DataModule is asked for it.
    """

    item_seq: torch.Tensor
    target_seq: torch.Tensor
    user_ids: torch.Tensor
    positive_seq: Optional[torch.Tensor] = None

    @property
    def mask(self) -> torch.Tensor:
        """``[B, L]`` bool, True at real items."""
        return self.item_seq != 0


@dataclass
class EvalBatch:
    """One held-out item per user, ranked against all items.

    Attributes:
        item_seq: ``[B, L]`` the most recent history, left-padded with 0.
        target: ``[B]`` the held-out item.
        user_ids: ``[B]`` user indices (0-based).
        history: ``[B, H]`` every item the user interacted with before the target (not only the last ``L``),
            right-padded with 0; excluded from ranking when the evaluation asks for it.
    """

    item_seq: torch.Tensor
    target: torch.Tensor
    user_ids: torch.Tensor
    history: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``[B, L]`` bool, True at real items."""
        return self.item_seq != 0
