"""``MolarModule``: stage 2 of Molar (arXiv 2412.18176): DUEG over MIRM item embeddings, post-aligned with an
ID model.

The content path is a user encoder (DUEG, or a SASRec/GRU4Rec-style one) over item embeddings, trained on
next-item prediction at every position (InfoNCE by default, the paper's sampled BCE as an option). The
collaborative path is an ID model (any :class:`~molar_lightning.models.protocol.IDSequenceEncoder`, SASRec by
default) loaded from a :class:`~molar_lightning.tasks.sequential.SequentialRecModule` checkpoint and frozen,
or trained jointly. Post-alignment adds ``align_weight`` times a symmetric InfoNCE between each user's
content and ID embeddings (:class:`~molar_lightning.losses.UserAlignmentLoss`, Eq. 4), the ID embedding first
mapped to the content width by ``align_projection`` where the widths differ; ``align_weight: 0`` is the
paper's "w/o CL" and never runs the ID model in training.

Item embeddings come either from a frozen MIRM's on-disk cache (``molar embed``), loaded once into a buffer,
or from a MIRM trained end to end, which embeds the items of each batch (plus random negatives) every step.
The next-item loss names items by catalog id in both modes, so that under DDP the negatives every process
draws from its own step table, and the masks on them, mean the same items everywhere.
Validation and test return ``{"user_emb", "item_emb"}`` for
:class:`~molar_lightning.callbacks.evaluation.RankingEvaluationCallback`, scored by the content path (cosine),
the ID model alone, or a fused score.
"""

import json
from pathlib import Path
from typing import Callable, Iterable, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from safetensors.torch import load_file
from torch import nn

from molar_lightning.batch import EvalBatch, ItemBatch, TrainBatch
from molar_lightning.losses import (ContentInfoNCELoss, ContentNextItemLoss, FullSoftmaxCrossEntropy, NextItemLoss,
                                    UserAlignmentLoss)
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.models.protocol import ContentSequenceEncoder, IDSequenceEncoder
from molar_lightning.sharding import holds_language_model
from molar_lightning.tasks.hyperparameters import record_hyperparameters
from molar_lightning.tasks.ranking_task import RankingTask
from molar_lightning.tasks.sequential import add_auxiliary_loss

CACHE_FILE = "embeddings.safetensors"


def load_item_table(path: Union[str, list[str]]) -> torch.Tensor:
    """``[N + 1, D]`` float32 from a finished cache folder (``molar embed`` prints it) or its safetensors file;
    a list of them is concatenated feature-wise (e.g. text and image embeddings)."""
    if not isinstance(path, str):
        return torch.cat([load_item_table(part) for part in path], dim=-1)
    file = Path(path) / CACHE_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"item_embeddings: {file} does not exist; run `molar embed --config <MIRM yaml>` "
                                f"and pass the folder it prints")
    return load_file(str(file))["embeddings"].float()


def cache_problem(path: Union[str, list[str]], table: torch.Tensor, num_items: int, dataset: str) -> Optional[str]:
    """Why the item table read from ``path`` does not belong to a data set of ``num_items`` items prepared as
    ``dataset`` (its folder name, a digest of the raw files and parameters), or None; ``molar embed`` records
    the data set beside the embeddings (``source.json``; caches written before it are checked by size only)."""
    if len(table) != num_items + 1:
        return (f"item_embeddings {path} has {len(table) - 1} items but the data set has {num_items}: it was "
                f"embedded from other data; run `molar embed` with this data configuration and pass the folder "
                f"it prints")
    for part in [path] if isinstance(path, str) else path:
        source = (Path(part) if Path(part).is_dir() else Path(part).parent) / "source.json"
        recorded = json.loads(source.read_text())["dataset"] if source.is_file() else dataset
        if recorded != dataset:
            return (f"item_embeddings {part} was embedded from the prepared data set {recorded}, not {dataset} "
                    f"(same item count, other data or preparation settings); run `molar embed` with this data "
                    f"configuration and pass the folder it prints")
    return None


def load_encoder_weights(encoder: nn.Module, checkpoint: str) -> None:
    """Load the ``encoder.*`` weights of a ``SequentialRecModule`` checkpoint into ``encoder``."""
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"encoder_checkpoint {checkpoint} does not exist; train the ID model first "
                                f"(molar fit --config configs/<data>/sasrec.yaml) and pass its best-*.ckpt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    weights = {key.removeprefix("encoder."): value for key, value in state.items() if key.startswith("encoder.")}
    if not weights:
        raise ValueError(f"encoder_checkpoint {checkpoint} has no encoder.* weights; pass a checkpoint written by "
                         f"`molar fit` with SequentialRecModule (runs/.../checkpoints/best-*.ckpt)")
    encoder.load_state_dict(weights)


def adapted_width(adapter: nn.Module, width: int) -> int:
    """Width of ``adapter``'s output for ``width``-wide inputs, probed in eval mode without gradients so that
    adapters with batch statistics (``BatchNorm1d``) neither fail on the probe nor learn from it."""
    was_training = adapter.training
    adapter.eval()
    with torch.no_grad():
        out = adapter(torch.zeros(2, width)).shape[-1]
    adapter.train(was_training)
    return out


def checked_align_projection(projection: Optional[nn.Module], id_width: int, width: int) -> nn.Module:
    """``projection`` (identity when null) once it maps ``id_width`` to ``width``; refused otherwise, with the
    setting that fixes it, since a map inserted silently would be a trainable part nobody configured."""
    if projection is None and id_width == width:
        return nn.Identity()
    if projection is None:
        raise ValueError(
            f"post-alignment compares the ID model's {id_width}-wide user embedding with the {width}-wide content "
            f"one: set model.init_args.align_projection, e.g. {{class_path: torch.nn.Linear, init_args: "
            f"{{in_features: {id_width}, out_features: {width}}}}} (or align_weight: 0). Checkpoints written before "
            f"this argument hold that Linear under align_projection.*: load them with the same setting, or "
            f"MolarModule.load_from_checkpoint(path, align_projection=torch.nn.Linear({id_width}, {width}))")
    out = adapted_width(projection, id_width)
    if out != width:
        raise ValueError(f"align_projection maps the ID model's {id_width}-wide user embedding to {out} dimensions, "
                         f"but the content side is {width}-wide; set its output width to {width}")
    return projection


class MolarModule(RankingTask):
    """Content user model + item embeddings, post-aligned with an ID model (Molar; HLLM/CoLLM/SASRec+BERT rows).

    Args:
        user_encoder: the content user model over item embeddings (``molar_lightning.models.dueg``:
            ``LLMUserEncoder`` is the paper's DUEG); its ``input_size`` must be the item embedding width (after
            ``item_adapter``).
        encoder: the ID model for post-alignment (SASRec, FPMC, GRU4Rec, DuoRec); null for no ID model
            (HLLM- and SASRec+BERT-style rows), which needs ``align_weight: 0`` and ``scoring: content``.
        item_embeddings: a finished item embedding cache folder (or its ``embeddings.safetensors``) of a frozen
            MIRM: the fast mode; a list of them is concatenated (text + image features). Exactly one of this and
            ``item_encoder``.
        item_encoder: a MIRM trained end to end (``finetuning: lora``), embedding the items of every batch.
            :class:`~molar_lightning.callbacks.item_inputs.ItemInputsCallback` wires its inputs at setup: built
            in the DataLoader's workers for training (``TrainBatch.step_items``), and through
            :meth:`connect_item_inputs` for embedding the whole catalog at validation and test. Checkpoints keep
            only its trainable weights; the frozen rest is loaded again from its ``backbone`` (``adapter_path``).
        item_adapter: a trainable map applied to every item embedding before both the user model and scoring
            (e.g. ``torch.nn.Linear``); null uses the embeddings as they are.
        loss: next-item loss of the content path: ``ContentInfoNCELoss`` (default, the authors' code) or
            ``SampledBCELoss`` (the paper's text), from ``molar_lightning.losses``.
        id_tokens: CoLLM-style input: after each item's content embedding the user model also reads that item's
            ID-model embedding (through a trainable linear map), so it sees ``2 L`` tokens; needs ``encoder``.
        encoder_checkpoint: a ``SequentialRecModule`` checkpoint whose ``encoder.*`` weights the ID model loads.
        train_encoder: train the ID model jointly with its own next-item loss (and its ``auxiliary_loss``, e.g.
            DuoRec's regulariser) added; by default it is frozen.
        encoder_loss: the ID model's next-item loss when ``train_encoder``; null means full-softmax CE.
        align_weight: alpha, the weight of the post-alignment loss (the sum of its two directions, as in Eq. 4);
            0 is "w/o CL".
        align_temperature: tau of the post-alignment InfoNCE.
        align_projection: a trainable map from the ID model's user embedding to the content width (e.g.
            ``torch.nn.Linear`` with ``in_features`` the ID width, ``out_features`` the item embedding width),
            applied before post-alignment; required when the widths differ (SASRec's 64 against Qwen2-VL-2B's
            1536), null uses the ID embedding as it is. Unused, and not kept, with ``align_weight: 0``.
        align_across_ranks: under DDP/FSDP, the post-alignment negatives are every process's users, as a single
            process over the global batch would see them; false keeps each process's batch alone.
        scoring: how validation/test rank items: ``content`` (cosine of the content user and item embeddings),
            ``id`` (the ID model alone) or ``fused`` (see ``fusion_weight``).
        fusion_weight: the fused score is ``(1 - w) * content cosine + w * ID cosine``.
        negatives_per_step: end-to-end mode only: random items embedded each step beside the batch's own, which
            with them form the item table the loss draws negatives from (drawn by the training collate).
        item_batch_size: end-to-end mode only: items per MIRM forward when embedding the whole catalog for
            validation and test.
        optimizer: optimizer factory over every trainable weight; AdamW unless configured.
        lr_scheduler: optional scheduler factory, stepped every optimizer step (e.g.
            ``molar_lightning.optim.WarmupCosineSchedule``, the paper's warm-up + cosine).
        top_k: how many items ``predict`` returns per user (written by ``molar predict`` in raw ids).
    """

    def __init__(
        self,
        user_encoder: ContentSequenceEncoder,
        encoder: Optional[IDSequenceEncoder] = None,
        item_embeddings: Optional[Union[str, list[str]]] = None,
        item_encoder: Optional[MultimodalItemEncoder] = None,
        item_adapter: Optional[nn.Module] = None,
        loss: Optional[ContentNextItemLoss] = None,
        id_tokens: bool = False,
        encoder_checkpoint: Optional[str] = None,
        train_encoder: bool = False,
        encoder_loss: Optional[NextItemLoss] = None,
        align_weight: float = 0.1,
        align_temperature: float = 0.07,
        align_projection: Optional[nn.Module] = None,
        align_across_ranks: bool = True,
        scoring: Literal["content", "id", "fused"] = "content",
        fusion_weight: float = 0.5,
        negatives_per_step: int = 256,
        item_batch_size: int = 64,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        top_k: int = 50,
    ) -> None:
        super().__init__()
        # top_k is a predict-time choice that `molar predict` must be able to change, as in SequentialRecModule.
        record_hyperparameters(self, ignore=["top_k"])
        self.top_k = top_k
        if (item_embeddings is None) == (item_encoder is None):
            raise ValueError("set exactly one of item_embeddings (a frozen MIRM's cache folder) and item_encoder "
                             "(a MIRM trained end to end)")
        if scoring not in ("content", "id", "fused"):
            raise ValueError(f"scoring must be content, id or fused, got {scoring!r}")
        if encoder is None and (align_weight != 0 or scoring != "content" or train_encoder or id_tokens):
            raise ValueError(f"without an ID model (encoder: null) align_weight must be 0 (got {align_weight}), "
                             f"scoring content (got {scoring!r}), train_encoder and id_tokens false; or configure "
                             f"an encoder")
        self.user_encoder = user_encoder
        self.encoder = encoder
        self.item_encoder = item_encoder
        self.item_adapter = item_adapter if item_adapter is not None else nn.Identity()
        self.loss = loss if loss is not None else ContentInfoNCELoss()
        self.align_loss = UserAlignmentLoss(align_temperature, align_across_ranks)
        self.align_weight = align_weight
        self.id_tokens = id_tokens
        self.train_encoder = train_encoder
        self.scoring = scoring
        self.fusion_weight = fusion_weight
        self.negatives_per_step = negatives_per_step
        self.item_batch_size = item_batch_size
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self._item_inputs: Optional[Callable[[Sequence[int]], ItemBatch]] = None
        self._catalog_batches: Optional[Callable[[int, tuple[int, ...]], Iterable[ItemBatch]]] = None
        self._num_items = 0
        self._catalog_table: Optional[torch.Tensor] = None  # end-to-end mode: all items, for evaluation
        if item_embeddings is not None:
            self.register_buffer("cached_items", load_item_table(item_embeddings), persistent=False)
            width = adapted_width(self.item_adapter, self.cached_items.shape[-1])
        else:
            width = item_encoder.hidden_size
            if item_adapter is not None:
                width = adapted_width(item_adapter, width)
        if width != user_encoder.input_size:
            raise ValueError(f"item embeddings are {width}-dimensional (after item_adapter) but the user_encoder's "
                             f"input_size is {user_encoder.input_size}; set user_encoder.init_args.input_size: {width}")
        self.align_projection: nn.Module = nn.Identity()
        if encoder is not None:
            if encoder_checkpoint is not None:
                load_encoder_weights(encoder, encoder_checkpoint)
            encoder.requires_grad_(train_encoder)
            self.encoder_loss = encoder_loss if encoder_loss is not None else FullSoftmaxCrossEntropy()
            id_width = encoder.item_embeddings().shape[-1]
            if align_weight != 0:
                self.align_projection = checked_align_projection(align_projection, id_width, width)
            if id_tokens:
                self.id_token_projection = nn.Linear(id_width, width)

    # ----- item embeddings ----------------------------------------------------------------------------------
    def connect_item_inputs(self, item_inputs: Callable[[Sequence[int]], ItemBatch], num_items: int,
                            catalog_batches: Optional[Callable[[int, tuple[int, ...]], Iterable[ItemBatch]]] = None
                            ) -> None:
        """End-to-end mode: ``item_inputs(item_ids)`` builds the MIRM inputs of those items, in that order,
        for a catalog of ``num_items`` items; ``catalog_batches(batch_size, item_ids)`` yields the inputs of
        those items in batches of any order (e.g. from DataLoader workers), by default through ``item_inputs``."""
        self._item_inputs = item_inputs
        self._num_items = num_items
        self._catalog_batches = catalog_batches or (lambda batch_size, item_ids: (
            item_inputs(chunk.tolist()) for chunk in torch.tensor(item_ids).split(batch_size)))

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.item_encoder is None and hasattr(datamodule, "num_items") and hasattr(datamodule, "dataset"):
            problem = cache_problem(self.hparams.item_embeddings, self.cached_items, datamodule.num_items,
                                    datamodule.dataset.path.name)
            if problem:
                raise ValueError(problem)
        if self.item_encoder is not None and self._item_inputs is None:
            raise ValueError("end-to-end mode (item_encoder set) needs item contents: add "
                             "molar_lightning.callbacks.item_inputs.ItemInputsCallback to trainer.callbacks (or call "
                             "MolarModule.connect_item_inputs), or use the frozen mode with item_embeddings")

    def embed_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """End-to-end mode: MIRM embeddings ``[K, H]`` of ``item_ids [K]``, their inputs built in this process."""
        batch = self.transfer_batch_to_device(self._item_inputs(item_ids.tolist()), self.device, 0)
        if not torch.equal(batch.item_ids, item_ids):
            raise ValueError("item_inputs must return the items in the order asked for")
        return self.encode_items(batch)

    def encode_items(self, batch: ItemBatch) -> torch.Tensor:
        """End-to-end mode: the MIRM forward over an item batch already on the device ``[K, H]``."""
        return self.item_encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                                 batch.image_inputs)

    def item_table(self) -> torch.Tensor:
        """``[N + 1, D]``: every item's embedding after the adapter (cached, or the whole catalog end to end)."""
        if self.item_encoder is None:
            return self.item_adapter(self.cached_items)
        if self._catalog_table is None:
            raise RuntimeError("the end-to-end item table is built at the start of validation and test only")
        return self.item_adapter(self._catalog_table)

    def _train_items(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(item table, catalog id of each of its rows, item_seq as rows of that table) for a training step.

        Cached: the whole table, and the batch as it is. End to end: the step's items that the DataLoader's
        workers prepared (``batch.step_items``: the batch's own plus ``negatives_per_step`` random ones, in
        ascending id), embedded now, as rows ``1..K`` of a local table that the user model reads through
        remapped ids; the loss keeps the catalog ids.
        """
        if self.item_encoder is None:
            table = self.item_adapter(self.cached_items)
            return table, torch.arange(len(table), device=table.device), batch.item_seq
        if batch.step_items is None:
            raise ValueError("end-to-end training needs each batch's item inputs (TrainBatch.step_items), which "
                             "the DataModule's train_collate builds once ItemInputsCallback has set it up; add "
                             "molar_lightning.callbacks.item_inputs.ItemInputsCallback to trainer.callbacks")
        ids = batch.step_items.item_ids
        local = torch.zeros(self._num_items + 1, dtype=torch.long, device=ids.device)
        local[ids] = torch.arange(1, len(ids) + 1, device=ids.device)
        embedded = self.encode_items(batch.step_items)
        table = torch.cat([embedded.new_zeros(1, embedded.shape[-1]), embedded])
        return self.item_adapter(table), torch.cat([ids.new_zeros(1), ids]), local[batch.item_seq]

    def _embed_catalog(self) -> None:
        """End-to-end mode: every item's MIRM embedding, for ranking at validation and test.

        Each process embeds every ``world``-th item and the parts are all-gathered, so the table equals one
        process's. The parts are padded to one length (repeating an item), since under FSDP every process
        must run the MIRM as many times as the others."""
        if self.item_encoder is None:
            return
        rank, world = self.global_rank, self.trainer.world_size
        mine = list(range(1 + rank, self._num_items + 1, world))
        mine += mine[-1:] * (-(-self._num_items // world) - len(mine))
        ids, rows = [], []
        with torch.no_grad():
            for batch in self._catalog_batches(self.item_batch_size, tuple(mine)):
                batch = self.transfer_batch_to_device(batch, self.device, 0)
                ids.append(batch.item_ids)
                rows.append(self.encode_items(batch).float())
        ids, rows = torch.cat(ids), torch.cat(rows)
        if world > 1:
            ids, rows = self.all_gather(ids).flatten(0, 1), self.all_gather(rows).flatten(0, 1)
        table = rows.new_zeros(self._num_items + 1, rows.shape[-1])
        table[ids] = rows
        self._catalog_table = table

    def on_validation_epoch_start(self) -> None:
        self._embed_catalog()

    def on_test_epoch_start(self) -> None:
        self._embed_catalog()

    def on_predict_epoch_start(self) -> None:
        self._embed_catalog()

    def user_states(self, table: torch.Tensor, item_seq: torch.Tensor, mask: torch.Tensor,
                    id_seq: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Content user states ``[B, L, D]`` (``[B, D]`` with ``last_only``) from ``table[item_seq]``; with
        ``id_tokens`` the ID-model embedding of ``id_seq`` (catalog ids) follows each item's content embedding."""
        inputs = table[item_seq]
        if self.id_tokens:
            id_embs = self.id_token_projection(self.encoder.item_embeddings()[id_seq])
            inputs = torch.stack([inputs, id_embs], dim=2).flatten(1, 2)
            mask = mask.repeat_interleave(2, dim=1)
            if not last_only:  # the state after an item's ID token has seen all of that item
                return self.user_encoder.sequence_states(inputs, mask)[:, 1::2]
        if last_only:
            return self.user_encoder.encode_sequence(inputs, mask)
        return self.user_encoder.sequence_states(inputs, mask)

    # ----- training -----------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "MolarModule":
        super().train(mode)
        if self.encoder is not None and not self.train_encoder:
            self.encoder.eval()  # a frozen ID model gives the same embedding every time (no dropout)
        return self

    def training_step(self, batch: TrainBatch, batch_idx: int) -> torch.Tensor:
        table, table_ids, table_seq = self._train_items(batch)
        mask = batch.mask
        states = self.user_states(table, table_seq, mask, batch.item_seq)
        has_target = batch.target_seq != 0
        user_items = torch.cat([batch.item_seq, batch.target_seq], dim=1)
        owners = has_target.nonzero()[:, 0]
        loss = self.loss(states[has_target], batch.target_seq[has_target], table, table_ids, user_items, owners)
        self.log("train/next_item_loss", loss)
        if self.encoder is not None and (self.align_weight != 0 or self.train_encoder):
            if self.train_encoder:
                id_states = self.encoder.sequence_states(batch.item_seq, mask, batch.user_ids)
                id_loss = self.encoder_loss(id_states[has_target], batch.target_seq[has_target],
                                            self.encoder.item_embeddings())
                self.log("train/encoder_loss", id_loss)
                loss = add_auxiliary_loss(self, self.encoder, batch, id_states, loss + id_loss)
                id_users = id_states[:, -1]
            else:
                with torch.no_grad():
                    id_users = self.encoder.encode_sequence(batch.item_seq, mask, batch.user_ids)
            if self.align_weight != 0:
                align = self.align_loss(states[:, -1], self.align_projection(id_users), batch.user_ids)
                self.log("train/align_loss", align)
                loss = loss + self.align_weight * align
        self.log("train/loss", loss, prog_bar=True)
        return loss

    # ----- sharding and checkpoints ------------------------------------------------------------------------
    def sharded_parts(self) -> dict[str, tuple[str, ...]]:
        """The MIRM (called through ``forward``) and an LLM user encoder (DUEG), under FSDP."""
        parts = {"item_encoder": (), "user_encoder": ("sequence_states", "encode_sequence")}
        return {name: methods for name, methods in parts.items() if holds_language_model(getattr(self, name))}

    def _rebuilt_weights(self) -> list[str]:
        """State-dict keys that the constructor loads again from pretrained backbone paths: everything of the
        end-to-end MIRM and of an LLM user encoder (DUEG) but their trainable parameters (LoRA adapters, the
        ``[Cur_Item]`` vector; for DUEG at least its unused word embeddings). None for random-weight backbones
        (``backbone_config``), which nothing could restore."""
        rebuilt = tuple(f"{name}." for name in ("item_encoder", "user_encoder")
                        if getattr(getattr(self, name), "loaded_from_pretrained", False))
        trainable = {name for name, parameter in self.named_parameters(remove_duplicate=False)
                     if parameter.requires_grad}
        return [key for key in self.state_dict() if key.startswith(rebuilt) and key not in trainable]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints keep the content backbones' trainable weights only: a frozen 2B MIRM is gigabytes, and
        DUEG's word embeddings (never used) 0.9 GB, that the backbone paths already hold. Under sharding
        every weight is kept: a shard-wise checkpoint loads whole."""
        if self.is_sharded:
            return
        for key in self._rebuilt_weights():
            checkpoint["state_dict"].pop(key, None)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Put back the frozen weights a checkpoint left out, as this module loaded them from the backbone
        paths, so that resuming and ``load_from_checkpoint`` load strictly."""
        if self.is_sharded:
            return
        state, own = checkpoint["state_dict"], self.state_dict()
        for key in self._rebuilt_weights():
            state.setdefault(key, own[key])

    # ----- evaluation ---------------------------------------------------------------------------------------
    def _rank_inputs(self, batch: EvalBatch) -> dict[str, torch.Tensor]:
        if self.scoring == "id":
            return {"user_emb": self.encoder.encode_sequence(batch.item_seq, batch.mask, batch.user_ids),
                    "item_emb": self.encoder.item_embeddings()}
        table = self.item_table()
        user = F.normalize(self.user_states(table, batch.item_seq, batch.mask, batch.item_seq, last_only=True), dim=-1)
        items = F.normalize(table, dim=-1)
        if self.scoring == "content":
            return {"user_emb": user, "item_emb": items}
        id_user = F.normalize(self.encoder.encode_sequence(batch.item_seq, batch.mask, batch.user_ids), dim=-1)
        id_items = F.normalize(self.encoder.item_embeddings(), dim=-1)
        content_scale, id_scale = (1 - self.fusion_weight) ** 0.5, self.fusion_weight ** 0.5
        # Concatenated, their dot product is (1 - w) * content cosine + w * ID cosine.
        return {"user_emb": torch.cat([content_scale * user, id_scale * id_user], dim=-1),
                "item_emb": torch.cat([content_scale * items, id_scale * id_items], dim=-1)}
