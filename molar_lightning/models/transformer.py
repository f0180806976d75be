"""The causal transformer body shared by SASRec and the SASRec-style user encoder, over embeddings.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018, in the form RecBole trains it: post-LN
blocks with a fully connected GELU feed-forward, a learned position table added to the inputs, then
LayerNorm and dropout, N(0, 0.02) init. :class:`~molar_lightning.models.id.sasrec.SASRec` feeds it item-id
embeddings and :class:`~molar_lightning.models.dueg.SASRecUserEncoder` projected content embeddings. Positions
are counted from each row's first real item, so left padding changes nothing. Also here:
:func:`rename_legacy_keys`, which lets checkpoints written before this body was split out load.
"""

import functools

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


class CausalTransformer(nn.Module):
    """Position embeddings, LayerNorm and dropout, then causal post-LN blocks over ``[B, L, D]`` inputs.

    Args:
        max_seq_len: longest sequence the position table covers; longer inputs are rejected.
        hidden_size: width of the inputs and of the residual stream.
        num_layers: number of transformer blocks.
        num_heads: attention heads per block; must divide ``hidden_size``.
        inner_size: width of the feed-forward layer inside each block.
        dropout: dropout on the embeddings, the attention output and the feed-forward output.
        attention_dropout: dropout on the attention probabilities.
        layer_norm_eps: epsilon of every LayerNorm.
        initializer_range: standard deviation of the normal init of the position table and linear weights.
    """

    def __init__(
        self,
        max_seq_len: int,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        inner_size: int,
        dropout: float,
        attention_dropout: float,
        layer_norm_eps: float,
        initializer_range: float,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(
                f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}; "
                "choose a num_heads that divides hidden_size"
            )
        self.max_seq_len = max_seq_len
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

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``embeddings [B, L, D]`` left-padded, ``mask [B, L]`` bool (True at real items) -> ``[B, L, D]``.

        Row ``t`` depends only on positions ``<= t``. With ``last_only`` the final block computes only the
        last position and the result is ``[B, 1, D]``, about 1.5x cheaper when only the user embedding is
        wanted.
        """
        length = embeddings.shape[1]
        if length > self.max_seq_len:
            raise ValueError(
                f"got sequences of length {length} but max_seq_len is {self.max_seq_len}; "
                f"keep only the last {self.max_seq_len} items or raise max_seq_len"
            )
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        hidden = embeddings + self.position_embedding(positions)
        hidden = self.embedding_dropout(self.embedding_norm(hidden))
        # Causal and key-padding masks together; every position may attend to itself, so the all-padding
        # rows that left padding creates have one key and the softmax never sees an empty row.
        causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
        attention_mask = (causal & mask[:, None, :]) | torch.eye(length, dtype=torch.bool, device=mask.device)
        attention_mask = attention_mask[:, None]
        for index, block in enumerate(self.blocks):
            hidden = block(hidden, attention_mask, last_only=last_only and index == len(self.blocks) - 1)
        return hidden


def rename_legacy_keys(module: nn.Module, renames: dict[str, str]) -> None:
    """Make ``module.load_state_dict`` accept keys written under older names.

    ``renames`` maps an old key prefix (relative to ``module``, e.g. ``"blocks."``) to its new one
    (``"transformer.blocks."``); the first matching entry wins. New checkpoints never start with an old
    prefix, so they load untouched, and a strict load still reports any key that is really missing. The hook
    is a module-level function, so the module still pickles (DDP spawn sends it to each process).
    """
    module.register_load_state_dict_pre_hook(functools.partial(_rename_keys, renames))


def _rename_keys(renames: dict[str, str], module: nn.Module, state_dict: dict, prefix: str, *hook_args) -> None:
    """``load_state_dict`` pre-hook of :func:`rename_legacy_keys`; renames ``state_dict``'s keys in place."""
    for key in [key for key in state_dict if key.startswith(prefix)]:
        local = key[len(prefix):]
        old = next((old for old in renames if local.startswith(old)), None)
        if old is not None:
            state_dict[prefix + renames[old] + local[len(old):]] = state_dict.pop(key)
