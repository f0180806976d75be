"""The item-embedding cache: extraction equals embedding items one by one, a finished cache is reused without
any forward pass, a killed run resumes with only the missing items, and a cache of other weights or other
images is never read."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from molar_lightning.callbacks.item_embedding_cache import (
    ItemEmbeddingCache,
    StaleCacheError,
    catalog_fingerprint,
    extract_item_embeddings,
)
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.item_inputs import collate_items
from molar_lightning.data.prepare import PrepareParams, prepare_dataset
from molar_lightning.data.sources.movielens import MovieLens
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.tasks.mirm_alignment import MIRMAlignmentModule
from tests.models.conftest import (  # noqa: F401 - fixtures
    IMAGE_SIZE,
    add_posters_and_plots,
    qwen_tokenizer_dir,
    tiny_qwen2_vl_dir,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "movielens" / "ml-1m"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> ItemCatalog:
    folder = tmp_path_factory.mktemp("ml-1m")
    for path in FIXTURE.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    add_posters_and_plots(folder)
    dataset = prepare_dataset(MovieLens(str(folder), show_progress=False), str(folder / "cache"), PrepareParams())
    return ItemCatalog(dataset)


@pytest.fixture(scope="module")
def module(tiny_qwen2_vl_dir: Path) -> MIRMAlignmentModule:
    return MIRMAlignmentModule(MultimodalItemEncoder(backbone=str(tiny_qwen2_vl_dir), image_size=IMAGE_SIZE))


@pytest.fixture(scope="module")
def one_by_one(module: MIRMAlignmentModule, catalog: ItemCatalog) -> torch.Tensor:
    """The reference: every item embedded alone, row 0 zeros."""
    encoder = module.encoder.eval()
    rows = [torch.zeros(encoder.hidden_size)]
    with torch.no_grad():
        for item_id in range(1, len(catalog) + 1):
            image = catalog.image(item_id, max_size=encoder.image_size)
            batch = collate_items([(item_id, encoder.item_inputs(catalog.text(item_id), image))],
                                  encoder.prompts.pad_token_id)
            rows.append(encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                                batch.image_inputs)[0])
    return torch.stack(rows)


class CountItems(pl.Callback):
    def __init__(self, stop_after_batches: int = -1) -> None:
        self.items = 0
        self.batches = 0
        self.stop_after_batches = stop_after_batches

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.items += len(batch.item_ids)
        self.batches += 1
        if self.batches == self.stop_after_batches:
            raise RuntimeError("killed")  # as a kill mid-run: nothing after this batch runs


def trainer(*callbacks: pl.Callback) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False, use_distributed_sampler=False,
                      callbacks=list(callbacks))


def test_extraction_matches_one_by_one_and_a_finished_cache_is_reused(module, catalog, one_by_one, tmp_path):
    counter = CountItems()
    cache = extract_item_embeddings(trainer(counter), module, catalog, str(tmp_path), batch_size=4)
    assert counter.items == 10 and counter.batches == 3
    table = cache.load()
    assert table.shape == (11, 32) and torch.equal(table[0], torch.zeros(32))
    torch.testing.assert_close(table, one_by_one, atol=1e-5, rtol=0)
    # the shards merged away; meta.json and source.json (the prepared data set) stay beside the table
    assert sorted(p.name for p in cache.folder.iterdir()) == ["embeddings.safetensors", "meta.json", "source.json"]

    again = CountItems()
    reused = extract_item_embeddings(trainer(again), module, catalog, str(tmp_path), batch_size=4)
    assert again.items == 0 and reused.folder == cache.folder and torch.equal(reused.load(), table)


def test_a_killed_run_resumes_with_the_missing_items(module, catalog, one_by_one, tmp_path):
    killer = CountItems(stop_after_batches=3)
    with pytest.raises(RuntimeError, match="killed"):
        extract_item_embeddings(trainer(killer), module, catalog, str(tmp_path), batch_size=2, shard_size=2)
    (folder,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    assert len(list(folder.glob("shard-*.safetensors"))) == 2  # the third batch died before it was written
    assert not list(folder.glob(".*.tmp")) and not (folder / "embeddings.safetensors").exists()

    resumed = CountItems()
    cache = extract_item_embeddings(trainer(resumed), module, catalog, str(tmp_path), batch_size=2, shard_size=2)
    assert resumed.items == 6  # 10 items less the 4 already written
    torch.testing.assert_close(cache.load(), one_by_one, atol=1e-5, rtol=0)


def test_other_weights_or_images_never_read_a_stale_cache(module, catalog, tmp_path):
    first = extract_item_embeddings(trainer(), module, catalog, str(tmp_path), batch_size=8)
    item_token = module.encoder.item_token_embedding
    saved = item_token.data.clone()
    try:
        item_token.data += 0.5  # as after fine-tuning
        counter = CountItems()
        changed = extract_item_embeddings(trainer(counter), module, catalog, str(tmp_path), batch_size=8)
        assert changed.folder != first.folder and counter.items == 10
        assert (changed.load() - first.load())[1:].abs().amax(-1).min() > 1e-4
        with pytest.raises(StaleCacheError, match="weights differ"):
            ItemEmbeddingCache(first.folder, changed.meta)
    finally:
        item_token.data.copy_(saved)

    before = catalog_fingerprint(catalog)
    poster = catalog.image_path(1)
    poster.write_bytes(catalog.image_path(2).read_bytes())  # a replaced image file
    assert catalog_fingerprint(catalog) != before
