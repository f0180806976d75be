"""Finding a user's best items in an item table: exact chunked search, or an approximate index for large ones.

Scores are dot products (the exported tables already are what evaluation multiplies). All indexes answer
``search(user_emb [B, D], k, exclude)`` with ``(scores [B, k], item_ids [B, k])``, best first, item 0 (padding)
and each user's ``exclude`` items never returned, and id 0 with score ``-inf`` where fewer than ``k`` are left.

* :class:`ExactSearch` is the evaluation's own chunked ``matmul + topk``
  (:func:`~molar_lightning.metrics.ranking.top_k_items`): exact, memory bounded by the chunk.
* :class:`ClusteredSearch` (an inverted file, "IVF") groups the items into ``k``-means clusters once and
  scores only the items of the ``probes`` clusters nearest each user: approximate, built in, no extra package.
* :class:`FaissSearch` hands the same job to ``faiss`` (``pip install faiss-cpu``), an optional extra imported
  only when asked for.

``benchmarks/ann_recall.py`` reports the approximate indexes' recall@10 against exact search.
"""

import math
from typing import Literal, Optional, Sequence

import torch
from torch import Tensor

from molar_lightning.metrics.ranking import top_k_items

IndexKind = Literal["exact", "clustered", "faiss"]


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


def _kmeans(points: Tensor, clusters: int, iterations: int, generator: torch.Generator) -> Tensor:
    """``[clusters, D]`` centroids of ``points`` by Lloyd's iterations on inner products (spherical k-means
    when the points are normalised); an emptied cluster restarts at a random point."""
    centroids = points[torch.randperm(len(points), generator=generator)[:clusters]].clone()
    for _ in range(iterations):
        assignment = (points @ centroids.T).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=clusters)
        empty = counts == 0
        centroids = sums / counts.clamp(min=1)[:, None]
        centroids[empty] = points[torch.randint(len(points), (int(empty.sum()),), generator=generator)]
    return centroids


class ClusteredSearch:
    """An inverted file: items grouped by their nearest of ``clusters`` centroids; a query scores the items of
    its ``probes`` best centroids. Build cost: ``iterations`` passes of ``N x clusters``; query cost about
    ``probes / clusters`` of exact search.

    Args:
        items: ``[N + 1, D]`` item table, row 0 padding.
        clusters: number of lists; about the square root of the item count is usual.
        probes: lists scored per query; more is slower and closer to exact.
        iterations: k-means iterations.
        seed: seeds the k-means initialisation.
    """

    def __init__(self, items: Tensor, clusters: Optional[int] = None, probes: int = 8, iterations: int = 10,
                 seed: int = 0) -> None:
        points = items[1:].float()
        self.items = items
        clusters = min(clusters or max(1, round(math.sqrt(len(points)))), len(points))
        self.probes = min(probes, clusters)
        generator = torch.Generator().manual_seed(seed)
        self.centroids = _kmeans(points, clusters, iterations, generator)
        assignment = (points @ self.centroids.T).argmax(dim=1)
        order = torch.argsort(assignment, stable=True)
        self.list_items = order + 1  # item ids, grouped by list
        self.list_starts = torch.cat([torch.zeros(1, dtype=torch.long),
                                      torch.bincount(assignment, minlength=clusters).cumsum(0)])

    def search(self, user_emb: Tensor, k: int, exclude: Optional[Sequence[Sequence[int]]] = None
               ) -> tuple[Tensor, Tensor]:
        k = min(k, len(self.items) - 1)
        scores = torch.full((len(user_emb), k), -math.inf)
        ids = torch.zeros(len(user_emb), k, dtype=torch.long)
        nearest = (user_emb.float() @ self.centroids.T).topk(self.probes, dim=1).indices
        for row, lists in enumerate(nearest.tolist()):
            candidates = torch.cat([self.list_items[self.list_starts[c]:self.list_starts[c + 1]] for c in lists])
            if exclude is not None and len(exclude[row]):
                candidates = candidates[~torch.isin(candidates, torch.as_tensor(list(exclude[row])))]
            found = self.items[candidates].float() @ user_emb[row].float()
            best, position = found.topk(min(k, len(found)))
            scores[row, :len(best)], ids[row, :len(best)] = best, candidates[position]
        return scores, ids


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
            raise ImportError("index: faiss needs the faiss package (pip install faiss-cpu); or use index: exact "
                              "or index: clustered, which need nothing more") from None
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
    if kind == "clustered":
        return ClusteredSearch(items)
    if kind == "faiss":
        return FaissSearch(items)
    raise ValueError(f"index must be exact, clustered or faiss, got {kind!r}")
