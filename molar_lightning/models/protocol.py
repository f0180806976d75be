"""The protocol every user-sequence encoder follows, ID-based or content-based.

Tasks, losses and the ranking metrics only talk to this protocol, so adding a model is adding one file.
Sequences are left-padded with item id 0: the most recent item is always at position ``L - 1``, and the
user embedding after the whole history is ``sequence_states(...)[:, -1]``.
"""

from typing import Optional, Protocol, runtime_checkable

import torch


@runtime_checkable
class SequenceEncoder(Protocol):
    """Item sequence in, user embedding out; item embeddings in the same space.

    A user is scored against item ``i`` by the dot product ``user_emb @ item_embeddings()[i]``.
    """

    def sequence_states(
        self, item_seq: torch.Tensor, mask: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """User embedding after every position, causally.

        Args:
            item_seq: ``[B, L]`` item ids, left-padded with 0.
            mask: ``[B, L]`` bool, True at real items.
            user_ids: ``[B]`` user indices, for models with user factors (FPMC); others ignore it.

        Returns:
            ``[B, L, D]``: row ``t`` depends only on ``item_seq[:, : t + 1]`` and predicts item ``t + 1``.
        """
        ...

    def encode_sequence(
        self, item_seq: torch.Tensor, mask: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """User embedding after the whole sequence: ``[B, D]``."""
        ...

    def item_embeddings(self) -> torch.Tensor:
        """``[num_items + 1, D]``, row ``i`` for item id ``i``; row 0 is padding and never ranked."""
        ...
