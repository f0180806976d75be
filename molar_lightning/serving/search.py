"""Finding a user's best items in an item table: exact chunked search, or an approximate index for large ones.

Scores are dot products (the exported tables already are what evaluation multiplies). All indexes answer
``search(user_emb [B, D], k, exclude)`` with ``(scores [B, k], item_ids [B, k])``, best first, item 0 (padding)
and each user's ``exclude`` items never returned, and id 0 with score ``-inf`` where fewer than ``k`` are left.

* :class:`ExactSearch` is the evaluation's own chunked ``matmul + topk``
  (:func:`~molar_lightning.metrics.ranking.top_k_items`): exact, memory bounded by the chunk.
* :class:`FaissSearch` is approximate: a ``faiss`` HNSW graph over the items (``pip install faiss-cpu``), an
  optional extra imported only when asked for. It pays off for millions of items and one user per query; on a
  CPU, exact search over a batch of users is a matmul that is hard to beat below that.

``benchmarks/ann_recall.py`` reports its recall@10 against exact search and both query times.
"""

import math
from typing import Literal, Optional, Sequence

import torch
from torch import Tensor

from molar_lightning.metrics.ranking import top_k_items
from molar_lightning.user_error import UserError

IndexKind = Literal["exact", "faiss"]


def exclusion_tensor(exclude: Optional[Sequence[Sequence[int]]], rows: int) -> Optional[Tensor]:
    """``[B, H]`` right-padded with 0 (the history format of :func:`top_k_items`), or None."""
    if exclude is None or not any(len(items) for items in exclude):
        return None
    width = max(len(items) for items in exclude)
    out = torch.zeros(rows, width, dtype=torch.long)
    for row, items in enumerate(exclude):
        out[row, :len(items)] = torch.as_tensor(list(items), dtype=torch.long)
    return out


class ExactSearch:
    """Every item scored, in chunks of ``item_chunk_size``.

    Args:
        items: ``[N + 1, D]`` item table, row 0 padding.
        item_chunk_size: items per matmul.
    """

    def __init__(self, items: Tensor, item_chunk_size: int = 32768) -> None:
        self.items, self.item_chunk_size = items, item_chunk_size

    def search(self, user_emb: Tensor, k: int, exclude: Optional[Sequence[Sequence[int]]] = None
               ) -> tuple[Tensor, Tensor]:
        k = min(k, len(self.items) - 1)
        history = exclusion_tensor(exclude, len(user_emb))
        return top_k_items(user_emb, self.items, k, history, self.item_chunk_size)


class FaissSearch:
    """``faiss.IndexHNSWFlat`` over inner products (``pip install faiss-cpu``; imported only when built).

    Excluded items are filtered from ``k`` plus as many extra results as the user has excluded items.

    Args:
        items: ``[N + 1, D]`` item table, row 0 padding.
        neighbours: HNSW graph degree (M).
        ef_search: candidates kept while searching; more is slower and closer to exact.
    """

    def __init__(self, items: Tensor, neighbours: int = 32, ef_search: int = 128) -> None:
        try:
            import faiss
        except ImportError:
            raise UserError("--index faiss needs the faiss package (pip install faiss-cpu); or use --index "
                               "exact, which needs nothing more") from None
        self.num_items = len(items) - 1
        self.index = faiss.IndexHNSWFlat(items.shape[1], neighbours, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efSearch = ef_search
        self.index.add(items[1:].float().contiguous().numpy())

    def search(self, user_emb: Tensor, k: int, exclude: Optional[Sequence[Sequence[int]]] = None
               ) -> tuple[Tensor, Tensor]:
        k = min(k, self.num_items)
        extra = max((len(items) for items in exclude), default=0) if exclude is not None else 0
        found_scores, found_rows = self.index.search(user_emb.float().contiguous().numpy(), min(k + extra,
                                                                                               self.num_items))
        scores = torch.full((len(user_emb), k), -math.inf)
        ids = torch.zeros(len(user_emb), k, dtype=torch.long)
        for row in range(len(user_emb)):
            banned = set(exclude[row]) if exclude is not None else set()
            kept = [(float(score), int(item) + 1) for score, item in zip(found_scores[row], found_rows[row])
                    if item >= 0 and int(item) + 1 not in banned][:k]
            for column, (score, item) in enumerate(kept):
                scores[row, column], ids[row, column] = score, item
        return scores, ids


def build_search(items: Tensor, kind: IndexKind = "exact", item_chunk_size: int = 32768):
    """The index of ``kind`` over ``items`` with its default settings."""
    if kind == "exact":
        return ExactSearch(items, item_chunk_size)
    if kind == "faiss":
        return FaissSearch(items)
    raise UserError(f"--index must be exact or faiss, got {kind!r}")
