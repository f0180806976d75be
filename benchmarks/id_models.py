"""Train the four ID baselines on real MovieLens and print quality and speed.

    python benchmarks/id_models.py --data-dir ../shared/data/movielens-100k

Each model is built from its shipped config (``configs/movielens/<model>.yaml``) through the same CLI code
path as ``molar fit``, trained to early stopping on validation NDCG@10 and tested at its best epoch.
Printed per model: test NDCG/Recall@10/20/50, training throughput (windows/s and next-item targets/s),
wall time until validation NDCG@10 first reaches the RecBole reference's best, and full-ranking
evaluation throughput (users/s, model forward included). RecBole 1.2.1 figures on the same data and
machine are in ``../shared/data/README.md``.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

from molar_lightning.cli import build_cli
from molar_lightning.metrics.ranking import RankingMetrics

ROOT = Path(__file__).resolve().parents[1]
# RecBole 1.2.1 on ML-100K (shared/data/README.md): best validation NDCG@10 and test NDCG@10 / Recall@10.
RECBOLE = {"sasrec": (0.0642, 0.0581, 0.1188), "gru4rec": (0.0702, 0.0481, 0.1039),
           "fpmc": (0.0514, 0.0466, 0.0965), "duorec": (None, None, None)}
RECBOLE_SASREC_SECONDS_TO_BEST = 19 * 60  # 8 epochs of 140-145 s
RECBOLE_EVAL_USERS_PER_SECOND = 943 / 0.17


class Stopwatch(Callback):
    """Records training time, windows and targets seen, and when validation NDCG@10 first hit a bar."""

    def __init__(self, quality_bar: float | None) -> None:
        self.quality_bar = quality_bar
        self.train_seconds = 0.0
        self.windows = self.targets = 0
        self.seconds_to_bar: float | None = None
        self._fit_start = self._epoch_start = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.windows += batch.item_seq.shape[0]
        self.targets += int((batch.target_seq != 0).sum())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_seconds += time.perf_counter() - self._epoch_start

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get("val/ndcg@10")
        if (not trainer.sanity_checking and self.seconds_to_bar is None and self.quality_bar is not None
                and value is not None and float(value) >= self.quality_bar):
            self.seconds_to_bar = time.perf_counter() - self._fit_start


@torch.no_grad()
def evaluation_users_per_second(model, datamodule, repeats: int = 5) -> float:
    """Full ranking of every test user (forward pass + chunked ranking), best of ``repeats``."""
    model.eval()
    batches = list(datamodule.test_dataloader())
    best = float("inf")
    for _ in range(repeats):
        metric = RankingMetrics()
        start = time.perf_counter()
        for batch in batches:
            user_emb = model.encoder.encode_sequence(batch.item_seq, batch.mask, batch.user_ids)
            metric.update(user_emb, model.encoder.item_embeddings(), batch.target, batch.history)
        metric.compute()
        best = min(best, time.perf_counter() - start)
    return sum(len(batch.target) for batch in batches) / best


def run(model_name: str, args: argparse.Namespace) -> dict:
    run_dir = Path(args.out) / model_name
    cli = build_cli([
        "--config", str(ROOT / f"configs/movielens/{model_name}.yaml"),
        "--data.init_args.data_dir", args.data_dir, "--data.init_args.cache_dir", args.cache_dir,
        "--trainer.default_root_dir", str(run_dir), "--trainer.max_epochs", str(args.max_epochs),
        "--trainer.enable_progress_bar", "false", "--seed_everything", str(args.seed),
    ], run=False)
    stopwatch = Stopwatch(RECBOLE[model_name][0] if model_name != "duorec" else RECBOLE["sasrec"][0])
    cli.trainer.callbacks.append(stopwatch)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    best = cli.trainer.checkpoint_callback.best_model_path
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best)
    test = {k.removeprefix("test/"): float(v) for k, v in cli.trainer.callback_metrics.items()
            if k.startswith("test/")}
    return {
        "model": model_name, "test": test, "epochs": cli.trainer.current_epoch,
        "best_val_ndcg@10": float(cli.trainer.checkpoint_callback.best_model_score),
        "train_seconds": stopwatch.train_seconds,
        "windows_per_second": stopwatch.windows / stopwatch.train_seconds,
        "targets_per_second": stopwatch.targets / stopwatch.train_seconds,
        "seconds_to_recbole_best_val": stopwatch.seconds_to_bar,
        "eval_users_per_second": evaluation_users_per_second(cli.model, cli.datamodule),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="MovieLens folder (ML-1M layout or ML-100K layout)")
    parser.add_argument("--models", nargs="+", default=["sasrec", "gru4rec", "fpmc", "duorec"],
                        choices=sorted(RECBOLE))
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache-dir", default=".molar_cache")
    parser.add_argument("--out", default="runs/benchmarks/id_models")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    results = [run(name, args) for name in args.models]

    print("\n| model | N@10 | N@20 | N@50 | R@10 | R@20 | R@50 | RecBole N@10 / R@10 | best val N@10 | epochs "
          "| windows/s | targets/s | s to RecBole best val | eval users/s |")
    print("|" + "---|" * 14)
    for r in results:
        t, ref = r["test"], RECBOLE[r["model"]]
        reference = f"{ref[1]:.4f} / {ref[2]:.4f}" if ref[1] else "n/a"
        to_bar = f"{r['seconds_to_recbole_best_val']:.0f}" if r["seconds_to_recbole_best_val"] else "not reached"
        print(f"| {r['model']} | {t['ndcg@10']:.4f} | {t['ndcg@20']:.4f} | {t['ndcg@50']:.4f} | {t['recall@10']:.4f} "
              f"| {t['recall@20']:.4f} | {t['recall@50']:.4f} | {reference} | {r['best_val_ndcg@10']:.4f} "
              f"| {r['epochs']} | {r['windows_per_second']:.0f} | {r['targets_per_second']:.0f} | {to_bar} "
              f"| {r['eval_users_per_second']:.0f} |")
    sasrec = next((r for r in results if r["model"] == "sasrec"), None)
    if sasrec:
        gap = sasrec["test"]["ndcg@10"] / RECBOLE["sasrec"][1] - 1
        print(f"\nSASRec test NDCG@10 vs RecBole 0.0581: {gap:+.1%}")
        if sasrec["seconds_to_recbole_best_val"]:
            print(f"time to RecBole's best validation NDCG@10: {RECBOLE_SASREC_SECONDS_TO_BEST / sasrec['seconds_to_recbole_best_val']:.1f}x "
                  f"faster than RecBole's ~{RECBOLE_SASREC_SECONDS_TO_BEST} s")
        print(f"evaluation: {sasrec['eval_users_per_second'] / RECBOLE_EVAL_USERS_PER_SECOND:.1f}x RecBole's "
              f"~{RECBOLE_EVAL_USERS_PER_SECOND:.0f} users/s")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
