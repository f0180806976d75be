"""User encoders over sequences of item *embeddings*: DUEG and the classical alternatives of Molar's Figure 3.

DUEG, the Dynamic User Embedding Generator of Molar (Luo et al., arXiv 2412.18176, Section 3.3): a
decoder-only LLM reads the MIRM item embeddings of a user's history through ``inputs_embeds``, causally, and
its last hidden state after each position is the user embedding that predicts the next item (HLLM's user
LLM, arXiv 2409.12740). :class:`SASRecUserEncoder` and :class:`GRU4RecUserEncoder` put SASRec's transformer
and GRU4Rec's GRU in the LLM's place. All three are
:class:`~molar_lightning.models.protocol.ContentSequenceEncoder`\ s: inputs are ``item_embs [B, L, D]``
(left-padded) and ``mask [B, L]``, outputs live in the same ``D``-dimensional space as the item embeddings, so
a user is scored against an item by comparing the two directly.
"""

from typing import Optional

import torch
from torch import nn

from molar_lightning.models.backbones import Finetuning, load_backbone
from molar_lightning.models.transformer import CausalTransformer, rename_legacy_keys

# Checkpoints written before SASRecUserEncoder used CausalTransformer held a whole SASRec under `sasrec.`,
# whose id table had been swapped for the input projection.
LEGACY_KEYS = {"sasrec.item_embedding.": "input_projection.", "sasrec.": "transformer."}


class LLMUserEncoder(nn.Module):
    """DUEG (Molar's user LLM): a Hugging Face decoder driven through ``inputs_embeds``.

    The backbone's word embeddings are never used (and never train). Left padding is handled with the
    attention mask and position ids counted from each row's first real item. When ``input_size`` differs
    from the backbone's hidden size, a linear layer maps item embeddings in and another maps states back out.

    Args:
        backbone: hub name or local folder of a decoder-only model (``Qwen/Qwen2-0.5B``, ...) or of an
            image-text-to-text model, whose language model is used (``Qwen/Qwen2-VL-2B-Instruct``, the paper's).
        backbone_config: random weights from this ``transformers`` config (a dict with ``model_type``) instead.
        input_size: width of the item embeddings; null means the backbone's hidden size (no projection).
        user_token: append a learnable ``[User]`` vector after the history; its output is the state of the
            last position (the paper's option).
        finetuning: ``frozen``, ``full`` or ``lora`` for the backbone's weights.
        lora_rank: LoRA rank r.
        lora_alpha: LoRA alpha.
        lora_dropout: dropout on the LoRA branch.
        lora_target_modules: module name suffixes that get adapters; null means q/k/v/o/gate/up/down.
        adapter_path: a saved peft adapter to load onto the backbone.
        gradient_checkpointing: recompute activations in backward.
        dtype: weights' dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto``.
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``.
        trust_remote_code: run code from the checkpoint's repository; off unless you set it.
    """

    def __init__(
        self,
        backbone: str = "Qwen/Qwen2-VL-2B-Instruct",
        backbone_config: Optional[dict] = None,
        input_size: Optional[int] = None,
        user_token: bool = False,
        finetuning: Finetuning = "full",
        lora_rank: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        lora_target_modules: Optional[list[str]] = None,
        adapter_path: Optional[str] = None,
        gradient_checkpointing: bool = False,
        dtype: str = "float32",
        attn_implementation: Optional[str] = "sdpa",
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        loaded = load_backbone(
            backbone, config=backbone_config, finetuning=finetuning, lora_rank=lora_rank, lora_alpha=lora_alpha,
            lora_dropout=lora_dropout, lora_target_modules=lora_target_modules,
            adapter_path=adapter_path, gradient_checkpointing=gradient_checkpointing, dtype=dtype,
            attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
        if loaded.kind == "encoder":
            raise ValueError(f"{backbone} is a bidirectional encoder; DUEG needs a decoder-only (causal) model")
        self.decoder = loaded.model.get_decoder()
        self.loaded_from_pretrained = backbone_config is None  # frozen weights can be read again from `backbone`
        self.decoder.get_input_embeddings().requires_grad_(False)
        hidden = loaded.hidden_size
        self.input_size = input_size or hidden
        self.input_projection = nn.Linear(self.input_size, hidden) if self.input_size != hidden else nn.Identity()
        self.output_projection = nn.Linear(hidden, self.input_size) if self.input_size != hidden else nn.Identity()
        self.user_vector = nn.Parameter(torch.randn(hidden) * 0.02) if user_token else None
        self.train()  # from_pretrained leaves models in eval mode

    def sequence_states(self, item_embs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``item_embs [B, L, D]`` left-padded, ``mask [B, L]`` -> ``[B, L, D]``."""
        dtype = self.decoder.get_input_embeddings().weight.dtype
        hidden = self.input_projection(item_embs).to(dtype)
        mask = mask.long()
        if self.user_vector is not None:
            hidden = torch.cat([hidden, self.user_vector.to(dtype).expand(len(hidden), 1, -1)], dim=1)
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        states = self.decoder(inputs_embeds=hidden, attention_mask=mask, position_ids=positions,
                              use_cache=False).last_hidden_state
        if self.user_vector is not None:  # the [User] output stands for the last position
            states = torch.cat([states[:, :-2], states[:, -1:]], dim=1)
        return self.output_projection(states.float())

    def encode_sequence(self, item_embs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """User embedding after the whole sequence: ``[B, D]``."""
        return self.sequence_states(item_embs, mask)[:, -1]


class SASRecUserEncoder(nn.Module):
    """SASRec over item embeddings (Figure 3's SASRec-style user model; "SASRec+BERT" with text embeddings).

    A linear map takes item embeddings into SASRec's transformer
    (:class:`~molar_lightning.models.transformer.CausalTransformer`, so masking, positions and blocks are
    SASRec's), and another maps its states back into the item embedding space.

    Args:
        input_size: width of the item embeddings.
        max_seq_len: longest history the position table covers.
        hidden_size: width of the transformer.
        num_layers: number of transformer blocks.
        num_heads: attention heads per block; must divide ``hidden_size``.
        inner_size: width of the feed-forward layer inside each block.
        dropout: dropout on the embeddings, the attention output and the feed-forward output.
        attention_dropout: dropout on the attention probabilities.
    """

    def __init__(self, input_size: int, max_seq_len: int = 50, hidden_size: int = 64, num_layers: int = 2,
                 num_heads: int = 2, inner_size: int = 256, dropout: float = 0.2,
                 attention_dropout: float = 0.2) -> None:
        super().__init__()
        self.input_size = input_size
        self.input_projection = nn.Linear(input_size, hidden_size)
        self.transformer = CausalTransformer(max_seq_len, hidden_size, num_layers, num_heads, inner_size, dropout,
                                             attention_dropout, layer_norm_eps=1e-12, initializer_range=0.02)
        self.output_projection = nn.Linear(hidden_size, input_size)
        rename_legacy_keys(self, LEGACY_KEYS)

    def sequence_states(self, item_embs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``item_embs [B, L, D]`` left-padded, ``mask [B, L]`` -> ``[B, L, D]``."""
        return self.output_projection(self.transformer(self.input_projection(item_embs), mask))

    def encode_sequence(self, item_embs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """User embedding after the whole sequence: ``[B, D]``."""
        return self.output_projection(self.transformer(self.input_projection(item_embs), mask, last_only=True)[:, -1])


class GRU4RecUserEncoder(nn.Module):
    """GRU4Rec over item embeddings (Figure 3's GRU4Rec-style user model).

    GRU4Rec's recurrent block (a bias-free GRU, then a linear map back to the item space). Padded positions
    get zero inputs: a bias-free GRU keeps a zero state on zero inputs, so left padding changes nothing.

    Args:
        input_size: width of the item embeddings.
        hidden_size: width of the GRU state.
        num_layers: number of stacked GRU layers.
        dropout: dropout on the item embeddings before the GRU.
    """

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1, dropout: float = 0.3) -> None:
        super().__init__()
        self.input_size = input_size
        self.embedding_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(input_size, hidden_size, num_layers=num_layers, bias=False, batch_first=True)
        self.output_projection = nn.Linear(hidden_size, input_size)
        for weight in self.gru.parameters():
            nn.init.xavier_uniform_(weight)

    def sequence_states(self, item_embs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``item_embs [B, L, D]`` left-padded, ``mask [B, L]`` -> ``[B, L, D]`` (zeros at padded positions)."""
        states, _ = self.gru(self.embedding_dropout(item_embs) * mask[..., None])
        return self.output_projection(states).masked_fill(~mask[..., None], 0.0)

    def encode_sequence(self, item_embs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """User embedding after the whole sequence: ``[B, D]``."""
        return self.sequence_states(item_embs, mask)[:, -1]
