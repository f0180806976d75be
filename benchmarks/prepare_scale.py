"""Prepare an Amazon category at the paper's scale and print wall time and peak memory.

    python benchmarks/prepare_scale.py                      # 993,087 users, 301,312 items, 8,813,442 reviews
    python benchmarks/prepare_scale.py --gzip --reviews 1000000 --users 100000 --items 30000

Raw files in the Amazon Reviews 2023 layout are written once by ``molar_lightning.data.synthetic_amazon``
(seeded, about 500 bytes a review line as in the real release; kept under ``--data-dir`` for later runs).
Preparation then runs in a fresh child process, through the same code as ``AmazonDataModule`` (5-core,
``image_policy: text_only`` with no image folder, so every item is checked and counted as text-only), into
an empty cache folder. Printed: wall time of the preparation, a repeated call (the cache hit), peak
resident memory from ``resource.getrusage`` (the child itself plus any processes it started), the counts
and the read throughput, against the target of 2 minutes and 4 GiB on a 2-core machine.
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATEGORY = "Clothing_Shoes_and_Jewelry"
TARGET_SECONDS, TARGET_BYTES = 120, 4 << 30


def measure(data_dir: str, cache_dir: str) -> None:
    """In the child: prepare, prepare again (cache hit), and print one JSON line of figures."""
    from molar_lightning.data.prepare import PrepareParams, prepare_dataset
    from molar_lightning.data.sources.amazon import Amazon

    source = Amazon(data_dir, category=CATEGORY, release=2023, show_progress=False)
    params = PrepareParams(min_user_interactions=5, min_item_interactions=5)
    start = time.perf_counter()
    dataset = prepare_dataset(source, cache_dir, params)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    again = prepare_dataset(source, cache_dir, params)
    hit_seconds = time.perf_counter() - start
    assert again.path == dataset.path
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "cache_hit_seconds": hit_seconds, "peak_rss_bytes": own,
                      "children_peak_rss_bytes": children, "statistics": dataset.meta["statistics"],
                      "raw_bytes": sum(path.stat().st_size for path in source.raw_files())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT / "runs" / "benchmarks" / "prepare_scale"),
                        help="where the synthetic raw files are (written when absent)")
    parser.add_argument("--users", type=int, default=993_087)
    parser.add_argument("--items", type=int, default=301_312)
    parser.add_argument("--reviews", type=int, default=8_813_442)
    parser.add_argument("--gzip", action="store_true", help="write and read .jsonl.gz instead of .jsonl")
    parser.add_argument("--measure", metavar="CACHE_DIR", help=argparse.SUPPRESS)  # the child's entry point
    args = parser.parse_args()
    data_dir = Path(args.data_dir) / f"{args.users}u-{args.items}i-{args.reviews}r{'-gz' if args.gzip else ''}"
    if args.measure:
        measure(str(data_dir), args.measure)
        return

    if not any(data_dir.glob(f"{CATEGORY}.jsonl*")):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "molar_lightning.data.synthetic_amazon", "--out", str(data_dir),
                        "--users", str(args.users), "--items", str(args.items), "--reviews", str(args.reviews),
                        *(["--gzip"] if args.gzip else [])], check=True)
        print(f"generated the raw files in {time.perf_counter() - start:.0f} s (not part of the measurement)")
    cache_dir = tempfile.mkdtemp(prefix="prepare-scale-cache-", dir=data_dir)
    try:
        child = subprocess.run([sys.executable, __file__, "--measure", cache_dir, "--data-dir", args.data_dir,
                                "--users", str(args.users), "--items", str(args.items),
                                "--reviews", str(args.reviews), *(["--gzip"] if args.gzip else [])],
                               check=True, capture_output=True, text=True)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    stats = figures["statistics"]
    peak = figures["peak_rss_bytes"] + figures["children_peak_rss_bytes"]
    seconds = figures["seconds"]
    print(f"raw files:          {figures['raw_bytes'] / 1e9:.2f} GB ({data_dir})")
    print(f"prepared:           {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} "
          f"interactions (raw {stats['raw_interactions']:,}; removed by 5-core {stats['removed_by_k_core']:,}; "
          f"items text-only {stats['images_missing'] + stats['images_corrupt']:,})")
    print(f"wall time:          {seconds:.1f} s ({stats['raw_interactions'] / seconds / 1e6:.2f} M reviews/s, "
          f"{figures['raw_bytes'] / seconds / 1e6:.0f} MB/s); cache hit {figures['cache_hit_seconds']:.2f} s")
    print(f"peak memory (RSS):  {peak / 2**30:.2f} GiB (process {figures['peak_rss_bytes'] / 2**30:.2f} GiB, "
          f"its children {figures['children_peak_rss_bytes'] / 2**30:.2f} GiB)")
    verdict = [f"time {'met' if seconds <= TARGET_SECONDS else f'missed by {seconds - TARGET_SECONDS:.0f} s'}",
               f"memory {'met' if peak <= TARGET_BYTES else f'missed by {(peak - TARGET_BYTES) / 2**30:.2f} GiB'}"]
    print(f"target (<= {TARGET_SECONDS} s, <= {TARGET_BYTES / 2**30:.0f} GiB): {', '.join(verdict)}")


if __name__ == "__main__":
    main()
