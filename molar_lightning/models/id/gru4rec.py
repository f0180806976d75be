"""GRU4Rec: a GRU over the item sequence, projected back into the item embedding space.

Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016, in RecBole's
sequential form (embedding dropout, bias-free GRU, linear projection, tied item table, Xavier init).
"""

from typing import Optional

import torch
from torch import nn


class GRU4Rec(nn.Module):
    """Recurrent sequential recommender (GRU4Rec in the paper).

    The GRU runs over each row's real items only (they are rolled to the front, the GRU runs, and the
    states are rolled back), so the same history gives the same states whatever its left padding.
    States at padded positions are zero.

    Args:
        num_items: number of items ``N``; ids run ``1..N`` and 0 is padding.
        embedding_size: width of the item embeddings, the GRU input and the user embedding.
        hidden_size: width of the GRU state.
        num_layers: number of stacked GRU layers.
        dropout: dropout on the item embeddings before the GRU.
    """

    def __init__(
        self,
        num_items: int,
        embedding_size: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(num_items + 1, embedding_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(embedding_size, hidden_size, num_layers=num_layers, bias=False, batch_first=True)
        self.projection = nn.Linear(hidden_size, embedding_size)
        nn.init.xavier_normal_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        for weight in self.gru.parameters():
            nn.init.xavier_uniform_(weight)
        self.auxiliary_loss: Optional[nn.Module] = None  # no regulariser

    def sequence_states(
        self, item_seq: torch.Tensor, mask: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``item_seq [B, L]`` left-padded, ``mask [B, L]``; ``user_ids`` is ignored. Returns ``[B, L, D]``."""
        length = item_seq.shape[1]
        columns = torch.arange(length, device=item_seq.device)
        padding = length - mask.sum(1, keepdim=True)
        # Row b's real items sit in columns padding[b]..L-1; gathering column (j + padding[b]) mod L moves
        # them to 0..n_b-1 in order. A GRU is causal, so the padding now trailing them cannot reach them.
        to_front = (columns + padding) % length
        embedded = self.embedding_dropout(self.item_embedding(item_seq.gather(1, to_front)))
        states, _ = self.gru(embedded)
        back = ((columns - padding) % length)[..., None].expand(-1, -1, states.shape[-1])
        states = self.projection(states.gather(1, back))
        return states.masked_fill(~mask[..., None], 0.0)

    def encode_sequence(
        self, item_seq: torch.Tensor, mask: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """User embedding after the whole sequence: ``[B, D]``."""
        return self.sequence_states(item_seq, mask, user_ids)[:, -1]

    def item_embeddings(self) -> torch.Tensor:
        """``[N + 1, D]``: the input item table, reused as the output layer."""
        return self.item_embedding.weight
