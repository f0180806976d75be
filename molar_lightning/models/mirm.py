"""``MultimodalItemEncoder``: any supported Hugging Face image-text-to-text model -> one vector per item.

MIRM, the Multimodal Item Representation Model of Molar (Luo et al., arXiv 2412.18176, Section 3.2): the
item's image comes first, then an instruction ("Compress the text and image into embedding.") and the
item's text fields as ``"\\n{key}: {value}"`` lines, capped at a token budget (200 in the authors' code),
then the item token ``[Cur_Item]``, whose input embedding is one learnable vector shared by all items. The
item embedding is the last layer's hidden state (after the final norm) at that token, with no projection:
1536 dimensions for Qwen2-VL-2B. Mean pooling and last-token pooling are options (HLLM, arXiv 2409.12740,
found the item token better). ``modality`` switches the image or the text off (the paper's Table 3).

The prompt is built from an item's text, already rendered, and its PIL image by ``encoder.prompts``, an
:class:`~molar_lightning.models.item_prompt.ItemPromptProcessor`: the backbone's tokenizer and image processor
and the prompt settings, no weights. It is what the data side holds (``molar_lightning.data.item_inputs``
reads items from an ``ItemCatalog``, whose ``text`` renders the fields for the alignment prompts too, builds
their inputs in DataLoader workers and batches them), so no worker holds the model. A batch is either padded (either
side) or packed into one row with per-item position ids, which the attention masks of ``transformers`` turn
into a block-diagonal mask (the padding-free path; with ``flash_attention_2`` it runs as variable-length
attention). Each item's positions are computed as if it were alone, so its embedding does not depend on the
batch it is in.
"""

import hashlib
import json
from pathlib import Path
from typing import Literal, Optional

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from molar_lightning.models.backbones import Finetuning, load_backbone
from molar_lightning.models.item_prompt import (  # noqa: F401 - ItemContentError re-exported
    ItemContentError,
    ItemPromptProcessor,
    Modality,
    check_modality,
)

ITEM_TOKEN = "[Cur_Item]"
ITEM_TOKEN_FILE = "item_token.safetensors"
BIT_VIEWS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # element size -> integer view
Pooling = Literal["item_token", "mean", "last_token"]


class MultimodalItemEncoder(nn.Module):
    """MIRM: item image + text -> the backbone's last hidden state at the item token (``[B, H]``).

    Args:
        backbone: hub name or local folder of the model, its tokenizer and image processor
            (``Qwen/Qwen2-VL-2B-Instruct``, ``Qwen/Qwen2-VL-7B-Instruct``, ``Qwen/Qwen2.5-VL-3B-Instruct``,
            an InternVL2.5 ``-hf`` checkpoint, a DeepSeek-VL checkpoint, ``meta-llama/Llama-3.2-11B-Vision-Instruct``,
            or a text model for modality ``text``).
            A folder written by :meth:`save_pretrained` after full fine-tuning loads back here.
        backbone_config: random weights from this ``transformers`` config (a dict with ``model_type``)
            instead of the checkpoint's; tokenizer and image processor still come from ``backbone``.
        adapter_path: a folder written by :meth:`save_pretrained` after LoRA fine-tuning: its adapter and item
            token are loaded onto ``backbone``.
        modality: what of the item the model sees: ``image+text``, ``image`` or ``text`` (Table 3).
        instruction: the text between the image and the item's fields.
        max_text_tokens: the item's fields are cut after this many tokens (200 in the authors' code).
        image_size: side in pixels item images are resized to: 28 gives Qwen2-VL one visual token (the
            authors' code); 224 and up is real multimodality (64 tokens at 224).
        pooling: ``item_token`` (the ``[Cur_Item]`` state, the paper's), ``mean`` over the item's tokens, or
            ``last_token`` of the prompt (no item token).
        pack_sequences: pack a batch into one row (no padding) instead of padding it; fastest with
            ``flash_attention_2``, which runs it as variable-length attention. Decoder backbones other than
            Llama-3.2-Vision only.
        finetuning: ``frozen``, ``full`` or ``lora`` (the item token trains unless ``frozen``).
        lora_rank: LoRA rank r.
        lora_alpha: LoRA alpha.
        lora_dropout: dropout on the LoRA branch.
        lora_target_modules: module name suffixes that get adapters; null means the attention and MLP
            projections (q/k/v/o/gate/up/down), as in the authors' commented LoraConfig.
        gradient_checkpointing: recompute activations in backward (saves memory on 2B+ models).
        dtype: weights' dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto``.
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2`` (when flash-attn is installed).
        trust_remote_code: run code from the checkpoint's repository; off unless you set it.
    """

    def __init__(
        self,
        backbone: str = "Qwen/Qwen2-VL-2B-Instruct",
        backbone_config: Optional[dict] = None,
        adapter_path: Optional[str] = None,
        modality: Modality = "image+text",
        instruction: str = "Compress the text and image into embedding.",
        max_text_tokens: int = 200,
        image_size: int = 224,
        pooling: Pooling = "item_token",
        pack_sequences: bool = False,
        finetuning: Finetuning = "frozen",
        lora_rank: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        lora_target_modules: Optional[list[str]] = None,
        gradient_checkpointing: bool = False,
        dtype: str = "float32",
        attn_implementation: Optional[str] = "sdpa",
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        check_modality(modality)
        if pooling not in ("item_token", "mean", "last_token"):
            raise ValueError(f"pooling must be item_token, mean or last_token, got {pooling!r}")
        self.backbone_name = backbone
        self.modality = modality
        self.instruction = instruction
        self.max_text_tokens = max_text_tokens
        self.image_size = image_size
        self.pooling = pooling
        self.pack_sequences = pack_sequences
        self.loaded_from_pretrained = backbone_config is None  # frozen weights can be read again from `backbone`
        self.backbone = load_backbone(
            backbone, config=backbone_config, finetuning=finetuning, lora_rank=lora_rank, lora_alpha=lora_alpha,
            lora_dropout=lora_dropout, lora_target_modules=lora_target_modules,
            adapter_path=adapter_path, gradient_checkpointing=gradient_checkpointing, dtype=dtype,
            attn_implementation=attn_implementation, trust_remote_code=trust_remote_code, image_size=image_size,
            extra_special_tokens=(ITEM_TOKEN,) if pooling == "item_token" else (),
        )
        # Registered as a submodule so that .to(), state_dict() and the optimizer see the backbone.
        self.model = self.backbone.peft_model if self.backbone.peft_model is not None else self.backbone.model
        self.processor = self.backbone.processor
        if modality != "text" and not self.processor.accepts_images:
            raise ValueError(
                f"{backbone} is a text-only {self.backbone.kind} model; it cannot see images under modality "
                f"{modality!r}. Use modality: text, or an image-text-to-text backbone (Qwen2-VL, ...)"
            )
        if pack_sequences and self.backbone.kind == "encoder":
            raise ValueError(f"{backbone} is a bidirectional encoder; pack_sequences needs a decoder backbone")
        if pack_sequences and self.backbone.model.config.model_type == "mllama":
            raise ValueError(f"{backbone} is Llama-3.2-Vision: in a packed row an item without an image would "
                             f"cross-attend to the other items' images; use pack_sequences: false")
        self.item_token_id: Optional[int] = None
        if pooling == "item_token":
            self.item_token_id = self.processor.tokenizer.convert_tokens_to_ids(ITEM_TOKEN)
            self.item_token_embedding = nn.Parameter(self._initial_item_vector(adapter_path or backbone),
                                                     requires_grad=finetuning != "frozen")
            self.backbone.model.get_input_embeddings().register_forward_hook(self._insert_item_vector)
        # What the data side holds to build this encoder's inputs: tokenizer, image processor, settings; no weights.
        self.prompts = ItemPromptProcessor(self.processor, modality=modality, instruction=instruction,
                                           max_text_tokens=max_text_tokens, image_size=image_size,
                                           item_token_id=self.item_token_id, pack_sequences=pack_sequences)
        self.train()  # from_pretrained leaves models in eval mode; an nn.Module starts in training mode

    # ----- inputs -------------------------------------------------------------------------------------------
    def _initial_item_vector(self, folder: str) -> torch.Tensor:
        """A saved item token from ``folder`` when there is one, else the mean input embedding."""
        saved = Path(folder) / ITEM_TOKEN_FILE
        if saved.is_file():
            return load_file(str(saved))["item_token"].float()
        return self.backbone.model.get_input_embeddings().weight.detach().float().mean(0)

    def _insert_item_vector(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook on the input embeddings: the item token's row becomes the learnable vector."""
        is_item = (args[0] == self.item_token_id).unsqueeze(-1)
        return torch.where(is_item, self.item_token_embedding.to(output.dtype), output)

    def item_inputs(self, text: str, image: Optional[Image.Image]) -> dict[str, torch.Tensor]:
        """One item's inputs, for a look at the prompt or a hand-made batch: ``self.prompts.item_inputs``.
        Loaders take :attr:`prompts` itself (:class:`ItemPromptProcessor`), which holds no weights."""
        return self.prompts.item_inputs(text, image)

    # ----- forward ------------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.backbone.hidden_size

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        lengths: torch.Tensor,
        mm_token_type_ids: Optional[torch.Tensor] = None,
        image_inputs: Optional[dict[str, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Item embeddings ``[B, H]``.

        Args:
            input_ids: ``[B, L]`` padded on either side, or ``[1, T]`` packed (then ``attention_mask`` is None).
            attention_mask: ``[B, L]`` 1 at real tokens; None for a packed batch.
            lengths: ``[B]`` tokens per item.
            mm_token_type_ids: like ``input_ids``, 1 at image tokens (families that use it).
            image_inputs: the image processor's tensors for all images of the batch, in item order.
        """
        packed = attention_mask is None
        image_inputs = image_inputs or {}
        inputs = self.backbone.image_kwargs(input_ids, image_inputs)
        # No KV cache: transformers only reads packing from the position ids when there is none.
        inputs.update(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                      position_ids=self._position_ids(input_ids, attention_mask, lengths, mm_token_type_ids,
                                                      image_inputs.get("image_grid_thw")))
        if mm_token_type_ids is not None:
            inputs["mm_token_type_ids"] = mm_token_type_ids
        hidden = self.backbone.base(**inputs).last_hidden_state
        return self._pool(hidden, input_ids, attention_mask, lengths, packed)

    def answer_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        scored: torch.Tensor,
        mm_token_type_ids: Optional[torch.Tensor] = None,
        image_inputs: Optional[dict[str, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """The LM head's logits ``[S, V]`` for the next token after each position where ``scored [B, L]`` is
        True (stage-1 alignment's answers), computed at those positions only (no ``[B, L, V]`` tensor).

        A method of the encoder, not of the task, so that under FSDP the call gathers the word embeddings and
        the LM head (tied in Qwen2-VL-2B) as :meth:`forward` does."""
        inputs = self.backbone.image_kwargs(input_ids, image_inputs or {})
        inputs.update(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        if mm_token_type_ids is not None:
            inputs["mm_token_type_ids"] = mm_token_type_ids
        hidden = self.backbone.base(**inputs).last_hidden_state
        return self.backbone.model.get_output_embeddings()(hidden[scored])

    def _position_ids(self, input_ids, attention_mask, lengths, mm_token_type_ids, image_grid_thw) -> torch.Tensor:
        """Every item's positions as if it were alone: ``[B, L]``, or ``[3 (+1), B, L]`` for M-RoPE models."""
        base = self.backbone.base
        if attention_mask is not None:  # padded
            if hasattr(base, "get_rope_index"):
                return base.get_rope_index(input_ids=input_ids, mm_token_type_ids=mm_token_type_ids,
                                           image_grid_thw=image_grid_thw, attention_mask=attention_mask)[0]
            return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        text_positions = torch.cat([torch.arange(int(n), device=input_ids.device) for n in lengths])[None]
        if not hasattr(base, "get_rope_index"):
            return text_positions
        pieces, image_offset = [], 0
        for ids, types in zip(input_ids[0].split(lengths.tolist()), mm_token_type_ids[0].split(lengths.tolist())):
            images = int(((types[1:] == 1) & (types[:-1] == 0)).sum() + (types[0] == 1))
            grid = image_grid_thw[image_offset:image_offset + images] if images else None
            image_offset += images
            pieces.append(base.get_rope_index(input_ids=ids[None], mm_token_type_ids=types[None],
                                              image_grid_thw=grid)[0])
        # The first row carries plain text positions: transformers detects packing from their resets.
        return torch.cat([text_positions[None], torch.cat(pieces, dim=-1)], dim=0)

    def _pool(self, hidden, input_ids, attention_mask, lengths, packed: bool) -> torch.Tensor:
        if self.pooling == "item_token":
            is_item = input_ids == self.item_token_id
            if int(is_item.sum()) != len(lengths):
                raise ValueError(f"expected one {ITEM_TOKEN} per item, found {int(is_item.sum())} in "
                                 f"{len(lengths)} items; build inputs with MultimodalItemEncoder.item_inputs")
            return hidden[is_item]
        if packed:
            ends = lengths.cumsum(0)
            if self.pooling == "last_token":
                return hidden[0, ends - 1]
            segment = torch.repeat_interleave(torch.arange(len(lengths), device=hidden.device), lengths)
            sums = hidden.new_zeros(len(lengths), hidden.shape[-1]).index_add_(0, segment, hidden[0])
            return sums / lengths[:, None].to(hidden.dtype)
        mask = attention_mask.to(hidden.dtype)
        if self.pooling == "last_token":
            width = attention_mask.shape[1]
            last = width - 1 - attention_mask.long().flip(-1).argmax(-1)
            return hidden[torch.arange(len(hidden), device=hidden.device), last]
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    # ----- persistence --------------------------------------------------------------------------------------
    def save_pretrained(self, path: str, state_dict: Optional[dict[str, torch.Tensor]] = None) -> None:
        """Write what :class:`MultimodalItemEncoder` loads back: the LoRA adapter (load with ``adapter_path``)
        or the full backbone with tokenizer and image processor (load with ``backbone``), plus the item token.

        ``state_dict``: this encoder's weights as gathered from FSDP shards
        (:func:`molar_lightning.sharding.full_state_dict`); None reads them from the module."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        # Gathered shards hold a tied weight (Qwen2-VL's LM head = word embeddings) twice, as separate tensors;
        # only its first name is written, as save_pretrained does for the module's own tied weights.
        first_names: dict[int, str] = {}
        for name, parameter in self.model.named_parameters(remove_duplicate=False):
            first_names.setdefault(id(parameter), name)
        aliases = {name for name, parameter in self.model.named_parameters(remove_duplicate=False)
                   if first_names[id(parameter)] != name}
        model_state = {key.removeprefix("model."): value for key, value in state.items()
                       if key.startswith("model.") and key.removeprefix("model.") not in aliases}
        if self.backbone.peft_model is not None:
            self.backbone.peft_model.save_pretrained(str(folder), state_dict=model_state)
        else:
            self.backbone.model.save_pretrained(str(folder), state_dict=model_state)
            self.processor.tokenizer.save_pretrained(str(folder))
            if self.processor.image_processor is not None:
                self.processor.image_processor.save_pretrained(str(folder))
        if self.item_token_id is not None:
            save_file({"item_token": state["item_token_embedding"].detach().float().cpu().contiguous()},
                      str(folder / ITEM_TOKEN_FILE))

    def settings(self) -> dict:
        """What, besides the weights, decides an item's embedding."""
        return {"backbone": self.backbone_name, "modality": self.modality, "instruction": self.instruction,
                "max_text_tokens": self.max_text_tokens, "image_size": self.image_size, "pooling": self.pooling}

    def fingerprint(self) -> str:
        """Digest of the settings and the weights (small tensors whole, large ones by a strided sample and the
        integer sum of all their bit patterns: exact in any order, where a float sum depends on the thread count
        and gave one MiniLM two cache folders)."""
        digest = hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            if flat.numel() > 1 << 16:
                bits = flat.view(BIT_VIEWS[flat.element_size()]).sum(dtype=torch.int64)  # no int64 copy
                digest.update(str(int(bits)).encode())
                flat = flat[:: flat.numel() // (1 << 16)]
            digest.update(flat.float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]
