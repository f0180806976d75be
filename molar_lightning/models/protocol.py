"""The protocols every user-sequence encoder follows, ID-based or content-based.

One shape for both: :class:`SequenceEncoder` takes a left-padded sequence and its ``mask [B, L]`` and returns
the user embedding after every position (``sequence_states``) or after the whole sequence
(``encode_sequence``). What a sequence holds depends on the model, which is why its two parameters are
positional-only (implementations name them ``item_seq`` or ``item_embs``):

* :class:`IDSequenceEncoder`, the ID models (``models/id``): item ids ``[B, L]`` in, plus optional
  ``user_ids [B]`` (FPMC's user factors), and their own item table (``item_embeddings()``) to score against.
  ``SequentialRecModule`` trains them, and ``MolarModule`` post-aligns with them.
* :class:`ContentSequenceEncoder`, the content user encoders (``models/dueg.py``): item embeddings
  ``[B, L, input_size]`` in, states in the same space out, so users are scored against the item
  embeddings themselves. ``MolarModule``'s ``user_encoder``.

Sequences are left-padded (id 0, or any vector under ``mask`` False): the most recent item is always at
position ``L - 1``, and the user embedding after the whole history is ``sequence_states(...)[:, -1]``.
The tasks' arguments are typed with these protocols, and the CLI checks a configured ``class_path``
against them by method signature, so implementations spell the signatures exactly as written here.
"""

from typing import Optional, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class SequenceEncoder(Protocol):
    """Sequence in, user embedding after every position out."""

    def sequence_states(self, sequence: torch.Tensor, mask: torch.Tensor, /) -> torch.Tensor:
        """User embedding after every position, causally.

        Args:
            sequence: ``[B, L]`` item ids or ``[B, L, D]`` item embeddings, left-padded.
            mask: ``[B, L]`` bool, True at real items.

        Returns:
            ``[B, L, D]``: row ``t`` depends only on ``sequence[:, : t + 1]`` and predicts item ``t + 1``.
        """
        ...

    def encode_sequence(self, sequence: torch.Tensor, mask: torch.Tensor, /) -> torch.Tensor:
        """User embedding after the whole sequence: ``[B, D]``."""
        ...


@runtime_checkable
class IDSequenceEncoder(SequenceEncoder, Protocol):
    """Item ids in; item embeddings in the same space, from the model's own table.

    A user is scored against item ``i`` by the dot product ``user_emb @ item_embeddings()[i]``.

    Attributes:
        auxiliary_loss: a regulariser the training tasks add to the next-item loss, called as
            ``auxiliary_loss(encoder, item_seq, mask, states, positive_seq, target_seq)``, ``states [B, L, D]``
            being ``sequence_states`` of the batch and ``target_seq [B, L]`` its next items (DuoRec's
            :class:`~molar_lightning.losses.DuoRecContrastiveLoss`); None for most models.
    """

    auxiliary_loss: Optional[nn.Module]

    def sequence_states(
        self, item_seq: torch.Tensor, mask: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``item_seq [B, L]`` ids left-padded with 0, ``mask [B, L]``, ``user_ids [B]`` (for models with user
        factors, FPMC; others ignore it) -> ``[B, L, D]``."""
        ...

    def encode_sequence(
        self, item_seq: torch.Tensor, mask: torch.Tensor, user_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """User embedding after the whole sequence: ``[B, D]``."""
        ...

    def item_embeddings(self) -> torch.Tensor:
        """``[num_items + 1, D]``, row ``i`` for item id ``i``; row 0 is padding and never ranked."""
        ...


@runtime_checkable
class ContentSequenceEncoder(SequenceEncoder, Protocol):
    """Item embeddings ``[B, L, input_size]`` in; user embeddings ``[B, (L,) input_size]`` in that space out.

    Attributes:
        input_size: width of the item embeddings it reads and of the states it returns.
    """

    input_size: int
