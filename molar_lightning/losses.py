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


class EmbeddingCollapseError(RuntimeError):
    """Every negative of every prediction was masked: the embeddings have collapsed (HLLM issues #15, #33)."""


def owned_items(user_items: torch.Tensor, num_items: int) -> torch.Tensor:
    """``[B, N + 1]`` bool, True where user ``b`` has item ``i`` (``user_items [B, H]``, 0 is padding)."""
    owned = torch.zeros(len(user_items), num_items + 1, dtype=torch.bool, device=user_items.device)
    return owned.scatter_(1, user_items, True)


def _gather_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` of every process concatenated along dim 0 (gradients flow back to each local part)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor
    if torch.distributed.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()))


class _LearnedScale(nn.Module):
    """Cosine scores times a learnable scale (CLIP's logit scale): ``exp(log_scale)``, clamped at ``max_scale``."""

    def __init__(self, initial_temperature: float, max_scale: float) -> None:
        super().__init__()
        self.max_scale = max_scale
        self.log_scale = nn.Parameter(torch.tensor(1.0 / initial_temperature).log())

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.max_scale)


class ContentInfoNCELoss(_LearnedScale):
    """HLLM's next-item InfoNCE for content user models (Molar's default DUEG loss, from the authors' code).

    Logits are cosine similarities times a learnable scale (initialised at 1/0.07, clamped at 100). Each
    prediction's positive competes with one pool of uniformly drawn negatives shared by the batch and
    gathered from every process. A negative is masked for a prediction when it is one of that user's items,
    or when its cosine with the positive exceeds ``duplicate_threshold`` (near-duplicates of the positive are
    not negatives). When embeddings collapse, that filter masks every negative and the loss drops to 0; the
    loss then raises :class:`EmbeddingCollapseError` instead of letting training go on.

    Args:
        num_negatives: negatives drawn per process per step; the pool is ``world_size`` times larger.
        initial_temperature: the scale starts at ``1 / initial_temperature``.
        max_scale: the scale is clamped at this value.
        duplicate_threshold: negatives whose cosine with the positive exceeds this are masked.
    """

    def __init__(self, num_negatives: int = 512, initial_temperature: float = 0.07, max_scale: float = 100.0,
                 duplicate_threshold: float = 0.99) -> None:
        super().__init__(initial_temperature, max_scale)
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be at least 1, got {num_negatives}")
        self.num_negatives = num_negatives
        self.duplicate_threshold = duplicate_threshold

    def forward(self, states: torch.Tensor, targets: torch.Tensor, item_table: torch.Tensor,
                user_items: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Args: ``states [M, D]``; ``targets [M]`` in ``1..N``; ``item_table [N + 1, D]``; ``user_items [B, H]``
        the item ids of each user of the batch (0 is padding), never used as that user's negatives; ``owners
        [M]`` the row of ``user_items`` each prediction belongs to. Returns a scalar."""
        num_items = item_table.shape[0] - 1
        local = torch.randint(1, num_items + 1, (self.num_negatives,), device=states.device)
        negative_ids = _gather_across_ranks(local)
        negatives = F.normalize(_gather_across_ranks(item_table[local]), dim=-1)
        states = F.normalize(states, dim=-1)
        positives = F.normalize(item_table[targets], dim=-1)
        positive_logits = (states * positives).sum(-1, keepdim=True)
        negative_logits = states @ negatives.T
        masked = owned_items(user_items, num_items)[:, negative_ids][owners]
        masked |= negative_ids[None, :] == targets[:, None]
        masked |= positives @ negatives.T > self.duplicate_threshold
        if bool(masked.all()):
            raise EmbeddingCollapseError(
                f"all {masked.shape[1]} negatives of all {masked.shape[0]} predictions were masked (cosine with "
                f"the positive > duplicate_threshold={self.duplicate_threshold}, or the user's own items): the item "
                f"embeddings have collapsed and the loss would be 0. Lower the learning rate, check that the item "
                f"embeddings differ between items, or raise duplicate_threshold")
        # Scale first, mask after: -inf times the scale would make the scale's gradient NaN.
        logits = (self.scale * torch.cat([positive_logits, negative_logits], 1)).masked_fill(
            torch.cat([masked.new_zeros(len(masked), 1), masked], 1), float("-inf"))
        return F.cross_entropy(logits, torch.zeros_like(targets))


class SampledBCELoss(_LearnedScale):
    """Binary cross entropy with one uniformly drawn negative per positive (the Molar paper's DUEG loss).

    Logits are cosine similarities times a learnable scale, as in :class:`ContentInfoNCELoss`, so both
    losses rank by the same score. A negative that is one of the user's items is redrawn once.

    Args:
        initial_temperature: the scale starts at ``1 / initial_temperature``.
        max_scale: the scale is clamped at this value.
    """

    def __init__(self, initial_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__(initial_temperature, max_scale)


    def forward(self, states: torch.Tensor, targets: torch.Tensor, item_table: torch.Tensor,
                user_items: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Args as :meth:`ContentInfoNCELoss.forward`. Returns a scalar."""
        num_items = item_table.shape[0] - 1
        negatives = torch.randint(1, num_items + 1, targets.shape, device=targets.device)
        redraw = owned_items(user_items, num_items)[owners, negatives] | (negatives == targets)
        negatives[redraw] = torch.randint(1, num_items + 1, (int(redraw.sum()),), device=targets.device)
        states = F.normalize(states, dim=-1)
        positive = self.scale * (states * F.normalize(item_table[targets], dim=-1)).sum(-1)
        negative = self.scale * (states * F.normalize(item_table[negatives], dim=-1)).sum(-1)
        return -(F.logsigmoid(positive) + F.logsigmoid(-negative)).mean()


class UserAlignmentLoss(nn.Module):
    """Molar's post-alignment: symmetric InfoNCE between each user's content and ID embeddings.

    Row ``b`` of both inputs is the same user; the other users of the batch are the negatives, in both
    directions (content -> ID and ID -> content), on cosine similarity divided by ``temperature``.

    Args:
        temperature: tau; the paper leaves it open, 0.07 by default.
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, content: torch.Tensor, collaborative: torch.Tensor) -> torch.Tensor:
        """Args: ``content [B, D]``, ``collaborative [B, D]``. Returns a scalar."""
        logits = F.normalize(content, dim=-1) @ F.normalize(collaborative, dim=-1).T / self.temperature
        labels = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
