"""``LiveModel``: a trained ranking task loaded from its checkpoint the way ``molar predict --ckpt_path`` loads it.

The run's recorded ``config.yaml`` (next to ``checkpoints/``) rebuilds the task and its DataModule through the
LightningCLI, the checkpoint's hyper-parameters are read over it and its weights loaded, and one prediction
batch runs, so every setup hook has run (an end-to-end MIRM has embedded the catalog). The task then ranks
with what its evaluation uses (``item_tables`` once, then ``user_embeddings`` per batch: their dot products
are the scores), so nothing here re-implements a model. Before any of that, the data set the config prepares
is compared with the one the checkpoint records (:mod:`molar_lightning.callbacks.prepared_data`).
"""

import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from jsonargparse import ArgumentParser

from molar_lightning.batch import PADDING_USER, EvalBatch
from molar_lightning.callbacks.prepared_data import recorded_dataset
from molar_lightning.cli import build_cli
from molar_lightning.config_keys import given_config, resolve
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.collate import collate_eval
from molar_lightning.data.datamodule import SequentialDataModule
from molar_lightning.data.item_inputs import item_loader
from molar_lightning.data.prepare import CanonicalDataset
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.tasks.item_side import CachedItems, EncodedItems
from molar_lightning.tasks.ranking_task import RankingTask
from molar_lightning.user_error import MissingInputError, UserError

# One process, one device, whatever the run trained with (a serving copy is not a distributed job), and one
# prediction batch of top-1 items: enough for every setup hook to have run.
SETUP_RUN = ("--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto", "--trainer.logger=false",
             "--trainer.limit_predict_batches=1", "--model.init_args.top_k=1")


class ServingError(UserError, ValueError):
    """A user mistake in exporting or serving a model; the message says what to change."""


def run_config(checkpoint: Path) -> Path:
    """The ``config.yaml`` LightningCLI saved with the run of ``checkpoint`` (``<run>/checkpoints/x.ckpt``)."""
    config = checkpoint.resolve().parent.parent / "config.yaml"
    if not config.is_file():
        raise ServingError(f"no config.yaml beside the run of {checkpoint} (looked for {config}); pass the "
                           f"experiment's YAML with --config")
    return config


def configured_dataset(config: dict) -> CanonicalDataset:
    """The prepared data set that the ``data:`` section of ``config`` gives (prepared now if it is not cached)."""
    parser = ArgumentParser()
    parser.add_subclass_arguments(SequentialDataModule, "data")
    return parser.instantiate_classes(parser.parse_object({"data": config["data"]})).data.dataset


def check_data(checkpoint: Path, dataset: CanonicalDataset) -> None:
    """Refuse a data set other than the one ``checkpoint`` was trained on, naming both digests."""
    recorded = recorded_dataset(checkpoint)
    if recorded is not None and recorded["dataset"] != dataset.path.name:
        raise ServingError(f"{checkpoint} was trained on the prepared data set {recorded['dataset']}, but the data "
                           f"configured now prepares {dataset.path.name} (other raw files or preparation settings): "
                           f"its ids would map to the wrong raw ids. Point --data.init_args.data_dir (and the other "
                           f"data settings) at the data it was trained on, or train again on this data")


class LiveModel:
    """A ranking task with its weights, on one device, in evaluation mode.

    Args:
        checkpoint: a checkpoint written by ``molar fit``.
        config: the experiment YAML; null reads the run's ``config.yaml``.
        overrides: further ``--section.key=value`` arguments (e.g. another ``--trainer.accelerator``).
    """

    def __init__(self, checkpoint: str, config: Optional[str] = None, overrides: Sequence[str] = ()) -> None:
        self.checkpoint = Path(checkpoint)
        if self.checkpoint.is_dir():
            raise ServingError(f"checkpoint {checkpoint} is a folder of FSDP shards; turn it into one file first "
                               f"(python -m lightning.fabric.utilities.consolidate_checkpoint {checkpoint}, see "
                               f"docs/scaling.md) and pass {checkpoint}.consolidated")
        if not self.checkpoint.is_file():
            raise MissingInputError(f"checkpoint {checkpoint} does not exist; pass a best-*.ckpt or last.ckpt written "
                                    f"by molar fit (runs/<experiment>/lightning_logs/version_<n>/checkpoints/)")
        self.config_path = Path(config) if config else run_config(self.checkpoint)
        args = ["--config", str(self.config_path), *overrides]
        settings = given_config(args)
        task = resolve(settings.get("model", {}).get("class_path", ""))
        if not (isinstance(task, type) and issubclass(task, RankingTask)):
            raise ServingError(f"{self.checkpoint} is a {settings.get('model', {}).get('class_path')} checkpoint; "
                               f"only ranking tasks (SequentialRecModule, MolarModule) recommend items")
        self.dataset = configured_dataset(settings)
        check_data(self.checkpoint, self.dataset)
        scratch = tempfile.mkdtemp(prefix="molar-live-")  # the one prediction batch's recommendations go here
        try:  # progress bars go to stderr, so that commands answering on stdout (molar recommend) stay JSON
            with contextlib.redirect_stdout(sys.stderr):
                cli = build_cli(["predict", *args, *SETUP_RUN, f"--trainer.default_root_dir={scratch}",
                                 "--ckpt_path", str(self.checkpoint)])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.trainer, self.datamodule = cli.trainer, cli.datamodule
        self.device = cli.trainer.strategy.root_device
        self.task: RankingTask = cli.model.to(self.device).eval()
        self.max_seq_len = cli.datamodule.max_seq_len
        with torch.no_grad(), self.trainer.precision_plugin.forward_context():
            self.tables = self.task.item_tables()  # built once, as an evaluation epoch builds them

    @torch.no_grad()
    def user_embeddings(self, batch: EvalBatch) -> torch.Tensor:
        """``[B, D]`` user embeddings of an evaluation batch, scored against :meth:`item_table` as evaluation
        scores them."""
        batch = self.task.transfer_batch_to_device(batch, self.device, 0)
        with self.trainer.precision_plugin.forward_context():
            return self.task.user_embeddings(batch, self.tables).float().cpu()

    def encode_histories(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """User embeddings ``[B, D]`` of item-id histories (oldest first) of users the model does not know."""
        batch = collate_eval([(np.asarray(history[-self.max_seq_len:], dtype=np.int64), 0, PADDING_USER,
                               np.asarray(history, dtype=np.int64)) for history in histories])
        try:
            return self.user_embeddings(batch)
        except IndexError as error:
            raise ServingError(f"{type(self.task.encoder).__name__} cannot embed a history of an unknown user "
                               f"({error}); ask for a user of the data set instead") from error

    def item_table(self) -> torch.Tensor:
        """``[N + 1, D]``: the items as evaluation scores them (row 0 is padding)."""
        return self.tables["item_emb"].float().cpu()

    def item_encoder(self) -> EncodedItems:
        """The trained MIRM, as the item side that embeds with it: the task's own when trained end to end; in the
        cached mode the MIRM that ``molar embed`` wrote the cache with, rebuilt from the cache's ``meta.json``
        and refused unless its weights have the fingerprint recorded there."""
        items = getattr(self.task, "items", None)
        if isinstance(items, EncodedItems):
            return items
        if not isinstance(items, CachedItems):
            raise ServingError(f"{self.checkpoint} is a {type(self.task).__name__} of item ids: new items have no "
                               f"content model to embed them; cold start needs a MolarModule")
        if not isinstance(items.path, str):
            raise ServingError("item_embeddings is a list of caches (features concatenated): new items cannot be "
                               "embedded as all of them were; cold start needs one MIRM cache")
        folder = Path(items.path) if Path(items.path).is_dir() else Path(items.path).parent
        meta_file = folder / "meta.json"
        if not meta_file.is_file():
            raise ServingError(f"item_embeddings {items.path} has no meta.json beside it, so the MIRM that wrote it "
                               f"is unknown; cold start needs a cache written by molar embed")
        meta = json.loads(meta_file.read_text())
        encoder = MultimodalItemEncoder(**meta["encoder"])
        if encoder.fingerprint() != meta["weights"]:
            raise ServingError(f"the MIRM rebuilt from {meta_file} ({meta['encoder']['backbone']}) has weights of "
                               f"fingerprint {encoder.fingerprint()}, but the cache was written by weights of "
                               f"fingerprint {meta['weights']}: the backbone folder changed since molar embed (or "
                               f"the cache was of a LoRA adapter); embed the catalogue again with the MIRM to use")
        return EncodedItems(encoder.to(self.device).eval(), item_batch_size=32)

    @torch.no_grad()
    def embed_new_items(self, catalog: ItemCatalog, batch_size: int = 32) -> torch.Tensor:
        """Cold start: ``[K, D]`` scoring rows of the ``K`` items of ``catalog`` (ids ``1..K``), embedded by the
        trained MIRM (:meth:`item_encoder`) as the catalogue was, then adapted and normalised as evaluation scores
        the catalogue. Only content scoring ranks by the MIRM alone (the ID model has no row for a new item)."""
        task = self.task
        if getattr(task, "scoring", "content") != "content":
            raise ServingError(f"this MolarModule scores items with scoring: {task.scoring}, which needs each item's "
                               f"ID-model embedding, and new items have none; only a model trained with scoring: "
                               f"content ranks them")
        items = self.item_encoder()
        rows = None
        for batch in item_loader(catalog, items.encoder.prompts, batch_size=batch_size, shard=False):
            batch = task.transfer_batch_to_device(batch, self.device, 0)
            with self.trainer.precision_plugin.forward_context():
                embedded = task.item_adapter(items.encode(batch).float())
            # Content scoring is the cosine (MolarModule.item_tables normalises the catalogue the same way).
            embedded = torch.nn.functional.normalize(embedded.float(), dim=-1).cpu()
            rows = rows if rows is not None else torch.zeros(len(catalog), embedded.shape[-1])
            rows[batch.item_ids.cpu() - 1] = embedded
        return rows
