"""``ShardableTask``: what every task does under ``ModelParallelStrategy`` (FSDP2, ``configs/trainer/fsdp.yaml``).

``configure_model`` shards the parts a task names in :meth:`ShardableTask.sharded_parts` (its language
models) with :func:`molar_lightning.sharding.shard`; after each backward the gradients of everything left
whole are averaged over the processes, and clipping takes the joint norm of sharded and whole gradients.
Under any other strategy nothing changes. Under sharding, checkpoints are folders with one shard per
process, holding every weight: the trimmed checkpoints the tasks write otherwise (trainable weights only)
cannot be loaded shard-wise.
"""

import os
from typing import Optional

import lightning.pytorch as pl
from torch.distributed.fsdp import FSDPModule

from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.sharding import (average_gradients, clip_gradient_norm, clip_gradient_values, data_parallel_mesh,
                                      fill_missing_gradients, full_state_dict, mixed_precision, replicated_parameters,
                                      shard)


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

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """``trainer.gradient_clip_val`` as configured; under sharding by :mod:`molar_lightning.sharding`'s
        clipping, since Lightning's (``torch.nn.utils``') refuses sharded and whole gradients in one call."""
        if not self.is_sharded or not gradient_clip_val:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
        if gradient_clip_algorithm == "value":
            clip_gradient_values(parameters, gradient_clip_val)
        else:
            clip_gradient_norm(parameters, gradient_clip_val, data_parallel_mesh(self.device_mesh))

    def export_item_encoder(self, encoder: MultimodalItemEncoder, export_dir: Optional[str]) -> str:
        """Write ``encoder`` with ``save_pretrained`` to ``export_dir`` (null: ``<run dir>/mirm_encoder``), in
        the form ``molar embed`` and the configs load back; under sharding every process takes part in
        gathering the weights and the first one writes them. Returns the folder."""
        folder = export_dir or os.path.join(self.trainer.log_dir or self.trainer.default_root_dir, "mirm_encoder")
        state = full_state_dict(encoder) if self.is_sharded else None
        if self.trainer.is_global_zero:
            encoder.save_pretrained(folder, state)
        return folder
