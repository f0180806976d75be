"""``MIRMAlignmentModule``: stage 1 of Molar (arXiv 2412.18176), generative fine-tuning of the multimodal item
model on the IT / SA / UB mixtures before it is used as an item encoder.

The objective is next-token cross entropy on the answer tokens only (the paper leaves loss, steps and rate
open; its code has no stage 1). The LM head is applied to the answer positions alone, so a 150k-token
vocabulary never produces a ``[B, L, V]`` logits tensor. Checkpoints keep only the weights that train (LoRA
adapters and the item token, or everything under full fine-tuning), and at the end of training the encoder
is written with ``MultimodalItemEncoder.save_pretrained`` in the form its constructor loads back.
``predict`` embeds item batches, which is what ``molar embed`` runs.
"""

from typing import Any, Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from molar_lightning.batch import IGNORE_INDEX, AlignmentBatch, ItemBatch
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.optim import trainable_weights_optimizer
from molar_lightning.tasks.hyperparameters import record_hyperparameters
from molar_lightning.tasks.sharded_task import ShardableTask


class MIRMAlignmentModule(ShardableTask):
    """Answer-token cross entropy of the item model on alignment mixtures; item embeddings in ``predict``.

    Args:
        encoder: the item model to align, with ``finetuning: lora`` or ``full``.
        optimizer: optimizer factory over the trainable weights; AdamW unless configured.
        lr_scheduler: optional scheduler factory, stepped every optimizer step.
        export_dir: where the aligned encoder is written at the end of training; null means
            ``<run dir>/mirm_encoder``. Load it back with ``adapter_path:`` (LoRA) or ``backbone:`` (full).
        train_item_token: put the encoder's ``[Cur_Item]`` token after each item in every prompt (after its
            image and text, where the encoder reads the item embedding) and train its embedding; off leaves
            it out of the prompts and frozen at its initial value (the mean word embedding).
    """

    def __init__(
        self,
        encoder: MultimodalItemEncoder,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        export_dir: Optional[str] = None,
        train_item_token: bool = True,
    ) -> None:
        super().__init__()
        record_hyperparameters(self)
        self.encoder = encoder
        self.train_item_token = train_item_token and encoder.item_token_id is not None
        if encoder.item_token_id is not None and not self.train_item_token:
            encoder.item_token_embedding.requires_grad_(False)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.export_dir = export_dir
        self.strict_loading = False  # checkpoints hold the trained weights only

    def setup(self, stage: str) -> None:
        # Only training needs the head; `molar embed` (predict) also serves encoders such as BERT or MiniLM.
        if stage == "fit" and self.encoder.backbone.model.get_output_embeddings() is None:
            raise ValueError(f"{self.encoder.backbone_name} has no language-model head; generative alignment "
                             f"needs an image-text-to-text or decoder backbone")
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "connect"):
            datamodule.connect(self.encoder.processor, self.encoder.item_token_id if self.train_item_token else None)

    def answer_loss(self, batch: AlignmentBatch) -> torch.Tensor:
        """Mean cross entropy of the answer tokens given everything before them."""
        targets = batch.labels[:, 1:]
        scored = targets != IGNORE_INDEX
        before_answer = torch.cat([scored, scored.new_zeros(len(scored), 1)], dim=1)  # position t predicts t + 1
        logits = self.encoder.answer_logits(batch.input_ids, batch.attention_mask, before_answer,
                                            batch.mm_token_type_ids, batch.image_inputs)
        return F.cross_entropy(logits.float(), targets[scored])

    def training_step(self, batch: AlignmentBatch, batch_idx: int) -> torch.Tensor:
        loss = self.answer_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.input_ids))
        return loss

    def validation_step(self, batch: AlignmentBatch, batch_idx: int) -> None:
        self.log("val/loss", self.answer_loss(batch), sync_dist=True, batch_size=len(batch.input_ids))

    def test_step(self, batch: AlignmentBatch, batch_idx: int) -> None:
        self.log("test/loss", self.answer_loss(batch), sync_dist=True, batch_size=len(batch.input_ids))

    def predict_step(self, batch: ItemBatch, batch_idx: int) -> torch.Tensor:
        """Item embeddings ``[B, H]`` of an item batch (from ``molar_lightning.data.item_inputs``)."""
        return self.encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                            batch.image_inputs)

    def sharded_parts(self) -> dict[str, tuple[str, ...]]:
        return {"encoder": ("answer_logits",)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.is_sharded:  # shard-wise checkpoints load every weight back
            return
        trained = {name for name, parameter in self.named_parameters() if parameter.requires_grad}
        checkpoint["state_dict"] = {name: value for name, value in checkpoint["state_dict"].items() if name in trained}

    def on_train_end(self) -> None:
        self.export_item_encoder(self.encoder, self.export_dir)

    def configure_optimizers(self):
        return trainable_weights_optimizer(self, self.optimizer, self.lr_scheduler)
