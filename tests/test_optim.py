"""WarmupCosineSchedule: the learning rate at hand-computed steps, and a task filling in the run's length
from the trainer and stepping the schedule every optimizer step."""

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.data.synthetic import write_movielens
from molar_lightning.models.id.sasrec import SASRec
from molar_lightning.optim import WarmupCosineSchedule
from molar_lightning.tasks.sequential import SequentialRecModule


def learning_rates(schedule: WarmupCosineSchedule, steps: int) -> list[float]:
    """The first group's learning rate before each of ``steps`` optimizer steps."""
    rates = []
    for _ in range(steps):
        rates.append(schedule.optimizer.param_groups[0]["lr"])
        schedule.optimizer.step()
        schedule.step()
    return rates


def sgd(lr: float = 2.0) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_learning_rate_at_hand_computed_steps() -> None:
    schedule = WarmupCosineSchedule(sgd(2.0), warmup_steps=4, total_steps=12, warmup_start_ratio=0.01,
                                    min_lr_ratio=0.1)
    rates = learning_rates(schedule, 15)
    # warm-up: 2 * (0.01 + 0.99 * s / 4); after it 2 * (0.1 + 0.9 * (1 + cos(pi * (s - 4) / 8)) / 2)
    expected = {0: 0.02, 1: 0.515, 2: 1.01, 3: 1.505, 4: 2.0, 6: 2 * (0.1 + 0.45 * (1 + math.cos(math.pi / 4))),
                8: 1.1, 12: 0.2, 14: 0.2}
    for step, value in expected.items():
        assert rates[step] == pytest.approx(value), f"step {step}"
    assert all(a >= b for a, b in zip(rates[4:], rates[5:]))  # cosine only decreases


def test_without_warm_up_it_starts_at_the_peak_and_the_length_may_come_later() -> None:
    schedule = WarmupCosineSchedule(sgd(1.0), warmup_steps=0)
    assert schedule.optimizer.param_groups[0]["lr"] == 1.0
    with pytest.raises(ValueError, match="total_steps is null"):
        learning_rates(schedule, 2)
    schedule = WarmupCosineSchedule(sgd(1.0), warmup_steps=0)
    schedule.total_steps = 4
    assert learning_rates(schedule, 5) == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466, 0.0])


@pytest.mark.parametrize("options, message", [
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"warmup_steps": 10, "total_steps": 10}, "must exceed"),
    ({"warmup_steps": 1, "min_lr_ratio": 1.5}, "min_lr_ratio"),
], ids=["negative-warmup", "no-decay-steps", "ratio-above-one"])
def test_bad_settings_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WarmupCosineSchedule(sgd(), **options)


def test_a_task_fills_in_the_run_length_and_steps_every_optimizer_step(tmp_path: Path) -> None:
    write_movielens(str(tmp_path / "raw"), num_users=60, num_items=30, mean_length=12)
    datamodule = MovieLensDataModule(str(tmp_path / "raw"), cache_dir=str(tmp_path / "cache"), max_seq_len=10,
                                     batch_size=16)
    module = SequentialRecModule(SASRec(datamodule.num_items, max_seq_len=10, hidden_size=8, inner_size=16),
                                 optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2),
                                 lr_scheduler=lambda optimizer: WarmupCosineSchedule(optimizer, warmup_steps=2,
                                                                                     min_lr_ratio=0.25))
    seen = []

    class RecordRate(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, limit_train_batches=3, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[RecordRate()])
    trainer.fit(module, datamodule=datamodule)
    (schedule,) = trainer.lr_scheduler_configs
    assert schedule.scheduler.total_steps == trainer.global_step == 6
    cosine = [0.25 + 0.75 * (1 + math.cos(math.pi * s / 4)) / 2 for s in range(4)]
    assert seen == pytest.approx([1e-2 * f for f in (0.01, 0.505, *cosine)])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.25e-2)


class TwoParts(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.items = torch.nn.ModuleDict({"encoder": torch.nn.Linear(2, 2)})
        self.user_encoder = torch.nn.Linear(2, 2)
        self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)


def test_lr_scales_give_a_part_its_own_rate_which_the_schedule_scales_alike() -> None:
    from molar_lightning.optim import trainable_weights_optimizer

    module = TwoParts()
    built = trainable_weights_optimizer(module, lambda params: torch.optim.SGD(params, lr=2.0), None,
                                        {"items.encoder": 0.1})
    rates = {id(parameter): group["lr"] for group in built.param_groups for parameter in group["params"]}
    assert [rates[id(p)] for p in module.items.parameters()] == pytest.approx([0.2, 0.2])
    assert [rates[id(p)] for p in module.user_encoder.parameters()] == [2.0, 2.0]
    assert len(rates) == 4  # the frozen part is not optimized
    schedule = WarmupCosineSchedule(built, warmup_steps=2, total_steps=4)
    assert [group["lr"] for group in built.param_groups] == pytest.approx([0.002, 0.02])  # items first, in module order
    schedule.optimizer.step()
    schedule.step()
    assert [group["lr"] for group in built.param_groups] == pytest.approx([0.101, 1.01])


def test_lr_scales_naming_no_trainable_part_are_refused() -> None:
    from molar_lightning.optim import trainable_weights_optimizer

    for part in ("items.encoders", "frozen"):
        with pytest.raises(ValueError, match=rf"lr_scales names \['{part}'\].*\['items', 'user_encoder'\]"):
            trainable_weights_optimizer(TwoParts(), torch.optim.SGD, None, {part: 0.1})
