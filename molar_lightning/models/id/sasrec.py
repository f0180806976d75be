"""SASRec: a causal post-LN transformer over the item sequence.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018, in the form RecBole trains it
(fully connected GELU feed-forward, post-LN blocks, tied input/output item embeddings, N(0, 0.02) init).
Positions are counted from each row's first real item, so left padding changes nothing.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class TransformerBlock(nn.Module):
    """One post-LN block: self-attention, residual, LayerNorm; feed-forward, residual, LayerNorm.

    Args:
        hidden_size: width of the residual stream.
        num_heads: attention heads; must divide ``hidden_size``.
        inner_size: width of the GELU feed-forward layer.
        dropout: dropout on the attention output and on the feed-forward output.
        attention_dropout: dropout on the attention probabilities.
        layer_norm_eps: epsilon of both LayerNorms.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        inner_size: int,
        dropout: float,
        attention_dropout: float,
        layer_norm_eps: float,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.attention_out = nn.Linear(hidden_size, hidden_size)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden_size, inner_size),
            nn.GELU(),
            nn.Linear(inner_size, hidden_size),
            nn.Dropout(dropout),
        )
        self.feed_forward_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``hidden [B, L, D]``, ``attention_mask [B, 1, L, L]`` bool (True: may attend) -> ``[B, L, D]``.

        With ``last_only`` only the last position is computed (it still attends to every position) and the
        result is ``[B, 1, D]``: the user embedding needs nothing else from the final block.
        """
        batch, length, width = hidden.shape
        query, key, value = (
            part.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)
            for part in self.qkv(hidden).chunk(3, dim=-1)
        )
        if last_only:
            hidden, query, attention_mask = hidden[:, -1:], query[:, :, -1:], attention_mask[:, :, -1:]
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        context = context.transpose(1, 2).reshape(batch, hidden.shape[1], width)
        hidden = self.attention_norm(hidden + self.dropout(self.attention_out(context)))
        return self.feed_forward_norm(hidden + self.feed_forward(hidden))


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
        if hidden_size % num_heads != 0:
            raise ValueError(
                f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}; "
                "choose a num_heads that divides hidden_size"
            )
        self.max_seq_len = max_seq_len
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_seq_len, hidden_size)
        self.embedding_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, inner_size, dropout, attention_dropout, layer_norm_eps)
            for _ in range(num_layers)
        )
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=initializer_range)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def sequence_states(
        self, item_seq: torch.Tensor, mask: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``item_seq [B, L]`` left-padded, ``mask [B, L]``; ``user_ids`` is ignored. Returns ``[B, L, D]``."""
        return self._encode(item_seq, mask, last_only=False)

    def encode_sequence(
        self, item_seq: torch.Tensor, mask: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """User embedding after the whole sequence: ``[B, D]``.

        Equal to ``sequence_states(...)[:, -1]``, but the final block computes only the last position,
        which makes evaluation and serving about 1.5x cheaper.
        """
        return self._encode(item_seq, mask, last_only=True)[:, -1]

    def _encode(self, item_seq: torch.Tensor, mask: torch.Tensor, last_only: bool) -> torch.Tensor:
        length = item_seq.shape[1]
        if length > self.max_seq_len:
            raise ValueError(
                f"SASRec got sequences of length {length} but max_seq_len is {self.max_seq_len}; "
                f"keep only the last {self.max_seq_len} items or raise max_seq_len"
            )
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        hidden = self.item_embedding(item_seq) + self.position_embedding(positions)
        hidden = self.embedding_dropout(self.embedding_norm(hidden))
        # Causal and key-padding masks together; every position may attend to itself, so the all-padding
        # rows that left padding creates have one key and the softmax never sees an empty row.
        causal = torch.ones(length, length, dtype=torch.bool, device=item_seq.device).tril()
        attention_mask = (causal & mask[:, None, :]) | torch.eye(length, dtype=torch.bool, device=item_seq.device)
        attention_mask = attention_mask[:, None]
        for index, block in enumerate(self.blocks):
            hidden = block(hidden, attention_mask, last_only=last_only and index == len(self.blocks) - 1)
        return hidden

    def item_embeddings(self) -> torch.Tensor:
        """``[N + 1, D]``: the input item table, reused as the output layer."""
        return self.item_embedding.weight
