"""``evaluation.cold_targets``: the test users whose held-out item never appeared in training are ranked
again on their own, and their figures equal the metric over those users alone."""

import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from molar_lightning.callbacks.evaluation import RankingEvaluationCallback
from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.data.sequence_datasets import items_in_training
from molar_lightning.metrics.ranking import RankingMetrics
from molar_lightning.models.id.sasrec import SASRec
from molar_lightning.tasks.sequential import SequentialRecModule

# Raw MovieLens ids in time order per user; each user's last item is the test target, the one before it the
# validation target, the rest the training part. Training holds items 1, 2 and 3 only, so the test targets of
# users 1, 3 and 4 (items 4, 5, 4) are cold and user 2's (item 2) is not.
SEQUENCES = {1: [1, 2, 3, 4], 2: [3, 1, 2], 3: [1, 3, 2, 5], 4: [2, 1, 3, 4]}


def shop(folder: Path) -> Path:
    folder.mkdir()
    (folder / "ratings.dat").write_text("".join(f"{user}::{item}::5::{978300000 + 60 * position}\n"
                                                for user, items in SEQUENCES.items()
                                                for position, item in enumerate(items)))
    (folder / "movies.dat").write_text("".join(f"{item}::Movie {item} (2000)::Drama\n" for item in range(1, 6)),
                                       encoding="latin-1")
    return folder


def test_items_in_training_are_those_before_the_two_held_out() -> None:
    offsets, items = np.array([0, 4, 7]), np.array([1, 2, 3, 4, 3, 1, 5])
    # training parts: [1, 2] and [3]; items 4 and 5 are held out only
    assert items_in_training(offsets, items, num_items=5).tolist() == [False, True, True, True, False, False]


def test_cold_test_targets_are_reported_on_their_own(tmp_path: Path) -> None:
    data = MovieLensDataModule(str(shop(tmp_path / "ml")), cache_dir=str(tmp_path / "cache"), max_seq_len=4)
    torch.manual_seed(0)
    module = SequentialRecModule(SASRec(data.num_items, max_seq_len=4))
    evaluation = RankingEvaluationCallback(ks=(1, 2), cold_targets=True)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path / "run"), callbacks=[evaluation])
    trainer.test(module, datamodule=data)
    run = tmp_path / "run"
    everyone = json.loads((run / "results.json").read_text())
    cold = json.loads((run / "results_cold.json").read_text())
    assert everyone["users"] == 4 and cold["users"] == 3
    # the same figures from the metric itself over the cold users' rows alone
    data.setup("test")
    (batch,) = list(data.test_dataloader())
    seen = torch.from_numpy(items_in_training(*data.dataset.flat_sequences, data.num_items))
    rows = ~seen[batch.target]
    assert rows.sum() == 3
    with torch.no_grad():
        outputs = module.eval().test_step(batch, 0)
    reference = RankingMetrics(ks=(1, 2))
    reference.update(outputs["user_emb"][rows], outputs["item_emb"], batch.target[rows], batch.history[rows])
    for name, value in reference.compute().items():
        assert cold[name] == value.item(), name
    assert trainer.callback_metrics["test/cold/ndcg@2"].item() == cold["ndcg@2"]
