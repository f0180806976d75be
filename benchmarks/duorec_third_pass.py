"""What DuoRec's third pass (the data's positives, one prefix per training position) costs against the main pass.

Times one forward and backward pass of the shipped SASRec encoder (64 wide, 2 blocks, ML-100K's 1,682 items)
with AdamW on random item ids: the main pass of 6 windows of 50 items (the shipped DuoRec batch on MovieLens),
and the third pass over 256 prefixes of 1 to 50 items (drawn anew each step, as the training positions'
prefixes run): padded to the longest in one call, and in the length groups that DuoRec's loss runs them in
(``losses.encode_by_length``). Prints milliseconds per step and each one's ratio to the main pass, measured in
the same run.

    python benchmarks/duorec_third_pass.py
"""

import argparse
import time
from typing import Callable

import torch

from molar_lightning.data.collate import left_pad
from molar_lightning.losses import POSITIVE_LENGTH_GROUPS, encode_by_length
from molar_lightning.models.id.sasrec import SASRec

NUM_ITEMS = 1682  # MovieLens-100K
PREFIXES, WINDOWS, LENGTH = 256, 6, 50


def windows() -> torch.Tensor:
    """The main pass's input: 6 full windows."""
    return torch.randint(1, NUM_ITEMS + 1, (WINDOWS, LENGTH))


def prefixes() -> torch.Tensor:
    """The third pass's input: 256 prefixes of 1 to 50 items, left-padded to the longest."""
    lengths = torch.randint(1, LENGTH + 1, (PREFIXES,))
    return left_pad([torch.randint(1, NUM_ITEMS + 1, (int(length),)).numpy() for length in lengths])


def milliseconds_per_step(optimizer: torch.optim.Optimizer, inputs: Callable[[], torch.Tensor],
                          loss: Callable[[torch.Tensor], torch.Tensor], steps: int) -> float:
    """Mean wall time of ``steps`` forward + backward + optimizer steps of ``loss`` on fresh ``inputs()``, after
    one warm-up step (the inputs are drawn before the clock starts)."""
    batches = [inputs() for _ in range(steps + 1)]
    for step, batch in enumerate(batches):
        if step == 1:
            started = time.perf_counter()
        loss(batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per pass (default 20)")
    arguments = parser.parse_args()
    torch.manual_seed(0)
    model = SASRec(NUM_ITEMS).train()
    optimizer = torch.optim.AdamW(model.parameters())
    passes = {
        f"main pass, {WINDOWS} windows x {LENGTH}": (windows, lambda seq: model.sequence_states(seq, seq != 0).sum()),
        f"third pass, {PREFIXES} prefixes of 1-{LENGTH}, padded to the longest": (
            prefixes, lambda seq: model.encode_sequence(seq, seq != 0).sum()),
        f"third pass, the same in {POSITIVE_LENGTH_GROUPS} length groups (as trained)": (
            prefixes, lambda seq: encode_by_length(model, seq, POSITIVE_LENGTH_GROUPS).sum()),
    }
    timings = {name: milliseconds_per_step(optimizer, inputs, loss, arguments.steps)
               for name, (inputs, loss) in passes.items()}
    main_pass = next(iter(timings.values()))
    print(f"torch threads: {torch.get_num_threads()}")
    for name, milliseconds in timings.items():
        print(f"{name}: {milliseconds:.1f} ms a step, {milliseconds / main_pass:.1f}x the main pass")


if __name__ == "__main__":
    main()
