"""Gradient clipping under FSDP2 on 2 processes: the joint norm of sharded and whole gradients, and the clipped
gradients, equal ``torch.nn.utils.clip_grad_norm_`` (and ``clip_grad_value_``) on the unsharded model."""

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from molar_lightning.sharding import clip_gradient_norm, clip_gradient_values
from tests.test_configs_run import free_port


def model_and_gradients() -> tuple[nn.Module, list[torch.Tensor]]:
    """Two blocks to shard and a head left whole, with seeded gradients (the same on every process)."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"blocks": nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)]), "head": nn.Linear(4, 2)})
    return model, [torch.randn_like(parameter) for parameter in model.parameters()]


def _clip(rank: int, folder: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    mesh = init_device_mesh("cpu", (2,))
    results = {}
    for case, limit in (("norm", 0.5), ("norm_above", 1e6), ("value", 0.3)):
        model, grads = model_and_gradients()
        for block in model["blocks"]:
            fully_shard(block, mesh=mesh)
        parameters = list(model.parameters())
        for parameter, grad in zip(parameters, grads):
            parameter.grad = (distribute_tensor(grad, mesh, parameter.placements) if isinstance(parameter, DTensor)
                              else grad.clone())
        if case == "value":
            clip_gradient_values(parameters, limit)
        else:
            results[f"{case}_norm"] = torch.tensor(clip_gradient_norm(parameters, limit, mesh), dtype=torch.float64)
        results[case] = [(p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad) for p in parameters]
    torch.save(results, f"{folder}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow  # 2 spawned processes; `make test-slow`
def test_sharded_clipping_equals_clipping_the_whole_model(tmp_path: Path) -> None:
    mp.spawn(_clip, args=(str(tmp_path), free_port()), nprocs=2)
    for rank in range(2):
        saved = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for case, limit in (("norm", 0.5), ("norm_above", 1e6), ("value", 0.3)):
            model, grads = model_and_gradients()
            for parameter, grad in zip(model.parameters(), grads):
                parameter.grad = grad
            if case == "value":
                torch.nn.utils.clip_grad_value_(model.parameters(), limit)
            else:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), limit)
                torch.testing.assert_close(saved[f"{case}_norm"], norm.double())
            for clipped, parameter in zip(saved[case], model.parameters()):
                torch.testing.assert_close(clipped, parameter.grad)
    assert saved["norm_above"][0].equal(model_and_gradients()[1][0])  # under the limit: untouched
