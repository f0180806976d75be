"""Item embeddings of a frozen item encoder, computed once, kept on disk, and reused.

MIRM embeddings are expensive (one multimodal LLM forward per item), so they are computed in batches
sorted by token length, without gradients, and written to a safetensors cache whose folder name is a digest
of the encoder (backbone, settings, weights) and the data (prepared data set, image files). A changed
backbone, adapter, prompt setting or image is a different folder, so a stale cache is never read; a folder
whose ``meta.json`` disagrees with what is asked for is refused.

Shards are written atomically (a temporary file renamed into place) as the work goes, so a killed run
resumes with the items still missing. Under DDP each process embeds its own batches and writes its own
shards (``ItemEmbeddingWriter`` is a Lightning prediction writer); rank 0 merges them at the end into
``embeddings.safetensors``. ``molar embed`` runs :func:`extract_item_embeddings`; a task that needs the
table of a frozen encoder calls it the same way, or reads a finished cache with :meth:`ItemEmbeddingCache.load`.
"""

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from safetensors.torch import load_file, save_file

from molar_lightning.atomic_files import replaced_atomically, write_atomically
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.item_inputs import item_loader
from molar_lightning.user_error import UserError

CACHE_FORMAT = 1
MERGED = "embeddings.safetensors"
SOURCE = "source.json"  # the prepared data set the embeddings are of (molar_lightning.tasks.molar reads it)


class StaleCacheError(UserError, RuntimeError):
    """A cache folder was written for another encoder or other data (a user error: point the cache elsewhere)."""


def catalog_fingerprint(catalog: ItemCatalog) -> str:
    """Digest of the prepared data set (its folder name digests raw files and parameters) and every item's
    image file (path, size, modification time), since images are read at embedding time."""
    digest = hashlib.sha256(f"{catalog.dataset.path.name}:{catalog.max_image_size}:{len(catalog)}".encode())
    for item_id in range(1, len(catalog) + 1):
        path = catalog.image_path(item_id)
        if path is not None and path.is_file():
            stat = path.stat()
            digest.update(f"{item_id}:{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _save_atomically(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with replaced_atomically(path) as temporary:
        save_file(tensors, str(temporary))


class ItemEmbeddingCache:
    """One folder of item embeddings: ``meta.json``, shards as they are written, then ``embeddings.safetensors``.

    Args:
        folder: the cache folder (created when missing).
        meta: what the embeddings depend on; must equal the folder's ``meta.json`` when it has one.
    """

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.meta = {"format": CACHE_FORMAT, **meta}
        meta_path = self.folder / "meta.json"
        if meta_path.is_file():
            found = json.loads(meta_path.read_text())
            if found != self.meta:
                changed = sorted(key for key in set(found) | set(self.meta) if found.get(key) != self.meta.get(key))
                raise StaleCacheError(f"{self.folder} holds embeddings of another encoder or data "
                                      f"({', '.join(changed)} differ: "
                                      f"{json.dumps({k: found.get(k) for k in changed})} in the cache vs "
                                      f"{json.dumps({k: self.meta.get(k) for k in changed})} asked); delete it "
                                      f"or point the cache elsewhere")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(meta_path, json.dumps(self.meta, indent=2, sort_keys=True))

    @classmethod
    def for_encoder(cls, root: str, encoder, catalog: ItemCatalog) -> "ItemEmbeddingCache":
        """The cache of ``encoder`` (a ``MultimodalItemEncoder``) over ``catalog``, under ``root``."""
        meta = {"encoder": encoder.settings(), "weights": encoder.fingerprint(), "data": catalog_fingerprint(catalog),
                "num_items": len(catalog), "dim": encoder.hidden_size}
        key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
        cache = cls(Path(root) / key, meta)
        # Beside the key (so that older caches keep their folders): which prepared data set the rows are of,
        # which MolarModule compares with the data set it trains on.
        source = json.dumps({"dataset": catalog.dataset.path.name, "num_items": len(catalog)}, indent=2)
        write_atomically(cache.folder / SOURCE, source)
        return cache

    @property
    def num_items(self) -> int:
        return int(self.meta["num_items"])

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.safetensors"))

    def done_item_ids(self) -> set[int]:
        if (self.folder / MERGED).is_file():
            return set(range(1, self.num_items + 1))
        done: set[int] = set()
        for shard in self._shards():
            done.update(load_file(str(shard))["item_ids"].tolist())
        return done

    def missing_item_ids(self) -> list[int]:
        done = self.done_item_ids()
        return [item_id for item_id in range(1, self.num_items + 1) if item_id not in done]

    @property
    def complete(self) -> bool:
        return not self.missing_item_ids()

    def write_shard(self, item_ids: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Write one shard atomically; its name is unique across processes and runs."""
        name = f"shard-{int(item_ids.min()):09d}-{uuid.uuid4().hex[:12]}.safetensors"
        _save_atomically({"item_ids": item_ids.long().cpu().contiguous(),
                          "embeddings": embeddings.detach().float().cpu().contiguous()}, self.folder / name)

    def finalize(self) -> None:
        """Merge the shards into ``embeddings.safetensors`` (atomically) and remove them."""
        if (self.folder / MERGED).is_file():
            return
        table = self._table_from_shards()
        _save_atomically({"embeddings": table}, self.folder / MERGED)
        for shard in self._shards():
            shard.unlink(missing_ok=True)

    def _table_from_shards(self) -> torch.Tensor:
        table = torch.zeros(self.num_items + 1, int(self.meta["dim"]))
        seen = torch.zeros(self.num_items + 1, dtype=torch.bool)
        for shard in self._shards():
            tensors = load_file(str(shard))
            table[tensors["item_ids"]] = tensors["embeddings"]
            seen[tensors["item_ids"]] = True
        missing = (~seen[1:]).sum().item()
        if missing:
            raise RuntimeError(f"{self.folder} is incomplete: {missing} of {self.num_items} items have no embedding; "
                               f"run `molar embed` again to finish it")
        return table

    def load(self) -> torch.Tensor:
        """``[num_items + 1, D]`` float32, row ``i`` for item ``i``, row 0 (padding) zeros."""
        merged = self.folder / MERGED
        return load_file(str(merged))["embeddings"] if merged.is_file() else self._table_from_shards()


class ItemEmbeddingWriter(BasePredictionWriter):
    """Writes each process's predicted item embeddings into the cache, a shard every ``shard_size`` items.

    Args:
        cache: where to write.
        shard_size: items per shard; a killed run loses at most this many items of work per process.
    """

    def __init__(self, cache: ItemEmbeddingCache, shard_size: int = 2048) -> None:
        super().__init__(write_interval="batch")
        self.cache = cache
        self.shard_size = shard_size
        self._ids: list[torch.Tensor] = []
        self._embeddings: list[torch.Tensor] = []

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: torch.Tensor,
                           batch_indices: Optional[Sequence[int]], batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        self._ids.append(batch.item_ids.cpu())
        self._embeddings.append(prediction.detach().float().cpu())
        if sum(len(ids) for ids in self._ids) >= self.shard_size:
            self._flush()

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._ids:
            self.cache.write_shard(torch.cat(self._ids), torch.cat(self._embeddings))
        self._ids, self._embeddings = [], []


def extract_item_embeddings(trainer: pl.Trainer, module: pl.LightningModule, catalog: ItemCatalog,
                            cache_root: str = ".molar_cache/item_embeddings",
                            batch_size: int = 32, num_workers: int = 0, shard_size: int = 2048) -> ItemEmbeddingCache:
    """Embed every item of ``catalog`` not yet in the cache with ``module.encoder``, then return the cache.

    ``module.predict_step`` must embed an :class:`~molar_lightning.data.item_inputs.ItemBatch`. With more
    than one process, build the Trainer with ``use_distributed_sampler=False``: the loader already gives each
    process its own batches. Use ``precision="bf16-mixed"`` on GPUs.

    Args:
        trainer: runs the prediction (devices, precision, progress bar).
        module: a task whose ``encoder`` is the item encoder.
        catalog: the items to embed.
        cache_root: folder under which each encoder + data pair gets its own cache folder.
        batch_size: items per forward pass (batches hold items of similar token length).
        num_workers: DataLoader processes that read images and tokenize.
        shard_size: items per shard file; a killed run loses at most this many per process.
    """
    encoder = module.encoder
    cache = ItemEmbeddingCache.for_encoder(cache_root, encoder, catalog)
    missing = cache.missing_item_ids()
    if missing:
        loader = item_loader(catalog, encoder.prompts, missing, batch_size=batch_size, num_workers=num_workers)
        writer = ItemEmbeddingWriter(cache, shard_size)
        trainer.callbacks.append(writer)
        try:
            trainer.predict(module, dataloaders=loader, return_predictions=False)
        finally:
            trainer.callbacks.remove(writer)
        trainer.strategy.barrier()
    if trainer.is_global_zero:
        cache.finalize()
    trainer.strategy.barrier()
    return cache
