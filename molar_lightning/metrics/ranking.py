"""Full-ranking metrics: NDCG@K, Recall@K, MRR@K and Hit@K of one held-out item per user against all items.

Items are scored by the dot product ``user_emb @ item_emb.T`` in chunks of items, so memory stays
``[B, item_chunk_size]`` however many items there are; ``[B, N]`` is never built. Item 0 is padding and is
never ranked. The rank of the target is the number of candidate items that score strictly higher, and exact
ties are resolved in expectation: with ``g`` candidates above the target and ``t`` others equal to it, the
target's 0-based rank is uniform on ``g .. g + t``, and each metric is its mean over that range. A model
that scores every item the same therefore gets the value of a random ranking, not a perfect one.

A NaN or infinite score never helps: a candidate scoring NaN or ``+inf`` never outranks the target, and a
target whose own score is not finite gets the worst rank (below every candidate). Such users are counted
(``nonfinite_users``), so a diverged model is reported rather than ranked as if it were sound.

The states of :class:`RankingMetrics` are sums reduced with ``"sum"``, so the result under DDP is the
same as on one process with all users.
"""

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Optional

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

#: Metric names, in the row order of the state ``sums`` and of every results table.
METRIC_NAMES = ("ndcg", "recall", "mrr", "hit")


def _item_chunks(num_items: int, item_chunk_size: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` id ranges covering items ``1..num_items``; item 0 (padding) is in none."""
    for start in range(1, num_items + 1, item_chunk_size):
        yield start, min(start + item_chunk_size, num_items + 1)


def _chunk_scores(user_emb: Tensor, item_emb: Tensor, start: int, end: int) -> Tensor:
    """``[B, end - start]`` scores of items ``start .. end - 1``, in the dtype both embeddings promote to."""
    dtype = torch.promote_types(user_emb.dtype, item_emb.dtype)
    return user_emb.to(dtype) @ item_emb[start:end].to(dtype).T


def _history_mask(history: Tensor, start: int, end: int) -> Tensor:
    """``[B, end - start]`` bool, True at the items of ``history [B, H]`` that fall inside the chunk.

    Entries outside the chunk (padding 0 included) are sent to an extra last column that is dropped, so
    every scatter writes True and repeated items need no deduplication.
    """
    width = end - start
    in_chunk = (history >= start) & (history < end)
    index = torch.where(in_chunk, history - start, torch.full_like(history, width))
    mask = torch.zeros(history.shape[0], width + 1, dtype=torch.bool, device=history.device)
    mask.scatter_(1, index, True)
    return mask[:, :width]


def _entries_by_chunk(item_ids: Tensor, num_items: int, item_chunk_size: int) -> list[tuple[Tensor, Tensor]]:
    """For each item chunk, ``(rows, columns)`` of the entries of ``item_ids [B, H]`` (0: none) inside it.

    One sort of the entries finds them all, where a scan of ``item_ids`` per chunk would cost ``O(B * H)``
    each time; setting them to ``-inf`` then writes only those entries, not a ``[B, chunk]`` mask.
    """
    rows, columns = (item_ids > 0).nonzero(as_tuple=True)
    ids, order = item_ids[rows, columns].sort()
    rows = rows[order]
    starts = list(range(1, num_items + 1, item_chunk_size))
    edges = torch.searchsorted(ids, torch.tensor([*starts, num_items + 1], device=ids.device)).tolist()
    return [(rows[low:high], ids[low:high] - start) for start, low, high in zip(starts, edges, edges[1:])]


def _check_item_chunk_size(item_chunk_size: int) -> None:
    if item_chunk_size < 1:
        raise ValueError(f"item_chunk_size must be a positive number of items, got {item_chunk_size}.")


class RankCounts(NamedTuple):
    """What the metrics need of each user's ranking, all ``[B]``."""

    greater: Tensor  #: candidates scoring strictly higher than the target (exact below ``depth``, see below)
    ties: Tensor  #: other candidates scoring exactly the same as the target
    nonfinite: Tensor  #: bool, the target's score is not finite or a candidate scored NaN or +inf


@torch.no_grad()
def target_rank_counts(
    user_emb: Tensor,
    item_emb: Tensor,
    target: Tensor,
    history: Optional[Tensor] = None,
    exclude_history: bool = True,
    item_chunk_size: int = 32768,
    depth: Optional[int] = None,
) -> RankCounts:
    """How many candidate items score above the target, and how many score exactly the same.

    Candidates are items ``1..N`` other than the target, minus, when ``exclude_history``, the items of
    ``history``. The target itself is never excluded, even when it also appears in the history: a user who
    interacts with an item again must be able to have it recommended again.

    One matmul per chunk: the target's score is gathered from the chunk that holds it, and the candidates'
    ``depth`` best scores are kept (``torch.topk``, merged across chunks). The target's score has to come from
    the same matmul as the scores it is compared with: a separately computed ``(user_emb *
    item_emb[target]).sum(-1)`` can differ in the last bits, which would turn an exact tie into "strictly
    higher" or "strictly lower". The kept scores settle a user unless its ties run past them (all-equal
    scores, say) or a score is not finite; only those users are counted again exactly, by a second matmul per
    chunk over the same inputs and shapes, which gives the same bits.

    Args:
        user_emb: ``[B, D]`` user embeddings.
        item_emb: ``[N + 1, D]`` item embeddings, row ``i`` for item id ``i``; row 0 is padding.
        target: ``[B]`` held-out item ids in ``1..N``.
        history: ``[B, H]`` item ids the user interacted with before the target, right-padded with 0.
        exclude_history: Drop the history items (other than the target) from the candidates.
        item_chunk_size: Items scored per matmul; memory is ``O(B * item_chunk_size)``.
        depth: Ranks of interest: counts are exact below it, and a user with ``depth`` or more candidates
            above the target may get ``greater = depth`` and ``ties = 0`` instead, which leaves every metric at
            a cut-off ``K <= depth`` as it is (0). None counts every user exactly.

    Returns:
        :class:`RankCounts`. A target whose score is not finite has every candidate above it and no ties;
        candidates scoring NaN or ``+inf`` are never above the target nor tied with it.
    """
    _check_item_chunk_size(item_chunk_size)
    num_items = item_emb.shape[0] - 1
    if target.numel() and (int(target.min()) < 1 or int(target.max()) > num_items):
        raise ValueError(
            f"Targets must be item ids in 1..{num_items} (item 0 is padding), got ids from {int(target.min())} "
            f"to {int(target.max())}. Check that the item embedding table has num_items + 1 rows."
        )
    if exclude_history and history is None:
        raise ValueError("exclude_history=True needs the history [B, H]; pass it, or set exclude_history=False.")
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be a positive number of ranks, got {depth}.")

    dropped = torch.cat([target[:, None], history], dim=1) if exclude_history else target[:, None]
    target_score = user_emb.new_zeros(target.shape, dtype=torch.promote_types(user_emb.dtype, item_emb.dtype))
    best = None  # [B, <= depth] the best candidate scores so far, descending
    chunks = zip(_item_chunks(num_items, item_chunk_size), _entries_by_chunk(dropped, num_items, item_chunk_size))
    for (start, end), entries in chunks:
        scores = _chunk_scores(user_emb, item_emb, start, end)
        in_chunk = (target >= start) & (target < end)
        column = (target - start).clamp(0, end - start - 1)
        target_score = torch.where(in_chunk, scores.gather(1, column[:, None]).squeeze(1), target_score)
        if depth is not None:
            scores[entries] = -math.inf
            if best is not None:
                scores = torch.cat([best, scores.topk(min(depth, end - start), dim=1).values], dim=1)
            best = scores.topk(min(depth, scores.shape[1]), dim=1).values

    if depth is None:
        counts = RankCounts(torch.zeros_like(target), torch.zeros_like(target), torch.zeros_like(target, dtype=bool))
        unsettled = torch.ones_like(target, dtype=torch.bool)
    else:
        # NaN and +inf sort first, so the first kept score shows whether the user met one.
        nonfinite = ~target_score.isfinite() | best[:, 0].isnan() | (best[:, 0] == math.inf)
        greater = (best > target_score[:, None]).sum(1)
        ties = (best == target_score[:, None]).sum(1)
        ties_run_on = (best.shape[1] < num_items) & (greater < best.shape[1]) & (greater + ties == best.shape[1])
        counts = RankCounts(greater, ties, nonfinite)
        unsettled = nonfinite | ties_run_on
    if unsettled.any():
        rows = unsettled.nonzero().squeeze(1)
        exact = _exact_counts(user_emb, item_emb, target, history, exclude_history, item_chunk_size, target_score,
                              rows)
        counts = RankCounts(*(whole.index_put((rows,), part) for whole, part in zip(counts, exact)))
    return counts


def _exact_counts(user_emb: Tensor, item_emb: Tensor, target: Tensor, history: Optional[Tensor],
                  exclude_history: bool, item_chunk_size: int, target_score: Tensor, rows: Tensor) -> RankCounts:
    """:class:`RankCounts` of the users ``rows``, counted over every candidate.

    Each chunk is scored for the whole batch, as in the first pass, and then cut to ``rows``: a matmul of
    other shapes could round differently and break exact ties.
    """
    target, target_score = target[rows], target_score[rows]
    greater, ties, candidates = (torch.zeros_like(target) for _ in range(3))
    nonfinite = ~target_score.isfinite()
    for start, end in _item_chunks(item_emb.shape[0] - 1, item_chunk_size):
        scores = _chunk_scores(user_emb, item_emb, start, end)[rows]
        # The target is compared with the others, never with itself, and its score comes from the first
        # pass, unmasked: excluding the history cannot remove the target, even when it is in the history.
        candidate = torch.arange(start, end, device=target.device) != target[:, None]
        if exclude_history:
            candidate &= ~_history_mask(history[rows], start, end)
        candidates += candidate.sum(1)
        unsound = scores.isnan() | (scores == math.inf)
        nonfinite |= (unsound & candidate).any(1)
        candidate &= ~unsound
        greater += ((scores > target_score[:, None]) & candidate).sum(1)
        ties += ((scores == target_score[:, None]) & candidate).sum(1)
    worst = ~target_score.isfinite()
    return RankCounts(torch.where(worst, candidates, greater), torch.where(worst, 0, ties), nonfinite)


def expected_metrics(greater: Tensor, ties: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """Per-user metrics, in expectation over a uniformly random order among tied items.

    The 0-based rank ``r`` is uniform on ``greater .. greater + ties``. For a per-rank value ``f(r)`` that
    is 0 from ``r = K`` on, the mean is ``(F[min(greater + ties + 1, K)] - F[min(greater, K)]) / (ties + 1)``
    with ``F[m] = f(0) + ... + f(m - 1)``, a cumulative-sum table of length ``max(ks) + 1``. The values of
    ``f`` are ``1 / log2(r + 2)`` for NDCG (one relevant item, so the ideal DCG is 1), ``1 / (r + 1)`` for
    MRR, and 1 for Recall and Hit, which coincide with one held-out item.

    Args:
        greater: ``[B]`` candidates scoring strictly higher than the target.
        ties: ``[B]`` other candidates scoring exactly the same as the target.
        ks: Cut-offs; a cut-off above the number of items is allowed (Recall is then 1).

    Returns:
        ``{"ndcg@K", "recall@K", "mrr@K", "hit@K"}`` for every ``K``, each ``[B]`` float64.
    """
    ranks = torch.arange(max(ks), dtype=torch.float64, device=greater.device)
    gains = {"ndcg": 1.0 / torch.log2(ranks + 2), "mrr": 1.0 / (ranks + 1), "hit": torch.ones_like(ranks)}
    gains["recall"] = gains["hit"]
    cumulative = {name: torch.cat([ranks.new_zeros(1), gain.cumsum(0)]) for name, gain in gains.items()}
    count = (ties + 1).to(torch.float64)
    values = {}
    for k in ks:
        low = greater.clamp(max=k)
        high = (greater + ties + 1).clamp(max=k)
        for name in METRIC_NAMES:
            values[f"{name}@{k}"] = (cumulative[name][high] - cumulative[name][low]) / count
    return values


@torch.no_grad()
def top_k_items(
    user_emb: Tensor,
    item_emb: Tensor,
    k: int,
    history: Optional[Tensor] = None,
    item_chunk_size: int = 32768,
) -> tuple[Tensor, Tensor]:
    """The ``k`` best-scoring items per user, merging per-chunk ``torch.topk`` results.

    Item 0, every item of ``history`` and items scoring NaN or ``+inf`` are left out. A user with fewer than
    ``k`` items left gets the remaining slots filled with score ``-inf`` and item id 0.

    Args:
        user_emb: ``[B, D]`` user embeddings.
        item_emb: ``[N + 1, D]`` item embeddings, row ``i`` for item id ``i``; row 0 is padding.
        k: Items to return per user, at most ``N``.
        history: ``[B, H]`` item ids to leave out, right-padded with 0.
        item_chunk_size: Items scored per matmul; memory is ``O(B * (item_chunk_size + k))``.

    Returns:
        ``(scores, item_ids)``, both ``[B, k]``, best first.
    """
    _check_item_chunk_size(item_chunk_size)
    num_items = item_emb.shape[0] - 1
    if not 1 <= k <= num_items:
        raise ValueError(f"k must be in 1..{num_items} (the number of items), got {k}.")
    best_scores, best_ids = None, None
    if history is None:
        history = torch.zeros(len(user_emb), 0, dtype=torch.long, device=user_emb.device)
    chunks = zip(_item_chunks(num_items, item_chunk_size), _entries_by_chunk(history, num_items, item_chunk_size))
    for (start, end), entries in chunks:
        scores = _chunk_scores(user_emb, item_emb, start, end)
        scores[entries] = -math.inf
        chunk_scores, chunk_columns = scores.topk(min(k, end - start), dim=1)
        if (chunk_scores[:, 0].isnan() | (chunk_scores[:, 0] == math.inf)).any():  # they sort first
            scores.nan_to_num_(nan=-math.inf, posinf=-math.inf)
            chunk_scores, chunk_columns = scores.topk(min(k, end - start), dim=1)
        chunk_ids = chunk_columns + start
        if best_scores is not None:
            chunk_scores = torch.cat([best_scores, chunk_scores], dim=1)
            chunk_ids = torch.cat([best_ids, chunk_ids], dim=1)
        best_scores, position = chunk_scores.topk(min(k, chunk_scores.shape[1]), dim=1)
        best_ids = chunk_ids.gather(1, position)
    return best_scores, best_ids.masked_fill(best_scores == -math.inf, 0)


def recommendations(user_emb: Tensor, item_emb: Tensor, k: int, history: Tensor, user_ids: Tensor) -> dict[str, Tensor]:
    """What a task's ``predict_step`` returns: each user's ``k`` best unseen items (see :func:`top_k_items`),
    as ``{"user_ids" [B], "item_ids" [B, k], "scores" [B, k]}``, the format ``RecommendationWriter`` writes."""
    scores, item_ids = top_k_items(user_emb, item_emb, k, history)
    return {"user_ids": user_ids, "item_ids": item_ids, "scores": scores}


class RankingMetrics(Metric):
    """NDCG@K, Recall@K, MRR@K and Hit@K of one held-out item per user, ranked against all items.

    ``compute()`` returns ``{"ndcg@10": ..., "recall@10": ..., "mrr@10": ..., "hit@10": ..., ...}`` for every
    cut-off, plus ``"users"``, the number of users evaluated (over all processes), and ``"nonfinite_users"``,
    those ranked with a NaN or infinite score (they get the worst rank, see :func:`target_rank_counts`). Ties
    count in expectation (see :func:`expected_metrics`). With no users the metrics are NaN.

    Each batch costs one matmul and one ``torch.topk(max(ks))`` per item chunk; only users whose exact ties
    run past the ``max(ks)`` best candidates, or who meet a non-finite score, are scored a second time.

    With ``per_user``, each user's rank counts are kept too (states gathered over all processes), and
    :meth:`per_user_values` gives every user's metrics, which a paired significance test between two models
    needs.

    Args:
        ks: Cut-offs K. Values above the number of items are allowed.
        exclude_history: Leave each user's earlier items out of the ranking (the target itself stays, even
            when the user had it before), as in the Molar paper's protocol.
        item_chunk_size: Items scored per matmul. Memory is ``O(batch_size * item_chunk_size)``; lower it
            for large batches on small accelerators, raise it for speed.
        per_user: Keep each user's rank counts; ``update`` then needs the ``user_ids``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, ks: Sequence[int] = (10, 20, 50), exclude_history: bool = True, item_chunk_size: int = 32768,
        per_user: bool = False,
    ) -> None:
        super().__init__()
        ks = tuple(int(k) for k in ks)
        if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
            raise ValueError(f"ks must be distinct positive cut-offs, got {ks}.")
        _check_item_chunk_size(item_chunk_size)
        self.ks = ks
        self.exclude_history = exclude_history
        self.item_chunk_size = item_chunk_size
        self.add_state(
            "sums", default=torch.zeros(len(METRIC_NAMES), len(ks), dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("num_users", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("nonfinite_users", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.per_user = per_user
        if per_user:
            for name in ("user_ids", "greater", "ties"):
                self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, user_emb: Tensor, item_emb: Tensor, target: Tensor, history: Optional[Tensor] = None,
               user_ids: Optional[Tensor] = None) -> None:
        """Rank one batch of users.

        Args:
            user_emb: ``[B, D]`` user embeddings.
            item_emb: ``[N + 1, D]`` item embeddings; row 0 is padding.
            target: ``[B]`` held-out item ids in ``1..N``.
            history: ``[B, H]`` earlier items, right-padded with 0; required when ``exclude_history``.
            user_ids: ``[B]`` the users' ids; required with ``per_user``.
        """
        if self.per_user and user_ids is None:
            raise ValueError("RankingMetrics(per_user=True) needs the user_ids [B] of every batch.")
        greater, ties, nonfinite = target_rank_counts(
            user_emb, item_emb, target, history, self.exclude_history, self.item_chunk_size, depth=max(self.ks)
        )
        values = expected_metrics(greater, ties, self.ks)
        self.sums += torch.stack(
            [torch.stack([values[f"{name}@{k}"].sum() for k in self.ks]) for name in METRIC_NAMES]
        )
        self.num_users += target.numel()
        self.nonfinite_users += nonfinite.sum()
        if self.per_user:
            self.user_ids.append(user_ids)
            self.greater.append(greater)
            self.ties.append(ties)

    def per_user_values(self) -> dict[str, Tensor]:
        """Every user seen since the last reset (over all processes), sorted by id: ``{"user_id": [U], "ndcg@10":
        [U], ...}``, the metrics as :func:`expected_metrics` gives them, whose means ``compute`` returns."""
        if not self.per_user:
            raise ValueError("per_user_values() needs RankingMetrics(per_user=True).")
        with self.sync_context():
            user_ids, greater, ties = (self._concatenated(state) for state in (self.user_ids, self.greater, self.ties))
        order = user_ids.argsort()
        return {"user_id": user_ids[order], **expected_metrics(greater[order], ties[order], self.ks)}

    def _concatenated(self, state: "list[Tensor] | Tensor") -> Tensor:
        """A per-user state as one tensor (a list before synchronisation, a tensor after; empty: no users)."""
        if isinstance(state, list) and not state:
            return torch.zeros(0, dtype=torch.long, device=self.device)
        return dim_zero_cat(state)

    def compute(self) -> dict[str, Tensor]:
        """Means over all users seen since the last reset, and the counts ``"users"`` and ``"nonfinite_users"``."""
        means = self.sums / self.num_users
        values = {
            f"{name}@{k}": means[row, column]
            for column, k in enumerate(self.ks)
            for row, name in enumerate(METRIC_NAMES)
        }
        values["users"] = self.num_users
        values["nonfinite_users"] = self.nonfinite_users
        return values
