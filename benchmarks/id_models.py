"""Train the four ID baselines on real MovieLens and print quality and speed.

    python benchmarks/id_models.py --data-dir ../shared/data/movielens-100k

Each model is built from its shipped config (``configs/movielens/<model>.yaml``) through the same CLI code
path as ``molar fit``, trained to early stopping on validation NDCG@10 and tested at its best epoch.
Printed per model: test NDCG/Recall@10/20/50, training throughput (windows/s and next-item targets/s),
wall time until validation NDCG@10 first reaches the RecBole reference's best, and full-ranking
evaluation throughput (users/s, model forward included). RecBole 1.2.1 figures on the same data and
machine are in ``../shared/data/README.md``.

Two protocols are reported. Ours (and the paper's) excludes each user's history from the ranking. RecBole
1.2.1 does not for sequential models: its full-sort evaluation data loader returns no history for
``MODEL_TYPE == SEQUENTIAL``, so its figures rank the history too. RecBole is compared on that protocol
(``exclude_history=False``), measured on the same best checkpoint and, for time to quality, on every
validation epoch.
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
    """Training time, windows and targets seen, and when RecBole-protocol validation NDCG@10 first hit a bar."""

    def __init__(self, quality_bar: float) -> None:
        self.quality_bar = quality_bar
        self.recbole_protocol = RankingMetrics(exclude_history=False)
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

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.recbole_protocol.update(outputs["user_emb"], outputs["item_emb"], batch.target)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = float(self.recbole_protocol.compute()["ndcg@10"])
        self.recbole_protocol.reset()
        if self.seconds_to_bar is None and value >= self.quality_bar:
            self.seconds_to_bar = time.perf_counter() - self._fit_start


@torch.no_grad()
def evaluate(model, datamodule, exclude_history: bool, repeats: int = 1) -> tuple[dict[str, float], float]:
    """Test metrics and users/s of full ranking (forward pass + chunked ranking), best of ``repeats``."""
    model.eval()
    batches = list(datamodule.test_dataloader())
    best, values = float("inf"), {}
    for _ in range(repeats):
        metric = RankingMetrics(exclude_history=exclude_history)
        start = time.perf_counter()
        for batch in batches:
            user_emb = model.encoder.encode_sequence(batch.item_seq, batch.mask, batch.user_ids)
            metric.update(user_emb, model.encoder.item_embeddings(), batch.target, batch.history)
        values = {name: float(value) for name, value in metric.compute().items()}
        best = min(best, time.perf_counter() - start)
    return values, sum(len(batch.target) for batch in batches) / best


def run(model_name: str, args: argparse.Namespace) -> dict:
    run_dir = Path(args.out) / model_name
    cli = build_cli([
        "--config", str(ROOT / f"configs/movielens/{model_name}.yaml"),
        "--data.init_args.data_dir", args.data_dir, "--data.init_args.cache_dir", args.cache_dir,
        "--trainer.default_root_dir", str(run_dir), "--trainer.max_epochs", str(args.max_epochs),
        "--trainer.enable_progress_bar", "false", "--seed_everything", str(args.seed),
    ], run=False)
    stopwatch = Stopwatch(RECBOLE["sasrec" if model_name == "duorec" else model_name][0])
    cli.trainer.callbacks.append(stopwatch)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.model.load_state_dict(torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=True)
                              ["state_dict"])
    test, users_per_second = evaluate(cli.model, cli.datamodule, exclude_history=True, repeats=5)
    recbole_protocol_test, _ = evaluate(cli.model, cli.datamodule, exclude_history=False)
    return {
        "model": model_name, "test": test, "test_recbole_protocol": recbole_protocol_test,
        "epochs": cli.trainer.current_epoch,
        "best_val_ndcg@10": float(cli.trainer.checkpoint_callback.best_model_score),
        "train_seconds": stopwatch.train_seconds,
        "windows_per_second": stopwatch.windows / stopwatch.train_seconds,
        "targets_per_second": stopwatch.targets / stopwatch.train_seconds,
        "seconds_to_recbole_best_val": stopwatch.seconds_to_bar,
        "eval_users_per_second": users_per_second,
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
    results = []
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name in args.models:  # the summary grows after each model, so a stopped run keeps what it measured
        results.append(run(name, args))
        (Path(args.out) / "summary.json").write_text(json.dumps(results, indent=2))

    print("\nHistory excluded (the paper's protocol; checkpoint chosen on it):")
    print("| model | N@10 | N@20 | N@50 | R@10 | R@20 | R@50 | best val N@10 | epochs | windows/s | targets/s "
          "| eval users/s |")
    print("|" + "---|" * 12)
    for r in results:
        t = r["test"]
        print(f"| {r['model']} | {t['ndcg@10']:.4f} | {t['ndcg@20']:.4f} | {t['ndcg@50']:.4f} | {t['recall@10']:.4f} "
              f"| {t['recall@20']:.4f} | {t['recall@50']:.4f} | {r['best_val_ndcg@10']:.4f} | {r['epochs']} "
              f"| {r['windows_per_second']:.0f} | {r['targets_per_second']:.0f} | {r['eval_users_per_second']:.0f} |")
    print("\nRecBole's protocol (history not excluded), same checkpoints, against RecBole 1.2.1:")
    print("| model | N@10 (RecBole) | N@20 | N@50 | R@10 (RecBole) | R@20 | R@50 | s to RecBole's best val N@10 |")
    print("|" + "---|" * 8)
    for r in results:
        t, ref = r["test_recbole_protocol"], RECBOLE[r["model"]]
        to_bar = f"{r['seconds_to_recbole_best_val']:.0f}" if r["seconds_to_recbole_best_val"] else "not reached"
        reference = (f" ({ref[1]:.4f})", f" ({ref[2]:.4f})") if ref[1] else ("", "")
        print(f"| {r['model']} | {t['ndcg@10']:.4f}{reference[0]} | {t['ndcg@20']:.4f} | {t['ndcg@50']:.4f} "
              f"| {t['recall@10']:.4f}{reference[1]} | {t['recall@20']:.4f} | {t['recall@50']:.4f} | {to_bar} |")
    sasrec = next((r for r in results if r["model"] == "sasrec"), None)
    if sasrec:
        gap = sasrec["test_recbole_protocol"]["ndcg@10"] / RECBOLE["sasrec"][1] - 1
        print(f"\nSASRec test NDCG@10 on RecBole's protocol vs RecBole's 0.0581: {gap:+.1%}")
        if sasrec["seconds_to_recbole_best_val"]:
            speedup = RECBOLE_SASREC_SECONDS_TO_BEST / sasrec["seconds_to_recbole_best_val"]
            print(f"time to RecBole's best validation NDCG@10 (0.0642): {sasrec['seconds_to_recbole_best_val']:.0f} s, "
                  f"{speedup:.1f}x faster than RecBole's ~{RECBOLE_SASREC_SECONDS_TO_BEST} s")
        print(f"full-ranking evaluation: {sasrec['eval_users_per_second']:.0f} users/s, "
              f"{sasrec['eval_users_per_second'] / RECBOLE_EVAL_USERS_PER_SECOND:.1f}x RecBole's "
              f"~{RECBOLE_EVAL_USERS_PER_SECOND:.0f} users/s")


if __name__ == "__main__":
    main()
