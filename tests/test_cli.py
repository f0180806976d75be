"""The ``molar`` command: links reach the model, errors name valid keys, help lists every command and works
as documented, old checkpoints load, ``prepare`` prints the statistics, and ``fit`` leaves its results
(every shipped config runs end to end in ``test_configs_run.py``)."""

import json
import re
import shlex
from pathlib import Path

import lightning.pytorch as pl
import pytest

from molar_lightning.callbacks.evaluation import RankingEvaluationCallback
from molar_lightning.cli import build_cli
from molar_lightning.commands import main
from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.tasks.molar import MolarModule

ROOT = Path(__file__).parents[1]
CHECKPOINTS = ROOT / "tests" / "fixtures" / "checkpoints"
MOVIELENS_MODELS = ["sasrec", "gru4rec", "fpmc", "duorec"]


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


def test_prepare_refuses_a_malformed_line_and_leaves_no_cache(ml1m_dir: Path, tmp_path: Path, capsys) -> None:
    path = ml1m_dir / "ratings.dat"
    path.write_text(path.read_text() + "3::4\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--data", "MovieLensDataModule", "--data.data_dir", str(ml1m_dir),
              "--data.cache_dir", str(tmp_path / "cache")])
    assert exit_info.value.code == 2
    assert re.search(r"error: \S*ratings\.dat:81: expected 4 fields.*'3::4'", capsys.readouterr().err)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_prepare_refuses_a_data_set_emptied_by_k_core(ml1m_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no interaction survives filtering: .*80.* -> 0 .*items >= 100"):
        main(["prepare", "--debug", "--data", "MovieLensDataModule", "--data.data_dir", str(ml1m_dir),
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


def test_unknown_key_in_a_config_file_is_refused_with_the_valid_keys(tmp_path: Path, capsys) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text((ROOT / "configs/movielens/sasrec.yaml").read_text().replace("weight_decay", "wieght_decay"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "'model.init_args.optimizer.init_args.wieght_decay' is not an argument of torch.optim" in error
    assert "Did you mean 'weight_decay'?" in error and "Traceback" not in error


def test_molar_help_lists_every_command(capsys) -> None:
    main(["--help"])
    listed = [line.split("  ")[1].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert listed == ["fit", "validate", "test", "predict", "prepare", "data fetch-images", "embed", "quickstart",
                      "export", "recommend", "serve", "reproduce"]


DOCUMENTED_HELP = [shlex.split(line.split("#")[0])[1:] for line in (ROOT / "docs/cli.md").read_text().splitlines()
                   if re.match(r"molar .*(--help|\.help)", line)]


@pytest.mark.parametrize("args", DOCUMENTED_HELP, ids=" ".join)
def test_documented_help_commands_work(args: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (None, 0)
    assert "usage:" in capsys.readouterr().out


def test_documented_help_commands_are_found() -> None:
    assert len(DOCUMENTED_HELP) >= 4


@pytest.mark.parametrize("task", ["SequentialRecModule", "MolarModule"])
def test_model_help_lists_this_projects_classes_for_injected_parts(task: str, capsys) -> None:
    """Encoders, losses and the item encoder are typed by their protocols or classes, so their help lists this
    project's classes, not every torch module (only ``item_adapter`` and ``align_projection``, any ``nn.Module``,
    still do)."""
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", task])
    help_text = capsys.readouterr().out
    assert "how many items ``predict`` returns per user" in help_text
    options = {block.split()[0]: block for block in help_text.split("\n  --model.")[1:]}
    typed = [name for name in ("encoder", "user_encoder", "item_encoder", "loss", "encoder_loss") if name in options]
    assert typed and all("torch.nn.Bilinear" not in options[name] for name in typed)
    if task == "SequentialRecModule":
        assert len(help_text.splitlines()) < 200


def test_no_module_reads_private_attributes_of_other_objects() -> None:
    """``x._name`` only on ``self``/``cls``: never a private attribute of Lightning, jsonargparse or torch objects."""
    private = re.compile(r"\b(?!self\b|cls\b)[A-Za-z_]\w*\)?\._[A-Za-z]\w*")
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in sorted((ROOT / "molar_lightning").rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if private.search(line.split("#")[0])]
    assert found == []
    assert len((ROOT / "molar_lightning" / "cli.py").read_text().splitlines()) < 120


ID_ROWS = ["sasrec", "gru4rec", "fpmc", "duorec"]


@pytest.mark.parametrize("row", ID_ROWS)
def test_old_checkpoints_give_their_recorded_metrics(row: str, ml1m_dir: Path, tmp_path: Path) -> None:
    """Checkpoints written before the transformer-body refactor (tests/fixtures/checkpoints/make_fixtures.py)
    load into today's classes through `molar test --ckpt_path` and give the metrics that code recorded."""
    main(["test", "--config", str(ROOT / f"configs/movielens/{row}.yaml"),
          "--ckpt_path", str(CHECKPOINTS / f"{row}.ckpt"), "--data.init_args.data_dir", str(ml1m_dir),
          "--data.init_args.cache_dir", str(tmp_path / "cache"), "--trainer.default_root_dir", str(tmp_path / "run"),
          "--trainer.enable_progress_bar", "false"])
    (results,) = (tmp_path / "run").rglob("results.json")
    expected = json.loads((CHECKPOINTS / "expected.json").read_text())[row]
    measured = json.loads(results.read_text())
    assert measured.keys() >= expected.keys()
    assert all(abs(measured[name] - expected[name]) < 1e-6 for name in expected)


def test_an_old_content_checkpoint_loads_with_its_cache_moved(ml1m_dir: Path, tmp_path: Path) -> None:
    """The SASRec+BERT-style row (a MolarModule over SASRecUserEncoder) rebuilt from its checkpoint alone."""
    model = MolarModule.load_from_checkpoint(CHECKPOINTS / "sasrec_bert.ckpt",
                                             item_embeddings=str(CHECKPOINTS / "features.safetensors"))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[RankingEvaluationCallback()], default_root_dir=str(tmp_path))
    (measured,) = trainer.test(model, datamodule=MovieLensDataModule(str(ml1m_dir), cache_dir=str(tmp_path)))
    expected = json.loads((CHECKPOINTS / "expected.json").read_text())["sasrec_bert"]
    assert all(abs(measured[f"test/{name}"] - expected[name]) < 1e-6 for name in expected if name != "users")
