"""Train one RecBole 1.2.1 model on atomic files and write what the side-by-side comparison needs.

Run only by RecBole's own Python (its virtual environment, see ``benchmarks/recbole_side_by_side.py``), which
passes the arguments as a list:

    /work/recbole-venv/bin/python benchmarks/recbole_driver.py --data-path DIR --dataset NAME --model SASRec \
        --epochs 200 --time-budget 900 --out DIR

It imports nothing from molar_lightning (the two live in different environments). Written to ``--out``:

* ``result.json``: the per-epoch validation curve (seconds since ``fit`` began, RecBole's validation NDCG@10,
  history not excluded as RecBole does for sequential models), the best epoch, RecBole's own test metrics
  of the best model, and the validation and test item of every user (raw tokens), for the split check.
* ``test_scores.npz``: the best model's full-sort test scores, one row per user, one column per item token,
  so the comparison ranks them with its own metric under both protocols.

The best model is kept in memory (a copy of its ``state_dict`` when validation improves) and ``fit`` runs
with ``saved=False``: RecBole 1.2.1 reloads its own checkpoint with a plain ``torch.load``, which torch >= 2.6
refuses (``weights_only=True`` by default; the checkpoint holds RecBole's ``Config`` object), so no
checkpoint is written or read at all. RecBole's ``fit`` has no way to stop early other than its own early
stopping; the time budget is enforced by the ``callback_fn`` raising :class:`BudgetSpent` after the epoch's
validation, which ends ``fit`` with everything that epoch measured recorded.
"""

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed

# Each model's RecBole hyper-parameters (its properties/model/<Model>.yaml defaults, written out so the run
# does not depend on them) and loss; this project's configs/movielens/<model>.yaml use the same values.
MODEL_SETTINGS = {
    "SASRec": {"n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256, "hidden_dropout_prob": 0.5,
               "attn_dropout_prob": 0.5, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
               "initializer_range": 0.02, "loss_type": "CE", "train_neg_sample_args": None},
    "GRU4Rec": {"embedding_size": 64, "hidden_size": 128, "num_layers": 1, "dropout_prob": 0.3,
                "loss_type": "CE", "train_neg_sample_args": None},
    "FPMC": {"embedding_size": 64, "loss_type": "BPR",
             "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
}


class BudgetSpent(Exception):
    """Raised by the epoch callback once the time budget is spent, to end ``Trainer.fit``."""


class EpochRecorder:
    """RecBole ``callback_fn``: records each validation with its time and keeps the best model's weights."""

    def __init__(self, model: torch.nn.Module, time_budget: float) -> None:
        self.model, self.time_budget = model, time_budget
        self.curve: list[dict] = []
        self.best_score, self.best_epoch, self.best_state = -float("inf"), -1, None
        self.fit_start = time.perf_counter()

    def __call__(self, epoch_idx: int, valid_score: float) -> None:
        seconds = time.perf_counter() - self.fit_start
        self.curve.append({"epoch": epoch_idx, "seconds": seconds, "valid_ndcg@10": float(valid_score)})
        if valid_score > self.best_score:  # RecBole's early stopping also counts only a strict gain
            self.best_score, self.best_epoch = float(valid_score), epoch_idx
            self.best_state = copy.deepcopy(self.model.state_dict())
        if seconds >= self.time_budget:
            raise BudgetSpent


def held_out_items(loader, dataset) -> dict[str, str]:
    """Raw user token -> raw token of the held-out item, for every row of a full-sort eval loader."""
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    items = {}
    for interaction, _, _, _ in loader:
        users = dataset.id2token(uid_field, interaction[uid_field].numpy())
        targets = dataset.id2token(iid_field, interaction[iid_field].numpy())
        items.update(zip(users.tolist(), targets.tolist()))
    return items


@torch.no_grad()
def test_scores(model, loader, dataset) -> dict[str, np.ndarray]:
    """The model's full-sort scores of every test user over every item (column 0 is RecBole's padding)."""
    model.eval()
    users, targets, rows = [], [], []
    for interaction, _, _, _ in loader:
        users += dataset.id2token(dataset.uid_field, interaction[dataset.uid_field].numpy()).tolist()
        targets += dataset.id2token(dataset.iid_field, interaction[dataset.iid_field].numpy()).tolist()
        rows.append(model.full_sort_predict(interaction).view(len(interaction), -1).numpy())
    return {"users": np.array(users), "targets": np.array(targets),
            "item_tokens": np.array(dataset.field2id_token[dataset.iid_field]),
            "scores": np.concatenate(rows).astype(np.float32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", required=True, help="folder holding <dataset>/<dataset>.inter")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", required=True, choices=sorted(MODEL_SETTINGS))
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=10, help="RecBole's stopping_step")
    parser.add_argument("--time-budget", type=float, default=float("inf"), help="seconds of fit, checked per epoch")
    parser.add_argument("--max-seq-len", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = Config(model=args.model, dataset=args.dataset, config_dict={
        "data_path": args.data_path, "checkpoint_dir": str(out), "use_gpu": False, "seed": args.seed,
        "reproducibility": True, "show_progress": False, "state": "WARNING",
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "MAX_ITEM_LIST_LENGTH": args.max_seq_len, "epochs": args.epochs, "stopping_step": args.patience,
        "train_batch_size": args.batch_size, "learning_rate": args.lr, "learner": "adam", "weight_decay": 0.0,
        "metrics": ["Recall", "NDCG"], "topk": [10, 20, 50], "valid_metric": "NDCG@10", "eval_batch_size": 4096,
        **MODEL_SETTINGS[args.model],
    })
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])  # as RecBole's run_recbole does
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    recorder = EpochRecorder(model, args.time_budget)
    try:
        trainer.fit(train_data, valid_data, verbose=False, saved=False, show_progress=False, callback_fn=recorder)
        stopped_by = "early stopping" if len(recorder.curve) < args.epochs else "epoch limit"
    except BudgetSpent:
        stopped_by = "time budget"
    model.load_state_dict(recorder.best_state)
    recbole_test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    np.savez(out / "test_scores.npz", **test_scores(model, test_data, dataset))
    (out / "result.json").write_text(json.dumps({
        "model": args.model, "curve": recorder.curve, "best_epoch": recorder.best_epoch,
        "best_valid_ndcg@10": recorder.best_score, "stopped_by": stopped_by,
        "recbole_test": {key: float(value) for key, value in recbole_test.items()},
        "train_batches_per_epoch": len(train_data), "train_samples_per_epoch": train_data.sample_size,
        "valid_items": held_out_items(valid_data, dataset), "test_items": held_out_items(test_data, dataset),
        "torch_threads": torch.get_num_threads(),
    }, indent=1))


if __name__ == "__main__":
    main()
