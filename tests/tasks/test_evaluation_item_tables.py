"""The item side of evaluation is built once per validation, test and predict epoch, not once per batch, and
never outlives its epoch: the ID model's table (FPMC concatenates two), Molar's adapter, normalisation and
fused concatenation, and the end-to-end MIRM's catalogue are counted through real Trainer runs, and the
metrics logged during fit equal a fresh validation of the trained weights (no stale table)."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from molar_lightning.callbacks.evaluation import RankingEvaluationCallback
from molar_lightning.callbacks.item_inputs import ItemInputsCallback
from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.data.synthetic import write_movielens
from molar_lightning.models.dueg import SASRecUserEncoder
from molar_lightning.models.id.fpmc import FPMC
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.tasks.molar import MolarModule
from molar_lightning.tasks.sequential import SequentialRecModule
from tests.models.conftest import qwen_tokenizer_dir, tiny_qwen2_dir  # noqa: F401 - fixtures

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


def trainer(epochs: int = 1, *callbacks: pl.Callback, **options) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                      callbacks=[RankingEvaluationCallback(ks=(5, 10)), *callbacks], **options)


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


class CountingMIRM(MultimodalItemEncoder):
    """The MIRM counting its forwards without gradients (the catalogue at evaluation)."""

    evaluation_forwards = 0

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        self.evaluation_forwards += not torch.is_grad_enabled()
        return super().forward(*inputs)


def test_the_end_to_end_catalogue_is_embedded_once_per_evaluation_epoch(ml1m_dir: Path, tiny_qwen2_dir: Path,
                                                                       tmp_path: Path) -> None:
    data = MovieLensDataModule(str(ml1m_dir), cache_dir=str(tmp_path / "cache"), max_seq_len=6, batch_size=4,
                               eval_batch_size=2)
    torch.manual_seed(0)
    mirm = CountingMIRM(str(tiny_qwen2_dir), modality="text", pooling="mean", finetuning="lora")
    module = MolarModule(SASRecUserEncoder(mirm.hidden_size, max_seq_len=6, hidden_size=8, inner_size=16),
                         item_encoder=mirm, encoder=None, align_weight=0, negatives_per_step=3, item_batch_size=4,
                         top_k=3)
    fit = trainer(2, ItemInputsCallback(), limit_train_batches=1)
    fit.fit(module, datamodule=data)
    per_epoch = -(-data.num_items // 4)  # the catalogue in item batches of 4
    assert fit.num_val_batches[0] > 1, "the case needs several evaluation batches per epoch"
    assert mirm.evaluation_forwards == 2 * per_epoch
    fit.test(module, datamodule=data)
    assert mirm.evaluation_forwards == 3 * per_epoch
