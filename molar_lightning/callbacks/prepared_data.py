"""Which prepared data set a model was trained on, recorded in every checkpoint.

A model's item and user ids are rows of the prepared data set it was trained on (its folder name,
``<source>-<digest>``, digests the raw files and the preparation settings). ``molar export`` maps those rows
back to raw ids through the data set configured at export time, so it compares the two and refuses other
data: the same item count with other raw files would otherwise give every embedding the wrong raw id.
"""

from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch

CHECKPOINT_KEY = "prepared_data"


class PreparedDataCallback(pl.Callback):
    """Writes ``{"dataset": <prepared folder name>, "num_items", "num_users"}`` into each checkpoint."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        dataset = getattr(trainer.datamodule, "dataset", None)
        if dataset is not None and hasattr(dataset, "num_items"):
            checkpoint[CHECKPOINT_KEY] = {"dataset": dataset.path.name, "num_items": dataset.num_items,
                                          "num_users": dataset.num_users}


def recorded_dataset(checkpoint: Path) -> Optional[dict[str, Any]]:
    """What :class:`PreparedDataCallback` recorded in ``checkpoint``; None for checkpoints written before it."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    return state.get(CHECKPOINT_KEY)
