"""SASRec: a causal post-LN transformer over the item sequence.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018, in the form RecBole trains it
(fully connected GELU feed-forward, post-LN blocks, tied input/output item embeddings, N(0, 0.02) init).
The transformer is :class:`~molar_lightning.models.transformer.CausalTransformer`; this file adds the item
table that is both its input layer and the output layer.
"""

from typing import Optional

import torch
from torch import nn

from molar_lightning.models.transformer import CausalTransformer, rename_legacy_keys

# Checkpoints written before the transformer body moved to models/transformer.py kept it at the top level.
LEGACY_KEYS = {
    "position_embedding.": "transformer.position_embedding.",
    "embedding_norm.": "transformer.embedding_norm.",
    "blocks.": "transformer.blocks.",
}


class SASRec(nn.Module):
    """Self-attentive sequential recommender (SASRec in the paper).

    The item embedding table is both the input layer and the output layer, as in RecBole.

    Args:
        num_items: number of items ``N``; ids run ``1..N`` and 0 is padding.
        max_seq_len: longest history the position table covers; longer inputs are rejected.
        hidden_size: width of item embeddings and of the transformer.
        num_layers: number of transformer blocks.
        num_heads: attention heads per block; must divide ``hidden_size``.
        inner_size: width of the feed-forward layer inside each block.
        dropout: dropout on the embeddings, the attention output and the feed-forward output.
        attention_dropout: dropout on the attention probabilities.
        layer_norm_eps: epsilon of every LayerNorm.
        initializer_range: standard deviation of the normal init of embeddings and linear weights.
    """

    def __init__(
        self,
        num_items: int,
        max_seq_len: int = 50,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        inner_size: int = 256,
        dropout: float = 0.5,
        attention_dropout: float = 0.5,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.transformer = CausalTransformer(max_seq_len, hidden_size, num_layers, num_heads, inner_size, dropout,
                                             attention_dropout, layer_norm_eps, initializer_range)
        nn.init.normal_(self.item_embedding.weight, std=initializer_range)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.auxiliary_loss: Optional[nn.Module] = None  # no regulariser; DuoRec sets one
        rename_legacy_keys(self, LEGACY_KEYS)

    @property
    def max_seq_len(self) -> int:
        return self.transformer.max_seq_len

    def sequence_states(
        self, item_seq: torch.Tensor, mask: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``item_seq [B, L]`` left-padded, ``mask [B, L]``; ``user_ids`` is ignored. Returns ``[B, L, D]``."""
        return self.transformer(self.item_embedding(item_seq), mask)

    def encode_sequence(
        self, item_seq: torch.Tensor, mask: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """User embedding after the whole sequence: ``[B, D]``, equal to ``sequence_states(...)[:, -1]``
        but with the final block computing only the last position."""
        return self.transformer(self.item_embedding(item_seq), mask, last_only=True)[:, -1]

    def item_embeddings(self) -> torch.Tensor:
        """``[N + 1, D]``: the input item table, reused as the output layer."""
        return self.item_embedding.weight
