"""Post-alignment (Molar, arXiv 2412.18176, Eq. 4): each user's content embedding against its ID-model one.

A part of ``MolarModule`` of its own: the trainable map from the ID model's width to the content width, and
the symmetric InfoNCE between the two (:class:`~molar_lightning.losses.UserAlignmentLoss`: directions
summed, a user's other windows masked, negatives gathered across processes).
"""

from typing import Optional

import torch
from torch import nn

from molar_lightning.losses import UserAlignmentLoss


def adapted_width(adapter: nn.Module, width: int) -> int:
    """Width of ``adapter``'s output for ``width``-wide inputs, probed in eval mode without gradients so that
    adapters with batch statistics (``BatchNorm1d``) neither fail on the probe nor learn from it."""
    was_training = adapter.training
    adapter.eval()
    with torch.no_grad():
        out = adapter(torch.zeros(2, width)).shape[-1]
    adapter.train(was_training)
    return out


def checked_projection(projection: Optional[nn.Module], id_width: int, width: int) -> nn.Module:
    """``projection`` (identity when null) once it maps ``id_width`` to ``width``; refused otherwise, with the
    setting that fixes it, since a map inserted silently would be a trainable part nobody configured."""
    if projection is None and id_width == width:
        return nn.Identity()
    if projection is None:
        raise ValueError(
            f"post-alignment compares the ID model's {id_width}-wide user embedding with the {width}-wide content "
            f"one: set model.init_args.align_projection, e.g. {{class_path: torch.nn.Linear, init_args: "
            f"{{in_features: {id_width}, out_features: {width}}}}} (or align_weight: 0). Checkpoints written before "
            f"this argument hold that Linear under align_projection.*: load them with the same setting, or "
            f"MolarModule.load_from_checkpoint(path, align_projection=torch.nn.Linear({id_width}, {width}))")
    out = adapted_width(projection, id_width)
    if out != width:
        raise ValueError(f"align_projection maps the ID model's {id_width}-wide user embedding to {out} dimensions, "
                         f"but the content side is {width}-wide; set its output width to {width}")
    return projection


class PostAlignment(nn.Module):
    """Eq. 4 between content and ID user embeddings, the ID ones mapped to the content width first.

    Args:
        projection: the map from ``id_width`` to ``width`` (null: identity, when they are equal).
        id_width: width of the ID model's user embedding.
        width: width of the content side.
        temperature: tau of the InfoNCE.
        across_ranks: negatives are every process's users under DDP/FSDP.
    """

    def __init__(self, projection: Optional[nn.Module], id_width: int, width: int, temperature: float,
                 across_ranks: bool) -> None:
        super().__init__()
        self.projection = checked_projection(projection, id_width, width)
        self.loss = UserAlignmentLoss(temperature, across_ranks)

    def forward(self, content: torch.Tensor, collaborative: torch.Tensor, user_ids: torch.Tensor) -> torch.Tensor:
        """``content [B, D]``, ``collaborative [B, D_id]``, ``user_ids [B]`` -> the scalar loss (unweighted)."""
        return self.loss(content, self.projection(collaborative), user_ids)
