"""SequentialRecModule through the real CLI path: learning beats popularity, resume equals an uninterrupted
run, checkpoints rebuild the model on their own and load with weights_only, prediction excludes seen items."""

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from molar_lightning.callbacks.evaluation import RankingEvaluationCallback
from molar_lightning.cli import build_cli
from molar_lightning.commands import main
from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.data.synthetic import write_movielens
from molar_lightning.models.id.duorec import DuoRec
from molar_lightning.models.id.sasrec import SASRec
from molar_lightning.tasks.sequential import SequentialRecModule

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    return write_movielens(str(tmp_path_factory.mktemp("synthetic")), num_users=150, num_items=60, mean_length=15)


def fit_args(data_dir: Path, run_dir: Path, epochs: int, *extra: str) -> list[str]:
    return ["fit", "--config", str(ROOT / "configs/movielens/sasrec.yaml"),
            "--data.init_args.data_dir", str(data_dir), "--data.init_args.cache_dir", str(run_dir.parent / "cache"),
            "--data.init_args.batch_size", "32", "--data.init_args.max_seq_len", "20",
            "--model.init_args.optimizer.init_args.lr", "0.003",
            "--trainer.default_root_dir", str(run_dir), "--trainer.max_epochs", str(epochs),
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", *extra]


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    (checkpoint,) = run_dir.rglob("last.ckpt")
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def popularity_ndcg_at_10(cli) -> float:
    """NDCG@10 on validation of ranking unseen items by training popularity (ties in the model's favour)."""
    offsets, items = cli.datamodule.dataset.flat_sequences
    counts = torch.zeros(cli.datamodule.num_items + 1)
    for user in range(len(offsets) - 1):
        counts.index_add_(0, torch.as_tensor(items[offsets[user]:offsets[user + 1] - 2]), torch.ones(1).expand(
            offsets[user + 1] - 2 - offsets[user]))
    total = 0.0
    for user in range(len(offsets) - 1):
        history = set(items[offsets[user]:offsets[user + 1] - 2].tolist())
        target = int(items[offsets[user + 1] - 2])
        better = sum(1 for item in range(1, len(counts)) if item not in history and item != target
                     and counts[item] > counts[target])
        total += 1 / torch.log2(torch.tensor(better + 2.0)).item() if better < 10 else 0.0
    return total / (len(offsets) - 1)


def test_training_beats_popularity_and_loss_falls(synthetic_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    main(fit_args(synthetic_dir, run_dir, 8, "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                  "--trainer.logger.save_dir", str(run_dir), "--trainer.log_every_n_steps", "1"))
    history = json.loads(next(run_dir.rglob("validation_history.json")).read_text())
    cli = build_cli(fit_args(synthetic_dir, tmp_path / "probe", 1)[1:], run=False)
    popularity = popularity_ndcg_at_10(cli)
    assert history[-1]["ndcg@10"] > popularity + 0.2, (history[-1]["ndcg@10"], popularity)
    metrics = (next(run_dir.rglob("metrics.csv"))).read_text().splitlines()
    header = metrics[0].split(",")
    losses = [float(row.split(",")[header.index("train/loss")]) for row in metrics[1:]
              if row.split(",")[header.index("train/loss")]]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_resumed_run_equals_uninterrupted_run(synthetic_dir: Path, tmp_path: Path) -> None:
    main(fit_args(synthetic_dir, tmp_path / "straight", 2))
    main(fit_args(synthetic_dir, tmp_path / "interrupted", 1))
    (last,) = (tmp_path / "interrupted").rglob("last.ckpt")
    main(fit_args(synthetic_dir, tmp_path / "interrupted", 2, "--ckpt_path", str(last)))
    straight, resumed = last_weights(tmp_path / "straight"), last_weights(tmp_path / "interrupted")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("config", ["movielens/sasrec", "movielens/fpmc"])
def test_load_from_checkpoint_rebuilds_the_trained_model(config: str, synthetic_dir: Path, tmp_path: Path) -> None:
    args = fit_args(synthetic_dir, tmp_path / "run", 1)
    args[2] = str(ROOT / f"configs/{config}.yaml")
    main(args)
    (best,) = (tmp_path / "run").rglob("best-*.ckpt")
    cli = build_cli(args[1:], run=False)
    cli.model.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    rebuilt = SequentialRecModule.load_from_checkpoint(best)  # from the checkpoint alone
    assert type(rebuilt.encoder) is type(cli.model.encoder) and type(rebuilt.loss) is type(cli.model.loss)
    if hasattr(rebuilt.encoder, "max_seq_len"):
        assert rebuilt.encoder.max_seq_len == 20  # the linked DataModule value, not the class default
    batch = next(iter(cli.datamodule.predict_dataloader()))
    for module in (cli.model, rebuilt):
        module.eval()
    with torch.no_grad():
        expected = cli.model.predict_step(batch, 0)
        actual = rebuilt.predict_step(batch, 0)
    assert torch.equal(expected["item_ids"], actual["item_ids"])
    torch.testing.assert_close(actual["scores"], expected["scores"])


def test_plain_python_checkpoints_load_with_weights_only(ml1m_dir: Path, tmp_path: Path) -> None:
    data = MovieLensDataModule(str(ml1m_dir), cache_dir=str(tmp_path / "cache"))
    model = SequentialRecModule(SASRec(data.num_items, max_seq_len=8), optimizer=torch.optim.Adam)
    assert dict(model.hparams_initial) == {"loss": None, "lr_scheduler": None}  # nor a copy of the objects there
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path),
                         callbacks=[RankingEvaluationCallback()])
    trainer.fit(model, datamodule=data)
    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)  # no pickled objects
    assert checkpoint["hyper_parameters"] == {"loss": None, "lr_scheduler": None}  # the objects are left out
    rebuilt = SequentialRecModule.load_from_checkpoint(trainer.checkpoint_callback.best_model_path,
                                                       encoder=SASRec(data.num_items, max_seq_len=8))
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[name], tensor)


def test_duorec_adds_its_contrastive_loss_to_the_next_item_loss(ml1m_dir: Path, tmp_path: Path,
                                                                monkeypatch) -> None:
    """Every position's state and target, and the data's positive prefix for it, reach the regulariser: without
    dropout the views are deterministic, and with the same seed the same groups, so the same call gives the same
    value."""
    data = MovieLensDataModule(str(ml1m_dir), cache_dir=str(tmp_path / "cache"), max_seq_len=8,
                               same_target_positives="all")
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert len(batch.positive_seq) == int((batch.target_seq != 0).sum())
    torch.manual_seed(0)
    encoder = DuoRec(data.num_items, max_seq_len=8, dropout=0.0, attention_dropout=0.0, contrastive_group_size=16)
    module = SequentialRecModule(encoder).train()
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **options: logged.update({name: value}))
    torch.manual_seed(1)
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        torch.manual_seed(1)
        states = encoder.sequence_states(batch.item_seq, batch.mask)
        expected = encoder.auxiliary_loss(encoder, batch.item_seq, batch.mask, states, batch.positive_seq,
                                          batch.target_seq)
    assert expected > 0 and int(batch.mask.sum()) > 16  # more samples than a group: several groups
    torch.testing.assert_close(logged["train/auxiliary_loss"].detach(), expected)
    torch.testing.assert_close(loss, logged["train/next_item_loss"] + logged["train/auxiliary_loss"])


def test_prediction_excludes_history_and_is_sorted(synthetic_dir: Path, tmp_path: Path) -> None:
    cli = build_cli(fit_args(synthetic_dir, tmp_path / "run", 1)[1:], run=False)
    cli.model.eval()
    batch = next(iter(cli.datamodule.predict_dataloader()))
    with torch.no_grad():
        first = cli.model.predict_step(batch, 0)
    assert first["item_ids"].shape == (len(batch.user_ids), 50)
    seen = (first["item_ids"][:, :, None] == batch.history[:, None, :]) & (batch.history[:, None, :] != 0)
    assert not seen.any()  # recommendations never repeat the user's history
    assert (first["scores"][:, :-1] >= first["scores"][:, 1:]).all()
