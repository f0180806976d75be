"""The batch types that flow from the DataModules into the tasks and callbacks.

Dataclasses rather than dicts, so a misspelled field is an error and not a silently missing key.
Lightning moves dataclass batches between devices field by field.
"""

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class TrainBatch:
    """Causal next-item training: every position of ``item_seq`` predicts the same position of ``target_seq``.

    Attributes:
        item_seq: ``[B, L]`` item ids, left-padded with 0.
        target_seq: ``[B, L]`` the item that follows each position; 0 where there is nothing to predict.
        user_ids: ``[B]`` user indices (0-based).
        positive_seq: ``[P, L']`` DuoRec's supervised views, left-padded: for each contrastive sample (each
            position with a target, row by row, or each window's last), a training prefix with the same target;
            present only when the DataModule is asked for it (``same_target_positives``).
        step_items: end-to-end Molar only: the item encoder's inputs for this step's items (the batch's own and
            random negatives, ascending ids), built in the DataLoader's workers.
    """

    item_seq: torch.Tensor
    target_seq: torch.Tensor
    user_ids: torch.Tensor
    positive_seq: Optional[torch.Tensor] = None
    step_items: Optional["ItemBatch"] = None

    @property
    def mask(self) -> torch.Tensor:
        """``[B, L]`` bool, True at real items."""
        return self.item_seq != 0


@dataclass
class EvalBatch:
    """One held-out item per user, ranked against all items.

    Attributes:
        item_seq: ``[B, L]`` the most recent history, left-padded with 0.
        target: ``[B]`` the held-out item.
        user_ids: ``[B]`` user indices (0-based).
        history: ``[B, H]`` every item the user interacted with before the target (not only the last ``L``),
            right-padded with 0; excluded from ranking when the evaluation asks for it.
    """

    item_seq: torch.Tensor
    target: torch.Tensor
    user_ids: torch.Tensor
    history: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``[B, L]`` bool, True at real items."""
        return self.item_seq != 0


PADDING_USER = -1  # user id of the rows that pad an evaluation shard to every process's length; never counted
IGNORE_INDEX = -100  # label of prompt and padding tokens, which the alignment loss skips


@dataclass
class ItemBatch:
    """Model inputs of a batch of items.

    Attributes:
        item_ids: ``[B]`` catalog item ids, in the order of the embeddings the encoder returns.
        input_ids: ``[B, L]`` padded, or ``[1, T]`` with the items packed one after the other.
        attention_mask: ``[B, L]`` 1 at real tokens; None when packed.
        lengths: ``[B]`` tokens per item.
        mm_token_type_ids: like ``input_ids``, 1 at image tokens; None for families without it.
        image_inputs: image processor tensors of every image in the batch, concatenated in item order.
    """

    item_ids: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: Optional[torch.Tensor]
    lengths: torch.Tensor
    mm_token_type_ids: Optional[torch.Tensor] = None
    image_inputs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class AlignmentBatch:
    """Right-padded prompt + answer tokens.

    Attributes:
        input_ids: ``[B, L]``.
        attention_mask: ``[B, L]`` 1 at real tokens.
        labels: ``[B, L]`` the answer's token ids, -100 on the prompt and padding.
        mm_token_type_ids: ``[B, L]`` 1 at image tokens, for families that use it.
        image_inputs: the image processor's tensors of every image, in order.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    mm_token_type_ids: Optional[torch.Tensor] = None
    image_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
