"""SIGTERM in the middle of an epoch of ``molar fit`` (a real subprocess) exits non-zero with no test run, and
leaves a checkpoint from which ``--ckpt_path`` resumes to a finished, tested run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[2]
# Written next to the run and put on PYTHONPATH: the process signals itself at a known batch, so the test does
# not race the training loop; the signal goes through the same handler as one sent by SLURM.
SIGNALLER = '''
import os, signal
import lightning.pytorch as pl

class SIGTERMAt(pl.Callback):
    def __init__(self, epoch: int = 1, batch: int = 2) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)
'''


def fit(run: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["--config", "configs/movielens/sasrec.yaml", "--data.init_args.data_dir", str(data_dir),
            "--data.init_args.cache_dir", str(run.parent / "cache"), "--data.init_args.batch_size", "2",
            "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "3", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", *extra]
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{run.parent}"}
    return subprocess.run([sys.executable, "-m", "molar_lightning", "fit", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # two `molar fit` processes, about a minute on 2 busy cores
def test_sigterm_mid_epoch_exits_non_zero_and_its_checkpoint_resumes(ml1m_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "sigterm_at.py").write_text(SIGNALLER)
    run = tmp_path / "run"
    stopped = fit(run, ml1m_dir, "--trainer.callbacks+=sigterm_at.SIGTERMAt")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "stopped by SIGTERM" in stopped.stderr
    assert not list(run.rglob("results.md"))  # fit's test never ran
    checkpoint = run / "interrupted.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # written by this framework
    assert state["epoch"] == 1
    batches_per_epoch = 6  # 12 users, one window each, batches of 2
    assert state["global_step"] == batches_per_epoch + 3  # epoch 0, then batches 0..2 of epoch 1

    resumed = fit(run, ml1m_dir, "--ckpt_path", str(checkpoint))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (results,) = run.rglob("results.md")
    assert "Users evaluated: 12" in results.read_text()
    last = max(run.rglob("last.ckpt"), key=os.path.getmtime)  # the resumed run's log folder is a new version
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 2  # ran to max_epochs
    assert not checkpoint.exists()  # stale once the fit finished
