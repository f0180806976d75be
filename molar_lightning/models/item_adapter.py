"""``StandardizedProjection``: an ``item_adapter`` for item embeddings that share one dominant direction.

The last hidden states of a language model sit in a narrow cone (anisotropy): every item's vector is close
to a common one and their cosines all exceed 0.99, which would make
:class:`~molar_lightning.losses.ContentInfoNCELoss` mask every negative as a near-duplicate. Standardising
each dimension over the item table (batch statistics while training, running ones at evaluation) removes
the common part and brings out where items differ; a trainable linear map follows.
"""

from typing import Optional

import torch
from torch import nn


class StandardizedProjection(nn.Module):
    """Per-dimension standardisation over the item table, then a linear map.

    Args:
        input_size: width of the item embeddings.
        output_size: width after the linear map; null keeps ``input_size``.
    """

    def __init__(self, input_size: int, output_size: Optional[int] = None) -> None:
        super().__init__()
        self.standardize = nn.BatchNorm1d(input_size, affine=False)
        self.projection = nn.Linear(input_size, output_size or input_size)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``[N, input_size]`` (the whole table, or a batch's items) -> ``[N, output_size]``."""
        return self.projection(self.standardize(items))
