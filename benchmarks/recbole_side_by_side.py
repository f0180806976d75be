"""RecBole 1.2.1 and this project side by side: the same split and settings, trained in one run, interleaved.

    python benchmarks/recbole_side_by_side.py --data-dir ../shared/data/movielens-100k \
        --recbole-python /work/recbole-venv/bin/python

RecBole needs numpy < 2, so it lives in its own virtual environment (never a dependency of this project;
``make test`` does not need it). Made with the CPU wheel of torch that this project uses:

    python3 -m venv /work/recbole-venv
    /work/recbole-venv/bin/pip install torch==2.13.0 "numpy<2" recbole==1.2.1

(RecBole's own requirements, ray, thop, tabulate, colorlog, tensorboard and the rest, come with it.)

What it does, model by model (RecBole's first, then ours, so the two share the machine's load):

1. Writes the prepared data set (this project's ``MovieLensDataModule``, every rating an implicit
   interaction) as a RecBole atomic ``.inter`` file, rows in this project's chronological order.
2. Runs ``benchmarks/recbole_driver.py`` under ``--recbole-python``: RecBole's leave-one-out by time
   (``LS: valid_and_test``, ``order: TO``), full sort, RecBole's training (every prefix a sample, batch 2048,
   Adam lr 1e-3) with the model's RecBole hyper-parameters, early stopping on validation NDCG@10.
3. Trains this project's model from its shipped config (``configs/movielens/<model>.yaml``: the same
   hyper-parameters; windows of 50 trained at every position, batch 128, AdamW lr 1e-3 without decay).
4. Checks that both hold out the same validation and test item for every user, and ranks RecBole's test
   scores with this project's metric, so both frameworks are measured by one implementation under both
   protocols: history excluded (the Molar paper's), and RecBole's (history ranked too: RecBole 1.2.1's
   full-sort loader masks no history for sequential models).

The reference quality of a model is RecBole's best validation NDCG@10 (RecBole's protocol, its evaluator).
Printed per model: the wall time each framework needs from the start of ``fit`` to a validation NDCG@10 at
or above it (validation included; ours measured under RecBole's protocol too) and their ratio, the seconds
per epoch (training and validation), the epochs run, and the test NDCG/Recall@10/20 of each framework's
best validation checkpoint under both protocols. ``--recbole-budget`` and ``--our-budget`` cap each
training's seconds per model (checked after every validation, so the last epoch finishes), so a run fits a
given time; the reference is then RecBole's best within its budget.
"""

import argparse
import json
import math
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from id_models import ROOT, Stopwatch, evaluate
from molar_lightning.cli import build_cli
from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.data.prepare import CanonicalDataset
from molar_lightning.metrics.ranking import RankingMetrics

RECBOLE_NAMES = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "fpmc": "FPMC"}
DATASET_NAME = "ml-100k-molar"
REPORTED = ("ndcg@10", "recall@10", "ndcg@20", "recall@20")


def write_atomic_inter(dataset: CanonicalDataset, folder: Path, name: str) -> Path:
    """Write ``dataset``'s interactions as RecBole's ``<folder>/<name>/<name>.inter``; return its path.

    Rows follow this project's order: by user, then by timestamp, equal timestamps in raw-file order.
    RecBole sorts by timestamp with a stable sort on a float32 copy (which merges timestamps less than
    about a minute apart at Unix-epoch magnitudes), so rows already in chronological order keep this order,
    and its leave-one-out split holds out the same items.
    """
    raw_item_ids = dataset.items.data.column("raw_id").to_pylist()  # row i holds item id i + 1
    sequences = dataset.sequences.data
    path = folder / name / f"{name}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as inter:
        inter.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, items, stamps in zip(sequences.column("raw_user_id").to_pylist(),
                                       sequences.column("item_ids").to_pylist(),
                                       sequences.column("timestamps").to_pylist()):
            inter.writelines(f"{user}\t{raw_item_ids[item - 1]}\t{stamp}\n" for item, stamp in zip(items, stamps))
    return path


def held_out_items(dataset: CanonicalDataset, from_end: int) -> dict[str, str]:
    """Raw user id -> raw id of the item ``from_end`` places from the end (1: test item, 2: validation item)."""
    raw_item_ids = dataset.items.data.column("raw_id").to_pylist()
    sequences = dataset.sequences.data
    return {user: raw_item_ids[items[-from_end] - 1] for user, items in
            zip(sequences.column("raw_user_id").to_pylist(), sequences.column("item_ids").to_pylist())}


def agreeing_users(ours: dict[str, str], theirs: dict[str, str]) -> int:
    """How many users hold out the same item in both; a user missing from either counts as disagreeing."""
    return sum(theirs.get(user) == item for user, item in ours.items())


def seconds_to_reach(curve: Sequence[tuple[float, float]], bar: float) -> Optional[float]:
    """Time of the first ``(seconds, value)`` point whose value is at least ``bar``; None if none is."""
    return next((seconds for seconds, value in curve if value >= bar), None)


def model_seconds(entry: str) -> tuple[str, float]:
    """``"sasrec=600"`` -> ``("sasrec", 600.0)``, for the budget options."""
    model, _, seconds = entry.partition("=")
    if model not in RECBOLE_NAMES or not seconds.replace(".", "", 1).isdigit():
        raise argparse.ArgumentTypeError(f"{entry!r}: expected MODEL=SECONDS with MODEL one of {list(RECBOLE_NAMES)}")
    return model, float(seconds)


def seconds_per_epoch(curve: Sequence[tuple[float, float]]) -> float:
    """Mean wall time between validations (one epoch's training plus its validation)."""
    return curve[-1][0] / len(curve)


class ValidationCurve(Stopwatch):
    """The id_models stopwatch, also keeping ``(seconds since fit began, RecBole-protocol validation NDCG@10)``
    after every validation and stopping training once ``time_budget`` seconds are spent."""

    def __init__(self, quality_bar: float, time_budget: float) -> None:
        super().__init__(quality_bar)
        self.time_budget = time_budget
        self.curve: list[tuple[float, float]] = []
        self.fit_start = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        self.fit_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            seconds = time.perf_counter() - self.fit_start
            self.curve.append((seconds, float(self.recbole_protocol.compute()["ndcg@10"])))
            trainer.should_stop = trainer.should_stop or seconds >= self.time_budget
        super().on_validation_epoch_end(trainer, pl_module)  # reads the same (cached) value, then resets


def run_recbole(model: str, args: argparse.Namespace, data_path: Path) -> dict:
    """Train RecBole's model in its own Python; its result.json, with its test scores loaded."""
    out = Path(args.out) / f"recbole-{model}"
    out.mkdir(parents=True, exist_ok=True)
    command = [args.recbole_python, str(ROOT / "benchmarks/recbole_driver.py"), "--data-path", str(data_path),
               "--dataset", DATASET_NAME, "--model", RECBOLE_NAMES[model], "--epochs", str(args.epochs),
               "--time-budget", str(args.recbole_budget.get(model, math.inf)), "--seed", str(args.seed),
               "--out", str(out)]
    subprocess.run(command, cwd=out, check=True)  # cwd: RecBole writes log_tensorboard/ where it runs
    result = json.loads((out / "result.json").read_text())
    with np.load(out / "test_scores.npz") as scores:
        result["scores"] = {key: scores[key] for key in scores.files}
    return result


def rank_recbole_scores(scores: dict[str, np.ndarray], datamodule: MovieLensDataModule,
                        exclude_history: bool) -> dict[str, float]:
    """This project's test metrics of RecBole's full-sort scores, users and items mapped to this project's ids.

    Each user's score row stands in for its user embedding against an identity item table, so the metric
    ranks exactly RecBole's scores (item 0, padding, is never ranked).
    """
    dataset = datamodule.dataset
    user_id = {raw: index for index, raw in enumerate(dataset.sequences.data.column("raw_user_id").to_pylist())}
    item_id = {raw: index + 1 for index, raw in enumerate(dataset.items.data.column("raw_id").to_pylist())}
    rows = torch.tensor([user_id[user] for user in scores["users"].tolist()])
    columns = torch.tensor([item_id.get(token, 0) for token in scores["item_tokens"].tolist()])  # [PAD] -> 0
    by_id = torch.zeros(dataset.num_users, dataset.num_items + 1)
    by_id[rows[:, None], columns[None, :]] = torch.from_numpy(scores["scores"])
    by_id[:, 0] = 0.0
    identity = torch.eye(dataset.num_items + 1)
    metric = RankingMetrics(ks=(10, 20), exclude_history=exclude_history)
    for batch in datamodule.test_dataloader():
        metric.update(by_id[batch.user_ids], identity, batch.target, batch.history)
    return {name: float(value) for name, value in metric.compute().items()}


def run_ours(model: str, args: argparse.Namespace, quality_bar: float) -> dict:
    """Train this project's model through the CLI code path of ``molar fit``; curve, epochs and test metrics."""
    cli = build_cli([
        "--config", str(ROOT / f"configs/movielens/{model}.yaml"),
        "--data.init_args.data_dir", args.data_dir, "--data.init_args.cache_dir", args.cache_dir,
        "--trainer.default_root_dir", str(Path(args.out) / f"ours-{model}"),
        "--trainer.max_epochs", str(args.epochs), "--trainer.enable_progress_bar", "false",
        "--seed_everything", str(args.seed),
    ], run=False)
    budget = args.our_budget.get(model, math.inf)
    curve = ValidationCurve(quality_bar, budget)
    cli.trainer.callbacks.append(curve)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    best = cli.trainer.checkpoint_callback
    cli.model.load_state_dict(torch.load(best.best_model_path, weights_only=True)["state_dict"])
    return {
        "curve": curve.curve, "epochs": len(curve.curve), "best_valid_ndcg@10": float(best.best_model_score),
        "test": evaluate(cli.model, cli.datamodule, exclude_history=True)[0],
        "test_recbole_protocol": evaluate(cli.model, cli.datamodule, exclude_history=False)[0],
        "stopped_by": "time budget" if curve.curve[-1][0] >= budget else
                      "epoch limit" if len(curve.curve) >= args.epochs else "early stopping",
    }


def compare(model: str, args: argparse.Namespace, datamodule: MovieLensDataModule, data_path: Path) -> dict:
    """One model: RecBole's run, the split check, then ours; everything the tables print."""
    recbole = run_recbole(model, args, data_path)
    dataset = datamodule.dataset
    split_agreement = {split: (agreeing_users(held_out_items(dataset, from_end), recbole[f"{split}_items"]),
                               dataset.num_users) for split, from_end in (("valid", 2), ("test", 1))}
    reference = recbole["best_valid_ndcg@10"]
    recbole_curve = [(point["seconds"], point["valid_ndcg@10"]) for point in recbole["curve"]]
    ours = run_ours(model, args, reference)
    return {
        "model": model, "reference_valid_ndcg@10": reference, "split_agreement": split_agreement,
        "recbole": {
            "curve": recbole_curve, "epochs": len(recbole_curve), "best_epoch": recbole["best_epoch"],
            "stopped_by": recbole["stopped_by"], "recbole_evaluator_test": recbole["recbole_test"],
            "test": rank_recbole_scores(recbole["scores"], datamodule, exclude_history=True),
            "test_recbole_protocol": rank_recbole_scores(recbole["scores"], datamodule, exclude_history=False),
        },
        "ours": ours,
    }


def print_tables(results: list[dict]) -> None:
    print("\nSplit check (users holding out the same item in both): "
          + "; ".join(f"{r['model']} valid {r['split_agreement']['valid'][0]}/{r['split_agreement']['valid'][1]}, "
                      f"test {r['split_agreement']['test'][0]}/{r['split_agreement']['test'][1]}" for r in results))
    print("\nTime to the reference validation NDCG@10 (RecBole's best, RecBole's protocol):")
    print("| model | reference | RecBole s (epoch) | ours s (epoch) | RecBole / ours | RecBole s/epoch "
          "| ours s/epoch | epochs RecBole / ours | best val N@10 RecBole / ours (RecBole protocol) |")
    print("|" + "---|" * 9)
    for r in results:
        times = {}
        for side in ("recbole", "ours"):
            curve = r[side]["curve"]
            seconds = seconds_to_reach(curve, r["reference_valid_ndcg@10"])
            epoch = next((index + 1 for index, (s, _) in enumerate(curve) if s == seconds), None)
            times[side] = (seconds, f"{seconds:.0f} ({epoch})" if seconds is not None else "not reached")
        ratio = (f"{times['recbole'][0] / times['ours'][0]:.1f}x" if times["ours"][0] else "n/a")
        best = [max(value for _, value in r[side]["curve"]) for side in ("recbole", "ours")]
        per_epoch = [seconds_per_epoch(r[side]["curve"]) for side in ("recbole", "ours")]
        print(f"| {r['model']} | {r['reference_valid_ndcg@10']:.4f} | {times['recbole'][1]} | {times['ours'][1]} "
              f"| {ratio} | {per_epoch[0]:.1f} | {per_epoch[1]:.1f} | {r['recbole']['epochs']} ({r['recbole']['stopped_by']}) / {r['ours']['epochs']} "
              f"({r['ours']['stopped_by']}) | {best[0]:.4f} / {best[1]:.4f} |")
    for protocol, key in (("history excluded (the paper's)", "test"),
                          ("RecBole's (history ranked too)", "test_recbole_protocol")):
        print(f"\nTest at each framework's best validation epoch, protocol {protocol}, this project's metric:")
        print("| model | " + " | ".join(f"{name} RecBole / ours" for name in REPORTED) + " |")
        print("|" + "---|" * (1 + len(REPORTED)))
        for r in results:
            print(f"| {r['model']} | " + " | ".join(f"{r['recbole'][key][name]:.4f} / {r['ours'][key][name]:.4f}"
                                                 for name in REPORTED) + " |")
    print("\nRecBole's own evaluator on its best model (cross-check of the RecBole-protocol row above):")
    for r in results:
        own = r["recbole"]["recbole_evaluator_test"]
        print(f"  {r['model']}: " + ", ".join(f"{name} {own[name]:.4f}" for name in REPORTED))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="MovieLens folder (ML-1M layout or ML-100K layout)")
    parser.add_argument("--recbole-python", required=True, help="python of a venv with recbole==1.2.1 (see above)")
    parser.add_argument("--models", nargs="+", default=list(RECBOLE_NAMES), choices=list(RECBOLE_NAMES))
    parser.add_argument("--epochs", type=int, default=200, help="most epochs of each training (both stop early)")
    parser.add_argument("--recbole-budget", nargs="*", type=model_seconds, default=[], metavar="MODEL=SECONDS",
                        help="seconds of RecBole's training of MODEL, checked after every validation (default: none)")
    parser.add_argument("--our-budget", nargs="*", type=model_seconds, default=[], metavar="MODEL=SECONDS",
                        help="the same for this project's training")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache-dir", default=".molar_cache")
    parser.add_argument("--out", default="runs/benchmarks/recbole_side_by_side")
    args = parser.parse_args()
    args.recbole_budget, args.our_budget = dict(args.recbole_budget), dict(args.our_budget)
    args.out = str(Path(args.out).resolve())  # the RecBole driver runs in a folder of its own
    if not Path(args.recbole_python).is_file():
        parser.error(f"--recbole-python {args.recbole_python} does not exist; make the venv as the docstring of "
                     f"{Path(__file__).name} says")
    run_start = time.perf_counter()
    out = Path(args.out)
    datamodule = MovieLensDataModule(data_dir=args.data_dir, cache_dir=args.cache_dir)
    data_path = write_atomic_inter(datamodule.dataset, out / "atomic", DATASET_NAME).parents[1]
    results = []
    for model in args.models:  # the summary grows after each model, so a stopped run keeps what it measured
        results.append(compare(model, args, datamodule, data_path))
        (out / "summary.json").write_text(json.dumps(results, indent=1))
    print_tables(results)
    print(f"\nwhole run: {time.perf_counter() - run_start:.0f} s")


if __name__ == "__main__":
    main()
