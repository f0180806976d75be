"""A checkpoint to resume from when training is stopped by SIGTERM (a SLURM or Kubernetes time limit, pre-emption).

Lightning's own handler turns SIGTERM into :class:`~lightning.pytorch.utilities.exceptions.SIGTERMException` at
the end of the running batch, on every process, and that exception exits with status 0, as if training had
finished. This callback saves the training state at that point (written under a temporary name and renamed,
so a SIGKILL that follows never leaves half a checkpoint), and ``molar`` exits with status 143 (128 + SIGTERM),
so ``molar fit ... && next-step`` stops. A fit that ends normally removes the file: it is then stale.

A SIGTERM during the test that ``molar fit`` runs after training saves nothing new: training has finished and
its checkpoints are on disk, so the message says that the test did not finish and the ``molar test`` command
that runs it on the checkpoint it was testing.
"""

import os
import shutil

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


INTERRUPTED_CHECKPOINT = "interrupted.ckpt"


class SIGTERMCheckpointCallback(pl.Callback):
    """Saves ``<default_root_dir>/<filename>`` when SIGTERM stops ``fit``; resume with ``--ckpt_path`` that file.

    Args:
        filename: name of the checkpoint inside the trainer's ``default_root_dir`` (a fixed place, so a job
            script that requeues itself knows where to resume from).
    """

    def __init__(self, filename: str = INTERRUPTED_CHECKPOINT) -> None:
        self.filename = filename
        self.trained = False  # fit ended in this process: a later test is fit's own

    def path(self, trainer: pl.Trainer) -> str:
        return os.path.join(trainer.default_root_dir, self.filename)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        if trainer.state.fn == TrainerFn.FITTING:
            self._save(trainer)
        elif trainer.state.fn == TrainerFn.TESTING and self.trained:
            rank_zero_info(f"SIGTERM: {self._test_not_finished(trainer)}")

    @staticmethod
    def _test_not_finished(trainer: pl.Trainer) -> str:
        """What a SIGTERM during fit's final test leaves, and how to run the test again."""
        if trainer.ckpt_path is None:
            return ("training had finished, but the test after it did not; with checkpointing off no checkpoint "
                    "holds the trained weights, so train again")
        config = os.path.join(trainer.log_dir or trainer.default_root_dir, "config.yaml")
        config = config if os.path.isfile(config) else "<the fit's config>"
        return (f"training had finished and its checkpoints are saved, but the test after it did not finish (no "
                f"results were written); run it with: molar test --config {config} --ckpt_path {trainer.ckpt_path}")

    def _save(self, trainer: pl.Trainer) -> None:
        path = self.path(trainer)
        partial = f"{path}.partial"
        trainer.save_checkpoint(partial)  # every process takes part; rank 0 writes (all shards under FSDP)
        if trainer.is_global_zero:
            if os.path.isdir(path):  # a sharded checkpoint is a folder, which os.replace cannot overwrite
                shutil.rmtree(path)
            os.replace(partial, path)
        trainer.strategy.barrier("SIGTERMCheckpointCallback")
        rank_zero_info(f"SIGTERM: training state saved to {path}; resume with --ckpt_path {path}")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trained = True
        path = self.path(trainer)
        if not trainer.is_global_zero:
            return
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
