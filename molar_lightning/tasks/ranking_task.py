"""``RankingTask``: what the recommendation tasks share once they can embed users and items.

Validation and test hand ``{"user_emb", "item_emb"}`` to
:class:`~molar_lightning.callbacks.evaluation.RankingEvaluationCallback`, which ranks all items; prediction
returns each user's top-k unseen items for serving (``molar predict`` writes them in raw ids).

The item side of evaluation (a task's adapter, normalisation, fused concatenation, an ID model's table) is
built once at the start of each validation, test and predict epoch and dropped at its end: the weights do not
change within an evaluation epoch, and do between two, so a table is never kept across a training step.
"""

from typing import Optional

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from molar_lightning.batch import EvalBatch
from molar_lightning.metrics.ranking import recommendations
from molar_lightning.optim import trainable_weights_optimizer
from molar_lightning.tasks.sharded_task import ShardableTask

#: Item-side tensors of one evaluation epoch, by name; ``"item_emb" [N + 1, D]`` is the table users are scored
#: against, and a task may keep others its user side reads (e.g. the adapted content table).
ItemTables = dict[str, torch.Tensor]


class RankingTask(ShardableTask):
    """Subclasses set ``optimizer``, ``lr_scheduler`` and ``top_k`` and implement :meth:`item_tables` and
    :meth:`user_embeddings`; scores are the dot products of the two."""

    optimizer: OptimizerCallable
    lr_scheduler: Optional[LRSchedulerCallable]
    lr_scales: Optional[dict[str, float]] = None  # per-part learning-rate factors (MolarModule's lr_scales)
    top_k: int
    _epoch_item_tables: Optional[ItemTables] = None

    def item_tables(self) -> ItemTables:
        """The item side from the current weights: ``{"item_emb": [N + 1, D], ...}``."""
        raise NotImplementedError

    def user_embeddings(self, batch: EvalBatch, tables: ItemTables) -> torch.Tensor:
        """``[B, D]`` user embeddings of ``batch``, scored against ``tables["item_emb"]``."""
        raise NotImplementedError

    def evaluation_item_tables(self) -> ItemTables:
        """This evaluation epoch's :meth:`item_tables`; built afresh when called outside one."""
        return self._epoch_item_tables if self._epoch_item_tables is not None else self.item_tables()

    def _rank_inputs(self, batch: EvalBatch) -> dict[str, torch.Tensor]:
        """``{"user_emb" [B, D], "item_emb" [N + 1, D]}``: scores are their dot products."""
        tables = self.evaluation_item_tables()
        return {"user_emb": self.user_embeddings(batch, tables), "item_emb": tables["item_emb"]}

    def _build_epoch_item_tables(self) -> None:
        self._epoch_item_tables = self.item_tables()

    def _drop_epoch_item_tables(self) -> None:
        self._epoch_item_tables = None

    # Lightning calls these in eval mode and without gradients, after the module is on its device.
    def on_validation_epoch_start(self) -> None:
        self._build_epoch_item_tables()

    def on_test_epoch_start(self) -> None:
        self._build_epoch_item_tables()

    def on_predict_epoch_start(self) -> None:
        self._build_epoch_item_tables()

    def on_validation_epoch_end(self) -> None:
        self._drop_epoch_item_tables()

    def on_test_epoch_end(self) -> None:
        self._drop_epoch_item_tables()

    def on_predict_epoch_end(self) -> None:
        self._drop_epoch_item_tables()

    def validation_step(self, batch: EvalBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._rank_inputs(batch)

    def test_step(self, batch: EvalBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._rank_inputs(batch)

    def predict_step(self, batch: EvalBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Each user's ``top_k`` unseen items: ``{"user_ids", "item_ids" [B, k], "scores" [B, k]}``."""
        inputs = self._rank_inputs(batch)
        return recommendations(inputs["user_emb"], inputs["item_emb"], self.top_k, batch.history, batch.user_ids)

    def configure_optimizers(self):
        return trainable_weights_optimizer(self, self.optimizer, self.lr_scheduler, self.lr_scales)
