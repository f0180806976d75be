"""FSDP2 sharding of the tasks' language models under Lightning's ``ModelParallelStrategy``.

A part that holds a Hugging Face model (the MIRM, DUEG) is sharded block by block: every entry of its
outermost ``nn.ModuleList`` s (the decoder layers, the vision blocks) becomes its own FSDP unit, so one
block's full weights exist at a time, and the part itself is the root unit that holds the rest (the word
embeddings, tied to the LM head in Qwen2-VL-2B, the final norm, the ``[Cur_Item]`` vector). The methods a
task calls instead of ``forward`` are registered, so that they gather the root's weights as ``forward``
does. Everything else (the ID model, projections, a loss's logit scale) is small and stays whole on every
process; :func:`average_gradients` averages its gradients after each backward, as DDP would.

Only data-parallel sharding is done: the mesh's ``tensor_parallel`` dimension must be 1, which
``configs/trainer/fsdp.yaml`` sets (``data_parallel_size`` = every process, ``tensor_parallel_size: 1``).
"""

from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel


def holds_language_model(part: Optional[nn.Module]) -> bool:
    """Whether ``part`` contains a Hugging Face model, the parts worth sharding."""
    return part is not None and any(isinstance(module, PreTrainedModel) for module in part.modules())


def outermost_blocks(part: nn.Module) -> list[nn.Module]:
    """The entries of every ``nn.ModuleList`` in ``part`` that no other ``nn.ModuleList`` contains."""
    lists: list[str] = []
    blocks: list[nn.Module] = []
    for name, module in part.named_modules():
        if isinstance(module, nn.ModuleList) and not any(name.startswith(f"{outer}.") for outer in lists):
            lists.append(name)
            blocks.extend(module)
    return blocks


def data_parallel_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """The data-parallel dimension of Lightning's mesh; refused when a tensor-parallel dimension is asked for."""
    tensor_parallel = mesh["tensor_parallel"].size()
    if tensor_parallel != 1:
        raise ValueError(f"ModelParallelStrategy has tensor_parallel_size {tensor_parallel}; molar shards data-"
                         f"parallel only: set data_parallel_size to the number of processes and "
                         f"tensor_parallel_size: 1 (configs/trainer/fsdp.yaml)")
    return mesh["data_parallel"]


def mixed_precision(precision: str) -> MixedPrecisionPolicy:
    """bf16 (or fp16) weights inside the sharded parts under ``*-mixed`` precision, gradients reduced in fp32."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype is not None else None)


def shard(part: nn.Module, mesh: DeviceMesh, policy: MixedPrecisionPolicy, forward_methods: Sequence[str] = ()) -> None:
    """``fully_shard`` each block of ``part``, then ``part`` itself; ``forward_methods`` gather like ``forward``."""
    for block in outermost_blocks(part):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(part, mesh=mesh, mp_policy=policy)
    for name in forward_methods:
        register_fsdp_forward_method(part, name)


def replicated_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters that no FSDP unit shards: whole on every process."""
    return [parameter for parameter in module.parameters()
            if parameter.requires_grad and not isinstance(parameter, DTensor)]


def fill_missing_gradients(module: nn.Module) -> None:
    """Zero gradients for sharded trainable weights that got none this step (a vision tower on text-only
    batches), so that the optimizer keeps state for every weight: a shard-wise checkpoint is refused on resume
    when some trainable weight has no optimizer state. Weight decay then applies to them as to the rest."""
    for parameter in module.parameters():
        if parameter.requires_grad and parameter.grad is None and isinstance(parameter, DTensor):
            parameter.grad = torch.zeros_like(parameter)


def average_gradients(parameters: Sequence[nn.Parameter], mesh: DeviceMesh) -> None:
    """Average ``parameters``' gradients over ``mesh``'s processes in one all-reduce, as DDP does.

    A parameter that got no gradient on some process counts zero there; one that got none anywhere keeps none
    (the optimizer then skips it, as in a single process)."""
    if not parameters:
        return
    group, count = mesh.get_group(), mesh.size()
    had = torch.tensor([parameter.grad is not None for parameter in parameters], dtype=torch.float32,
                       device=parameters[0].device)
    flat = torch.cat([(parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)).reshape(-1)
                      for parameter in parameters])
    dist.all_reduce(had, group=group)
    dist.all_reduce(flat, group=group)
    for parameter, piece, anywhere in zip(parameters, flat.split([p.numel() for p in parameters]), had.tolist()):
        if anywhere:
            parameter.grad = (piece / count).view_as(parameter).to(parameter.dtype)


def clip_gradient_norm(parameters: Sequence[nn.Parameter], max_norm: float, mesh: DeviceMesh) -> float:
    """Scale the gradients of ``parameters`` so that their joint 2-norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_`` does in one process (which refuses sharded and whole gradients together).

    A sharded gradient's squares are summed over ``mesh``'s processes; a whole one is already averaged, equal on
    every process (:func:`average_gradients`), and counts once. Returns the norm before clipping."""
    grads = [parameter.grad for parameter in parameters if parameter.grad is not None]
    if not grads:
        return 0.0
    squares = torch.zeros(2, dtype=torch.float64, device=grads[0].device)  # [sharded, whole]
    for grad in grads:
        sharded = isinstance(grad, DTensor)
        squares[0 if sharded else 1] += (grad.to_local() if sharded else grad).double().pow(2).sum()
    dist.all_reduce(squares[:1], group=mesh.get_group())
    norm = squares.sum().sqrt().item()
    factor = max_norm / (norm + 1e-6)
    if factor < 1:
        for grad in grads:
            grad.mul_(factor)
    return norm


def clip_gradient_values(parameters: Sequence[nn.Parameter], max_value: float) -> None:
    """Clamp every gradient of ``parameters`` to ``[-max_value, max_value]``, sharded or whole."""
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad.clamp_(-max_value, max_value)


def full_state_dict(part: nn.Module) -> dict[str, torch.Tensor]:
    """``part``'s whole weights gathered from every shard, on the CPU of process 0 (empty elsewhere); every
    process must call it."""
    return get_model_state_dict(part, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
