"""A model whose embeddings turn NaN during training is reported and never becomes the best checkpoint.

Before non-finite scores got the worst rank, an all-NaN model had NDCG = Recall = MRR = 1 (``NaN > target``
and ``NaN == target`` are both False, so rank 0), and ``ModelCheckpoint(mode="max")`` kept the diverged epoch.
"""

import math
from pathlib import Path

import lightning
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from molar_lightning.batch import EvalBatch
from molar_lightning.callbacks.evaluation import RankingEvaluationCallback

NUM_USERS, NUM_ITEMS, DIM = 8, 30, 4
KS = (5, 10)


def _collate(users: list[int]) -> EvalBatch:
    user_ids = torch.tensor(users)
    history = (user_ids[:, None] * 3 + torch.arange(1, 4)) % NUM_ITEMS + 1
    return EvalBatch(item_seq=history, target=user_ids + 1, user_ids=user_ids, history=history)


def _loader() -> DataLoader:
    return DataLoader(list(range(NUM_USERS)), batch_size=3, collate_fn=_collate)


class DivergingModule(lightning.LightningModule):
    """User and item tables pulled towards each user's target; from ``diverge_epoch`` on the loss is NaN, so
    one SGD step makes every weight NaN."""

    def __init__(self, diverge_epoch: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.users = torch.nn.Parameter(torch.randn(NUM_USERS, DIM, generator=generator))
        self.items = torch.nn.Parameter(torch.randn(NUM_ITEMS + 1, DIM, generator=generator))
        self.diverge_epoch = diverge_epoch

    def training_step(self, batch: EvalBatch, batch_idx: int) -> torch.Tensor:
        loss = -(self.users[batch.user_ids] * self.items[batch.target]).sum()
        return loss * math.nan if self.current_epoch >= self.diverge_epoch else loss

    def validation_step(self, batch: EvalBatch, batch_idx: int):
        return {"user_emb": self.users[batch.user_ids], "item_emb": self.items}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_diverged_epoch_is_reported_and_not_the_best_checkpoint(tmp_path: Path) -> None:
    evaluation = RankingEvaluationCallback(ks=KS)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", monitor="val/ndcg@5", mode="max",
                                 save_top_k=1)
    trainer = lightning.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                                enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                                callbacks=[evaluation, checkpoint])
    with pytest.warns(UserWarning, match=r"8 of 8 val users were ranked with a NaN or infinite score"):
        trainer.fit(DivergingModule(diverge_epoch=1), _loader(), _loader())

    healthy, *diverged = evaluation.validation_history
    assert healthy["nonfinite_users"] == 0 and healthy["ndcg@5"] > 0
    assert [entry["nonfinite_users"] for entry in diverged] == [NUM_USERS, NUM_USERS]
    # Worst rank: 30 items less 3 history items and the target leave 26 candidates above it.
    assert [(entry["ndcg@5"], entry["ndcg@10"], entry["recall@10"]) for entry in diverged] == [(0.0, 0.0, 0.0)] * 2
    assert Path(checkpoint.best_model_path).name == "epoch=0.ckpt"
    assert checkpoint.best_model_score.item() == pytest.approx(healthy["ndcg@5"], abs=1e-6)
    assert trainer.callback_metrics["val/nonfinite_users"].item() == NUM_USERS


def test_a_healthy_run_warns_of_nothing(tmp_path: Path, recwarn) -> None:
    evaluation = RankingEvaluationCallback(ks=KS)
    trainer = lightning.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                                enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                                default_root_dir=tmp_path, callbacks=[evaluation])
    trainer.fit(DivergingModule(diverge_epoch=99), _loader(), _loader())
    assert evaluation.validation_history[0]["nonfinite_users"] == 0
    assert not [w for w in recwarn if "NaN or infinite" in str(w.message)]
