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

The task wires parts. The item side (:mod:`molar_lightning.tasks.item_side`) is a frozen MIRM's on-disk cache
(``molar embed``), loaded once (``CachedItems``), or a MIRM trained end to end, which embeds the items of each
batch (plus random negatives) every step and the whole catalog at evaluation (``EncodedItems``); either way
the next-item loss names items by catalog id, so that under DDP and FSDP the negatives every process draws
from its own step table, and the masks on them, mean the same items everywhere. Post-alignment is its own
part (:mod:`molar_lightning.tasks.post_alignment`).
Validation and test return ``{"user_emb", "item_emb"}`` for
:class:`~molar_lightning.callbacks.evaluation.RankingEvaluationCallback`, scored by the content path (cosine),
the ID model alone, or a fused score.
"""

from pathlib import Path
from typing import Callable, Iterable, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from molar_lightning.batch import EvalBatch, ItemBatch, TrainBatch
from molar_lightning.losses import ContentInfoNCELoss, ContentNextItemLoss, FullSoftmaxCrossEntropy, NextItemLoss
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.models.protocol import ContentSequenceEncoder, IDSequenceEncoder
from molar_lightning.models.transformer import rename_legacy_keys
from molar_lightning.sharding import holds_language_model
from molar_lightning.tasks.hyperparameters import record_hyperparameters
from molar_lightning.tasks.item_side import CachedItems, EncodedItems
from molar_lightning.tasks.post_alignment import PostAlignment, adapted_width
from molar_lightning.tasks.ranking_task import ItemTables, RankingTask
from molar_lightning.tasks.sequential import add_auxiliary_loss

# Checkpoints written before the item side and post-alignment were parts of their own.
LEGACY_KEYS = {"item_encoder.": "items.encoder.", "align_projection.": "post_alignment.projection."}


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
        export_dir: end-to-end mode only: where the fine-tuned MIRM is written at the end of training (null:
            ``<run dir>/mirm_encoder``), as stage 1 writes it, for ``molar embed`` to serve its item embeddings
            (``adapter_path:`` after LoRA, ``backbone:`` after full fine-tuning).
        optimizer: optimizer factory over every trainable weight; AdamW unless configured.
        lr_scheduler: optional scheduler factory, stepped every optimizer step (e.g.
            ``molar_lightning.optim.WarmupCosineSchedule``, the paper's warm-up + cosine).
        lr_scales: a factor of the optimizer's learning rate per part, by attribute path: e.g.
            ``{items.encoder: 0.1}`` trains an end-to-end MIRM at a tenth of DUEG's rate (a fully fine-tuned
            item LLM can collapse the item embeddings at a rate DUEG needs). Null: one rate for all.
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
        export_dir: Optional[str] = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        lr_scales: Optional[dict[str, float]] = None,
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
        self.items = EncodedItems(item_encoder, item_batch_size) if item_encoder is not None else CachedItems(
            item_embeddings)
        self.item_adapter = item_adapter if item_adapter is not None else nn.Identity()
        self.loss = loss if loss is not None else ContentInfoNCELoss()
        self.align_weight = align_weight
        self.id_tokens = id_tokens
        self.train_encoder = train_encoder
        self.scoring = scoring
        self.fusion_weight = fusion_weight
        self.negatives_per_step = negatives_per_step
        self.export_dir = export_dir
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.lr_scales = lr_scales
        width = adapted_width(self.item_adapter, self.items.width)
        if width != user_encoder.input_size:
            raise ValueError(f"item embeddings are {width}-dimensional (after item_adapter) but the user_encoder's "
                             f"input_size is {user_encoder.input_size}; set user_encoder.init_args.input_size: {width}")
        self.post_alignment: Optional[PostAlignment] = None
        if encoder is not None:
            if encoder_checkpoint is not None:
                load_encoder_weights(encoder, encoder_checkpoint)
            encoder.requires_grad_(train_encoder)
            self.encoder_loss = encoder_loss if encoder_loss is not None else FullSoftmaxCrossEntropy()
            id_width = encoder.item_embeddings().shape[-1]
            if align_weight != 0:
                self.post_alignment = PostAlignment(align_projection, id_width, width, align_temperature,
                                                    align_across_ranks)
            if id_tokens:
                self.id_token_projection = nn.Linear(id_width, width)
        rename_legacy_keys(self, LEGACY_KEYS)

    # ----- item embeddings ----------------------------------------------------------------------------------
    @property
    def item_encoder(self) -> Optional[MultimodalItemEncoder]:
        """The MIRM trained end to end; None in the cached mode."""
        return self.items.encoder if isinstance(self.items, EncodedItems) else None

    def connect_item_inputs(self, item_inputs: Callable[[Sequence[int]], ItemBatch], num_items: int,
                            catalog_batches: Optional[Callable[[int, tuple[int, ...]], Iterable[ItemBatch]]] = None
                            ) -> None:
        """End-to-end mode: ``item_inputs(item_ids)`` builds the MIRM inputs of those items, in that order,
        for a catalog of ``num_items`` items; ``catalog_batches(batch_size, item_ids)`` yields the inputs of
        those items in batches of any order (e.g. from DataLoader workers), by default through ``item_inputs``."""
        self.items.connect(item_inputs, num_items, catalog_batches)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if hasattr(datamodule, "num_items") and hasattr(datamodule, "dataset"):
            problem = self.items.data_problem(datamodule.num_items, datamodule.dataset.path.name)
            if problem:
                raise ValueError(problem)
        if self.item_encoder is not None and self.items.item_inputs is None:
            raise ValueError("end-to-end mode (item_encoder set) needs item contents: add "
                             "molar_lightning.callbacks.item_inputs.ItemInputsCallback to trainer.callbacks (or call "
                             "MolarModule.connect_item_inputs), or use the frozen mode with item_embeddings")

    def to_device(self, batch: ItemBatch) -> ItemBatch:
        return self.transfer_batch_to_device(batch, self.device, 0)

    def item_table(self) -> torch.Tensor:
        """``[N + 1, D]``: every item's embedding after the adapter (end to end: embedded at evaluation start,
        dropped at its end)."""
        return self.item_adapter(self.items.catalog(self.to_device))

    # The catalog is embedded first (end to end), then RankingTask builds the epoch's item tables from it.
    def on_validation_epoch_start(self) -> None:
        self.items.embed_catalog(self.to_device)
        super().on_validation_epoch_start()

    def on_test_epoch_start(self) -> None:
        self.items.embed_catalog(self.to_device)
        super().on_test_epoch_start()

    def on_predict_epoch_start(self) -> None:
        self.items.embed_catalog(self.to_device)
        super().on_predict_epoch_start()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.items.drop_catalog()

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.items.drop_catalog()

    def on_predict_epoch_end(self) -> None:
        super().on_predict_epoch_end()
        self.items.drop_catalog()

    def on_train_end(self) -> None:
        if self.item_encoder is not None:
            self.export_item_encoder(self.item_encoder, self.export_dir)

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
        table, table_ids, table_seq = self.items.training_items(batch, self.to_device)
        table = self.item_adapter(table)
        mask = batch.mask
        states = self.user_states(table, table_seq, mask, batch.item_seq)
        has_target = batch.target_seq != 0
        user_items = torch.cat([batch.item_seq, batch.target_seq], dim=1)
        owners = has_target.nonzero()[:, 0]
        loss = self.loss(states[has_target], batch.target_seq[has_target], table, table_ids, user_items, owners)
        self.log("train/next_item_loss", loss)
        if self.encoder is not None and (self.post_alignment is not None or self.train_encoder):
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
            if self.post_alignment is not None:
                align = self.post_alignment(states[:, -1], id_users, batch.user_ids)
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
        parts = {"items.encoder.": self.item_encoder, "user_encoder.": self.user_encoder}
        rebuilt = tuple(prefix for prefix, part in parts.items() if getattr(part, "loaded_from_pretrained", False))
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
    def item_tables(self) -> ItemTables:
        """``"item_emb"``, the scoring table: the ID model's (``scoring: id``), the normalised content table, or
        both scaled and concatenated (``fused``); and ``"content"``, the adapted table the user model reads."""
        if self.scoring == "id":
            return {"item_emb": self.encoder.item_embeddings()}
        table = self.item_table()
        items = F.normalize(table, dim=-1)
        if self.scoring == "content":
            return {"content": table, "item_emb": items}
        content_scale, id_scale = self._fusion_scales()
        id_items = F.normalize(self.encoder.item_embeddings(), dim=-1)
        return {"content": table, "item_emb": torch.cat([content_scale * items, id_scale * id_items], dim=-1)}

    def user_embeddings(self, batch: EvalBatch, tables: ItemTables) -> torch.Tensor:
        if self.scoring == "id":
            return self.encoder.encode_sequence(batch.item_seq, batch.mask, batch.user_ids)
        content = self.user_states(tables["content"], batch.item_seq, batch.mask, batch.item_seq, last_only=True)
        user = F.normalize(content, dim=-1)
        if self.scoring == "content":
            return user
        content_scale, id_scale = self._fusion_scales()
        id_user = F.normalize(self.encoder.encode_sequence(batch.item_seq, batch.mask, batch.user_ids), dim=-1)
        return torch.cat([content_scale * user, id_scale * id_user], dim=-1)

    def _fusion_scales(self) -> tuple[float, float]:
        """Concatenated with these scales, a dot product is ``(1 - w) * content cosine + w * ID cosine``."""
        return (1 - self.fusion_weight) ** 0.5, self.fusion_weight ** 0.5
