"""The item side of evaluation is built once per validation, test and predict epoch, not once per batch, and
never outlives its epoch: the ID model's table (FPMC concatenates two), Molar's adapter, normalisation and
fused concatenation are counted through real Trainer runs, and the metrics logged during fit equal a fresh
validation of the trained weights (no stale table)."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from molar_lightning.callbacks.evaluation import RankingEvaluationCallback
from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.data.synthetic import write_movielens
from molar_lightning.models.dueg import SASRecUserEncoder
from molar_lightning.models.id.fpmc import FPMC
from molar_lightning.tasks.molar import MolarModule
from molar_lightning.tasks.sequential import SequentialRecModule

WIDTH = 16


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory) -> MovieLensDataModule:
    folder = tmp_path_factory.mktemp("synthetic")
    write_movielens(str(folder / "raw"), num_users=80, num_items=40, mean_length=12)
    # 80 users in evaluation batches of 16: 5 batches per evaluation epoch.
    return MovieLensDataModule(str(folder / "raw"), cache_dir=str(folder / "cache"), max_seq_len=10, batch_size=16,
                               eval_batch_size=16)


class CountingFPMC(FPMC):
    """FPMC counting the item tables built without gradients (evaluation; training builds one per step)."""

    evaluation_tables = 0

    def item_embeddings(self) -> torch.Tensor:
        self.evaluation_tables += not torch.is_grad_enabled()
        return super().item_embeddings()


class CountingAdapter(nn.Linear):
    """An item adapter counting the whole-catalogue passes made without gradients."""

    evaluation_passes = 0

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        self.evaluation_passes += not torch.is_grad_enabled()
        return super().forward(items)


def trainer(epochs: int = 1) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                      callbacks=[RankingEvaluationCallback(ks=(5, 10))])


def test_an_id_model_table_is_built_once_per_evaluation_epoch(datamodule, tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = CountingFPMC(datamodule.num_users, datamodule.num_items, embedding_size=8)
    module = SequentialRecModule(encoder, top_k=10)
    fit = trainer(epochs=2)
    history = fit.callbacks[0]
    fit.fit(module, datamodule)
    assert fit.num_val_batches == [5]
    assert encoder.evaluation_tables == 2, "one table per validation epoch, not one per batch"
    assert module._epoch_item_tables is None, "the table must not outlive its epoch"

    (logged,) = fit.validate(module, datamodule)
    assert encoder.evaluation_tables == 3
    assert logged["val/ndcg@10"] == pytest.approx(history.validation_history[-1]["ndcg@10"], abs=1e-12)
    fit.test(module, datamodule)
    fit.predict(module, datamodule)
    assert encoder.evaluation_tables == 5
    assert module._epoch_item_tables is None


def test_molar_adapts_normalises_and_fuses_the_catalogue_once_per_evaluation_epoch(datamodule, tmp_path) -> None:
    torch.manual_seed(0)
    table = torch.randn(datamodule.num_items + 1, WIDTH)
    save_file({"embeddings": table}, str(tmp_path / "embeddings.safetensors"))
    adapter = CountingAdapter(WIDTH, WIDTH)
    encoder = CountingFPMC(datamodule.num_users, datamodule.num_items, embedding_size=4)
    user_encoder = SASRecUserEncoder(WIDTH, max_seq_len=10, hidden_size=16, inner_size=32, dropout=0.0,
                                     attention_dropout=0.0)
    module = MolarModule(user_encoder, encoder=encoder, item_embeddings=str(tmp_path / "embeddings.safetensors"),
                         item_adapter=adapter, align_projection=nn.Linear(8, WIDTH), scoring="fused", top_k=10)
    adapter.evaluation_passes = 0  # MolarModule probed the adapter's width once
    fit = trainer(epochs=2)
    history = fit.callbacks[0]
    fit.fit(module, datamodule)
    assert (adapter.evaluation_passes, encoder.evaluation_tables) == (2, 2), "once per validation epoch"
    assert module._epoch_item_tables is None

    # The weights after training, evaluated afresh, give what the last validation epoch of fit logged.
    (logged,) = fit.validate(module, datamodule)
    assert logged["val/ndcg@10"] == pytest.approx(history.validation_history[-1]["ndcg@10"], abs=1e-12)
    assert history.validation_history[0]["ndcg@10"] != history.validation_history[-1]["ndcg@10"]
    assert (adapter.evaluation_passes, encoder.evaluation_tables) == (3, 3)
