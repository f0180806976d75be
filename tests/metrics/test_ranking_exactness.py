"""The one-matmul metric equals the two-pass one it replaced, bit for bit, and non-finite scores never help.

The reference below is the earlier ``target_rank_counts``: a first pass over the item chunks takes each
target's score from its chunk's matmul, a second pass recomputes every chunk and counts, over all
candidates, those above and those tied. The metric's sums must equal the reference's exactly (not
approximately) on random data, on exact ties and on all-equal scores, with and without histories.
"""

import math

import pytest
import torch

import molar_lightning.metrics.ranking as ranking
from molar_lightning.metrics.ranking import RankingMetrics, expected_metrics

KS = (1, 5, 10, 20)


def _reference_counts(user_emb, item_emb, target, history, exclude_history, chunk):
    """The two-pass count of the earlier metric (finite scores only)."""
    num_items = item_emb.shape[0] - 1
    bounds = [(start, min(start + chunk, num_items + 1)) for start in range(1, num_items + 1, chunk)]
    target_score = torch.zeros(len(target))
    for start, end in bounds:
        scores = user_emb @ item_emb[start:end].T
        in_chunk = (target >= start) & (target < end)
        column = (target - start).clamp(0, end - start - 1)
        target_score = torch.where(in_chunk, scores.gather(1, column[:, None]).squeeze(1), target_score)
    greater, ties = torch.zeros_like(target), torch.zeros_like(target)
    for start, end in bounds:
        scores = user_emb @ item_emb[start:end].T
        ids = torch.arange(start, end)
        candidate = ids != target[:, None]
        if exclude_history:
            candidate &= ~(ids[None, :, None] == history[:, None, :]).any(-1)
        greater += ((scores > target_score[:, None]) & candidate).sum(1)
        ties += ((scores == target_score[:, None]) & candidate).sum(1)
    return greater, ties


def _reference_sums(user_emb, item_emb, target, history, exclude_history, chunk) -> torch.Tensor:
    values = expected_metrics(*_reference_counts(user_emb, item_emb, target, history, exclude_history, chunk), KS)
    return torch.stack([torch.stack([values[f"{name}@{k}"].sum() for k in KS]) for name in ranking.METRIC_NAMES])


def _case(kind: str, seed: int = 0, users: int = 40, items: int = 300, dim: int = 8):
    generator = torch.Generator().manual_seed(seed)
    if kind == "random":
        user_emb = torch.randn(users, dim, generator=generator)
        item_emb = torch.randn(items + 1, dim, generator=generator)
    elif kind == "integer_ties":  # scores are small exact integers: ties everywhere, some past the kept depth
        user_emb = torch.randint(-1, 2, (users, 2), generator=generator).float()
        item_emb = torch.randint(-1, 2, (items + 1, 2), generator=generator).float()
    else:  # all_equal: every item scores the same for a user
        user_emb, item_emb = torch.randn(users, dim, generator=generator), torch.ones(items + 1, dim)
    target = torch.randint(1, items + 1, (users,), generator=generator)
    history = torch.randint(0, items + 1, (users, 12), generator=generator)
    history[: users // 4, 0] = target[: users // 4]  # some targets are in their own history
    return user_emb, item_emb, target, history


@pytest.mark.parametrize("exclude_history", [True, False], ids=["exclude_history", "keep_history"])
@pytest.mark.parametrize("chunk", [7, 64, 1000], ids=["chunk7", "chunk64", "one_chunk"])
@pytest.mark.parametrize("kind", ["random", "integer_ties", "all_equal"])
def test_the_metric_equals_the_two_pass_reference_exactly(kind: str, chunk: int, exclude_history: bool) -> None:
    user_emb, item_emb, target, history = _case(kind)
    metric = RankingMetrics(ks=KS, exclude_history=exclude_history, item_chunk_size=chunk)
    metric.update(user_emb, item_emb, target, history)
    assert torch.equal(metric.sums, _reference_sums(user_emb, item_emb, target, history, exclude_history, chunk))
    assert metric.compute()["nonfinite_users"] == 0


def test_all_equal_scores_give_the_random_ranking_value() -> None:
    num_items = 300
    user_emb, item_emb, target, _ = _case("all_equal", items=num_items)
    metric = RankingMetrics(ks=KS, exclude_history=False, item_chunk_size=64)
    metric.update(user_emb, item_emb, target)
    values = metric.compute()
    for k in KS:  # the target's rank is uniform on 0 .. num_items - 1
        assert values[f"hit@{k}"].item() == pytest.approx(k / num_items, abs=1e-12)
        assert values[f"ndcg@{k}"].item() == pytest.approx(sum(1 / math.log2(r + 2) for r in range(k)) / num_items)


def _counting_exact_pass(monkeypatch) -> list[int]:
    """Users sent to the second, exact pass, per call."""
    calls, exact = [], ranking._exact_counts

    def counted(*args):
        calls.append(len(args[-1]))
        return exact(*args)

    monkeypatch.setattr(ranking, "_exact_counts", counted)
    return calls


def test_random_scores_take_one_matmul_per_chunk_and_ties_past_the_depth_a_second(monkeypatch) -> None:
    calls = _counting_exact_pass(monkeypatch)
    metric = RankingMetrics(ks=KS, item_chunk_size=64)
    metric.update(*_case("random"))
    assert calls == [], "users of random scores are settled by the kept best scores"
    metric.update(*_case("all_equal"))
    assert calls == [40], "all-equal scores tie past max(ks): every user is counted exactly"


NONFINITE = {"nan": math.nan, "inf": math.inf, "minus_inf": -math.inf}


@pytest.mark.parametrize("value", NONFINITE.values(), ids=NONFINITE.keys())
@pytest.mark.parametrize("where", ["user_rows", "target_rows"])
def test_nonfinite_users_and_targets_score_below_a_random_ranking(where: str, value: float) -> None:
    user_emb, item_emb, target, history = _case("random")
    if where == "user_rows":
        user_emb[:] = value
    else:
        item_emb[target] = value
    metric = RankingMetrics(ks=KS, item_chunk_size=64)
    metric.update(user_emb, item_emb, target, history)
    random_ranking = RankingMetrics(ks=KS, item_chunk_size=64)  # every item scores the same
    random_ranking.update(torch.ones(len(target), 1), torch.ones(len(item_emb), 1), target, history)

    assert (random_ranking.sums > 0).all(), "the case must leave a random ranking something to beat"
    assert torch.equal(metric.sums, torch.zeros_like(metric.sums)), "the worst rank of 300 is past every cut-off"
    assert metric.compute()["nonfinite_users"] == len(target)


@pytest.mark.parametrize("value", NONFINITE.values(), ids=NONFINITE.keys())
def test_nonfinite_items_rank_as_if_they_were_not_candidates(value: float) -> None:
    user_emb, item_emb, target, history = _case("random")
    broken = torch.tensor([i for i in range(1, len(item_emb), 3) if i not in set(target.tolist())])
    item_emb[broken] = value
    metric = RankingMetrics(ks=KS, item_chunk_size=64)
    metric.update(user_emb, item_emb, target, history)

    # Below every finite target, they change no count: as if every user had them in the excluded history.
    without = torch.cat([history, broken.expand(len(target), -1)], dim=1)
    finite_items = item_emb.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    assert torch.equal(metric.sums, _reference_sums(user_emb, finite_items, target, without, True, 64))
    assert 0 < metric.compute()["nonfinite_users"] <= len(target)  # users that met a NaN or +inf score


def test_an_item_scoring_nan_or_inf_is_never_above_the_target() -> None:
    # Items 1..4 score 4, 3, 2, 1; target item 3. Item 1 scores NaN and item 2 +inf: both drop below it.
    user_emb, item_emb = torch.ones(1, 1), torch.tensor([[0.0], [math.nan], [math.inf], [2.0], [1.0]])
    counts = ranking.target_rank_counts(user_emb, item_emb, torch.tensor([3]), exclude_history=False, depth=2)
    assert (counts.greater.item(), counts.ties.item(), counts.nonfinite.item()) == (0, 0, True)


def test_a_nonfinite_target_gets_the_worst_rank() -> None:
    user_emb, item_emb = torch.ones(1, 1), torch.tensor([[0.0], [1.0], [math.nan], [1.0], [0.5]])
    counts = ranking.target_rank_counts(user_emb, item_emb, torch.tensor([2]), torch.tensor([[4, 0]]), depth=10)
    assert (counts.greater.item(), counts.ties.item(), counts.nonfinite.item()) == (2, 0, True)  # items 1 and 3


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth must be"):
        ranking.target_rank_counts(torch.ones(1, 1), torch.ones(3, 1), torch.tensor([1]), exclude_history=False,
                                   depth=0)


def test_recommendations_leave_out_items_scoring_nan_or_inf() -> None:
    user_emb, item_emb = torch.ones(2, 1), torch.tensor([[0.0], [1.0], [math.nan], [3.0], [math.inf], [2.0]])
    user_emb[1] = math.nan  # a diverged user: nothing is recommendable
    scores, item_ids = ranking.top_k_items(user_emb, item_emb, k=4, item_chunk_size=2)
    assert item_ids.tolist() == [[3, 5, 1, 0], [0, 0, 0, 0]]
    assert scores[0, :3].tolist() == [3.0, 2.0, 1.0] and (scores[:, 3] == -math.inf).all()
