"""The ``molar`` command: every shipped config parses, links reach the model, errors name valid keys,
``prepare`` prints the statistics, and ``fit`` runs end to end and leaves its results table."""

import json
import math
from pathlib import Path

import pytest
import torch

from molar_lightning.cli import build_cli, main

ROOT = Path(__file__).parents[1]
EXPERIMENTS = sorted((ROOT / "configs").glob("*/*.yaml"))
EXPERIMENTS = [path for path in EXPERIMENTS if path.parent.name != "trainer"]
TRAINER_CONFIGS = sorted((ROOT / "configs" / "trainer").glob("*.yaml"))
MOVIELENS_MODELS = ["sasrec", "gru4rec", "fpmc", "duorec"]


def test_every_config_is_covered() -> None:
    """No YAML hides deeper than ``configs/<group>/``, where the parse tests below would miss it."""
    assert sorted((ROOT / "configs").rglob("*.yaml")) == sorted(EXPERIMENTS + TRAINER_CONFIGS)
    assert len(EXPERIMENTS) >= 23 and len(TRAINER_CONFIGS) == 4


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_experiment_config_parses(config: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (None, 0)
    assert "class_path: molar_lightning.tasks" in capsys.readouterr().out


@pytest.mark.parametrize("config", TRAINER_CONFIGS, ids=lambda p: p.stem)
def test_trainer_config_composes(config: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs/movielens/sasrec.yaml"), "--config", str(config),
              "--print_config"])
    printed = capsys.readouterr().out
    assert "EarlyStopping" in printed  # the experiment's callbacks survive composition


@pytest.mark.parametrize("model", MOVIELENS_MODELS)
def test_links_reach_the_encoder(model: str, ml1m_dir: Path, tmp_path: Path) -> None:
    cli = build_cli(["--config", str(ROOT / f"configs/movielens/{model}.yaml"),
                     "--data.init_args.data_dir", str(ml1m_dir), "--data.init_args.cache_dir", str(tmp_path),
                     "--data.init_args.max_seq_len", "7", "--trainer.logger", "false"], run=False)
    encoder = cli.model.encoder
    assert encoder.item_embeddings().shape[0] == 10 + 1  # data.num_items -> encoder.num_items
    if model in ("sasrec", "duorec"):
        assert encoder.max_seq_len == 7
    if model == "fpmc":
        assert encoder.user_factors.num_embeddings == 12  # data.num_users -> encoder.num_users


def test_unknown_key_is_refused_with_the_valid_keys(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs/movielens/sasrec.yaml"),
              "--model.init_args.encoder.init_args.hiden_size", "32"])
    assert exit_info.value.code != 0
    error = capsys.readouterr().err
    assert "hiden_size" in error and "Valid keys here: num_items, max_seq_len, hidden_size" in error
    assert "Did you mean 'hidden_size'?" in error


def test_unknown_trainer_key_is_refused_with_a_suggestion(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs/movielens/sasrec.yaml"), "--trainer.max_epohcs", "3"])
    assert "Did you mean 'max_epochs'?" in capsys.readouterr().err


def test_help_shows_argument_docstrings(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--data.help", "molar_lightning.data.datamodule.MovieLensDataModule"])
    help_text = capsys.readouterr().out
    assert "folder with ``ratings.dat``" in help_text  # the subclass's own argument
    assert "most recent items a model sees" in help_text  # forwarded to SequentialDataModule, still shown


def test_prepare_prints_the_statistics_table(ml1m_dir: Path, tmp_path: Path, capsys) -> None:
    main(["prepare", "--config", str(ROOT / "configs/movielens/sasrec.yaml"),
          "--data.init_args.data_dir", str(ml1m_dir), "--data.init_args.cache_dir", str(tmp_path)])
    table = capsys.readouterr().out
    for row in ("users", "items", "interactions"):
        assert row in table
    assert "80" in table and "12" in table


def test_prepare_refuses_a_malformed_line_and_leaves_no_cache(ml1m_dir: Path, tmp_path: Path) -> None:
    path = ml1m_dir / "ratings.dat"
    path.write_text(path.read_text() + "3::4\n")
    with pytest.raises(ValueError, match=r"ratings\.dat:81: expected 4 fields.*'3::4'"):
        main(["prepare", "--data", "MovieLensDataModule", "--data.data_dir", str(ml1m_dir),
              "--data.cache_dir", str(tmp_path / "cache")])
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("model", MOVIELENS_MODELS)
def test_fit_runs_every_model_and_writes_results(model: str, ml1m_dir: Path, tmp_path: Path) -> None:
    main(["fit", "--config", str(ROOT / f"configs/movielens/{model}.yaml"),
          "--data.init_args.data_dir", str(ml1m_dir), "--data.init_args.cache_dir", str(tmp_path / "cache"),
          "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_epochs", "2",
          "--trainer.enable_progress_bar", "false"])
    results = list((tmp_path / "run").rglob("results.json"))
    assert len(results) == 1
    values = json.loads(results[0].read_text())
    metrics = values.get("metrics", values)
    assert math.isfinite(float(metrics["ndcg@10"])) and 0 <= float(metrics["recall@50"]) <= 1
    assert (results[0].parent / "results.md").is_file()
    assert (results[0].parent / "config.yaml").is_file()  # the run's full config is saved beside it
    assert list((tmp_path / "run").rglob("best-*.ckpt"))


def test_prepare_refuses_a_data_set_emptied_by_k_core(ml1m_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no interaction survives filtering: .*80.* -> 0 .*items >= 100"):
        main(["prepare", "--data", "MovieLensDataModule", "--data.data_dir", str(ml1m_dir),
              "--data.cache_dir", str(tmp_path / "cache"), "--data.min_item_interactions", "100"])
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_predict_writes_raw_id_recommendations(ml1m_dir: Path, tmp_path: Path) -> None:
    common = ["--config", str(ROOT / "configs/movielens/sasrec.yaml"), "--data.init_args.data_dir", str(ml1m_dir),
              "--data.init_args.cache_dir", str(tmp_path / "cache"), "--trainer.enable_progress_bar", "false"]
    main(["fit", *common, "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_epochs", "1"])
    (checkpoint,) = (tmp_path / "run").rglob("best-*.ckpt")
    main(["predict", *common, "--trainer.default_root_dir", str(tmp_path / "predict"),
          "--ckpt_path", str(checkpoint), "--model.init_args.top_k", "3"])
    (written,) = (tmp_path / "predict").rglob("recommendations.jsonl")
    rows = [json.loads(line) for line in written.read_text().splitlines()]
    seen: dict[str, set[str]] = {}
    for line in (ml1m_dir / "ratings.dat").read_text().splitlines():
        user, item, _, _ = line.split("::")
        seen.setdefault(user, set()).add(item)
    assert len(rows) == 12
    for row in rows:  # raw MovieLens ids, never a movie the user already rated; fewer when fewer are left
        assert len(row["items"]) == min(3, 10 - len(seen[row["user"]]))
        assert not set(row["items"]) & seen[row["user"]]
        assert row["scores"] == sorted(row["scores"], reverse=True)


def test_fit_builds_a_row_without_an_id_model(ml1m_dir: Path, tmp_path: Path) -> None:
    """``encoder: null`` (SASRec+BERT-, HLLM-style rows): the data -> encoder links are left out, and it trains."""
    from safetensors.torch import save_file

    from molar_lightning.data.datamodule import MovieLensDataModule

    num_items = MovieLensDataModule(str(ml1m_dir), cache_dir=str(tmp_path / "cache")).num_items
    features = tmp_path / "features.safetensors"
    save_file({"embeddings": torch.randn(num_items + 1, 768)}, str(features))  # sasrec_bert.yaml reads 768 wide
    main(["fit", "--config", str(ROOT / "configs/movielens/sasrec_bert.yaml"), "--data.init_args.data_dir",
          str(ml1m_dir), "--data.init_args.cache_dir", str(tmp_path / "cache"), "--model.init_args.item_embeddings",
          str(features), "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "run"),
          "--trainer.enable_progress_bar", "false", "--trainer.precision", "32"])
    (results,) = (tmp_path / "run").rglob("results.json")
    assert math.isfinite(json.loads(results.read_text())["ndcg@10"])
