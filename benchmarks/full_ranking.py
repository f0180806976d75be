"""Full-catalogue ranking speed: ``RankingMetrics`` against a bare chunked ``matmul + topk`` pass, same run.

Synthetic user and item embeddings (random normal; histories and targets drawn at random) are ranked twice
over the same user batches and item chunks, the two alternating batch by batch: once by the bare pass (one
matmul and ``torch.topk(max(ks))`` per chunk, the least any exact full ranking must do), once by
``RankingMetrics.update`` (history excluded, exact ties, non-finite checks). It prints users/s of both,
the fraction of the bare pass the metric reaches, and the projected wall time of a full Pixel8M test
(8.9M users x 407k items x 2,048 dims) at the metric's measured rate. The projection scales the measured
user-item pairs/s by ``2048 / dims`` when run at fewer dims (the matmul's share of the work), so on a GPU
measure at ``--dims 2048`` for a direct figure::

    python benchmarks/full_ranking.py                                  # CPU: 4096 users x 400k items x 64 dims
    python benchmarks/full_ranking.py --device cuda --dims 2048 --users 65536

The last line is ``RESULT {json}`` with every figure, for scripts.
"""

import argparse
import json
import time

import torch

from molar_lightning.metrics.ranking import RankingMetrics

PIXEL8M_USERS, PIXEL8M_ITEMS, PIXEL8M_DIMS = 8_900_000, 407_000, 2048


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=4096)
    parser.add_argument("--items", type=int, default=400_000)
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1024, help="users per metric update")
    parser.add_argument("--item-chunk-size", type=int, default=32768)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--history", type=int, default=50, help="history length per user (excluded items)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds of both passes; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_pass(users: torch.Tensor, item_emb: torch.Tensor, chunk: int, k: int) -> None:
    """One matmul and one ``topk(k)`` per item chunk of items ``1..N``: the limit."""
    for start in range(1, item_emb.shape[0], chunk):
        (users @ item_emb[start:start + chunk].T).topk(min(k, item_emb.shape[0] - start), dim=1)


def timed(function, device: torch.device, *args) -> float:
    synchronize(device)
    begin = time.perf_counter()
    function(*args)
    synchronize(device)
    return time.perf_counter() - begin


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    user_emb = torch.randn(args.users, args.dims, generator=generator).to(device, dtype)
    item_emb = torch.randn(args.items + 1, args.dims, generator=generator).to(device, dtype)
    target = torch.randint(1, args.items + 1, (args.users,), generator=generator).to(device)
    history = torch.randint(1, args.items + 1, (args.users, args.history), generator=generator).to(device)
    user_batches, target_batches, history_batches = (
        tensor.split(args.batch_size) for tensor in (user_emb, target, history))
    metric = RankingMetrics(args.ks, exclude_history=True, item_chunk_size=args.item_chunk_size).to(device)

    # Warm-up (kernels, allocator) on a few users, not timed. Then both passes alternate batch by batch, so
    # that the load of a shared machine drifting during the run weighs on both alike.
    bare_pass(user_batches[0][:8], item_emb, args.item_chunk_size, max(args.ks))
    metric.update(user_batches[0][:8], item_emb, target_batches[0][:8], history_batches[0][:8])
    bare_seconds, metric_seconds = float("inf"), float("inf")
    for _ in range(args.rounds):
        metric.reset()
        bare_round = metric_round = 0.0
        for users, target, history in zip(user_batches, target_batches, history_batches):
            bare_round += timed(bare_pass, device, users, item_emb, args.item_chunk_size, max(args.ks))
            metric_round += timed(metric.update, device, users, item_emb, target, history)
        bare_seconds, metric_seconds = min(bare_seconds, bare_round), min(metric_seconds, metric_round)
    values = metric.compute()

    pairs_per_second = args.users * args.items / metric_seconds
    dims_scale = max(1.0, PIXEL8M_DIMS / args.dims)
    pixel8m_hours = PIXEL8M_USERS * PIXEL8M_ITEMS / pairs_per_second * dims_scale / 3600
    result = {
        "device": str(device), "dtype": args.dtype, "users": args.users, "items": args.items, "dims": args.dims,
        "ks": args.ks, "threads": torch.get_num_threads(),
        "bare_seconds": bare_seconds, "metric_seconds": metric_seconds,
        "bare_users_per_second": args.users / bare_seconds, "metric_users_per_second": args.users / metric_seconds,
        "fraction_of_bare": bare_seconds / metric_seconds,
        "pixel8m_hours": pixel8m_hours, "pixel8m_dims_scale": dims_scale,
        "ndcg@10_random_model": values.get("ndcg@10", values[f"ndcg@{args.ks[0]}"]).item(),
    }
    print(f"{args.users:,} users x {args.items:,} items x {args.dims} dims ({args.dtype}) on {device}, "
          f"{torch.get_num_threads()} threads, ks {args.ks}, history {args.history}, chunk {args.item_chunk_size:,}")
    print(f"bare matmul + topk({max(args.ks)}): {bare_seconds:8.2f} s  {result['bare_users_per_second']:10.1f} users/s")
    print(f"RankingMetrics.update:  {metric_seconds:8.2f} s  {result['metric_users_per_second']:10.1f} users/s")
    print(f"fraction of the bare pass: {result['fraction_of_bare']:.2f}")
    scaled = f", scaled x{dims_scale:g} from {args.dims} dims" if dims_scale > 1 else ""
    print(f"projected Pixel8M test (8.9M users x 407k items x 2048 dims) here: {pixel8m_hours:.2f} h{scaled}")
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
