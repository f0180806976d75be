"""Two-process CPU DDP evaluation equals one process: every user counted once, same metrics."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from molar_lightning.callbacks.evaluation import RankingEvaluationCallback
from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.models.id.sasrec import SASRec
from molar_lightning.tasks.sequential import SequentialRecModule


def validate(data: MovieLensDataModule, model: SequentialRecModule, root: Path, devices: int) -> dict:
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                         callbacks=[RankingEvaluationCallback()], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(root))
    (metrics,) = trainer.validate(model, datamodule=data)
    return metrics


def test_two_process_ddp_counts_every_user_once(ml1m_dir: Path, tmp_path: Path) -> None:
    # 12 users in batches of 5 do not split evenly over 2 ranks: a padding sampler would count 2 users twice.
    data = MovieLensDataModule(str(ml1m_dir), cache_dir=str(tmp_path / "cache"), eval_batch_size=5)
    torch.manual_seed(0)
    model = SequentialRecModule(SASRec(data.num_items, hidden_size=16, num_heads=1, inner_size=32))
    single = validate(data, model, tmp_path / "one", devices=1)
    double = validate(data, model, tmp_path / "two", devices=2)
    assert single["val/users"] == double["val/users"] == 12
    for name in ("val/ndcg@10", "val/recall@10", "val/mrr@20", "val/hit@50"):
        assert abs(single[name] - double[name]) < 1e-6, name


@pytest.mark.slow  # two Trainer runs, one of them spawning 2 processes (~13 s); `make test-slow`
def test_two_process_ddp_writes_the_same_per_user_results(ml1m_dir: Path, tmp_path: Path) -> None:
    data = MovieLensDataModule(str(ml1m_dir), cache_dir=str(tmp_path / "cache"), eval_batch_size=5)
    torch.manual_seed(0)
    model = SequentialRecModule(SASRec(data.num_items, hidden_size=16, num_heads=1, inner_size=32))
    written = {}
    for devices in (1, 2):
        root = tmp_path / str(devices)
        trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                             callbacks=[RankingEvaluationCallback(per_user=True)], logger=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root))
        trainer.test(model, datamodule=data)
        written[devices] = (root / "results_per_user.csv").read_text().splitlines()
    assert len(written[1]) == 13  # the header and each of the 12 users once
    assert [line.split(",")[0] for line in written[2]] == [line.split(",")[0] for line in written[1]]
    for one, two in zip(written[1][1:], written[2][1:]):
        assert [float(v) for v in one.split(",")] == pytest.approx([float(v) for v in two.split(",")], abs=1e-6)
