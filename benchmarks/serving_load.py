"""A bounded local load test of ``molar serve``: latency percentiles and errors under concurrent requests.

Writes a synthetic export (random item and user tables of the given size, in the format ``molar export``
writes), starts ``molar serve`` on a free port of 127.0.0.1 in its own process (users only), and sends
``--requests`` POST /recommend requests from ``--concurrency`` client threads: random users, ``k`` 10,
every ``--bad-every``-th one a malformed body, which must get a 400 while the others keep getting 200.
Prints the p50 / p95 / p99 latency of the good requests, requests per second and the count of unexpected
answers. Nothing leaves this machine.

    python benchmarks/serving_load.py                        # 200 requests, 8 threads, 100,000 items x 64
    python benchmarks/serving_load.py --items 400000 --index faiss
"""

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from molar_lightning.serving.export import write_export  # noqa: E402


def synthetic_export(folder: Path, num_items: int, num_users: int, dim: int, seen_per_user: int) -> Path:
    generator = torch.Generator().manual_seed(0)
    items = torch.randn(num_items + 1, dim, generator=generator)
    items[0] = 0
    users = torch.randn(num_users, dim, generator=generator)
    seen = torch.randint(1, num_items + 1, (num_users, seen_per_user), generator=generator).tolist()
    manifest = {"task": "synthetic", "checkpoint": None, "config": None, "overrides": [], "dataset": "synthetic",
                "num_trained_items": num_items, "num_new_items": 0, "test_metrics": None}
    return write_export(folder, items, [f"i{n}" for n in range(1, num_items + 1)], users,
                        [f"u{n}" for n in range(num_users)], seen, manifest)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(port: int, body: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/recommend", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, time.perf_counter() - started


def wait_until_serving(port: int, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"molar serve exited with {server.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("molar serve did not answer /health in time")


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seen", type=int, default=20, help="seen items per user (excluded from answers)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--bad-every", type=int, default=20, help="every n-th request has a malformed body")
    parser.add_argument("--index", default="exact", choices=["exact", "faiss"])
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        folder = synthetic_export(Path(work) / "export", options.items, options.users, options.dim, options.seen)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "molar_lightning", "serve", "--export", str(folder),
                                   "--port", str(port), "--histories", "false", "--index", options.index], cwd=ROOT)
        try:
            wait_until_serving(port, server)
            generator = torch.Generator().manual_seed(1)
            users = torch.randint(options.users, (options.requests,), generator=generator).tolist()
            bodies = [b'{"user": "u1", ' if (number + 1) % options.bad_every == 0
                      else json.dumps({"user": f"u{user}", "k": 10}).encode() for number, user in enumerate(users)]
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=options.concurrency) as pool:
                results = list(pool.map(lambda body: post(port, body), bodies))
            elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=30)
    expected = [400 if body.endswith(b", ") else 200 for body in bodies]
    unexpected = sum(status != want for (status, _), want in zip(results, expected))
    good = [seconds * 1000 for (status, seconds), want in zip(results, expected) if want == 200 and status == 200]
    print(f"{options.requests} requests ({expected.count(400)} malformed), {options.concurrency} concurrent, "
          f"{options.items:,} items x {options.dim}, index {options.index}")
    print(f"latency of the good requests: p50 {percentile(good, 0.50):.1f} ms, p95 {percentile(good, 0.95):.1f} ms, "
          f"p99 {percentile(good, 0.99):.1f} ms; {options.requests / elapsed:.1f} requests/s")
    print(f"unexpected answers: {unexpected}")
    sys.exit(1 if unexpected else 0)


if __name__ == "__main__":
    main()
