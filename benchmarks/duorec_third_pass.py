"""What DuoRec's third pass (the data's positives, one prefix per training position) costs against the main pass.

Times one forward and backward pass of the shipped SASRec encoder (64 wide, 2 blocks, ML-100K's 1,682 items)
with AdamW on random item ids: the main pass of 6 windows of 50 items (the shipped DuoRec batch on MovieLens),
and the third pass over 256 prefixes of 25 and of 50 items (prefixes run from 1 to 50 items, padded to the
longest in the batch). Prints milliseconds per step and each one's ratio to the main pass, measured in the
same run.

    python benchmarks/duorec_third_pass.py
"""

import argparse
import time

import torch

from molar_lightning.models.id.sasrec import SASRec

NUM_ITEMS = 1682  # MovieLens-100K
SHAPES = {"main pass, 6 windows x 50": (6, 50), "third pass, 256 prefixes x 25": (256, 25),
          "third pass, 256 prefixes x 50": (256, 50)}


def milliseconds_per_step(model: SASRec, optimizer: torch.optim.Optimizer, shape: tuple[int, int], steps: int) -> float:
    """Mean wall time of ``steps`` forward + backward + optimizer steps on random ids of ``shape``, after one
    warm-up step."""
    items = torch.randint(1, NUM_ITEMS + 1, shape)
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        model.sequence_states(items, items != 0).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per shape (default 20)")
    arguments = parser.parse_args()
    torch.manual_seed(0)
    model = SASRec(NUM_ITEMS).train()
    optimizer = torch.optim.AdamW(model.parameters())
    timings = {name: milliseconds_per_step(model, optimizer, shape, arguments.steps) for name, shape in SHAPES.items()}
    main_pass = timings["main pass, 6 windows x 50"]
    print(f"torch threads: {torch.get_num_threads()}")
    for name, milliseconds in timings.items():
        print(f"{name}: {milliseconds:.1f} ms a step, {milliseconds / main_pass:.1f}x the main pass")


if __name__ == "__main__":
    main()
