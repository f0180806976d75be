"""Full-ranking evaluation during validation and test: logs the ranking metrics and writes results files.

The contract with the tasks: ``validation_step`` and ``test_step`` receive an
:class:`~molar_lightning.batch.EvalBatch` and return ``{"user_emb": [B, D], "item_emb": [N + 1, D]}``. The
callback ranks every user against all items with :class:`~molar_lightning.metrics.ranking.RankingMetrics`,
logs ``val/<metric>@K`` and ``test/<metric>@K``, and writes into the run directory (the logger's
``log_dir``, else the trainer's ``default_root_dir``) ``validation_history.json`` after every validation
epoch (under ``molar validate``, one entry: the checkpoint, its epoch and step, and the metrics) and
``<results_name>.json`` plus ``<results_name>.md`` after test (with ``cold_targets``, also
``<results_name>_cold.json``/``.md``: the test users whose held-out item never appeared in training; with
``per_user``, also ``<results_name>_per_user.csv``: every test user's metrics, for paired tests between runs).
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn

from molar_lightning.atomic_files import write_atomically
from molar_lightning.batch import PADDING_USER, EvalBatch
from molar_lightning.data.sequence_datasets import items_in_training
from molar_lightning.metrics.ranking import METRIC_NAMES, RankingMetrics
from molar_lightning.user_error import SettingError


class RankingEvaluationCallback(pl.Callback):
    """Ranks each evaluation user's held-out item against all items, logs the metrics and writes them to disk.

    Logged values are already reduced over all processes (the metric's states are sums), so they are logged
    without ``sync_dist``; a ``monitor:`` can name any of them, e.g. ``val/ndcg@10``. The validation history
    is part of the callback's checkpoint state, so a resumed run keeps the epochs before the resume.

    Users ranked with a NaN or infinite score get the worst rank, so a diverged model scores below a random
    one and never becomes the best checkpoint; their count is logged (``val/nonfinite_users``) and a warning
    says so.

    Args:
        ks: Cut-offs K of NDCG@K, Recall@K, MRR@K and Hit@K.
        exclude_history: Leave each user's earlier items out of the ranking (the target itself stays).
        item_chunk_size: Items scored per matmul; memory is ``O(batch_size * item_chunk_size)``.
        results_name: Stem of the test results files, ``<results_name>.json`` and ``<results_name>.md``.
        cold_targets: Also report the test users whose held-out item never appeared in training (a cold
            item, e.g. one added late to the catalogue), ranked the same way, as ``test/cold/<metric>@K`` and
            ``<results_name>_cold.json``/``.md``; items count as seen in training when they occur in some
            user's training part (every item but the two held out).
        per_user: Also write ``<results_name>_per_user.csv`` after test: one row per test user (its id, the
            0-based user index of the data set, and every metric at every cut-off), so two runs on the same data
            can be compared user by user (``molar reproduce``'s paired tests).
    """

    def __init__(
        self,
        ks: Sequence[int] = (10, 20, 50),
        exclude_history: bool = True,
        item_chunk_size: int = 32768,
        results_name: str = "results",
        cold_targets: bool = False,
        per_user: bool = False,
    ) -> None:
        self.val_metrics = RankingMetrics(ks, exclude_history, item_chunk_size)
        self.test_metrics = RankingMetrics(ks, exclude_history, item_chunk_size, per_user=per_user)
        self.cold_metrics = RankingMetrics(ks, exclude_history, item_chunk_size) if cold_targets else None
        self.seen_in_training: Optional[torch.Tensor] = None  # [N + 1], with cold_targets, from the data
        self.results_name = results_name
        self.validation_history: list[dict[str, float]] = []
        self.loaded_position: Optional[dict[str, Any]] = None  # epoch and step of the checkpoint loaded, if any

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # The strategy moves the LightningModule only after this hook, so pl_module.device can still be the
        # CPU here; the strategy's root device is already the one the module will be on.
        # reset() gives each process its own state tensors: under ddp_spawn the callback reaches the workers
        # through torch.multiprocessing, which would otherwise leave every rank summing into one shared tensor.
        for metric in (self.val_metrics, self.test_metrics, self.cold_metrics):
            if metric is not None:
                metric.reset()
                metric.to(trainer.strategy.root_device)
        if self.cold_metrics is not None and stage == "test":
            dataset = getattr(trainer.datamodule, "dataset", None)
            if not hasattr(dataset, "flat_sequences"):
                raise SettingError("evaluation.cold_targets needs a sequential DataModule (MovieLens, Amazon, "
                                   "PixelRec), whose training part says which items are cold; set it to false")
            self.seen_in_training = torch.from_numpy(items_in_training(*dataset.flat_sequences, dataset.num_items))

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: EvalBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            _update(self.val_metrics, outputs, batch)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: EvalBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        _update(self.test_metrics, outputs, batch)
        if self.cold_metrics is not None and isinstance(batch, EvalBatch):
            cold = ~self.seen_in_training.to(batch.target.device)[batch.target]
            _update(self.cold_metrics, outputs, batch, cold)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            self.val_metrics.reset()
            return
        values = _compute_and_log(self.val_metrics, pl_module, "val")
        if values is None:
            return
        if trainer.state.fn == TrainerFn.VALIDATING:  # molar validate: one entry, for the weights it evaluated
            entry = self.loaded_position or {"epoch": trainer.current_epoch, "step": trainer.global_step}
            if trainer.ckpt_path:
                entry = {"checkpoint": trainer.ckpt_path, **entry}
            _write_in_run_dir(trainer, "validation_history.json", json.dumps([{**entry, **values}], indent=2))
            return
        self.validation_history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **values})
        _write_in_run_dir(trainer, "validation_history.json", json.dumps(self.validation_history, indent=2))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        per_user = self.test_metrics.per_user_values() if self.test_metrics.per_user else None
        values = _compute_and_log(self.test_metrics, pl_module, "test")
        if values is None:
            return
        _write_in_run_dir(trainer, f"{self.results_name}.json", json.dumps(values, indent=2))
        _write_in_run_dir(trainer, f"{self.results_name}.md", _markdown_table(values, self.test_metrics.ks))
        if per_user is not None:
            _write_in_run_dir(trainer, f"{self.results_name}_per_user.csv", _per_user_csv(per_user))
        if self.cold_metrics is None:
            return
        cold = _compute_and_log(self.cold_metrics, pl_module, "test/cold")
        cold = cold if cold is not None else {"users": 0}  # no test target was cold: said, not left out
        _write_in_run_dir(trainer, f"{self.results_name}_cold.json", json.dumps(cold, indent=2))
        _write_in_run_dir(trainer, f"{self.results_name}_cold.md",
                          _markdown_table(cold, self.test_metrics.ks) if cold["users"] else "No cold test target.\n")

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.loaded_position = {"epoch": checkpoint.get("epoch"), "step": checkpoint.get("global_step")}

    def state_dict(self) -> dict[str, Any]:
        return {"validation_history": list(self.validation_history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validation_history = list(state_dict["validation_history"])


def _update(metric: RankingMetrics, outputs: Any, batch: Any, rows: Optional[torch.Tensor] = None) -> None:
    """Feed one ranking batch (an EvalBatch; only ``rows [B]`` of it if given) to the metric; other batches (MIRM
    alignment validates on its own loss) are not ranking batches and are ignored."""
    if not isinstance(batch, EvalBatch):
        return
    if not (isinstance(outputs, Mapping) and "user_emb" in outputs and "item_emb" in outputs):
        rank_zero_warn(
            "no batch gave ranking outputs for an EvalBatch, so it is not ranked: the step must return "
            '{"user_emb": [B, D], "item_emb": [N + 1, D]} for RankingEvaluationCallback.'
        )
        return
    counted = batch.user_ids != PADDING_USER  # an even shard's repeated row (data/even_shards.py)
    if rows is not None:
        counted &= rows
    metric.update(outputs["user_emb"][counted], outputs["item_emb"], batch.target[counted], batch.history[counted],
                  batch.user_ids[counted])


def _compute_and_log(
    metric: RankingMetrics, pl_module: pl.LightningModule, prefix: str
) -> Optional[dict[str, float]]:
    """Compute (reduced over all processes), reset, log as ``<prefix>/<name>``; None when no user was seen.

    """
    values = metric.compute()
    metric.reset()
    if int(values["users"]) == 0:
        return None
    if int(values["nonfinite_users"]):
        rank_zero_warn(
            f"{int(values['nonfinite_users'])} of {int(values['users'])} {prefix} users were ranked with a NaN or "
            f"infinite score and got the worst rank: the model has probably diverged. Lower the learning rate, "
            f"set trainer.gradient_clip_val, or train in fp32 (trainer.precision) and resume from an earlier "
            f"checkpoint."
        )
    for name, value in values.items():
        pl_module.log(f"{prefix}/{name}", value if value.is_floating_point() else value.float())
    return {name: value.item() for name, value in values.items()}


def _markdown_table(values: Mapping[str, float], ks: Sequence[int]) -> str:
    """Rows: metric names; columns: cut-offs; then the number of users evaluated."""
    lines = [
        "| metric | " + " | ".join(f"@{k}" for k in ks) + " |",
        "|---|" + "---:|" * len(ks),
    ]
    for name in METRIC_NAMES:
        lines.append(f"| {name} | " + " | ".join(f"{values[f'{name}@{k}']:.4f}" for k in ks) + " |")
    lines.append("")
    lines.append(f"Users evaluated: {values['users']}")
    return "\n".join(lines) + "\n"


def _per_user_csv(values: Mapping[str, torch.Tensor]) -> str:
    """``user_id,<metric>@<K>,...`` lines, one per user, each value written in full (the shortest text that reads
    back as the same float), so means of the file equal the results' figures."""
    names = [name for name in values if name != "user_id"]
    lines = [",".join(["user_id", *names])]
    columns = [values[name].tolist() for name in names]
    for row, user in enumerate(values["user_id"].tolist()):
        lines.append(",".join([str(user), *(repr(column[row]) for column in columns)]))
    return "\n".join(lines) + "\n"


def _write_in_run_dir(trainer: pl.Trainer, file_name: str, text: str) -> None:
    """Atomically write ``text`` to the run directory, on global rank 0 only.

    ``trainer.log_dir`` broadcasts from rank 0, so every rank must call this, not only rank 0.
    """
    log_dir = trainer.log_dir
    run_dir = log_dir if log_dir is not None else trainer.default_root_dir
    if trainer.is_global_zero:
        write_atomically(Path(run_dir) / file_name, text)
