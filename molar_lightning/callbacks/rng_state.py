"""Random-number-generator state in checkpoints, so a resumed run continues exactly as it would have.

Lightning checkpoints hold weights, optimizer and loop state, but not the RNG streams that draw the next
epoch's shuffle order, dropout masks and sampled negatives; without them a resumed run diverges from an
uninterrupted one. This callback saves Python's, NumPy's and torch's (CPU and every CUDA device) RNG
states with each checkpoint and restores them on resume.
"""

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback


class RNGStateCallback(Callback):
    """Save and restore every RNG stream with the checkpoint (on by default in ``molar``)."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        state = {
            "python": random.getstate(),  # plain tuples, ints, lists and tensors: loadable with weights_only
            "numpy": (kind, keys.tolist(), position, has_gauss, cached_gaussian),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        kind, keys, position, has_gauss, cached_gaussian = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
