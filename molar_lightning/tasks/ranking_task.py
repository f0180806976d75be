"""``RankingTask``: what the recommendation tasks share once they can embed users and items.

Validation and test hand ``{"user_emb", "item_emb"}`` to
:class:`~molar_lightning.callbacks.evaluation.RankingEvaluationCallback`, which ranks all items; prediction
returns each user's top-k unseen items for serving (``molar predict`` writes them in raw ids).
"""

from typing import Optional

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from molar_lightning.batch import EvalBatch
from molar_lightning.metrics.ranking import recommendations
from molar_lightning.optim import trainable_weights_optimizer
from molar_lightning.tasks.sharded_task import ShardableTask


class RankingTask(ShardableTask):
    """Subclasses set ``optimizer``, ``lr_scheduler`` and ``top_k`` and implement :meth:`_rank_inputs`."""

    optimizer: OptimizerCallable
    lr_scheduler: Optional[LRSchedulerCallable]
    top_k: int

    def _rank_inputs(self, batch: EvalBatch) -> dict[str, torch.Tensor]:
        """``{"user_emb" [B, D], "item_emb" [N + 1, D]}``: scores are their dot products."""
        raise NotImplementedError

    def validation_step(self, batch: EvalBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._rank_inputs(batch)

    def test_step(self, batch: EvalBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._rank_inputs(batch)

    def predict_step(self, batch: EvalBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Each user's ``top_k`` unseen items: ``{"user_ids", "item_ids" [B, k], "scores" [B, k]}``."""
        inputs = self._rank_inputs(batch)
        return recommendations(inputs["user_emb"], inputs["item_emb"], self.top_k, batch.history, batch.user_ids)

    def configure_optimizers(self):
        return trainable_weights_optimizer(self, self.optimizer, self.lr_scheduler)
