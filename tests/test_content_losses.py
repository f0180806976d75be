"""Molar's content losses against hand computation: HLLM-style InfoNCE (scale, masks by catalog id, collapse),
the paper's sampled BCE, and the symmetric user-level post-alignment InfoNCE (Eq. 4: both directions summed,
the same user's other windows masked, negatives gathered across processes)."""

import inspect
import math

import pytest
import torch

from molar_lightning.losses import (ContentInfoNCELoss, ContentNextItemLoss, EmbeddingCollapseError, SampledBCELoss,
                                    UserAlignmentLoss)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def alignment_by_hand(content: torch.Tensor, collaborative: torch.Tensor, users: list[int], tau: float) -> float:
    """Eq. 4 term by term: for each window, both directions' cross entropy over the windows of other users."""
    sims = [[cosine(c, d) / tau for d in collaborative.tolist()] for c in content.tolist()]
    count = len(users)
    total = 0.0
    for i in range(count):
        columns = [j for j in range(count) if j == i or users[j] != users[i]]
        total += -(sims[i][i] - math.log(sum(math.exp(sims[i][j]) for j in columns))) / count  # content -> ID
        total += -(sims[i][i] - math.log(sum(math.exp(sims[j][i]) for j in columns))) / count  # ID -> content
    return total


def test_alignment_sums_the_two_directions_of_a_3_user_batch() -> None:
    content = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.5]])
    collaborative = torch.tensor([[2.0, 0.1], [0.0, 1.0], [-0.3, -1.0]])
    tau = 0.07
    sims = [[cosine(c, d) / tau for d in collaborative.tolist()] for c in content.tolist()]
    content_to_id = [-(sims[i][i] - math.log(sum(math.exp(s) for s in sims[i]))) for i in range(3)]
    id_to_content = [-(sims[i][i] - math.log(sum(math.exp(sims[j][i]) for j in range(3)))) for i in range(3)]
    expected = sum(content_to_id) / 3 + sum(id_to_content) / 3  # summed, not averaged
    users = torch.arange(3)
    assert UserAlignmentLoss(tau)(content, collaborative, users).item() == pytest.approx(expected, rel=1e-5)
    # symmetric: swapping the two sides gives the same loss
    assert UserAlignmentLoss(tau)(collaborative, content, users).item() == pytest.approx(expected, rel=1e-5)


def test_alignment_never_uses_the_same_users_other_windows_as_negatives() -> None:
    """Windows 0 and 2 are the same user: neither is the other's negative, in either direction."""
    content = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.9, 0.2], [-1.0, 0.5]])
    collaborative = torch.tensor([[2.0, 0.1], [0.0, 1.0], [1.0, 0.5], [-0.3, -1.0]])
    users = [7, 3, 7, 5]
    value = UserAlignmentLoss(0.1)(content, collaborative, torch.tensor(users)).item()
    assert value == pytest.approx(alignment_by_hand(content, collaborative, users, 0.1), rel=1e-5)
    assert value != pytest.approx(alignment_by_hand(content, collaborative, [0, 1, 2, 3], 0.1), rel=1e-3)


ALIGN_CONTENT, ALIGN_COLLABORATIVE = torch.randn(12, 4, generator=torch.Generator().manual_seed(0)).split(6)
ALIGN_COLLABORATIVE = ALIGN_COLLABORATIVE + 0.5 * ALIGN_CONTENT  # partly aligned, so the loss is not flat
ALIGN_USERS = torch.tensor([0, 1, 2, 3, 1, 4])  # user 1 has a window in each process


def _two_rank_alignment(rank: int, folder: str, port: int) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    mine = slice(3 * rank, 3 * rank + 3)
    content = ALIGN_CONTENT[mine].clone().requires_grad_()
    collaborative = ALIGN_COLLABORATIVE[mine].clone().requires_grad_()
    loss = UserAlignmentLoss(0.1)(content, collaborative, ALIGN_USERS[mine])
    loss.backward()
    torch.save({"loss": loss.detach(), "content": content.grad, "collaborative": collaborative.grad},
               f"{folder}/rank{rank}.pt")
    dist.barrier()  # no process leaves while the other still talks to it (gloo aborts otherwise)
    dist.destroy_process_group()


def test_alignment_negatives_gathered_from_two_processes_equal_one_process_over_both_batches(tmp_path) -> None:
    """Each process scores its 3 windows against all 6; averaged over the processes, as DDP averages, loss and
    gradients equal one process's over the concatenated batch (user 1's two windows masked across processes)."""
    import torch.multiprocessing as mp

    mp.spawn(_two_rank_alignment, args=(str(tmp_path), free_port()), nprocs=2)
    content, collaborative = ALIGN_CONTENT.clone().requires_grad_(), ALIGN_COLLABORATIVE.clone().requires_grad_()
    single = UserAlignmentLoss(0.1)(content, collaborative, ALIGN_USERS)
    single.backward()
    assert single.item() == pytest.approx(alignment_by_hand(ALIGN_CONTENT, ALIGN_COLLABORATIVE,
                                                            ALIGN_USERS.tolist(), 0.1), rel=1e-5)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    assert (ranks[0]["loss"] + ranks[1]["loss"]).item() / 2 == pytest.approx(single.item(), rel=1e-5)
    for name, full in (("content", content.grad), ("collaborative", collaborative.grad)):
        torch.testing.assert_close(torch.cat([ranks[0][name], ranks[1][name]]) / 2, full)
    local = UserAlignmentLoss(0.1, across_ranks=False)  # per process, as before: 3 windows only
    assert ranks[0]["loss"].item() != pytest.approx(local(ALIGN_CONTENT[:3], ALIGN_COLLABORATIVE[:3],
                                                          ALIGN_USERS[:3]).item(), rel=1e-3)


def test_infonce_masks_the_users_items_and_near_duplicates() -> None:
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.001], [-1.0, 0.2]])
    states = torch.tensor([[0.9, 0.3], [0.1, 1.0]])
    targets = torch.tensor([1, 2])
    user_items = torch.tensor([[3, 0], [5, 1]])  # row 0 owns item 3, row 1 owns 5 and 1
    loss = ContentInfoNCELoss(num_negatives=8)
    torch.manual_seed(3)
    value = loss(states, targets, table, torch.arange(6), user_items, torch.arange(2))
    torch.manual_seed(3)
    negatives = torch.randint(1, 6, (8,)).tolist()
    scale = 1 / 0.07
    expected = 0.0
    for row in range(2):
        positive = scale * cosine(states[row].tolist(), table[targets[row]].tolist())
        logits = [positive]
        for item in negatives:
            owned = item in user_items[row].tolist() or item == targets[row].item()
            duplicate = cosine(table[targets[row]].tolist(), table[item].tolist()) > 0.99  # item 4 for target 1
            if not (owned or duplicate):
                logits.append(scale * cosine(states[row].tolist(), table[item].tolist()))
        expected += -(positive - math.log(sum(math.exp(x) for x in logits))) / 2
    assert 4 in negatives and 3 in negatives  # the draw exercises both masks
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert loss.scale.item() == pytest.approx(1 / 0.07)


def test_infonce_over_a_partial_table_reads_rows_by_catalog_id() -> None:
    """An end-to-end step's table holds some items only: targets and owned items are catalog ids, each
    negative is a row, and it is masked by the catalog id that row holds."""
    catalog = torch.randn(12, 3, generator=torch.Generator().manual_seed(1))
    catalog[0] = 0
    item_ids = torch.tensor([0, 2, 5, 7, 11])
    states = torch.randn(2, 3, generator=torch.Generator().manual_seed(2))
    targets, user_items = torch.tensor([5, 11]), torch.tensor([[2, 5], [7, 11]])
    torch.manual_seed(4)
    value = ContentInfoNCELoss(num_negatives=6)(states, targets, catalog[item_ids], item_ids, user_items,
                                                torch.arange(2))
    torch.manual_seed(4)
    negatives = item_ids[torch.randint(1, 5, (6,))].tolist()
    assert {2, 7} & set(negatives)  # some draws are another row's own items: masked for that row only
    expected = 0.0
    for row in range(2):
        target = targets[row].item()
        kept = [item for item in negatives if item not in user_items[row].tolist()
                and cosine(catalog[target].tolist(), catalog[item].tolist()) <= 0.99]
        logits = [cosine(states[row].tolist(), catalog[item].tolist()) / 0.07 for item in [target, *kept]]
        expected += -(logits[0] - math.log(sum(math.exp(x) for x in logits))) / 2
    assert value.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="not in the item table"):
        ContentInfoNCELoss()(states, torch.tensor([5, 6]), catalog[item_ids], item_ids, user_items, torch.arange(2))


def test_infonce_scale_is_clamped_at_100() -> None:
    loss = ContentInfoNCELoss()
    with torch.no_grad():
        loss.log_scale.fill_(math.log(500.0))
    assert loss.scale.item() == pytest.approx(100.0)


@pytest.mark.parametrize("loss", [ContentInfoNCELoss, SampledBCELoss], ids=["infonce", "bce"])
def test_a_scale_past_its_clamp_still_learns_to_come_down(loss) -> None:
    """The parameter is clamped, not its exp: at the bound the scale has a gradient, and where a larger scale
    costs more (each state nearer its negatives than its positive) one SGD step lowers it below 100."""
    loss = loss(num_negatives=4) if loss is ContentInfoNCELoss else loss()
    with torch.no_grad():
        loss.log_scale.fill_(math.log(500.0))
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    states = torch.tensor([[0.1, 1.0], [0.1, 1.0]])  # near items 2 and 3, but the targets are item 1
    loss(states, torch.tensor([1, 1]), table, torch.arange(4), torch.zeros(1, 1, dtype=torch.long),
         torch.zeros(2, dtype=torch.long)).backward()
    assert loss.log_scale.grad.item() > 0
    torch.optim.SGD(loss.parameters(), lr=0.1).step()
    assert loss.scale.item() < 100.0


def test_collapsed_embeddings_stop_training_with_a_clear_message() -> None:
    table = torch.ones(21, 4)  # every item the same vector: every negative is a "near-duplicate"
    table[0] = 0
    with pytest.raises(EmbeddingCollapseError, match="collapsed"):
        ContentInfoNCELoss(num_negatives=16)(torch.randn(5, 4), torch.arange(1, 6), table, torch.arange(21),
                                             torch.zeros(1, 1, dtype=torch.long), torch.zeros(5, dtype=torch.long))


def test_sampled_bce_is_one_negative_per_positive() -> None:
    table = torch.randn(11, 3)
    states = torch.randn(4, 3)
    targets = torch.tensor([1, 2, 3, 4])
    user_items = torch.tensor([[0], [9]])  # user 1 (rows 2, 3) owns item 9
    loss = SampledBCELoss()
    torch.manual_seed(7)
    value = loss(states, targets, table, torch.arange(11), user_items, torch.tensor([0, 0, 1, 1]))
    torch.manual_seed(7)
    negatives = torch.randint(1, 11, (4,)).tolist()
    assert all(n != t for n, t in zip(negatives, targets.tolist()))  # no redraw happened with this seed
    scale, expected = 1 / 0.07, 0.0
    for row in range(4):
        positive = scale * cosine(states[row].tolist(), table[targets[row]].tolist())
        negative = scale * cosine(states[row].tolist(), table[negatives[row]].tolist())
        expected += (math.log1p(math.exp(-positive)) + math.log1p(math.exp(negative))) / 4
    assert value.item() == pytest.approx(expected, rel=1e-5)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _two_rank_loss(rank: int, folder: str, port: int) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    table = torch.randn(31, 4)
    states = torch.randn(3, 4, requires_grad=True)
    torch.manual_seed(100 + rank)  # each rank draws its own pool
    loss = ContentInfoNCELoss(num_negatives=5)(states, torch.tensor([1, 2, 3]), table, torch.arange(31),
                                               torch.tensor([[1, 2, 3]]), torch.zeros(3, dtype=torch.long))
    loss.backward()
    torch.save({"loss": loss.detach(), "grad": states.grad}, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_negatives_are_gathered_from_every_process(tmp_path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_two_rank_loss, args=(str(tmp_path), free_port()), nprocs=2)
    torch.manual_seed(0)
    table = torch.randn(31, 4)
    states = torch.randn(3, 4)
    pool = []
    for rank in range(2):
        torch.manual_seed(100 + rank)
        pool += torch.randint(1, 31, (5,)).tolist()
    normed = torch.nn.functional.normalize
    logits = normed(states, dim=-1) @ normed(table, dim=-1).T / 0.07
    expected = 0.0
    for row, target in enumerate((1, 2, 3)):
        kept = [logits[row, item] for item in pool if item not in (1, 2, 3)
                and cosine(table[target].tolist(), table[item].tolist()) <= 0.99]
        expected += -(logits[row, target] - torch.logsumexp(torch.stack([logits[row, target], *kept]), 0)) / 3
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["loss"].item() == pytest.approx(expected.item(), rel=1e-5)  # both ranks see all 10 negatives
        assert result["grad"].abs().sum() > 0


@pytest.mark.parametrize("loss", [ContentInfoNCELoss, SampledBCELoss])
def test_content_losses_spell_the_protocol_signature(loss) -> None:
    """The CLI accepts ``MolarModule.loss`` class_paths only when ``forward`` matches ``ContentNextItemLoss``."""
    assert inspect.signature(loss.forward) == inspect.signature(ContentNextItemLoss.forward)
