"""Recall@10 of the approximate index (faiss HNSW, the optional extra) against exact search, and both speeds.

Random Gaussian items and users (the hard case for any approximate index: no clusters to exploit), each
user with ``--seen`` excluded items. For each ``ef_search`` it prints recall@10 against
:class:`~molar_lightning.serving.search.ExactSearch`, the index's build time, and query time per user next to
exact search's, one user per query (as ``molar serve`` asks) and the whole batch at once.

    pip install faiss-cpu && python benchmarks/ann_recall.py            # 100,000 items x 64
    python benchmarks/ann_recall.py --items 400000 --dim 64 --users 200
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from molar_lightning.serving.search import ExactSearch, FaissSearch  # noqa: E402


def per_user_seconds(index, users: torch.Tensor, exclude: list[list[int]]) -> float:
    started = time.perf_counter()
    for row in range(len(users)):
        index.search(users[row:row + 1], 10, exclude[row:row + 1])
    return (time.perf_counter() - started) / len(users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seen", type=int, default=20)
    parser.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128, 256], help="ef_search values to try")
    options = parser.parse_args()
    try:
        import faiss  # noqa: F401
    except ImportError:
        sys.exit("faiss is not installed (pip install faiss-cpu); it is the optional approximate index")

    generator = torch.Generator().manual_seed(0)
    items = torch.randn(options.items + 1, options.dim, generator=generator)
    items[0] = 0
    users = torch.randn(options.users, options.dim, generator=generator)
    exclude = torch.randint(1, options.items + 1, (options.users, options.seen), generator=generator).tolist()
    exact = ExactSearch(items)
    started = time.perf_counter()
    _, truth = exact.search(users, 10, exclude)
    exact_batch = (time.perf_counter() - started) / options.users
    exact_single = per_user_seconds(exact, users, exclude)
    print(f"{options.items:,} items x {options.dim}, {options.users} users, {options.seen} excluded each")
    print(f"exact: {1000 * exact_single:.2f} ms/user one at a time, {1000 * exact_batch:.3f} ms/user in one batch")
    print("| ef_search | recall@10 | build s | ms/user one at a time | ms/user in one batch |")
    print("|---:|---:|---:|---:|---:|")
    for ef in options.ef:
        started = time.perf_counter()
        index = FaissSearch(items, ef_search=ef)
        build = time.perf_counter() - started
        started = time.perf_counter()
        _, found = index.search(users, 10, exclude)
        batch = (time.perf_counter() - started) / options.users
        recall = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, found)) / truth.numel()
        print(f"| {ef} | {recall:.3f} | {build:.1f} | {1000 * per_user_seconds(index, users, exclude):.2f} | "
              f"{1000 * batch:.3f} |")


if __name__ == "__main__":
    main()
