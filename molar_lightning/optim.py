"""Learning-rate schedules for the tasks' ``lr_scheduler`` factories, stepped every optimizer step.

:class:`WarmupCosineSchedule` is Molar's recipe (linear warm-up from 1/100 of the peak, then cosine decay).
A schedule may leave its length open (``total_steps: null``): the task fills it in with the trainer's
estimate of the run's optimizer steps (:func:`every_step`), so one config serves any data size, epoch
count or number of GPUs.
"""

import math
from typing import Mapping, Optional, Union

import lightning.pytorch as pl
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosineSchedule(LRScheduler):
    """Linear warm-up to the optimizer's learning rate, then cosine decay to ``min_lr_ratio`` of it.

    At optimizer step ``s`` (0 before the first step) the learning rate is the configured one times
    ``warmup_start_ratio + (1 - warmup_start_ratio) * s / warmup_steps`` during warm-up, then
    ``min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * p)) / 2`` with ``p`` the fraction of the steps
    after warm-up done; it stays at ``min_lr_ratio`` after ``total_steps``.

    Args:
        optimizer: the optimizer whose learning rates (each group's ``lr``) are the peaks.
        warmup_steps: optimizer steps of the linear warm-up; 0 starts at the peak.
        total_steps: optimizer steps of the whole run; null means the trainer's estimate
            (``trainer.estimated_stepping_batches``), filled in by the task when it builds the schedule.
        warmup_start_ratio: learning rate of the first step as a fraction of the peak (the paper's 1/100).
        min_lr_ratio: learning rate at the end as a fraction of the peak.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: Optional[int] = None,
                 warmup_start_ratio: float = 0.01, min_lr_ratio: float = 0.0) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if total_steps is not None and total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
        for name, ratio in (("warmup_start_ratio", warmup_start_ratio), ("min_lr_ratio", min_lr_ratio)):
            if not 0 <= ratio <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {ratio}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.warmup_start_ratio = warmup_start_ratio
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        """The learning rate at optimizer step ``step`` as a fraction of the peak."""
        if step < self.warmup_steps:
            return self.warmup_start_ratio + (1 - self.warmup_start_ratio) * step / self.warmup_steps
        after_warmup = step - self.warmup_steps
        if after_warmup == 0:  # the peak, known before total_steps is
            return 1.0
        if self.total_steps is None:
            raise ValueError("WarmupCosineSchedule: total_steps is null and no task filled it in; set "
                             "lr_scheduler.init_args.total_steps, or build the schedule with "
                             "molar_lightning.optim.every_step")
        progress = min(1.0, after_warmup / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * (1 + math.cos(math.pi * progress)) / 2

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


def every_step(scheduler: LRScheduler, trainer: pl.Trainer) -> dict:
    """Lightning's scheduler config that steps ``scheduler`` after every optimizer step; a schedule with
    ``total_steps`` left null gets the trainer's estimate of the run's optimizer steps."""
    if getattr(scheduler, "total_steps", 0) is None:
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(f"{type(scheduler).__name__}: total_steps is null but the run has no end "
                             f"(max_epochs and max_steps are -1); set trainer.max_epochs or total_steps")
        scheduler.total_steps = int(total)
    return {"scheduler": scheduler, "interval": "step"}


def trainable_weights_optimizer(module: pl.LightningModule, optimizer: OptimizerCallable,
                                lr_scheduler: Optional[LRSchedulerCallable],
                                lr_scales: Optional[Mapping[str, float]] = None) -> Union[Optimizer, dict]:
    """What every task's ``configure_optimizers`` returns: ``optimizer`` over the module's trainable weights,
    with ``lr_scheduler`` (if any) stepped every optimizer step (:func:`every_step`).

    ``lr_scales`` maps a part (an attribute path of the module, such as ``items.encoder``) to a factor of the
    optimizer's learning rate for the weights under it, each such part its own parameter group; a schedule then
    scales every group alike."""
    lr_scales = dict(lr_scales or {})
    groups: dict[Optional[str], list] = {}
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            part = next((part for part in lr_scales if name == part or name.startswith(f"{part}.")), None)
            groups.setdefault(part, []).append(parameter)
    if not groups:
        raise ValueError("the encoder has no trainable weight: set its finetuning to lora or full")
    unknown = [part for part in lr_scales if part not in groups]
    if unknown:
        parts = sorted({name.split(".")[0] for name, parameter in module.named_parameters() if parameter.requires_grad})
        raise ValueError(f"lr_scales names {unknown}, which hold no trainable weight; parts with trainable weights "
                         f"start with {parts} (e.g. items.encoder, user_encoder, encoder)")
    built = optimizer([{"params": parameters} for parameters in groups.values()])
    for group, part in zip(built.param_groups, groups):
        if part is not None:
            group["lr"] *= lr_scales[part]
    if lr_scheduler is None:
        return built
    return {"optimizer": built, "lr_scheduler": every_step(lr_scheduler(built), module.trainer)}
