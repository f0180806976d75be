"""``ShardableTask``: what every task does under ``ModelParallelStrategy`` (FSDP2, ``configs/trainer/fsdp.yaml``).

``configure_model`` shards the parts a task names in :meth:`ShardableTask.sharded_parts` (its language
models) with :func:`molar_lightning.sharding.shard`, and after each backward the gradients of everything left
whole are averaged over the processes. Under any other strategy nothing changes. Under sharding, checkpoints
are folders with one shard per process, holding every weight: the trimmed checkpoints the tasks write
otherwise (trainable weights only) cannot be loaded shard-wise.
"""

import lightning.pytorch as pl
from torch.distributed.fsdp import FSDPModule

from molar_lightning.sharding import (average_gradients, data_parallel_mesh, fill_missing_gradients, mixed_precision,
                                      replicated_parameters, shard)


class ShardableTask(pl.LightningModule):
    """A LightningModule that FSDP2 can shard; subclasses name their language-model parts."""

    def sharded_parts(self) -> dict[str, tuple[str, ...]]:
        """Attribute name of each part to shard -> the methods the task calls on it instead of ``forward``."""
        return {}

    @property
    def is_sharded(self) -> bool:
        """Whether the strategy is ``ModelParallelStrategy`` (it hands the task a device mesh)."""
        return self.device_mesh is not None

    def configure_model(self) -> None:
        if not self.is_sharded:
            return
        mesh = data_parallel_mesh(self.device_mesh)
        policy = mixed_precision(str(self.trainer.precision))
        for name, methods in self.sharded_parts().items():
            part = getattr(self, name)
            if not isinstance(part, FSDPModule):  # fit, then test, configure the same module twice
                shard(part, mesh, policy, methods)

    def on_after_backward(self) -> None:
        if self.is_sharded:
            average_gradients(replicated_parameters(self), data_parallel_mesh(self.device_mesh))

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.is_sharded:
            fill_missing_gradients(self)
