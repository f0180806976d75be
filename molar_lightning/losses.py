"""Next-item losses shared by every task.

Each loss scores user states against the item table and takes the same three arguments, so a task
switches loss by configuration (``loss: {class_path: molar_lightning.losses.BPRLoss}``) and never by a
string inside a model. Item id 0 is padding: it is never a positive and never a negative.
"""

import torch
import torch.nn.functional as F
from torch import nn


class FullSoftmaxCrossEntropy(nn.Module):
    """Cross entropy over all items: the default for ID models (SASRec and GRU4Rec as RecBole trains them).

    Memory grows as ``positions x items``; on catalogs of 100k+ items use :class:`SampledSoftmaxLoss`.
    """

    def forward(self, states: torch.Tensor, targets: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """Args: ``states [M, D]``, ``targets [M]`` in ``1..N``, ``item_table [N + 1, D]``. Returns a scalar."""
        logits = states @ item_table[1:].T
        return F.cross_entropy(logits, targets - 1)


class SampledSoftmaxLoss(nn.Module):
    """Cross entropy against the positive and a shared pool of uniformly drawn negatives.

    Negatives that equal a row's positive are masked for that row.

    Args:
        num_negatives: size of the negative pool shared by all positions of the batch.
    """

    def __init__(self, num_negatives: int = 256) -> None:
        super().__init__()
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be at least 1, got {num_negatives}")
        self.num_negatives = num_negatives

    def forward(self, states: torch.Tensor, targets: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """Args: ``states [M, D]``, ``targets [M]`` in ``1..N``, ``item_table [N + 1, D]``. Returns a scalar."""
        num_items = item_table.shape[0] - 1
        negatives = torch.randint(1, num_items + 1, (self.num_negatives,), device=states.device)
        positive_logits = (states * item_table[targets]).sum(-1, keepdim=True)
        negative_logits = states @ item_table[negatives].T
        negative_logits = negative_logits.masked_fill(targets[:, None] == negatives[None, :], float("-inf"))
        logits = torch.cat([positive_logits, negative_logits], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets))


class BPRLoss(nn.Module):
    """Bayesian personalised ranking with one uniform negative per positive (Rendle et al., UAI 2009).

    A negative that happens to equal its positive is redrawn once and otherwise kept: with thousands of
    items the bias is negligible and the loss stays fully vectorised.
    """

    def forward(self, states: torch.Tensor, targets: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """Args: ``states [M, D]``, ``targets [M]`` in ``1..N``, ``item_table [N + 1, D]``. Returns a scalar."""
        num_items = item_table.shape[0] - 1
        negatives = torch.randint(1, num_items + 1, targets.shape, device=targets.device)
        redraw = negatives == targets
        negatives[redraw] = torch.randint(1, num_items + 1, (int(redraw.sum()),), device=targets.device)
        positive = (states * item_table[targets]).sum(-1)
        negative = (states * item_table[negatives]).sum(-1)
        return -F.logsigmoid(positive - negative).mean()
