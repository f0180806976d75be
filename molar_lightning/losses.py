"""Losses shared by every task: next-item losses, and the auxiliary losses of ID models.

Each next-item loss scores user states against the item table and takes the same three arguments, so a task
switches loss by configuration (``loss: {class_path: molar_lightning.losses.BPRLoss}``) and never by a
string inside a model. Item id 0 is padding: it is never a positive and never a negative. An ID model's
auxiliary loss (DuoRec's :class:`DuoRecContrastiveLoss`) is the model's ``auxiliary_loss`` attribute, so
every task that trains the model adds it.
"""

import math
from typing import Literal, Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from molar_lightning.models.protocol import IDSequenceEncoder
from molar_lightning.user_error import SettingError


@runtime_checkable
class NextItemLoss(Protocol):
    """A next-item loss of ID models, the type of the tasks' ``loss`` arguments; a module, so it is called as
    ``loss(states, targets, item_table)``. The CLI accepts a ``class_path`` whose ``forward`` has this signature."""

    def forward(self, states: torch.Tensor, targets: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """Args: ``states [M, D]``, ``targets [M]`` in ``1..N``, ``item_table [N + 1, D]``. Returns a scalar."""
        ...


@runtime_checkable
class ContentNextItemLoss(Protocol):
    """A next-item loss of content user models, the type of ``MolarModule.loss``: it also takes each user's
    items, which are never that user's negatives, and the catalog id of each row of the item table, since an
    end-to-end step embeds only some items and every process a different set of them. The CLI accepts a
    ``class_path`` whose ``forward`` has this signature (:class:`ContentInfoNCELoss`, :class:`SampledBCELoss`)."""

    def forward(self, states: torch.Tensor, targets: torch.Tensor, item_table: torch.Tensor,
                item_ids: torch.Tensor, user_items: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Args as :meth:`ContentInfoNCELoss.forward`. Returns a scalar."""
        ...


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


def table_rows(item_ids: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Rows of ``wanted`` (catalog ids) in a table whose rows hold the ascending catalog ids ``item_ids``."""
    rows = torch.searchsorted(item_ids, wanted).clamp_(max=len(item_ids) - 1)
    if not bool((item_ids[rows] == wanted).all()):
        raise ValueError("a target is not in the item table, or the table's item_ids are not ascending: the table "
                         "must hold every target of the step, its rows in ascending catalog id")
    return rows


def gather_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` of every process concatenated along dim 0 (gradients flow back to each local part). The
    processes may hold different numbers of rows (a last batch cut short): each is padded to the longest for
    the gather and cut back after it."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor
    world = torch.distributed.get_world_size()
    if world == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    rows = torch.tensor([len(tensor)], device=tensor.device)
    counts = [torch.empty_like(rows) for _ in range(world)]
    torch.distributed.all_gather(counts, rows)
    longest = int(max(counts))
    padded = torch.cat([tensor, tensor.new_zeros(longest - len(tensor), *tensor.shape[1:])]).contiguous()
    return torch.cat([part[:int(count)] for part, count in zip(all_gather(padded), counts)])


class _LearnedScale(nn.Module):
    """Cosine scores times a learnable scale (CLIP's logit scale), ``exp(log_scale)`` at most ``max_scale``."""

    def __init__(self, initial_temperature: float, max_scale: float) -> None:
        super().__init__()
        self.max_scale = max_scale
        self.log_scale = nn.Parameter(torch.tensor(1.0 / initial_temperature).log())

    @property
    def scale(self) -> torch.Tensor:
        """The parameter itself is clamped into ``[0, log(max_scale)]`` (as HLLM does), not its ``exp``: a
        clamped ``exp`` has zero gradient above the bound, so the scale could never come back down."""
        with torch.no_grad():
            self.log_scale.clamp_(0.0, math.log(self.max_scale))
        return self.log_scale.exp()


class ContentInfoNCELoss(_LearnedScale):
    """HLLM's next-item InfoNCE for content user models (Molar's default DUEG loss, from the authors' code).

    Logits are cosine similarities times a learnable scale (initialised at 1/0.07, clamped at 100). Each
    prediction's positive competes with one pool of negatives shared by the batch: every process draws rows of
    its own item table uniformly, and the pool gathers every process's (catalog id, embedding) pairs, so the
    tables may differ between processes (end-to-end steps embed different items). A negative is masked for a
    prediction, by catalog id, when it is one of that user's items (the target included), or when its cosine
    with the positive exceeds ``duplicate_threshold`` (near-duplicates of the positive are not negatives). When
    embeddings collapse, that filter masks every negative and the loss drops to 0; the loss then raises
    :class:`EmbeddingCollapseError` instead of letting training go on.

    Args:
        num_negatives: negatives drawn per process per step; the pool is ``world_size`` times larger.
        initial_temperature: the scale starts at ``1 / initial_temperature``.
        max_scale: the scale is clamped at this value (and at 1 from below, as in HLLM).
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
                item_ids: torch.Tensor, user_items: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Args: ``states [M, D]``; ``targets [M]`` catalog ids in ``1..N``; ``item_table [K + 1, D]`` the
        items this process embedded, row 0 padding; ``item_ids [K + 1]`` the catalog id of each row (0 for
        row 0), ascending, every target among them (the whole catalog: ``arange(N + 1)``); ``user_items [B, H]``
        the catalog ids of each user's items (0 is padding), never used as that user's negatives; ``owners
        [M]`` the row of ``user_items`` each prediction belongs to. Returns a scalar."""
        rows = torch.randint(1, len(item_table), (self.num_negatives,), device=states.device)
        negative_ids = gather_across_ranks(item_ids[rows])
        negatives = F.normalize(gather_across_ranks(item_table[rows]), dim=-1)
        states = F.normalize(states, dim=-1)
        positives = F.normalize(item_table[table_rows(item_ids, targets)], dim=-1)
        positive_logits = (states * positives).sum(-1, keepdim=True)
        negative_logits = states @ negatives.T
        masked = (user_items[:, :, None] == negative_ids).any(1)[owners]  # [M, pool]: the user has the item
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
    losses rank by the same score. Negatives are rows of this process's item table; one that is one of the
    user's items (by catalog id) is redrawn once.

    Args:
        initial_temperature: the scale starts at ``1 / initial_temperature``.
        max_scale: the scale is clamped at this value (and at 1 from below, as in HLLM).
    """

    def __init__(self, initial_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__(initial_temperature, max_scale)

    def forward(self, states: torch.Tensor, targets: torch.Tensor, item_table: torch.Tensor,
                item_ids: torch.Tensor, user_items: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Args as :meth:`ContentInfoNCELoss.forward`. Returns a scalar."""
        rows = torch.randint(1, len(item_table), targets.shape, device=targets.device)
        redraw = (user_items[owners] == item_ids[rows][:, None]).any(1) | (item_ids[rows] == targets)
        rows[redraw] = torch.randint(1, len(item_table), (int(redraw.sum()),), device=targets.device)
        states = F.normalize(states, dim=-1)
        scale = self.scale
        positive = scale * (states * F.normalize(item_table[table_rows(item_ids, targets)], dim=-1)).sum(-1)
        negative = scale * (states * F.normalize(item_table[rows], dim=-1)).sum(-1)
        return -(F.logsigmoid(positive) + F.logsigmoid(-negative)).mean()


class UserAlignmentLoss(nn.Module):
    """Molar's post-alignment (Eq. 4): symmetric InfoNCE between each user's content and ID embeddings.

    Row ``b`` of both inputs is the same training window. On cosine similarity divided by ``temperature``,
    each window's content embedding must pick its own ID embedding among the batch's (content -> ID), and its
    ID embedding its own content embedding (ID -> content); the loss is the sum of the two directions' mean
    cross entropies, as Eq. 4 sums them. The batch's other windows of the same user are not negatives: they
    are the same user. With ``across_ranks`` the negatives are every process's windows, as one process over
    the global batch would see them; gradients flow back to the process that computed each embedding.

    Args:
        temperature: tau; the paper leaves it open, 0.07 by default.
        across_ranks: under DDP/FSDP, gather the other processes' windows as negatives (every process's batch
            must have the same size, as Lightning's distributed sampler gives); false keeps each process's
            batch alone.
    """

    def __init__(self, temperature: float = 0.07, across_ranks: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.across_ranks = across_ranks

    def forward(self, content: torch.Tensor, collaborative: torch.Tensor, user_ids: torch.Tensor) -> torch.Tensor:
        """Args: ``content [B, D]``, ``collaborative [B, D]``, ``user_ids [B]``. Returns a scalar."""
        content, collaborative = F.normalize(content, dim=-1), F.normalize(collaborative, dim=-1)
        all_content, all_collaborative, all_users = content, collaborative, user_ids
        labels = torch.arange(len(content), device=content.device)
        if self.across_ranks:
            all_content, all_collaborative = gather_across_ranks(content), gather_across_ranks(collaborative)
            all_users = gather_across_ranks(user_ids)
            if len(all_users) > len(user_ids):  # gathered: this process's windows follow those of lower ranks
                labels = labels + torch.distributed.get_rank() * len(user_ids)
        columns = torch.arange(len(all_users), device=labels.device)
        same_user = (user_ids[:, None] == all_users[None, :]) & (labels[:, None] != columns[None, :])
        to_id = (content @ all_collaborative.T / self.temperature).masked_fill(same_user, float("-inf"))
        to_content = (collaborative @ all_content.T / self.temperature).masked_fill(same_user, float("-inf"))
        return F.cross_entropy(to_id, labels) + F.cross_entropy(to_content, labels)


def info_nce(
    first: torch.Tensor,
    second: torch.Tensor,
    temperature: float,
    similarity: Literal["dot", "cos"],
    targets: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """InfoNCE over ``2B`` views with in-batch negatives (SimCLR's NT-Xent, as DuoRec computes it).

    Row ``b`` of ``first`` and row ``b`` of ``second`` are a positive pair. Without ``targets`` each of the
    ``2B`` views has the other ``2B - 2`` views as negatives: the authors' ``mask_correlated_samples``, which
    removes only a view itself and its partner. With ``targets``, views whose sample has the same target as
    the view's own are removed too.

    Args:
        first: ``[B, D]`` one view of each sample.
        second: ``[B, D]`` the other view.
        temperature: logits are similarities divided by this.
        similarity: ``"dot"`` product or ``"cos"`` ine similarity.
        targets: ``[B]`` next item of each sample; ``None`` keeps all ``2B - 2`` negatives.

    Returns:
        The mean cross entropy over the ``2B`` views, a scalar.
    """
    views = torch.cat([first, second])
    if similarity == "cos":
        views = F.normalize(views, dim=-1)
    logits = views @ views.T / temperature
    count = views.shape[0]
    index = torch.arange(count, device=views.device)
    partner = (index + first.shape[0]) % count
    excluded = index[:, None] == index[None, :]
    if targets is not None:
        both = targets.repeat(2)
        excluded = excluded | (both[:, None] == both[None, :])
    excluded[index, partner] = False
    return F.cross_entropy(logits.masked_fill(excluded, float("-inf")), partner)


def same_target_partners(targets: torch.Tensor) -> torch.Tensor:
    """``[M]`` index, for each of ``targets [M]``, of a uniformly drawn other entry with the same value; the
    entry itself when no other has it (the authors' fallback: a sequence alone with its target is its own
    supervised positive).

    The entries of each value are put in a random cycle and each one's partner is the next in it: every other
    entry of the value is equally likely, and every entry is the partner of exactly one.
    """
    shuffled = torch.randperm(len(targets), device=targets.device)
    order = shuffled[torch.argsort(targets[shuffled], stable=True)]  # grouped by value, random within a group
    _, group_size = torch.unique_consecutive(targets[order], return_counts=True)
    group_end = torch.repeat_interleave(torch.cumsum(group_size, 0), group_size)
    group_start = group_end - torch.repeat_interleave(group_size, group_size)
    following = torch.arange(1, len(order) + 1, device=targets.device)
    following = torch.where(following < group_end, following, group_start)  # the last of a group: its first
    partners = torch.empty_like(order)
    partners[order] = order[following]
    return partners


# DuoRec's positive prefixes run from 1 to 50 items; padded to the longest, about half of the third pass is
# padding. Four length groups cut a DuoRec training step on ML-100K from 195 ms to 114 ms (2 CPU threads,
# docs/id_models.md); eight cost more calls than they save.
POSITIVE_LENGTH_GROUPS = 4


def encode_by_length(encoder: IDSequenceEncoder, item_seq: torch.Tensor, groups: int) -> torch.Tensor:
    """``encoder.encode_sequence`` of the left-padded ``item_seq [P, L]``, run in ``groups`` groups of rows of
    similar length, each cut to its longest row: ``[P, D]`` in ``item_seq``'s row order.

    The same values as one call (positions count from each row's first item and padding is masked), with less
    padding to compute; in training each group draws its own dropout."""
    lengths = (item_seq != 0).sum(1)
    order = lengths.argsort(stable=True)
    states = []
    for rows in order.tensor_split(min(groups, len(order))):
        width = max(int(lengths[rows[-1]]), 1)
        part = item_seq[rows, -width:]
        states.append(encoder.encode_sequence(part, part != 0))
    return torch.cat(states)[order.argsort()]


class DuoRecContrastiveLoss(nn.Module):
    """DuoRec's contrastive regulariser against representation degeneration (Qiu et al., WSDM 2022), as the
    authors' code (``contrast=us_x``) computes it.

    Each sample is a training prefix: its anchor view is its state in a second dropout pass, its positive the
    state of another training prefix with the same next item (the supervised view), contrasted against the
    other views of its group (:func:`info_nce`). Samples (``positions``) are every position with a target
    (``all``, the authors': their RecBole data makes every prefix of every training sequence a sample), or
    each window's ``last``. Positives (``positives``):

    - ``data`` (the authors'): ``positive_seq``, one prefix per sample drawn by the DataModule from all the
      training prefixes with the sample's target (the sample itself when none has it), run through the
      encoder in a third dropout pass (``data.init_args.same_target_positives`` set to the same ``positions``).
    - ``batch``: the main pass's state of a uniformly drawn other sample of the batch with the same target
      (the sample's own state, an independent dropout draw of the same prefix, when none has it). No third
      pass, but a small batch leaves most samples without a partner.

    Samples are split at random into groups of at most ``group_size`` (the authors' training batch of 256
    prefixes), each contrasted on its own; the loss is the mean over all samples' views, times ``weight``.
    :class:`~molar_lightning.models.id.duorec.DuoRec` builds it from its arguments as its ``auxiliary_loss``;
    it holds no weights, and runs its passes through the encoder it is given, so it must be called in
    training mode for dropout to make the views.

    Args:
        weight: multiplies the contrastive loss before it joins the next-item loss (the authors' ``lmd_sem``).
        temperature: divides the similarities (the authors' ``tau``).
        similarity: ``dot`` product (the authors') or ``cos`` ine similarity between views.
        positions: which positions are samples: ``all`` (the authors') or each window's ``last``.
        positives: where a sample's positive comes from: the ``data`` (the authors') or the ``batch``.
        negatives: ``authors``: every other view of the group (``2G - 2``); ``drop_same_target`` also leaves
            out views of samples with the same target.
        group_size: most samples contrasted together.
    """

    def __init__(self, weight: float = 0.1, temperature: float = 1.0, similarity: Literal["dot", "cos"] = "dot",
                 positions: Literal["all", "last"] = "all", positives: Literal["data", "batch"] = "data",
                 negatives: Literal["authors", "drop_same_target"] = "authors", group_size: int = 256) -> None:
        super().__init__()
        choices = (("similarity", similarity, ("dot", "cos")), ("positions", positions, ("all", "last")),
                   ("positives", positives, ("data", "batch")),
                   ("negatives", negatives, ("authors", "drop_same_target")))
        for name, value, allowed in choices:
            if value not in allowed:
                raise SettingError(f"DuoRec {name} must be one of {allowed}, got {value!r}")
        if group_size < 2:
            raise SettingError(f"DuoRec contrastive_group_size must be at least 2 (a view needs negatives), "
                               f"got {group_size}")
        self.weight = weight
        self.temperature = temperature
        self.similarity = similarity
        self.positions = positions
        self.positives = positives
        self.negatives = negatives
        self.group_size = group_size

    def forward(
        self,
        encoder: IDSequenceEncoder,
        item_seq: torch.Tensor,
        mask: torch.Tensor,
        states: torch.Tensor,
        positive_seq: Optional[torch.Tensor],
        target_seq: torch.Tensor,
    ) -> torch.Tensor:
        """Weighted contrastive loss of one training batch.

        Args:
            encoder: the ID model being trained; the second (and third) pass goes through it.
            item_seq: ``[B, L]`` the main pass's input, left-padded.
            mask: ``[B, L]`` bool, True at real items.
            states: ``[B, L, D]`` the main pass's states (``encoder.sequence_states``).
            positive_seq: ``[P, L']`` a same-target prefix per sample, in sample order; read only with
                ``positives="data"``, which needs it.
            target_seq: ``[B, L]`` the next item of each position, 0 where there is none.

        Returns:
            A scalar, already multiplied by ``weight``.
        """
        if self.positions == "all":
            has_target = target_seq != 0
            anchors = encoder.sequence_states(item_seq, mask)[has_target]
            targets, sample_states = target_seq[has_target], states[has_target]
        else:
            anchors = encoder.encode_sequence(item_seq, mask)
            targets, sample_states = target_seq[:, -1], states[:, -1]
        if self.positives == "batch":
            positives = sample_states[same_target_partners(targets)]
        else:
            if positive_seq is None or len(positive_seq) != len(targets):
                given = "none" if positive_seq is None else f"{len(positive_seq)}"
                raise SettingError(f"DuoRec positives='data' with positions={self.positions!r} needs one positive "
                                   f"prefix per sample ({len(targets)} in this batch, {given} given): set "
                                   f"data.init_args.same_target_positives: {self.positions}, or use positives='batch'")
            positives = encode_by_length(encoder, positive_seq, POSITIVE_LENGTH_GROUPS)
        groups = torch.randperm(len(targets), device=targets.device).tensor_split(
            math.ceil(len(targets) / self.group_size))
        drop_same_target = self.negatives == "drop_same_target"
        total = sum(len(group) * info_nce(anchors[group], positives[group], self.temperature, self.similarity,
                                          targets[group] if drop_same_target else None)
                    for group in groups)
        return self.weight * total / len(targets)
