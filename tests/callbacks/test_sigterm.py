"""SIGTERM in the middle of an epoch of ``molar fit`` exits with status 143 and no test run, and leaves a checkpoint
from which ``--ckpt_path`` resumes to a finished, tested run (slow: both as real processes); SIGTERM during the
test after training exits with 143 too, saying that the test did not finish and how to run it."""

import json
import logging

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from molar_lightning.commands import main

ROOT = Path(__file__).parents[2]
BATCHES_PER_EPOCH = 6  # the ML-1M fixture: 12 users, one training window each, batches of 2


class SIGTERMAt(pl.Callback):
    """Sends this process SIGTERM after a given batch, so the test does not race the training loop; the signal
    goes through the same handler as one sent by SLURM."""

    def __init__(self, epoch: int = 1, batch: int = 2) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


class SIGTERMInTest(pl.Callback):
    """Sends this process SIGTERM after the first test batch (of several, so the test loop stops on it)."""

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


def arguments(run: Path, data_dir: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(ROOT / "configs/movielens/sasrec.yaml"), "--data.init_args.data_dir", str(data_dir),
            "--data.init_args.cache_dir", str(run.parent / "cache"), "--data.init_args.batch_size", "2",
            "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "3", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", *extra]


def assert_saved_mid_epoch(checkpoint: Path) -> None:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # written by this framework
    assert state["epoch"] == 1
    assert state["global_step"] == BATCHES_PER_EPOCH + 3  # epoch 0, then batches 0..2 of epoch 1


def test_sigterm_stops_fit_with_status_143_and_a_checkpoint(ml1m_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(arguments(run, ml1m_dir, f"--trainer.callbacks+={__name__}.SIGTERMAt"))
    assert exit_info.value.code == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err
    assert not list(run.rglob("results.md"))  # fit's test never ran
    assert_saved_mid_epoch(run / "interrupted.ckpt")
    assert not list(run.glob("*.partial"))


def test_sigterm_during_fits_test_says_the_test_did_not_finish(ml1m_dir: Path, tmp_path: Path, capsys,
                                                                caplog, monkeypatch) -> None:
    run = tmp_path / "run"
    # Lightning stops its logger propagating to the root logger (where caplog listens) when the root logger had no
    # handler at Lightning's first import, which depends on which test file imported it first.
    monkeypatch.setattr(logging.getLogger("lightning.pytorch"), "propagate", True)
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as exit_info:
        main(arguments(run, ml1m_dir, "--trainer.max_epochs", "1", "--data.init_args.eval_batch_size", "2",
                       f"--trainer.callbacks+={__name__}.SIGTERMInTest"))
    assert exit_info.value.code == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err
    assert not list(run.rglob("results.md"))
    assert not (run / "interrupted.ckpt").exists()  # training had finished: its own checkpoints hold it
    (best,) = run.rglob("best-*.ckpt")
    (config,) = run.rglob("config.yaml")
    (message,) = [record.getMessage() for record in caplog.records if record.getMessage().startswith("SIGTERM")]
    assert message == (f"SIGTERM: training had finished and its checkpoints are saved, but the test after it did not "
                       f"finish (no results were written); run it with: molar test --config {config} --ckpt_path "
                       f"{best}")


def fit(run: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """``molar fit`` as a process of its own, as SLURM runs it."""
    return subprocess.run([sys.executable, "-m", "molar_lightning", *arguments(run, data_dir, *extra)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # two `molar fit` processes, about a minute on 2 busy cores
def test_sigterm_mid_epoch_exits_non_zero_and_its_checkpoint_resumes(ml1m_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    stopped = fit(run, ml1m_dir, f"--trainer.callbacks+={__name__}.SIGTERMAt")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "stopped by SIGTERM" in stopped.stderr
    assert not list(run.rglob("results.md"))  # fit's test never ran
    checkpoint = run / "interrupted.ckpt"
    assert_saved_mid_epoch(checkpoint)

    resumed = fit(run, ml1m_dir, "--ckpt_path", str(checkpoint))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (results,) = run.rglob("results.md")
    assert "Users evaluated: 12" in results.read_text()
    last = max(run.rglob("last.ckpt"), key=os.path.getmtime)  # the resumed run's log folder is a new version
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 2  # ran to max_epochs
    assert not checkpoint.exists()  # stale once the fit finished


def test_a_run_resumed_from_its_interrupted_checkpoint_keeps_its_checkpoint_folder_and_best(
        ml1m_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """interrupted.ckpt sits at the run's root, away from the checkpoints: the resumed fit goes on writing into the
    interrupted run's checkpoint folder, so ModelCheckpoint keeps the best of the epochs before the interrupt, and
    the final test takes the best of all epochs. The run folder is given relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    run = Path("run")
    with pytest.raises(SystemExit):
        main(arguments(run, ml1m_dir, f"--trainer.callbacks+={__name__}.SIGTERMAt"))
    (folder,) = {path.parent for path in run.rglob("*.ckpt") if path.name != "interrupted.ckpt"}
    main(arguments(run, ml1m_dir, "--ckpt_path", str(run / "interrupted.ckpt"), "--trainer.max_epochs", "4"))
    assert not list(run.glob("*.ckpt"))  # nothing written beside interrupted.ckpt, which the finished fit removed
    state = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)  # written by this framework
    assert state["epoch"] == 3
    (checkpoint,) = [value for key, value in state["callbacks"].items() if key.startswith("ModelCheckpoint")]
    history = json.loads(max(run.rglob("validation_history.json"), key=os.path.getmtime).read_text())
    assert [entry["epoch"] for entry in history] == [0, 1, 2, 3]
    assert float(checkpoint["best_model_score"]) == max(entry["ndcg@10"] for entry in history)
    assert Path(checkpoint["best_model_path"]).parent == folder.resolve()
