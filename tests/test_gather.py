"""``gather_across_ranks`` on 2 processes whose batches differ in size (a last batch cut short): every process
gets every row in process order, and gradients reach each process's own rows."""

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from molar_lightning.losses import gather_across_ranks
from tests.test_configs_run import free_port


def _gather(rank: int, folder: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    local = torch.full((3 if rank == 0 else 1, 2), float(rank + 1), requires_grad=True)
    gathered = gather_across_ranks(local)
    (gathered * torch.arange(1.0, len(gathered) + 1)[:, None]).sum().backward()
    torch.save({"gathered": gathered.detach(), "grad": local.grad}, f"{folder}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow  # 2 spawned processes; `make test-slow`
def test_batches_of_different_sizes_gather_whole(tmp_path: Path) -> None:
    mp.spawn(_gather, args=(str(tmp_path), free_port()), nprocs=2)
    expected = torch.tensor([[1.0, 1.0]] * 3 + [[2.0, 2.0]])
    for rank in range(2):
        saved = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(saved["gathered"], expected)
        # each process's own rows get the weights of their positions in the gathered tensor (1-3, then 4) from
        # both processes' losses, which the data-parallel average then halves
        weights = torch.tensor([[1.0], [2.0], [3.0]]) if rank == 0 else torch.tensor([[4.0]])
        torch.testing.assert_close(saved["grad"], 2 * weights.expand(-1, 2))
