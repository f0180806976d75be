"""Hands a task that trains its item encoder end to end (``MolarModule`` with ``item_encoder``) its encoder's
inputs: in every training batch and for the whole catalog at evaluation (both built in DataLoader workers),
and for any items on request.

Tasks do not import ``data/``; this callback does the wiring at setup, before the task's own ``setup``. What it
hands the loaders and the training collate is the encoder's weights-free ``prompts``
(``molar_lightning.models.item_prompt.ItemPromptProcessor``), never the encoder, so DataLoader workers hold a
tokenizer and an image processor but not the model.
"""

from functools import lru_cache
from typing import Sequence

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from molar_lightning.batch import ItemBatch
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.item_inputs import ItemContentDataset, StepItemsCollate, collate_items, item_loader


class ItemInputsCallback(pl.Callback):
    """Connects ``pl_module.connect_item_inputs`` to the items of ``trainer.datamodule``.

    Args:
        max_image_size: images are capped at this side in pixels when read from the catalog.
    """

    def __init__(self, max_image_size: int = 448) -> None:
        self.max_image_size = max_image_size

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        encoder = pl_module.item_encoder
        if encoder is None:  # the cached mode of the same config (item_embeddings set instead) needs nothing
            return
        prompts = encoder.prompts
        datamodule = trainer.datamodule
        catalog = ItemCatalog(datamodule.dataset, max_image_size=self.max_image_size)
        dataset = ItemContentDataset(catalog, prompts, range(1, len(catalog) + 1))

        def item_inputs(item_ids: Sequence[int]) -> ItemBatch:
            return collate_items(dataset.__getitems__([item_id - 1 for item_id in item_ids]), prompts.pad_token_id,
                                 pack=prompts.pack_sequences)

        @lru_cache(maxsize=1)  # a process's items are tokenized for length sorting once, not at every evaluation
        def catalog_batches(batch_size: int, item_ids: tuple[int, ...]) -> DataLoader:
            """Those items, length-sorted, all in this process; inputs built in the loader's workers."""
            return item_loader(catalog, prompts, item_ids=item_ids, batch_size=batch_size,
                               num_workers=datamodule.num_workers, shard=False)

        pl_module.connect_item_inputs(item_inputs, datamodule.num_items, catalog_batches)
        # Training batches carry their items' inputs, built in the DataLoader's workers beside the windows.
        datamodule.train_collate = StepItemsCollate(dataset, datamodule.num_items, pl_module.negatives_per_step)
