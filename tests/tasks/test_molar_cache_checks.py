"""A cached item table that is not of the data set trained on is refused at setup, naming the cache and the fix:
more rows (used silently before), fewer (an IndexError deep in training before), or the same count from other
data (``source.json``, which ``molar embed`` writes beside the embeddings)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from molar_lightning.callbacks.item_embedding_cache import extract_item_embeddings
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.tasks.mirm_alignment import MIRMAlignmentModule
from tests.models.conftest import qwen_tokenizer_dir, tiny_qwen2_dir  # noqa: F401 - fixtures
from tests.tasks.test_molar import (WIDTH, datamodule, fixture_data, molar, text_mirm,  # noqa: F401 - fixtures
                                    trainer)


def cache_folder(folder: Path, rows: int, dataset: str = "") -> str:
    folder.mkdir(parents=True)
    save_file({"embeddings": torch.randn(rows, WIDTH)}, str(folder / "embeddings.safetensors"))
    if dataset:
        (folder / "source.json").write_text(json.dumps({"dataset": dataset, "num_items": rows - 1}))
    return str(folder)


@pytest.mark.parametrize("extra_rows", [5, -5])
def test_a_cache_of_another_size_is_refused(extra_rows: int, datamodule, tmp_path: Path) -> None:
    cache = cache_folder(tmp_path / "cache", datamodule.num_items + 1 + extra_rows)
    with pytest.raises(ValueError, match=f"has {datamodule.num_items + extra_rows} items but the data set has "
                                         f"{datamodule.num_items}: it was embedded from other data"):
        trainer(limit_train_batches=1).fit(molar(datamodule, cache), datamodule=datamodule)


def test_a_cache_of_other_data_with_the_same_item_count_is_refused(datamodule, tmp_path: Path) -> None:
    cache = cache_folder(tmp_path / "cache", datamodule.num_items + 1, dataset="movielens-0123abcd")
    with pytest.raises(ValueError, match=f"embedded from the prepared data set movielens-0123abcd, not "
                                         f"{datamodule.dataset.path.name}"):
        trainer(limit_train_batches=1).fit(molar(datamodule, cache), datamodule=datamodule)


def test_a_cache_of_this_data_trains(datamodule, tmp_path: Path) -> None:
    cache = cache_folder(tmp_path / "cache", datamodule.num_items + 1, dataset=datamodule.dataset.path.name)
    trainer(limit_train_batches=1, limit_val_batches=0).fit(molar(datamodule, cache), datamodule=datamodule)


def test_the_embedding_cache_records_its_data_set(fixture_data, tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    cache = extract_item_embeddings(trainer(use_distributed_sampler=False),
                                    MIRMAlignmentModule(text_mirm(tiny_qwen2_dir, "frozen").eval()),
                                    ItemCatalog(fixture_data.dataset), cache_root=str(tmp_path / "items"))
    source = json.loads((cache.folder / "source.json").read_text())
    assert source == {"dataset": fixture_data.dataset.path.name, "num_items": fixture_data.num_items}
