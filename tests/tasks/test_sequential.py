"""SequentialRecModule through the real CLI path: learning beats popularity, resume equals an uninterrupted
run, checkpoints round-trip, prediction excludes seen items."""

import json
from pathlib import Path

import pytest
import torch

from molar_lightning.cli import build_cli, main
from molar_lightning.data.synthetic import write_movielens

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    return write_movielens(str(tmp_path_factory.mktemp("synthetic")), num_users=150, num_items=60, mean_length=15)


def fit_args(data_dir: Path, run_dir: Path, epochs: int, *extra: str) -> list[str]:
    return ["fit", "--config", str(ROOT / "configs/quickstart/sasrec.yaml"),
            "--data.init_args.data_dir", str(data_dir), "--data.init_args.cache_dir", str(run_dir.parent / "cache"),
            "--data.init_args.batch_size", "32",
            "--trainer.default_root_dir", str(run_dir), "--trainer.max_epochs", str(epochs),
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", *extra]


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    (checkpoint,) = run_dir.rglob("last.ckpt")
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


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


def test_checkpoint_round_trip_and_prediction(synthetic_dir: Path, tmp_path: Path) -> None:
    main(fit_args(synthetic_dir, tmp_path / "run", 1))
    (best,) = (tmp_path / "run").rglob("best-*.ckpt")
    cli = build_cli(fit_args(synthetic_dir, tmp_path / "run", 1)[1:], run=False)
    loaded = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    cli.model.load_state_dict(loaded)
    cli.model.eval()
    batch = next(iter(cli.datamodule.predict_dataloader()))
    with torch.no_grad():
        first = cli.model.predict_step(batch, 0)
        again = cli.model.predict_step(batch, 0)
    assert torch.equal(first["item_ids"], again["item_ids"])
    assert first["item_ids"].shape == (len(batch.user_ids), 50)
    seen = (first["item_ids"][:, :, None] == batch.history[:, None, :]) & (batch.history[:, None, :] != 0)
    assert not seen.any()  # recommendations never repeat the user's history
    assert (first["scores"][:, :-1] >= first["scores"][:, 1:]).all()
