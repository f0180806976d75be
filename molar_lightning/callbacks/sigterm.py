"""A checkpoint to resume from when training is stopped by SIGTERM (a SLURM or Kubernetes time limit, pre-emption).

Lightning's own handler turns SIGTERM into :class:`~lightning.pytorch.utilities.exceptions.SIGTERMException` at
the end of the running batch, on every process, and that exception exits with status 0, as if training had
finished. This callback saves the training state at that point (written under a temporary name and renamed,
so a SIGKILL that follows never leaves half a checkpoint), and ``molar`` exits with status 143 (128 + SIGTERM),
so ``molar fit ... && next-step`` stops. A fit that ends normally removes the file: it is then stale.
"""

import os
import shutil

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SIGTERMCheckpointCallback(pl.Callback):
    """Saves ``<default_root_dir>/<filename>`` when SIGTERM stops ``fit``; resume with ``--ckpt_path`` that file.

    Args:
        filename: name of the checkpoint inside the trainer's ``default_root_dir`` (a fixed place, so a job
            script that requeues itself knows where to resume from).
    """

    def __init__(self, filename: str = "interrupted.ckpt") -> None:
        self.filename = filename

    def path(self, trainer: pl.Trainer) -> str:
        return os.path.join(trainer.default_root_dir, self.filename)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
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
        path = self.path(trainer)
        if not trainer.is_global_zero:
            return
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
