"""``SequentialRecModule``: train and evaluate one ID-based sequential model (the classical baselines).

Training is causal next-item prediction at every position of a window. Validation and test hand the user
and item embeddings to :class:`~molar_lightning.callbacks.evaluation.RankingEvaluationCallback`, which
ranks all items; prediction returns each user's top-k items for serving. The ID model's own regulariser
(its ``auxiliary_loss``, DuoRec's) joins the loss through :func:`add_auxiliary_loss`, which ``MolarModule``
also calls when it trains the ID model.
"""

from typing import Optional

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from molar_lightning.batch import EvalBatch, TrainBatch
from molar_lightning.losses import FullSoftmaxCrossEntropy, NextItemLoss
from molar_lightning.models.protocol import IDSequenceEncoder
from molar_lightning.tasks.hyperparameters import record_hyperparameters
from molar_lightning.tasks.ranking_task import ItemTables, RankingTask


def add_auxiliary_loss(task: LightningModule, encoder: IDSequenceEncoder, batch: TrainBatch, states: torch.Tensor,
                       loss: torch.Tensor) -> torch.Tensor:
    """``loss`` plus ``encoder.auxiliary_loss`` on this training batch when the encoder has one (logged as
    ``train/auxiliary_loss``), so the regulariser applies wherever the ID model trains.

    Args:
        task: the LightningModule that logs it.
        encoder: the ID model, in training mode.
        batch: the training batch ``states`` were computed from.
        states: ``[B, L, D]`` ``encoder.sequence_states`` of ``batch``.
        loss: the loss so far, a scalar.
    """
    if encoder.auxiliary_loss is None:
        return loss
    extra = encoder.auxiliary_loss(encoder, batch.item_seq, batch.mask, states, batch.positive_seq, batch.target_seq)
    task.log("train/auxiliary_loss", extra)
    return loss + extra


class SequentialRecModule(RankingTask):
    """Next-item training of any :class:`~molar_lightning.models.protocol.IDSequenceEncoder`.

    An encoder's ``auxiliary_loss`` (DuoRec's contrastive regulariser) is added to the next-item loss.

    Args:
        encoder: the sequence model (SASRec, GRU4Rec, FPMC, DuoRec, ...).
        loss: next-item loss from ``molar_lightning.losses``; null means full-softmax cross entropy.
        optimizer: optimizer factory; AdamW (lr 1e-3, weight decay 0.01) unless configured.
        lr_scheduler: optional scheduler factory, stepped every optimizer step (as in the other tasks).
        top_k: how many items ``predict`` returns per user.
    """

    def __init__(
        self,
        encoder: IDSequenceEncoder,
        loss: Optional[NextItemLoss] = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        top_k: int = 50,
    ) -> None:
        super().__init__()
        # top_k is left out: a serving choice that `molar predict` must be able to change.
        record_hyperparameters(self, ignore=["top_k"])
        self.encoder = encoder
        self.loss = loss if loss is not None else FullSoftmaxCrossEntropy()
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.top_k = top_k

    def training_step(self, batch: TrainBatch, batch_idx: int) -> torch.Tensor:
        states = self.encoder.sequence_states(batch.item_seq, batch.mask, batch.user_ids)
        has_target = batch.target_seq != 0
        loss = self.loss(states[has_target], batch.target_seq[has_target], self.encoder.item_embeddings())
        self.log("train/next_item_loss", loss)
        loss = add_auxiliary_loss(self, self.encoder, batch, states, loss)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def item_tables(self) -> ItemTables:
        return {"item_emb": self.encoder.item_embeddings()}

    def user_embeddings(self, batch: EvalBatch, tables: ItemTables) -> torch.Tensor:
        return self.encoder.encode_sequence(batch.item_seq, batch.mask, batch.user_ids)
