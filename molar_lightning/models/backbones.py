"""Hugging Face backbones for the content models: loading by hub name, local path or config, and their inputs.

One path serves real and tiny models: ``load_backbone("Qwen/Qwen2-VL-2B-Instruct")`` and
``load_backbone("/tmp/tiny-qwen2-vl")`` (a folder written by ``save_pretrained``) run the same code, and
``config=`` builds random weights from a ``transformers`` config (a dict with ``model_type`` or a config
object) for tests and smoke runs. Image-text-to-text models load through ``AutoModelForImageTextToText``;
text-only decoders through ``AutoModelForCausalLM`` and text-only encoders (BERT-like) through ``AutoModel``,
for the text-only ablation (Molar, arXiv 2412.18176, Table 3). Options: full fine-tuning or LoRA (peft),
gradient checkpointing, dtype, attention implementation; ``trust_remote_code`` stays off unless set.

Inputs are built by :class:`BackboneProcessor` from the tokenizer and the *image processor* (both load
through the Auto classes). The full ``AutoProcessor`` is not used: for Qwen2-VL, Qwen2.5-VL and InternVL it
also holds a video processor, which needs torchvision, and torchvision does not install beside the CPU
torch wheel this project tests with. What the processor adds is small and per family: each image becomes
the family's placeholder tokens (``<|vision_start|>`` + ``<|image_pad|>`` x merged patches +
``<|vision_end|>`` for Qwen2-VL), which :data:`IMAGE_PLACEHOLDERS` states and the tests check against the real
processor wherever torchvision is installed. Llama-3.2-Vision (Mllama) has one ``<|image|>`` token per image
and reads the image through cross-attention layers; :meth:`Backbone.image_kwargs` builds their inputs per
batch. A batch of items is built with one image-processor call and one tokenizer call
(:meth:`BackboneProcessor.encode_batch`), since per-call overhead dominates on small images.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence, Union

import torch
from PIL import Image
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from molar_lightning.user_error import MissingInputError

Finetuning = Literal["frozen", "full", "lora"]
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ImagePlaceholder:
    """How a family's processor writes one image into the token sequence.

    Attributes:
        start: text before the image tokens ("" for none).
        token: the placeholder token repeated once per visual token.
        end: text after the image tokens.
        count: number of visual tokens of image ``i`` given the image processor's output and the model config.
        image_processor_kwargs: keyword arguments that make the image processor produce ``side`` x ``side``
            pixels (dynamic-resolution families); fixed-resolution families ignore ``side``.
        token_type_ids: whether the model wants ``mm_token_type_ids`` (1 at image tokens) beside ``input_ids``.
        bos_after: the tokenizer's BOS token follows the image tokens (Mllama's processor writes
            ``<|image|><|begin_of_text|>``).
    """

    start: str
    token: str
    end: str
    count: Callable[[dict, int, PretrainedConfig], int]
    image_processor_kwargs: Callable[[int], dict]
    token_type_ids: bool
    bos_after: bool = False


def _merged_patches(processed: dict, index: int, config: PretrainedConfig) -> int:
    return int(processed["image_grid_thw"][index].prod()) // config.vision_config.spatial_merge_size ** 2


def _pixels(side: int) -> dict:
    return {"size": {"shortest_edge": side * side, "longest_edge": side * side}}


def _internvl_tokens(processed: dict, index: int, config: PretrainedConfig) -> int:
    side = config.vision_config.image_size[0] // config.vision_config.patch_size[0]
    return int(side * side * config.downsample_ratio ** 2)


def _deepseek_vl_tokens(processed: dict, index: int, config: PretrainedConfig) -> int:
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2


QWEN2_VL = ImagePlaceholder("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", _merged_patches, _pixels, True)
IMAGE_PLACEHOLDERS: dict[str, ImagePlaceholder] = {
    "qwen2_vl": QWEN2_VL,
    "qwen2_5_vl": QWEN2_VL,
    # InternVL2.5 in HF format (e.g. OpenGVLab/InternVL2_5-2B-MPO-hf): one 448 px tile per item image.
    "internvl": ImagePlaceholder("<img>", "<IMG_CONTEXT>", "</img>", _internvl_tokens,
                                 lambda side: {"crop_to_patches": False}, False),
    "deepseek_vl": ImagePlaceholder("", "<image_placeholder>", "", _deepseek_vl_tokens, lambda side: {}, False),
    # Llama-3.2-Vision: the image is read by cross-attention, not by placeholder embeddings; tiles of the image
    # processor's fixed size (560 px on the hub).
    "mllama": ImagePlaceholder("", "<|image|>", "", lambda processed, index, config: 1, lambda side: {}, False,
                               bos_after=True),
}
FAMILY_NAMES = {"qwen2_vl": "Qwen2-VL", "qwen2_5_vl": "Qwen2.5-VL", "internvl": "InternVL2.5 (HF format)",
                "deepseek_vl": "DeepSeek-VL", "mllama": "Llama-3.2-Vision"}
SUPPORTED = ", ".join(f"{name} ({model_type})" for model_type, name in FAMILY_NAMES.items())


class UnsupportedBackboneError(ValueError):
    """The backbone is not a model family MIRM can build inputs for."""


def backbone_kind(config: PretrainedConfig) -> Literal["vision_language", "decoder", "encoder"]:
    """Which Auto class loads ``config``; an error naming the supported families for anything else."""
    model_type = config.model_type
    if model_type in IMAGE_PLACEHOLDERS:
        return "vision_language"
    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise UnsupportedBackboneError(
            f"{model_type!r} is an image-text-to-text model whose image tokens MIRM does not know how to build; "
            f"supported vision-language families: {SUPPORTED}. Add its ImagePlaceholder to "
            f"molar_lightning/models/backbones.py:IMAGE_PLACEHOLDERS"
        )
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    raise UnsupportedBackboneError(
        f"backbone model_type {model_type!r} is neither an image-text-to-text model nor a text model; "
        f"MIRM supports the vision-language families {SUPPORTED}, and text-only decoders (Qwen2, Llama, ...) "
        f"or encoders (BERT, MiniLM, ...) with modality: text"
    )


class BackboneProcessor:
    """Tokenizer + image processor + the family's image placeholder: segments of text and images -> tensors.

    Args:
        tokenizer: the backbone's tokenizer.
        image_processor: the backbone's image processor; None for text-only backbones.
        config: the backbone's model config (visual token counts depend on it).
        image_size: side in pixels every image is resized to (a square); dynamic-resolution families
            (Qwen2-VL, Qwen2.5-VL) then get ``(image_size / 28) ** 2`` visual tokens, fixed-resolution ones
            are resized again by their image processor.
    """

    def __init__(self, tokenizer, image_processor, config: PretrainedConfig, image_size: int) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.config = config
        self.image_size = image_size
        self.placeholder = IMAGE_PLACEHOLDERS.get(config.model_type)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.image_token_id = None
        self._image_start: list[int] = []
        self._image_end: list[int] = []
        if self.placeholder is not None:
            self._image_start = self.text_ids(self.placeholder.start)
            self._image_end = self.text_ids(self.placeholder.end)
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.placeholder.token)
            if self.image_token_id in (None, tokenizer.unk_token_id):
                raise UnsupportedBackboneError(
                    f"the tokenizer has no image token {self.placeholder.token!r}; load the tokenizer that belongs "
                    f"to this {config.model_type} checkpoint"
                )
            if self.placeholder.bos_after and tokenizer.bos_token_id is not None:
                self._image_end.append(tokenizer.bos_token_id)

    @property
    def accepts_images(self) -> bool:
        return self.placeholder is not None and self.image_processor is not None

    def text_ids(self, text: str, max_tokens: Optional[int] = None) -> list[int]:
        """Token ids of ``text`` without special tokens, cut to its first ``max_tokens``."""
        return self.texts_ids([text], max_tokens)[0]

    def texts_ids(self, texts: Sequence[str], max_tokens: Optional[int] = None) -> list[list[int]]:
        """:meth:`text_ids` of many texts in one tokenizer call."""
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
        return ids if max_tokens is None else [row[:max_tokens] for row in ids]

    def image_inputs(self, images: Sequence[Image.Image]) -> tuple[list[list[int]], list[dict[str, torch.Tensor]]]:
        """Placeholder token ids and the image processor's tensors of each image, from one processor call."""
        if not self.accepts_images:
            raise UnsupportedBackboneError(f"{self.config.model_type} is a text-only backbone; it takes no images")
        side = (self.image_size, self.image_size)
        resized = [[image.convert("RGB").resize(side, Image.BICUBIC, reducing_gap=3.0)] for image in images]
        # One list per image: Mllama's processor wants the images of each sequence; the others flatten it.
        processed = dict(self.image_processor(images=resized, return_tensors="pt",
                                              **self.placeholder.image_processor_kwargs(self.image_size)))
        for key in ("num_patches", "num_tiles"):  # bookkeeping the processors' token expansion uses, not the model
            processed.pop(key, None)
        token_ids = [self._image_start + [self.image_token_id] * self.placeholder.count(processed, i, self.config)
                     + self._image_end
                     for i in range(len(images))]
        return token_ids, _split_per_image(processed, len(images))

    def encode(self, segments: Sequence[Union[str, Image.Image, list[int]]]) -> dict[str, torch.Tensor]:
        """One sequence from text, images and ready token ids, in order.

        Returns ``input_ids [n]``, ``mm_token_type_ids [n]`` where the family uses them, and the image
        processor's tensors (``pixel_values``, ``image_grid_thw``, ...) when there are images.
        """
        return self.encode_batch([segments])[0]

    def encode_batch(self, sequences: Sequence[Sequence[Union[str, Image.Image, list[int]]]]
                     ) -> list[dict[str, torch.Tensor]]:
        """:meth:`encode` of many sequences, with one image-processor call for all their images."""
        images = [segment for segments in sequences for segment in segments if isinstance(segment, Image.Image)]
        image_ids, image_tensors = self.image_inputs(images) if images else ([], [])
        outputs, image_index = [], 0
        for segments in sequences:
            ids: list[int] = []
            first_image = image_index
            for segment in segments:
                if isinstance(segment, Image.Image):
                    ids += image_ids[image_index]
                    image_index += 1
                else:
                    ids += self.text_ids(segment) if isinstance(segment, str) else list(segment)
            mine = image_tensors[first_image:image_index]
            out = {key: torch.cat([tensors[key] for tensors in mine]) for key in (mine[0] if mine else {})}
            out["input_ids"] = torch.tensor(ids, dtype=torch.long)
            if self.placeholder is not None and self.placeholder.token_type_ids:
                out["mm_token_type_ids"] = (out["input_ids"] == self.image_token_id).long()
            outputs.append(out)
        return outputs


def _split_per_image(processed: dict[str, torch.Tensor], count: int) -> list[dict[str, torch.Tensor]]:
    """The image processor's tensors of ``count`` images, one dict per image: tensors with a row per image are
    cut row by row, Qwen2-VL's ``pixel_values`` (patch rows of all images) by each image's grid."""
    patches = processed["image_grid_thw"].prod(-1).tolist() if "image_grid_thw" in processed else None
    pieces = {}
    for key, value in processed.items():
        if len(value) != count and patches is None:
            raise ValueError(f"cannot tell which rows of the image processor's {key!r} {tuple(value.shape)} "
                             f"belong to which of {count} images")
        pieces[key] = value.split(1 if len(value) == count else patches)
    return [{key: rows[index] for key, rows in pieces.items()} for index in range(count)]


@dataclass
class Backbone:
    """A loaded backbone: the model (with its LM head where it has one), its processor and what it is.

    Attributes:
        model: the ``transformers`` model; after LoRA its linear layers carry the adapters (peft injects them
            in place), so calling it runs them.
        peft_model: the peft wrapper when LoRA is on (it saves and loads adapters), else None.
        processor: builds the inputs.
        kind: ``vision_language``, ``decoder`` or ``encoder``.
    """

    model: PreTrainedModel
    peft_model: Optional[nn.Module]
    processor: BackboneProcessor
    kind: str

    @property
    def hidden_size(self) -> int:
        return self.model.config.get_text_config().hidden_size

    @property
    def base(self) -> nn.Module:
        """The model without its LM head: last (normalised) hidden states."""
        return self.model.base_model

    def image_kwargs(self, input_ids: torch.Tensor, image_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's keyword arguments for a batch's images (the image processor's tensors, in row order).

        Placeholder families take the tensors as they are. Mllama's cross-attention layers get each row's own
        images: the projected vision states (zeros for a row without an image, so that those layers leave it
        exactly as if it had been run alone, when they are skipped) and the cross-attention mask its
        processor builds (each image seen by the tokens from its ``<|image|>`` on).
        """
        if self.model.config.model_type != "mllama" or not image_inputs:
            return dict(image_inputs)
        from transformers.models.mllama.processing_mllama import (
            convert_sparse_cross_attention_mask_to_dense,
            get_cross_attention_token_mask,
        )

        image_token_id = self.processor.image_token_id
        base = self.base
        vision = base.vision_model(pixel_values=image_inputs["pixel_values"],
                                   aspect_ratio_ids=image_inputs["aspect_ratio_ids"],
                                   aspect_ratio_mask=image_inputs["aspect_ratio_mask"]).last_hidden_state
        projected = base.multi_modal_projector(vision).flatten(0, 1)  # [images, tiles, patches, hidden]
        rows = input_ids.tolist()
        per_row = [row.count(image_token_id) for row in rows]
        if sum(per_row) != len(projected):
            raise ValueError(f"{sum(per_row)} <|image|> tokens but {len(projected)} images in the batch")
        states = projected.new_zeros(len(rows), max(per_row), *projected.shape[1:])
        slots = [(row, slot) for row, count in enumerate(per_row) for slot in range(count)]
        states[torch.tensor(slots, device=states.device).unbind(-1)] = projected
        tiles = iter(image_inputs["aspect_ratio_mask"].flatten(0, 1).sum(-1).tolist())
        mask = convert_sparse_cross_attention_mask_to_dense(
            [get_cross_attention_token_mask(row, image_token_id) for row in rows],
            num_tiles=[[next(tiles) for _ in range(count)] for count in per_row],
            max_num_tiles=projected.shape[1], length=input_ids.shape[1])
        return {"cross_attention_states": states.flatten(0, 2),
                "cross_attention_mask": torch.from_numpy(mask).to(input_ids.device)}


WHAT_TO_GIVE = ("give a hub name (e.g. Qwen/Qwen2-VL-2B-Instruct) or a folder written by save_pretrained (it holds "
                "config.json, the tokenizer and, for an image-text model, the image processor)")


def _check_source(name_or_path: str, needs_config: bool) -> None:
    """Refuse a backbone that names a local folder which is not there (or holds no ``config.json`` where the
    weights come from it), before ``transformers`` would take it for a hub name and fail on the repo id.

    Anything else that is no local folder may be a hub name (``name`` or ``namespace/name``); the hub, or
    offline its cache, is asked for it, and :func:`_from_hub` words what that refuses.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if needs_config and not (path / "config.json").is_file():
            raise MissingInputError(f"backbone {name_or_path!r}: the folder holds no config.json; {WHAT_TO_GIVE}")
        return
    if path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1:
        raise MissingInputError(f"backbone {name_or_path!r}: no such folder (and a hub name has at most one '/'); "
                                f"{WHAT_TO_GIVE}")


def _from_hub(load: Callable, name_or_path: str, **options):
    """``load(name_or_path, **options)``; the ``OSError`` with which ``transformers`` refuses a name the hub (or its
    cache, offline) does not have becomes one message naming the backbone."""
    try:
        return load(name_or_path, **options)
    except OSError as error:
        if Path(name_or_path).expanduser().is_dir():
            raise  # a local folder that cannot be read is not a naming mistake
        reason = " ".join(str(error).split()).rstrip(".")
        raise MissingInputError(f"backbone {name_or_path!r} is no local folder, and the hub cannot give it ({reason}); "
                                f"check the name and the network (offline, only the hub cache is read), or give a "
                                f"folder written by save_pretrained") from error


def _as_config(config: Union[dict, PretrainedConfig]) -> PretrainedConfig:
    if isinstance(config, PretrainedConfig):
        return config
    config = dict(config)
    if "model_type" not in config:
        raise ValueError(f"a backbone config dict needs a model_type key (e.g. qwen2_vl); got keys {sorted(config)}")
    return AutoConfig.for_model(config.pop("model_type"), **config)


def load_backbone(
    name_or_path: str,
    config: Optional[Union[dict, PretrainedConfig]] = None,
    finetuning: Finetuning = "frozen",
    lora_rank: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    lora_target_modules: Optional[Sequence[str]] = None,
    adapter_path: Optional[str] = None,
    gradient_checkpointing: bool = False,
    dtype: str = "float32",
    attn_implementation: Optional[str] = "sdpa",
    trust_remote_code: bool = False,
    image_size: int = 224,
    extra_special_tokens: Sequence[str] = (),
) -> Backbone:
    """Load model, tokenizer and image processor; set trainability, LoRA and gradient checkpointing.

    Args:
        name_or_path: hub name or local folder of the weights, tokenizer and image processor.
        config: build random weights from this config instead (tokenizer and image processor still come
            from ``name_or_path``).
        finetuning: ``frozen`` (no backbone weight trains), ``full``, or ``lora``.
        lora_rank: LoRA rank r.
        lora_alpha: LoRA scaling alpha.
        lora_dropout: dropout on the LoRA branch.
        lora_target_modules: module name suffixes that get adapters; None means :data:`DEFAULT_LORA_TARGETS`.
        adapter_path: a saved peft adapter folder to load (trainable when ``finetuning`` is ``lora``).
        gradient_checkpointing: recompute activations in the backward pass.
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (the checkpoint's dtype).
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2`` (needs flash-attn installed).
        trust_remote_code: allow code from the checkpoint's repository; off unless you set it.
        image_size: side in pixels of item images (see :class:`BackboneProcessor`).
        extra_special_tokens: tokens to add to the tokenizer (the item token); the embedding matrix grows
            when they fall outside it.
    """
    if finetuning not in ("frozen", "full", "lora"):
        raise ValueError(f"finetuning must be frozen, full or lora, got {finetuning!r}")
    if attn_implementation == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            raise ImportError("attn_implementation: flash_attention_2 needs `pip install flash-attn`; "
                              "or use sdpa") from None
    _check_source(name_or_path, needs_config=config is None)
    model_config = _as_config(config) if config is not None else _from_hub(
        AutoConfig.from_pretrained, name_or_path, trust_remote_code=trust_remote_code)
    kind = backbone_kind(model_config)
    auto_class = {"vision_language": AutoModelForImageTextToText, "decoder": AutoModelForCausalLM,
                  "encoder": AutoModel}[kind]
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    options = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation is not None:
        options["attn_implementation"] = attn_implementation
    if config is None:
        model = auto_class.from_pretrained(name_or_path, **options)
    else:
        model = auto_class.from_config(model_config, **options)

    tokenizer = _from_hub(AutoTokenizer.from_pretrained, name_or_path, trust_remote_code=trust_remote_code)
    if extra_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)},
                                     replace_extra_special_tokens=False)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    image_processor = None
    if kind == "vision_language":
        image_processor = AutoImageProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    processor = BackboneProcessor(tokenizer, image_processor, model.config, image_size)

    model.requires_grad_(finetuning == "full")
    peft_model = None
    if finetuning == "lora" or adapter_path is not None:
        peft_model = _with_lora(model, finetuning == "lora", lora_rank, lora_alpha, lora_dropout,
                                lora_target_modules or DEFAULT_LORA_TARGETS, adapter_path)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return Backbone(model=model, peft_model=peft_model, processor=processor, kind=kind)


def _with_lora(model: PreTrainedModel, trainable: bool, rank: int, alpha: int, dropout: float,
               targets: Sequence[str], adapter_path: Optional[str]) -> nn.Module:
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter_path is not None:
        return PeftModel.from_pretrained(model, adapter_path, is_trainable=trainable)
    lora = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets))
    return get_peft_model(model, lora)
