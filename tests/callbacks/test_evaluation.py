"""Tests of RankingEvaluationCallback through real Trainer runs on a fixed embedding-table model."""

import json
from pathlib import Path

import lightning
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from molar_lightning.batch import EvalBatch
from molar_lightning.callbacks.evaluation import RankingEvaluationCallback
from molar_lightning.metrics.ranking import METRIC_NAMES, RankingMetrics

NUM_USERS, NUM_ITEMS, DIM = 7, 12, 4
KS = (1, 5, 50)  # 50 is above the item count


def _eval_data() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    history = torch.randint(1, NUM_ITEMS + 1, (NUM_USERS, 4), generator=generator)
    history[0, 2:] = 0
    history[1, 1:] = 0
    return {
        "user_table": torch.randn(NUM_USERS, DIM, generator=generator),
        "item_table": torch.randn(NUM_ITEMS + 1, DIM, generator=generator),
        "target": torch.randint(1, NUM_ITEMS + 1, (NUM_USERS,), generator=generator),
        "history": history,
    }


DATA = _eval_data()


def _collate(users: list[int]) -> EvalBatch:
    user_ids = torch.tensor(users)
    history = DATA["history"][user_ids]
    return EvalBatch(
        item_seq=history.flip(1), target=DATA["target"][user_ids], user_ids=user_ids, history=history
    )


def _loader() -> DataLoader:
    # Batches of 3, 3 and 1 users.
    return DataLoader(list(range(NUM_USERS)), batch_size=3, collate_fn=_collate)


class FixedEmbeddingModule(lightning.LightningModule):
    """User and item embedding tables as the whole model; training pulls each user towards its target."""

    def __init__(self, returns_embeddings: bool = True) -> None:
        super().__init__()
        self.users = torch.nn.Parameter(DATA["user_table"].clone())
        self.items = torch.nn.Parameter(DATA["item_table"].clone())
        self.returns_embeddings = returns_embeddings

    def training_step(self, batch: EvalBatch, batch_idx: int) -> torch.Tensor:
        return -(self.users[batch.user_ids] * self.items[batch.target]).sum()

    def validation_step(self, batch: EvalBatch, batch_idx: int):
        if self.returns_embeddings:
            return {"user_emb": self.users[batch.user_ids], "item_emb": self.items}
        return None

    test_step = validation_step

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _direct(module: FixedEmbeddingModule) -> dict[str, float]:
    """RankingMetrics over all users at once, without Lightning."""
    metric = RankingMetrics(ks=KS)
    metric.update(module.users.detach(), module.items.detach(), DATA["target"], DATA["history"])
    return {name: value.item() for name, value in metric.compute().items()}


def _trainer(tmp_path: Path, callbacks: list, max_epochs: int = 1) -> lightning.Trainer:
    return lightning.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def test_validate_and_test_log_and_write_the_directly_computed_metrics(tmp_path: Path) -> None:
    module = FixedEmbeddingModule()
    expected = _direct(module)
    assert 0 < expected["ndcg@5"] < 1, "the case must not be degenerate"
    trainer = _trainer(tmp_path, [RankingEvaluationCallback(ks=KS, results_name="table")])

    (validated,) = trainer.validate(module, _loader())
    (tested,) = trainer.test(module, _loader())

    assert set(validated) == {f"val/{name}" for name in expected}
    assert set(tested) == {f"test/{name}" for name in expected}
    for name, value in expected.items():
        assert validated[f"val/{name}"] == pytest.approx(value, abs=1e-12), name
        assert tested[f"test/{name}"] == pytest.approx(value, abs=1e-12), name

    run_dir = Path(trainer.log_dir)
    assert run_dir == tmp_path / "lightning_logs" / "version_0"
    (history_entry,) = json.loads((run_dir / "validation_history.json").read_text())
    assert history_entry == pytest.approx({"epoch": 0, "step": 0, **expected}, abs=1e-12)
    assert json.loads((run_dir / "table.json").read_text()) == pytest.approx(expected, abs=1e-12)

    table = (run_dir / "table.md").read_text().splitlines()
    assert table[0] == "| metric | @1 | @5 | @50 |"
    rows = {line.split("|")[1].strip(): line for line in table[2:6]}
    assert list(rows) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        cells = [cell.strip() for cell in rows[name].split("|")[2:-1]]
        assert cells == [f"{expected[f'{name}@{k}']:.4f}" for k in KS], name
    assert table[-1] == f"Users evaluated: {NUM_USERS}"
    assert not list(run_dir.glob("*.tmp")), "temporary files must be renamed into place"


class _Observer(lightning.Callback):
    """Runs after the evaluation callback: reads validation_history.json right after it was written, and
    the validation metric's update count during the sanity check."""

    def __init__(self, evaluation: RankingEvaluationCallback) -> None:
        self.evaluation = evaluation
        self.lengths: list[int] = []
        self.sanity_update_counts: list[int] = []

    def on_validation_batch_end(self, trainer: lightning.Trainer, *args) -> None:
        if trainer.sanity_checking:
            self.sanity_update_counts.append(self.evaluation.val_metrics.update_count)

    def on_validation_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if not trainer.sanity_checking:
            history = json.loads((Path(trainer.log_dir) / "validation_history.json").read_text())
            self.lengths.append(len(history))


def test_fit_appends_one_history_entry_per_epoch_and_skips_the_sanity_check(tmp_path: Path) -> None:
    module = FixedEmbeddingModule()
    before_training = _direct(module)
    evaluation = RankingEvaluationCallback(ks=KS)
    observer = _Observer(evaluation)
    trainer = _trainer(tmp_path, [evaluation, observer], max_epochs=2)

    trainer.fit(module, _loader(), _loader())

    assert observer.sanity_update_counts == [0, 0], "the sanity check must not rank anything"
    assert observer.lengths == [1, 2]
    history = json.loads((Path(trainer.log_dir) / "validation_history.json").read_text())
    assert [(entry["epoch"], entry["step"]) for entry in history] == [(0, 3), (1, 6)]
    # The sanity check's batches must not be counted: every entry holds each user once.
    assert [entry["users"] == NUM_USERS for entry in history] == [True, True]
    assert history[-1] == pytest.approx({"epoch": 1, "step": 6, **_direct(module)}, abs=1e-12)
    assert history[0]["ndcg@5"] != before_training["ndcg@5"], "training must change the ranking"


def test_resumed_fit_keeps_the_validation_history(tmp_path: Path) -> None:
    first = _trainer(tmp_path / "first", [RankingEvaluationCallback(ks=KS)], max_epochs=1)
    first.fit(FixedEmbeddingModule(), _loader(), _loader())
    first.save_checkpoint(tmp_path / "epoch0.ckpt")
    (first_entry,) = json.loads((Path(first.log_dir) / "validation_history.json").read_text())

    resumed = _trainer(tmp_path / "resumed", [RankingEvaluationCallback(ks=KS)], max_epochs=2)
    resumed.fit(FixedEmbeddingModule(), _loader(), _loader(), ckpt_path=tmp_path / "epoch0.ckpt")

    history = json.loads((Path(resumed.log_dir) / "validation_history.json").read_text())
    assert [entry["epoch"] for entry in history] == [0, 1]
    assert history[0] == first_entry


def test_steps_without_embeddings_log_nothing_and_write_nothing(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, [RankingEvaluationCallback(ks=KS)])
    with pytest.warns(UserWarning, match="no batch gave ranking outputs"):
        (validated,) = trainer.validate(FixedEmbeddingModule(returns_embeddings=False), _loader())
    assert validated == {}
    assert not (Path(trainer.log_dir) / "validation_history.json").exists()


def test_per_user_results_hold_each_users_own_metrics_and_average_to_the_table(tmp_path: Path) -> None:
    module = FixedEmbeddingModule()
    trainer = _trainer(tmp_path, [RankingEvaluationCallback(ks=KS, per_user=True)])
    trainer.test(module, _loader())
    run_dir = Path(trainer.log_dir)
    header, *lines = (run_dir / "results_per_user.csv").read_text().splitlines()
    assert header.split(",") == ["user_id", *(f"{name}@{k}" for k in KS for name in METRIC_NAMES)]
    rows = [dict(zip(header.split(","), map(float, line.split(",")))) for line in lines]
    assert [row["user_id"] for row in rows] == list(range(NUM_USERS))  # sorted by id, each user once
    for user, row in enumerate(rows):  # each row is that user ranked on its own
        alone = RankingMetrics(ks=KS)
        alone.update(module.users.detach()[user:user + 1], module.items.detach(), DATA["target"][user:user + 1],
                     DATA["history"][user:user + 1])
        for name, value in alone.compute().items():
            if name not in ("users", "nonfinite_users"):
                assert row[name] == value.item(), (user, name)
    table = json.loads((run_dir / "results.json").read_text())
    for name in header.split(",")[1:]:
        assert sum(row[name] for row in rows) / NUM_USERS == pytest.approx(table[name], abs=1e-12), name
