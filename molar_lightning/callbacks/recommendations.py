"""Writing ``molar predict``'s recommendations to disk: each user's top-k items, in raw ids.

Tasks whose ``predict_step`` returns ``{"user_ids" [B], "item_ids" [B, k], "scores" [B, k]}`` get one JSON
line per user in ``recommendations.jsonl`` (``recommendations-rank<R>.jsonl`` per process under DDP) in the
run directory. When the DataModule holds a prepared data set, ids are mapped back to the raw ids of the
source files, which is what a serving system looks up.
"""

import json
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from molar_lightning.atomic_files import write_atomically
from molar_lightning.batch import PADDING_USER


class RecommendationWriter(BasePredictionWriter):
    """Write the top-k recommendations of ``predict`` as JSON lines, atomically, once per process.

    Args:
        file_name: stem of the output file in the run directory.
    """

    def __init__(self, file_name: str = "recommendations") -> None:
        super().__init__(write_interval="epoch")
        self.file_name = file_name

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any],
                           batch_indices: Sequence[Any]) -> None:
        batches = [batch for batch in predictions if isinstance(batch, dict) and "item_ids" in batch]
        log_dir = trainer.log_dir
        run_dir = Path(log_dir if log_dir is not None else trainer.default_root_dir)
        if not batches:
            return
        raw_users, raw_items = _raw_ids(trainer)
        lines = []
        for batch in batches:
            for user, items, scores in zip(batch["user_ids"].tolist(), batch["item_ids"].tolist(),
                                           batch["scores"].tolist()):
                if user == PADDING_USER:  # an even shard's repeated row (data/even_shards.py)
                    continue
                kept = [(item, score) for item, score in zip(items, scores) if item != 0]
                lines.append(json.dumps({
                    "user": raw_users[user] if raw_users else user,
                    "items": [raw_items[item - 1] if raw_items else item for item, _ in kept],
                    "scores": [round(score, 6) for _, score in kept],
                }))
        suffix = f"-rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        write_atomically(run_dir / f"{self.file_name}{suffix}.jsonl", "\n".join(lines) + "\n")


def _raw_ids(trainer: pl.Trainer) -> tuple[list[str], list[str]]:
    """Raw user and item ids of the DataModule's prepared data set; empty lists when it has none."""
    dataset = getattr(trainer.datamodule, "dataset", None)
    if dataset is None or not hasattr(dataset, "sequences"):
        return [], []
    return dataset.sequences["raw_user_id"], dataset.items["raw_id"]
