"""Tests of the full-ranking metrics: hand-computed ranks, ties, chunking, batching, top-k and DDP exactness."""

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from molar_lightning.metrics.ranking import (
    METRIC_NAMES,
    RankingMetrics,
    expected_metrics,
    target_rank_counts,
    top_k_items,
)


def _one_user(item_scores: list[float], item0_score: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A user embedding ``[[1.0]]`` and a 1-D item table, so item ``i`` scores exactly ``item_emb[i]``."""
    return torch.ones(1, 1), torch.tensor([[item0_score]] + [[s] for s in item_scores])


def _at(k: int, ndcg: float, hit: float, mrr: float) -> dict[str, float]:
    """Expected values at one cut-off; Recall equals Hit with one held-out item."""
    return {f"ndcg@{k}": ndcg, f"recall@{k}": hit, f"mrr@{k}": mrr, f"hit@{k}": hit}


# Items 1..5 score 5, 4, 3, 2, 1 unless said otherwise. Item 0 scores 100 (or ties the target): if padding
# were ranked, every rank below would be one worse (or have one more tie).
HAND_CASES = {
    # Target 1 has the top score: rank 0 at every cut-off.
    "target_first": dict(
        scores=[5, 4, 3, 2, 1], target=1, history=[0], exclude=False, ks=(1, 5), counts=(0, 0),
        expected={**_at(1, 1.0, 1.0, 1.0), **_at(5, 1.0, 1.0, 1.0)},
    ),
    # Target 3: items 1 and 2 score higher, rank 2 (third place). Missed at K=2; at K=3 NDCG = 1/log2(4).
    "target_third": dict(
        scores=[5, 4, 3, 2, 1], target=3, history=[0], exclude=False, ks=(2, 3), counts=(2, 0),
        expected={**_at(2, 0.0, 0.0, 0.0), **_at(3, 0.5, 1.0, 1 / 3)},
    ),
    # Target 5 is last of 5 items, rank 4; K = 10 exceeds the item count, so it is always found.
    "k_above_item_count": dict(
        scores=[5, 4, 3, 2, 1], target=5, history=[0], exclude=False, ks=(10,), counts=(4, 0),
        expected=_at(10, 1 / math.log2(6), 1.0, 1 / 5),
    ),
    # Target 3 with item 2 in the history: only item 1 is above it, rank 1.
    "history_excluded": dict(
        scores=[5, 4, 3, 2, 1], target=3, history=[2, 0, 0], exclude=True, ks=(1, 2), counts=(1, 0),
        expected={**_at(1, 0.0, 0.0, 0.0), **_at(2, 1 / math.log2(3), 1.0, 1 / 2)},
    ),
    # The same user without exclusion: items 1 and 2 above, rank 2, missed at K = 2.
    "history_not_excluded": dict(
        scores=[5, 4, 3, 2, 1], target=3, history=[2, 0, 0], exclude=False, ks=(1, 2), counts=(2, 0),
        expected={**_at(1, 0.0, 0.0, 0.0), **_at(2, 0.0, 0.0, 0.0)},
    ),
    # The target (item 3) is also in the history, twice: it stays rankable; item 1 is excluded, so only
    # item 2 is above it, rank 1. Masking the target's own score would push it to the bottom instead.
    "target_in_history_stays": dict(
        scores=[5, 4, 3, 2, 1], target=3, history=[3, 1, 3], exclude=True, ks=(1, 2), counts=(1, 0),
        expected={**_at(1, 0.0, 0.0, 0.0), **_at(2, 1 / math.log2(3), 1.0, 1 / 2)},
    ),
    # 4 items and padding all score 1: the target's rank is uniform on 0..3 (padding is not a 5th tie).
    # NDCG@2 = (1 + 1/log2 3) / 4, MRR@2 = (1 + 1/2) / 4, NDCG@10 = (1 + 1/log2 3 + 1/2 + 1/log2 5) / 4,
    # MRR@10 = (1 + 1/2 + 1/3 + 1/4) / 4 = 25/48, Hit@1 = 1/4, Hit@2 = 2/4.
    "all_equal_scores": dict(
        scores=[1, 1, 1, 1], item0=1, target=2, history=[0], exclude=False, ks=(1, 2, 10), counts=(0, 3),
        expected={
            **_at(1, 1 / 4, 1 / 4, 1 / 4),
            **_at(2, (1 + 1 / math.log2(3)) / 4, 2 / 4, (1 + 1 / 2) / 4),
            **_at(10, (1 + 1 / math.log2(3) + 1 / 2 + 1 / math.log2(5)) / 4, 1.0, 25 / 48),
        },
    ),
    # Scores 3, 2, 2, 2, 1 and target 3: item 1 above, items 2 and 4 tied, rank uniform on 1..3.
    # Hit@2 = 1/3, NDCG@2 = (1/log2 3) / 3, MRR@10 = (1/2 + 1/3 + 1/4) / 3 = 13/36.
    "partial_ties": dict(
        scores=[3, 2, 2, 2, 1], target=3, history=[0], exclude=False, ks=(1, 2, 10), counts=(1, 2),
        expected={
            **_at(1, 0.0, 0.0, 0.0),
            **_at(2, 1 / math.log2(3) / 3, 1 / 3, 1 / 2 / 3),
            **_at(10, (1 / math.log2(3) + 1 / 2 + 1 / math.log2(5)) / 3, 1.0, 13 / 36),
        },
    ),
    # As above with tied item 2 in the history: one tie left (item 4), rank uniform on 1..2.
    # Hit@2 = 1/2, MRR@10 = (1/2 + 1/3) / 2 = 5/12.
    "excluded_tie": dict(
        scores=[3, 2, 2, 2, 1], target=3, history=[2, 0], exclude=True, ks=(2, 10), counts=(1, 1),
        expected={
            **_at(2, 1 / math.log2(3) / 2, 1 / 2, 1 / 2 / 2),
            **_at(10, (1 / math.log2(3) + 1 / math.log2(4)) / 2, 1.0, 5 / 12),
        },
    ),
}


@pytest.mark.parametrize("case", HAND_CASES.values(), ids=HAND_CASES.keys())
def test_hand_computed_case(case: dict) -> None:
    user_emb, item_emb = _one_user(case["scores"], case.get("item0", 100.0))
    target = torch.tensor([case["target"]])
    history = torch.tensor([case["history"]])

    greater, ties, nonfinite = target_rank_counts(user_emb, item_emb, target, history, case["exclude"], 2)
    assert (greater.item(), ties.item(), nonfinite.item()) == (*case["counts"], False)
    for depth in (1, 2, 3):  # exact below depth; at or past it, capped at depth with no ties
        capped = target_rank_counts(user_emb, item_emb, target, history, case["exclude"], 2, depth=depth)
        expected = case["counts"] if case["counts"][0] < depth else (depth, 0)
        assert (capped.greater.item(), capped.ties.item()) == expected, depth

    metric = RankingMetrics(ks=case["ks"], exclude_history=case["exclude"], item_chunk_size=2)
    metric.update(user_emb, item_emb, target, history)
    values = metric.compute()
    assert set(values) == set(case["expected"]) | {"users", "nonfinite_users"}
    assert values["users"] == 1 and values["nonfinite_users"] == 0
    for name, expected in case["expected"].items():
        assert values[name].item() == pytest.approx(expected, abs=1e-12), name


def test_expected_metrics_equal_the_mean_over_tied_ranks() -> None:
    greater = torch.tensor([g for g in range(7) for _ in range(5)])
    ties = torch.tensor([t for _ in range(7) for t in range(5)])
    ks = (1, 3, 5, 20)
    values = expected_metrics(greater, ties, ks)
    for user, (g, t) in enumerate(zip(greater.tolist(), ties.tolist())):
        ranks = range(g, g + t + 1)
        for k in ks:
            gains = {
                "ndcg": [1 / math.log2(r + 2) if r < k else 0.0 for r in ranks],
                "mrr": [1 / (r + 1) if r < k else 0.0 for r in ranks],
                "hit": [float(r < k) for r in ranks],
            }
            gains["recall"] = gains["hit"]
            for name in METRIC_NAMES:
                expected = sum(gains[name]) / (t + 1)
                assert values[f"{name}@{k}"][user].item() == pytest.approx(expected, abs=1e-12), (name, k, g, t)


def _integer_case(seed: int, batch: int = 6, num_items: int = 10, dim: int = 3) -> tuple[torch.Tensor, ...]:
    """Embeddings in {-1, 0, 1}: scores are exact small integers, so ties are frequent and exact.

    Histories repeat items, hold the target for some users, and are right-padded with 0.
    """
    generator = torch.Generator().manual_seed(seed)
    user_emb = torch.randint(-1, 2, (batch, dim), generator=generator).float()
    item_emb = torch.randint(-1, 2, (num_items + 1, dim), generator=generator).float()
    target = torch.randint(1, num_items + 1, (batch,), generator=generator)
    history = torch.randint(1, num_items + 1, (batch, 5), generator=generator)
    history[0, 2:] = 0
    history[1, 1] = target[1]
    history[2, :] = 0
    history[3, 0] = history[3, 1]
    return user_emb, item_emb, target, history


def _brute_force_counts(user_emb, item_emb, target, history, exclude_history) -> tuple[list[int], list[int]]:
    scores = user_emb @ item_emb.T
    greater, ties = [], []
    for b in range(len(target)):
        t = int(target[b])
        candidates = set(range(1, item_emb.shape[0])) - {t}
        if exclude_history:
            candidates -= set(history[b].tolist())
        greater.append(sum(bool(scores[b, i] > scores[b, t]) for i in candidates))
        ties.append(sum(bool(scores[b, i] == scores[b, t]) for i in candidates))
    return greater, ties


@pytest.mark.parametrize("exclude_history", [True, False], ids=["exclude_history", "keep_history"])
def test_chunk_size_does_not_change_the_result(exclude_history: bool) -> None:
    user_emb, item_emb, target, history = _integer_case(seed=0)
    expected = _brute_force_counts(user_emb, item_emb, target, history, exclude_history)
    assert sum(expected[1]) > 0, "the case must contain ties to test them"

    results = {}
    for chunk in (1, 3, 1000):
        greater, ties, _ = target_rank_counts(user_emb, item_emb, target, history, exclude_history, chunk)
        assert (greater.tolist(), ties.tolist()) == expected, chunk
        metric = RankingMetrics(ks=(1, 3, 20), exclude_history=exclude_history, item_chunk_size=chunk)
        metric.update(user_emb, item_emb, target, history)
        results[chunk] = metric.compute()
    for chunk in (1, 3):
        for name, value in results[1000].items():
            assert torch.equal(results[chunk][name], value), (chunk, name)


def test_all_users_at_once_equal_one_user_at_a_time_and_the_mean_of_per_user_values() -> None:
    generator = torch.Generator().manual_seed(1)
    user_emb = torch.randn(7, 4, generator=generator)
    item_emb = torch.randn(31, 4, generator=generator)
    target = torch.randint(1, 31, (7,), generator=generator)
    history = torch.randint(0, 31, (7, 6), generator=generator)
    ks = (1, 5, 10)

    at_once = RankingMetrics(ks=ks, item_chunk_size=8)
    at_once.update(user_emb, item_emb, target, history)
    one_by_one = RankingMetrics(ks=ks, item_chunk_size=8)
    for b in range(7):
        one_by_one.update(user_emb[b : b + 1], item_emb, target[b : b + 1], history[b : b + 1])
    per_user = expected_metrics(*target_rank_counts(user_emb, item_emb, target, history, True, 8)[:2], ks)

    at_once_values, one_by_one_values = at_once.compute(), one_by_one.compute()
    assert at_once_values["users"] == one_by_one_values["users"] == 7
    assert set(per_user) | {"users", "nonfinite_users"} == set(at_once_values)
    for name, values in per_user.items():
        assert at_once_values[name].item() == pytest.approx(one_by_one_values[name].item(), abs=1e-12), name
        assert at_once_values[name].item() == pytest.approx(values.mean().item(), abs=1e-12), name
    assert 0 < at_once_values["ndcg@10"] < 1, "the case must not be degenerate"


@pytest.mark.parametrize("chunk", [1, 3, 64], ids=["chunk1", "chunk3", "chunk64"])
def test_top_k_items_equal_a_brute_force_argsort(chunk: int) -> None:
    generator = torch.Generator().manual_seed(2)
    user_emb = torch.randn(4, 5, generator=generator)
    item_emb = torch.randn(21, 5, generator=generator)
    item_emb[0] = 10 * user_emb.mean(0)  # padding would be first for every user if it were ranked
    history = torch.randint(0, 21, (4, 5), generator=generator)

    scores, item_ids = top_k_items(user_emb, item_emb, k=6, history=history, item_chunk_size=chunk)

    full = user_emb @ item_emb.T
    full[:, 0] = -math.inf
    full.scatter_(1, history, -math.inf)
    expected_ids = full.argsort(dim=1, descending=True)[:, :6]
    assert torch.equal(item_ids, expected_ids)
    torch.testing.assert_close(scores, full.gather(1, expected_ids))


def test_top_k_items_pad_users_with_too_few_items_left() -> None:
    user_emb, item_emb = _one_user([4, 3, 2, 1], item0_score=100.0)
    scores, item_ids = top_k_items(user_emb, item_emb, k=3, history=torch.tensor([[1, 3, 4]]), item_chunk_size=2)
    assert item_ids.tolist() == [[2, 0, 0]]
    assert scores.tolist() == [[3.0, -math.inf, -math.inf]]


@pytest.mark.parametrize(
    ("target", "history", "exclude_history", "message"),
    [
        (0, [[1]], True, "item 0 is padding"),
        (5, [[1]], True, r"1\.\.4"),
        (1, None, True, "needs the history"),
    ],
    ids=["padding_target", "target_beyond_table", "missing_history"],
)
def test_invalid_inputs_are_refused(target: int, history, exclude_history: bool, message: str) -> None:
    user_emb, item_emb = _one_user([4, 3, 2, 1], item0_score=0.0)
    history = None if history is None else torch.tensor(history)
    with pytest.raises(ValueError, match=message):
        target_rank_counts(user_emb, item_emb, torch.tensor([target]), history, exclude_history)


@pytest.mark.parametrize("ks", [(), (0, 10), (10, 10)], ids=["empty", "zero", "duplicate"])
def test_invalid_cut_offs_are_refused(ks: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="ks must be"):
        RankingMetrics(ks=ks)


DDP_KS = (1, 3, 10)
# Rank 0 gets 3 users in one batch; rank 1 gets 5 users in two batches. Per-rank means would be averaged
# with equal weights, the global mean weights every user once.
DDP_SHARDS = {0: [slice(0, 3)], 1: [slice(3, 5), slice(5, 8)]}


def _ddp_case() -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(3)
    user_emb = torch.randn(8, 4, generator=generator)
    item_emb = torch.randn(16, 4, generator=generator)
    target = torch.randint(1, 16, (8,), generator=generator)
    history = torch.randint(0, 16, (8, 4), generator=generator)
    return user_emb, item_emb, target, history


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        user_emb, item_emb, target, history = _ddp_case()
        metric = RankingMetrics(ks=DDP_KS, item_chunk_size=4)
        for users in DDP_SHARDS[rank]:
            metric.update(user_emb[users], item_emb, target[users], history[users])
        torch.save(metric.compute(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_one_process_with_all_users(tmp_path) -> None:
    user_emb, item_emb, target, history = _ddp_case()
    single = RankingMetrics(ks=DDP_KS, item_chunk_size=4)
    single.update(user_emb, item_emb, target, history)
    expected = single.compute()

    per_rank = {}
    for rank, shards in DDP_SHARDS.items():
        local = RankingMetrics(ks=DDP_KS, item_chunk_size=4)
        for users in shards:
            local.update(user_emb[users], item_emb, target[users], history[users])
        per_rank[rank] = local.compute()
    mean_of_means = {name: (per_rank[0][name] + per_rank[1][name]) / 2 for name in expected if name != "users"}
    assert any(not torch.isclose(mean_of_means[name], expected[name]) for name in mean_of_means), (
        "the shards must make per-rank averaging distinguishable from the exact result"
    )

    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)

    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert set(result) == set(expected)
        assert result["users"] == 8
        for name, value in expected.items():
            assert result[name].item() == pytest.approx(value.item(), abs=1e-12), (rank, name)
