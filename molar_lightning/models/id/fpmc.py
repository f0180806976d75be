"""FPMC: matrix factorisation of user taste plus a factorised first-order Markov chain.

Rendle, Freudenthaler & Schmidt-Thieme, "Factorizing Personalized Markov Chains for Next-Basket
Recommendation", WWW 2010, with one-item baskets as RecBole uses it for sequences.
"""

from typing import Optional

import torch
from torch import nn


class FPMC(nn.Module):
    """Factorized personalized Markov chain (FPMC in the paper).

    The paper scores user ``u`` with last item ``l`` against candidate ``i`` as
    ``<V^{U,I}_u, V^{I,U}_i> + <V^{I,L}_i, V^{L,I}_l>``. The protocol scores by one dot product, so the
    state at position ``t`` is ``[V^{U,I}_u ; V^{L,I}_{item_t}]`` and the item table is
    ``[V^{I,U} ; V^{I,L}]``: their dot product is that score exactly, in ``2 * embedding_size`` dims.

    Args:
        num_users: number of users; ``user_ids`` index ``0..num_users-1``.
        num_items: number of items ``N``; ids run ``1..N`` and 0 is padding.
        embedding_size: width of each of the four factor tables (the state is twice as wide).
    """

    def __init__(self, num_users: int, num_items: int, embedding_size: int = 64) -> None:
        super().__init__()
        self.user_factors = nn.Embedding(num_users, embedding_size)  # V^{U,I}
        self.item_user_factors = nn.Embedding(num_items + 1, embedding_size, padding_idx=0)  # V^{I,U}
        self.item_last_factors = nn.Embedding(num_items + 1, embedding_size, padding_idx=0)  # V^{I,L}
        self.last_item_factors = nn.Embedding(num_items + 1, embedding_size, padding_idx=0)  # V^{L,I}
        for table in (self.user_factors, self.item_user_factors, self.item_last_factors, self.last_item_factors):
            nn.init.xavier_normal_(table.weight)
        self.auxiliary_loss: Optional[nn.Module] = None  # no regulariser

    def sequence_states(
        self, item_seq: torch.Tensor, mask: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``item_seq [B, L]``, ``mask [B, L]`` (unused: padded states are never scored), ``user_ids [B]``.

        Returns ``[B, L, 2 * embedding_size]``.
        """
        if user_ids is None:
            raise ValueError(
                "FPMC needs user_ids (its user factors are half of every score); pass the batch's user_ids"
            )
        user = self.user_factors(user_ids)[:, None].expand(-1, item_seq.shape[1], -1)
        return torch.cat([user, self.last_item_factors(item_seq)], dim=-1)

    def encode_sequence(
        self, item_seq: torch.Tensor, mask: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """User embedding after the whole sequence: ``[B, 2 * embedding_size]``."""
        return self.sequence_states(item_seq, mask, user_ids)[:, -1]

    def item_embeddings(self) -> torch.Tensor:
        """``[N + 1, 2 * embedding_size]``: ``[V^{I,U} ; V^{I,L}]``."""
        return torch.cat([self.item_user_factors.weight, self.item_last_factors.weight], dim=-1)
