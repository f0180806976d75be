"""DuoRec: the SASRec encoder unchanged, and its contrastive regulariser (``losses.DuoRecContrastiveLoss``, its
``auxiliary_loss``) checked against the authors' formula written out here in plain loops.

The authors' code (RuihongQiu/DuoRec, ``duorec.py``): the views of ``N`` samples are stacked as
``z = [z_i; z_j]``; the similarity of views ``a`` and ``b`` is ``z_a . z_b / tau`` (or their cosine over
``tau``); row ``a``'s positive is its partner ``a +- N``, its negatives every ``b`` that
``mask_correlated_samples`` keeps (all but ``a`` itself and its partner), and the loss is the mean over the
``2N`` rows of ``-log(exp(pos) / (exp(pos) + sum exp(neg)))``.
"""

import math
from collections import Counter

import pytest
import torch

from molar_lightning.data.collate import left_pad
from molar_lightning.losses import (DuoRecContrastiveLoss, FullSoftmaxCrossEntropy, encode_by_length, info_nce,
                                   same_target_partners)
from molar_lightning.models.id.duorec import DuoRec
from molar_lightning.models.id.sasrec import SASRec
from molar_lightning.user_error import SettingError

TINY = dict(max_seq_len=32, hidden_size=32, inner_size=64, dropout=0.2, attention_dropout=0.2)
OPTIONS = [(similarity, negatives) for similarity in ("dot", "cos") for negatives in ("authors", "drop_same_target")]


def authors_mask(samples: int) -> list[list[bool]]:
    """``mask_correlated_samples(N)``: True where a view is a negative of a row."""
    views = 2 * samples
    mask = [[True] * views for _ in range(views)]
    for view in range(views):
        mask[view][view] = False
    for sample in range(samples):
        mask[sample][samples + sample] = False
        mask[samples + sample][sample] = False
    return mask


def by_hand(first, second, temperature, similarity, targets=None):
    """The authors' InfoNCE, one number at a time; ``targets`` also drops same-target views (the option)."""
    samples = len(first)
    views = [first[row] for row in range(samples)] + [second[row] for row in range(samples)]
    mask = authors_mask(samples)

    def sim(a, b):
        dot = sum(float(x) * float(y) for x, y in zip(views[a], views[b]))
        if similarity == "cos":
            dot /= math.sqrt(sum(float(x) ** 2 for x in views[a])) * math.sqrt(sum(float(y) ** 2 for y in views[b]))
        return dot / temperature

    total = 0.0
    for row in range(2 * samples):
        partner = (row + samples) % (2 * samples)
        negatives = [col for col in range(2 * samples) if mask[row][col]
                     and (targets is None or targets[col % samples] != targets[row % samples])]
        logits = [sim(row, partner)] + [sim(row, col) for col in negatives]
        top = max(logits)
        total += -(logits[0] - top - math.log(sum(math.exp(logit - top) for logit in logits)))
    return total / (2 * samples)


def tiny_duorec(**options) -> DuoRec:
    """Without dropout, so the second pass equals the encoder's own pass and the views can be recomputed."""
    torch.manual_seed(0)
    return DuoRec(10, max_seq_len=4, hidden_size=8, num_heads=2, inner_size=16, dropout=0.0, attention_dropout=0.0,
                  **options).train()


@pytest.fixture
def windows():
    """Three causal windows whose 9 targets are each alone (2, 8, 9) or in a pair (3, 4, 5), so every
    same-target draw is forced: ``item_seq``, ``target_seq``, ``positive_seq`` (per last target) and the pairs."""
    item_seq = torch.tensor([[1, 2, 3, 4], [0, 7, 8, 4], [0, 0, 6, 3]])
    target_seq = torch.tensor([[2, 3, 4, 5], [0, 8, 4, 9], [0, 0, 3, 5]])
    positive_seq = item_seq[[2, 1, 0]]  # rows 0 and 2 share the last target 5; row 1 is alone with 9
    return item_seq, target_seq, positive_seq


def position_prefixes(item_seq: torch.Tensor, target_seq: torch.Tensor) -> list[torch.Tensor]:
    """Each position with a target, row by row: its window's items up to it (what its state reads)."""
    return [row[row != 0][:column + 1 - int((row == 0).sum())]
            for row, targets in zip(item_seq, target_seq) for column in range(len(row)) if targets[column]]


def the_other_with_its_target(targets: torch.Tensor) -> torch.Tensor:
    """For targets alone or in pairs: the other one of the pair, or the entry itself."""
    return torch.tensor([next((col for col in range(len(targets)) if col != row and targets[col] == targets[row]),
                              row) for row in range(len(targets))])


@pytest.fixture
def model(synthetic) -> DuoRec:
    torch.manual_seed(0)
    return DuoRec(synthetic.num_items, **TINY)


def test_encoder_is_sasrec(synthetic) -> None:
    item_seq = synthetic.train_seq[:8]
    torch.manual_seed(0)
    sasrec = SASRec(synthetic.num_items, **TINY).eval()
    torch.manual_seed(0)
    duorec = DuoRec(synthetic.num_items, **TINY).eval()
    assert isinstance(duorec, SASRec)
    assert isinstance(duorec.auxiliary_loss, DuoRecContrastiveLoss) and sasrec.auxiliary_loss is None
    assert duorec.state_dict().keys() == sasrec.state_dict().keys()
    torch.testing.assert_close(duorec.encode_sequence(item_seq, item_seq != 0),
                               sasrec.encode_sequence(item_seq, item_seq != 0))


def test_defaults_are_the_authors() -> None:
    loss = DuoRec(10).auxiliary_loss
    assert (loss.weight, loss.temperature, loss.similarity, loss.positions, loss.positives, loss.negatives,
            loss.group_size) == (0.1, 1.0, "dot", "all", "data", "authors", 256)


def test_is_causal(model, check_causal) -> None:
    check_causal(model)


def test_left_padding_changes_nothing(model, check_padding_invariant) -> None:
    check_padding_invariant(model)


@pytest.mark.parametrize("similarity, negatives", OPTIONS)
def test_info_nce_is_the_authors_formula(similarity, negatives) -> None:
    torch.manual_seed(0)
    first, second = torch.randn(4, 8), torch.randn(4, 8)
    targets = torch.tensor([5, 5, 7, 8]) if negatives == "drop_same_target" else None
    expected = by_hand(first, second, 0.5, similarity, targets)
    torch.testing.assert_close(info_nce(first, second, 0.5, similarity, targets), torch.tensor(expected))


def test_negatives_are_all_other_views_but_the_partner_as_in_the_authors_mask() -> None:
    """With all similarities 0, a row's loss is log(1 + its negatives): 2N - 2 = 4 negatives per row with the
    authors' mask; with same-target views dropped, 2 for the two samples sharing target 5 and 4 for the other."""
    views = torch.zeros(3, 8)
    torch.testing.assert_close(info_nce(views, views, 1.0, "dot"), torch.tensor(math.log(5)))
    dropped = info_nce(views, views, 1.0, "dot", torch.tensor([5, 5, 7]))
    torch.testing.assert_close(dropped, torch.tensor((4 * math.log(3) + 2 * math.log(5)) / 6))


def test_same_target_partners_draw_another_entry_uniformly() -> None:
    targets = torch.tensor([5, 3, 5, 7, 3, 5, 9])
    torch.manual_seed(0)
    draws = Counter()
    for _ in range(1000):
        partners = same_target_partners(targets)
        assert torch.equal(targets[partners], targets)
        draws.update((row, int(col)) for row, col in enumerate(partners))
    assert draws[(1, 4)] == draws[(4, 1)] == draws[(3, 3)] == draws[(6, 6)] == 1000  # a pair, and entries alone
    for row, others in ((0, (2, 5)), (2, (0, 5)), (5, (0, 2))):  # three entries share 5: never the entry itself
        assert draws[(row, row)] == 0 and all(400 < draws[(row, col)] < 600 for col in others)


@pytest.mark.parametrize("positives", ["data", "batch"])
@pytest.mark.parametrize("similarity, negatives", OPTIONS)
def test_every_position_loss_equals_the_hand_value(windows, similarity, negatives, positives) -> None:
    """positions=all: every position with a target is a sample; its anchor is the second pass at that position.
    Its positive is, with positives=data (the authors'), the state of positive_seq's row for it, here the prefix
    of the other position with its target (itself when alone): causal states make that prefix's state the
    window's state there. With positives=batch it is the main pass's state at that other position."""
    item_seq, target_seq, _ = windows
    has_target = target_seq != 0
    targets = target_seq[has_target]
    assert len(targets) == 9
    partners = the_other_with_its_target(targets)
    positive_seq = None
    if positives == "data":
        prefixes = position_prefixes(item_seq, target_seq)
        positive_seq = left_pad([prefixes[int(partner)].numpy() for partner in partners])
    model = tiny_duorec(similarity=similarity, negatives=negatives, contrastive_weight=0.3, positives=positives)
    with torch.no_grad():
        second_pass = model.sequence_states(item_seq, item_seq != 0)
        main_pass = second_pass + torch.linspace(-1.0, 1.0, 8)  # unlike the second pass, to tell them apart
        loss = model.auxiliary_loss(model, item_seq, item_seq != 0, main_pass, positive_seq, target_seq)
    positive_states = second_pass if positives == "data" else main_pass
    expected = 0.3 * by_hand(second_pass[has_target], positive_states[has_target][partners], 1.0, similarity,
                             targets if negatives == "drop_same_target" else None)
    torch.testing.assert_close(loss, torch.tensor(expected))


@pytest.mark.parametrize("similarity, negatives", OPTIONS)
def test_last_position_loss_equals_the_hand_value(windows, similarity, negatives) -> None:
    """positions=last: one sample per window, the second pass's last state against positive_seq's."""
    item_seq, target_seq, positive_seq = windows
    model = tiny_duorec(similarity=similarity, negatives=negatives, positions="last")
    with torch.no_grad():
        states = model.sequence_states(item_seq, item_seq != 0)
        loss = model.auxiliary_loss(model, item_seq, item_seq != 0, states + 5.0, positive_seq, target_seq)
        positives = model.sequence_states(positive_seq, positive_seq != 0)[:, -1]
    expected = 0.1 * by_hand(states[:, -1], positives, 1.0, similarity,
                             target_seq[:, -1] if negatives == "drop_same_target" else None)
    torch.testing.assert_close(loss, torch.tensor(expected))


@pytest.mark.parametrize("positions", ["all", "last"])
def test_a_middle_position_counts_only_when_every_position_is_a_sample(windows, positions) -> None:
    item_seq, target_seq, positive_seq = windows
    model = tiny_duorec(positions=positions, positives="batch")
    with torch.no_grad():
        states = model.sequence_states(item_seq, item_seq != 0)
        moved = states.clone()
        moved[0, 1] += torch.linspace(-1.0, 1.0, 8)  # window 0, position 1: target 3, as window 2's position 2
        before = model.auxiliary_loss(model, item_seq, item_seq != 0, states, positive_seq, target_seq)
        after = model.auxiliary_loss(model, item_seq, item_seq != 0, moved, positive_seq, target_seq)
    assert (before != after) == (positions == "all")


def test_samples_are_contrasted_in_random_groups(windows) -> None:
    """With groups of at most 2, the 4 samples of two windows split into two pairs, each its own InfoNCE; the
    loss is one of the three partitions' means, and different draws give different partitions."""
    item_seq, target_seq = windows[0][:1], windows[1][:1]  # targets 2, 3, 4, 5: all alone, their own positives
    model = tiny_duorec(contrastive_group_size=2, positives="batch")
    with torch.no_grad():
        states = model.sequence_states(item_seq, item_seq != 0)[0]
        main_pass = states + torch.linspace(-2.0, 2.0, 8)
        partitions = [((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))]
        by_partition = [0.1 * sum(by_hand(states[list(pair)], main_pass[list(pair)], 1.0, "dot") for pair in groups) / 2
                        for groups in partitions]
        seen = set()
        for seed in range(12):
            torch.manual_seed(seed)
            loss = float(model.auxiliary_loss(model, item_seq, item_seq != 0, main_pass[None], None, target_seq))
            matches = [index for index, value in enumerate(by_partition) if value == pytest.approx(loss, rel=1e-4)]
            assert len(matches) == 1, (loss, by_partition)
            seen.add(matches[0])
    assert len(seen) > 1


def test_auxiliary_loss_is_positive_and_trains_the_encoder(synthetic) -> None:
    """positions=last with the data's positive windows, so that all three passes carry gradient."""
    item_seq, targets = synthetic.train_seq[:8], synthetic.train_targets[:8]
    model = DuoRec(synthetic.num_items, **TINY, positions="last").train()
    states = model.sequence_states(item_seq, item_seq != 0)
    loss = model.auxiliary_loss(model, item_seq, item_seq != 0, states, synthetic.positive_seq[:8], targets)
    loss.backward()
    assert loss.ndim == 0 and bool(torch.isfinite(loss)) and loss.item() > 0
    assert float(model.item_embedding.weight.grad.abs().sum()) > 0
    assert float(model.transformer.blocks[0].qkv.weight.grad.abs().sum()) > 0


def test_zero_weight_gives_zero_loss(synthetic) -> None:
    item_seq, targets = synthetic.train_seq[:8], synthetic.train_targets[:8]
    model = DuoRec(synthetic.num_items, **TINY, contrastive_weight=0.0, positives="batch").train()
    states = model.sequence_states(item_seq, item_seq != 0)
    assert model.auxiliary_loss(model, item_seq, item_seq != 0, states, None, targets).item() == 0.0


@pytest.mark.parametrize("setting", [{"similarity": "euclid"}, {"positions": "first"}, {"negatives": "none"},
                                     {"positives": "memory"},
                                     {"contrastive_group_size": 1}], ids=lambda setting: next(iter(setting)))
def test_rejects_an_unknown_setting(setting) -> None:
    with pytest.raises(SettingError, match=repr(next(iter(setting.values()))).strip("'")):
        DuoRec(10, **setting)


@pytest.mark.parametrize("positions, given", [("all", None), ("all", 3), ("last", None), ("last", 9)])
def test_the_datas_positives_must_give_one_prefix_per_sample(windows, positions, given) -> None:
    """9 positions with a target in 3 windows: positions=all needs 9 positive rows, last needs 3; the message
    names the DataModule setting that gives them."""
    item_seq, target_seq, _ = windows
    model = tiny_duorec(positions=positions)
    positive_seq = None if given is None else torch.ones(given, 2, dtype=torch.long)
    with pytest.raises(SettingError, match=f"same_target_positives: {positions}"):
        model.auxiliary_loss(model, item_seq, item_seq != 0, model.sequence_states(item_seq, item_seq != 0),
                             positive_seq, target_seq)


@pytest.mark.parametrize("options", [{}, {"positions": "last"}, {"positives": "batch"}],
                         ids=["defaults", "last-data", "all-batch"])
def test_learns_the_transitions_with_the_regulariser(synthetic, fit_and_rank, popularity_ndcg, options) -> None:
    torch.manual_seed(0)
    model = DuoRec(synthetic.num_items, **TINY, **options)
    result = fit_and_rank(model, FullSoftmaxCrossEntropy(), steps=100)
    assert result.last_loss < 0.6 * result.first_loss
    assert result.ndcg > popularity_ndcg + 0.5, (result.ndcg, popularity_ndcg)


@pytest.mark.parametrize("groups", [1, 3, 4, 40])
def test_positives_encoded_by_length_equal_one_padded_call(groups) -> None:
    """The third pass runs its prefixes in groups of similar length, each cut to its longest: the states equal
    one call over the whole padded batch, row for row, whatever the number of groups (more than rows too)."""
    torch.manual_seed(0)
    model = SASRec(50, **TINY).eval()
    lengths = [7, 1, 30, 2, 2, 18, 30, 5, 11, 1, 24, 9]
    item_seq = left_pad([torch.randint(1, 51, (length,)).numpy() for length in lengths])
    item_seq = torch.nn.functional.pad(item_seq, (32 - item_seq.shape[1], 0))  # wider than the longest: cut too
    with torch.no_grad():
        expected = model.encode_sequence(item_seq, item_seq != 0)
        got = encode_by_length(model, item_seq, groups)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
