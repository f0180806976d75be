"""Shared fixtures for the ID models: a small learnable sequence set and a train-then-rank helper.

Every user walks a hidden successor map ``i -> next(i)`` with 15% random jumps, so the next item is
predictable from the last one, while item popularity is close to uniform and predicts little.
"""

from dataclasses import dataclass
from typing import Callable, Iterator, List

import pytest
import numpy as np
import torch
from torch import nn

from molar_lightning.data.collate import left_pad
from molar_lightning.data.same_target import SameTargetPrefixes

NUM_ITEMS = 40
NUM_USERS = 300
MAX_LEN = 20  # columns of every padded batch; each user has 12..21 items in all, the last one held out
JUMP_PROB = 0.15


@dataclass
class SyntheticSequences:
    """Left-padded tensors, one row per user.

    Attributes:
        num_items: items are ``1..num_items``.
        num_users: rows, and users ``0..num_users-1``.
        train_seq: ``[U, L]`` every item but the last two.
        train_targets: ``[U, L]`` the item after each position of ``train_seq``; 0 at padding.
        positive_seq: ``[U, L]`` another user's ``train_seq`` with the same last target (DuoRec's view of the last
            position).
        prefixes: draws, per user, a same-target training prefix for each position of ``train_seq`` (DuoRec's
            views of every position, as the DataModule draws them).
        eval_seq: ``[U, L]`` every item but the held-out last one; also the history excluded from ranking.
        eval_target: ``[U]`` the held-out last item.
        user_ids: ``[U]`` 0-based user ids.
    """

    num_items: int
    num_users: int
    train_seq: torch.Tensor
    train_targets: torch.Tensor
    positive_seq: torch.Tensor
    prefixes: SameTargetPrefixes
    eval_seq: torch.Tensor
    eval_target: torch.Tensor
    user_ids: torch.Tensor


@dataclass
class TrainResult:
    """What :func:`fit_and_rank` measured: mean loss over the first and last 20 steps, and test NDCG@10."""

    first_loss: float
    last_loss: float
    ndcg: float


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run each test on one intra-op thread: these models are tiny, and on a shared 2-core machine two
    spinning threads per process made the training tests up to 7x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _left_pad(rows: List[List[int]], length: int) -> torch.Tensor:
    return torch.tensor([[0] * (length - len(row)) + row for row in rows])


@pytest.fixture(scope="session")
def synthetic() -> SyntheticSequences:
    """The seeded sequence set, generated once per session (about 0.1 s)."""
    generator = torch.Generator().manual_seed(0)
    successor = torch.randperm(NUM_ITEMS, generator=generator) + 1
    sequences = []
    for _ in range(NUM_USERS):
        length = int(torch.randint(12, MAX_LEN + 2, (1,), generator=generator))
        items = [int(torch.randint(1, NUM_ITEMS + 1, (1,), generator=generator))]
        while len(items) < length:
            if float(torch.rand(1, generator=generator)) < JUMP_PROB:
                items.append(int(torch.randint(1, NUM_ITEMS + 1, (1,), generator=generator)))
            else:
                items.append(int(successor[items[-1] - 1]))
        sequences.append(items)
    train_seq = _left_pad([items[:-2] for items in sequences], MAX_LEN)
    train_targets = _left_pad([items[1:-1] for items in sequences], MAX_LEN)
    last_targets = train_targets[:, -1]
    same_target = last_targets[:, None] == last_targets[None, :]
    itself = torch.eye(NUM_USERS, dtype=torch.bool)
    # Another user with the same last target; a user with none is its own positive.
    lonely = same_target.sum(1, keepdim=True) == 1
    candidates = same_target & (~itself | lonely)
    partner = torch.multinomial(candidates.float(), 1, generator=generator).squeeze(1)
    lengths = np.array([len(items) for items in sequences])
    starts = np.cumsum(lengths) - lengths
    prefixes = SameTargetPrefixes(np.concatenate(sequences), starts, starts + lengths - 2, "all")
    return SyntheticSequences(
        num_items=NUM_ITEMS,
        num_users=NUM_USERS,
        train_seq=train_seq,
        train_targets=train_targets,
        positive_seq=train_seq[partner],
        prefixes=prefixes,
        eval_seq=_left_pad([items[:-1] for items in sequences], MAX_LEN),
        eval_target=torch.tensor([items[-1] for items in sequences]),
        user_ids=torch.arange(NUM_USERS),
    )


def _ndcg_at_10(scores: torch.Tensor, target: torch.Tensor, history: torch.Tensor) -> float:
    """Mean NDCG@10 of one held-out item per row; padding and history items other than the target never rank."""
    scores = scores.clone()
    target_scores = scores.gather(1, target[:, None])
    scores.scatter_(1, history, float("-inf"))
    scores[:, 0] = float("-inf")
    scores.scatter_(1, target[:, None], target_scores)
    rank = (scores > target_scores).sum(1)
    gain = 1.0 / torch.log2(rank.float() + 2.0)
    return float(torch.where(rank < 10, gain, torch.zeros_like(gain)).mean())


@pytest.fixture(scope="session")
def popularity_ndcg(synthetic: SyntheticSequences) -> float:
    """NDCG@10 of ranking by how often each item appears in the training histories (ties count as wins)."""
    counts = torch.bincount(synthetic.eval_seq.flatten(), minlength=NUM_ITEMS + 1).float()
    scores = counts.expand(NUM_USERS, -1)
    return _ndcg_at_10(scores, synthetic.eval_target, synthetic.eval_seq)


@pytest.fixture(scope="session")
def fit_and_rank(synthetic: SyntheticSequences) -> Callable[..., TrainResult]:
    """Train an encoder with Adam on mini-batches of users, then rank every item for each user's last one.

    The loop mirrors the sequential task: the loss over every non-padding position, plus the encoder's
    ``auxiliary_loss`` (DuoRec's) when it has one, given the positives its ``positions`` read.
    """

    def run(
        encoder: nn.Module, loss: nn.Module, steps: int = 150, lr: float = 5e-3, batch_size: int = 64
    ) -> TrainResult:
        torch.manual_seed(0)
        optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
        losses = []
        encoder.train()
        for _ in range(steps):
            rows = torch.randint(0, NUM_USERS, (batch_size,))
            item_seq, targets = synthetic.train_seq[rows], synthetic.train_targets[rows]
            mask = item_seq != 0
            states = encoder.sequence_states(item_seq, mask, synthetic.user_ids[rows])
            value = loss(states[targets != 0], targets[targets != 0], encoder.item_embeddings())
            if encoder.auxiliary_loss is not None:
                positive_seq = synthetic.positive_seq[rows]
                if encoder.auxiliary_loss.positions == "all":
                    positive_seq = left_pad([prefix for row in rows for prefix in synthetic.prefixes.positives(int(row))])
                value = value + encoder.auxiliary_loss(encoder, item_seq, mask, states, positive_seq, targets)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            losses.append(value.item())
        encoder.eval()
        with torch.no_grad():
            user = encoder.encode_sequence(synthetic.eval_seq, synthetic.eval_seq != 0, synthetic.user_ids)
            scores = user @ encoder.item_embeddings().T
        ndcg = _ndcg_at_10(scores, synthetic.eval_target, synthetic.eval_seq)
        return TrainResult(sum(losses[:20]) / 20, sum(losses[-20:]) / 20, ndcg)

    return run


@pytest.fixture
def check_causal(synthetic: SyntheticSequences) -> Callable[[nn.Module], None]:
    """Assert, in eval mode on 8 padded users, that changing the item at a position changes that
    position's state and no earlier one (padded positions included)."""

    def check(encoder: nn.Module) -> None:
        encoder.eval()
        item_seq, user_ids = synthetic.eval_seq[:8], synthetic.user_ids[:8]
        position = MAX_LEN - 5  # every user has at least 11 items, so this column is real in every row
        changed = item_seq.clone()
        changed[:, position] = changed[:, position] % NUM_ITEMS + 1
        with torch.no_grad():
            before = encoder.sequence_states(item_seq, item_seq != 0, user_ids)
            after = encoder.sequence_states(changed, changed != 0, user_ids)
        torch.testing.assert_close(after[:, :position], before[:, :position], rtol=0, atol=1e-6)
        difference = (after[:, position] - before[:, position]).abs().amax(-1)
        assert bool((difference > 1e-4).all()), f"state at the changed position moved only by {difference}"

    return check


@pytest.fixture
def check_padding_invariant(synthetic: SyntheticSequences) -> Callable[[nn.Module], None]:
    """Assert, in eval mode on 8 users, that 7 more columns of left padding leave the user embedding and
    every real position's state unchanged."""

    def check(encoder: nn.Module) -> None:
        encoder.eval()
        item_seq, user_ids = synthetic.eval_seq[:8], synthetic.user_ids[:8]
        padded = torch.cat([item_seq.new_zeros(8, 7), item_seq], dim=1)
        with torch.no_grad():
            short = encoder.sequence_states(item_seq, item_seq != 0, user_ids)
            long = encoder.sequence_states(padded, padded != 0, user_ids)[:, 7:]
            user_short = encoder.encode_sequence(item_seq, item_seq != 0, user_ids)
            user_long = encoder.encode_sequence(padded, padded != 0, user_ids)
        torch.testing.assert_close(user_long, user_short, rtol=0, atol=1e-5)
        real = item_seq != 0
        torch.testing.assert_close(long[real], short[real], rtol=0, atol=1e-5)

    return check
