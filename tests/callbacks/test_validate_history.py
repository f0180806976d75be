"""``molar validate --ckpt_path X`` records one entry of its own: X, the epoch and step X was saved at, and the
metrics, equal to those fit logged at that epoch (the same weights on the same users); never fit's epochs."""

import json
from pathlib import Path

import torch

from molar_lightning.commands import main

ROOT = Path(__file__).parents[2]


def test_validate_records_its_own_entry(ml1m_dir: Path, tmp_path: Path) -> None:
    common = ["--config", str(ROOT / "configs/movielens/sasrec.yaml"), "--data.init_args.data_dir", str(ml1m_dir),
              "--data.init_args.cache_dir", str(tmp_path / "cache"), "--trainer.enable_progress_bar", "false",
              "--trainer.accelerator", "cpu"]
    main(["fit", *common, "--trainer.default_root_dir", str(tmp_path / "fit"), "--trainer.max_epochs", "2"])
    (fit_history,) = (tmp_path / "fit").rglob("validation_history.json")
    fitted = json.loads(fit_history.read_text())
    assert [entry["epoch"] for entry in fitted] == [0, 1]
    (best,) = (tmp_path / "fit").rglob("best-*.ckpt")
    saved_at = torch.load(best, map_location="cpu", weights_only=False)  # written by this framework
    main(["validate", *common, "--trainer.default_root_dir", str(tmp_path / "validate"), "--ckpt_path", str(best)])
    (history,) = (tmp_path / "validate").rglob("validation_history.json")
    (entry,) = json.loads(history.read_text())
    assert entry["checkpoint"] == str(best)
    assert (entry["epoch"], entry["step"]) == (saved_at["epoch"], saved_at["global_step"])
    (at_that_epoch,) = [old for old in fitted if old["epoch"] == entry["epoch"]]
    assert entry["ndcg@10"] == at_that_epoch["ndcg@10"] and entry["users"] == at_that_epoch["users"] == 12
