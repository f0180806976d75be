"""Each logger config under ``configs/logger/`` composes after an experiment (as the trainer configs do) and
records the run where its viewer reads it: the validation NDCG@10 that ``validation_history.json`` holds and the
task's hyper-parameters, nested encoder config included. The run's own files (``config.yaml``,
``validation_history.json``, ``results.json``) land in ``trainer.log_dir``: the logger's version folder for
TensorBoard and CSV, the run folder (``trainer.default_root_dir``) for MLflow and W&B. MLflow runs on its file
store and W&B offline, so nothing leaves this machine; their tests skip where the package is not installed.
A logger whose package is missing, or an MLflow store LightningCLI cannot use, is refused before launch with one
message (``molar_lightning/launch_checks.py``).
"""

import csv
import json
import struct
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from molar_lightning.cli import build_cli
from molar_lightning.commands import main

ROOT = Path(__file__).parents[1]
LOGGER_CONFIGS = sorted((ROOT / "configs" / "logger").glob("*.yaml"))
HIDDEN_SIZE = 64  # configs/movielens/sasrec.yaml's SASRec, as the loggers must record it


@pytest.fixture(autouse=True)
def away_from_the_checkout(tmp_path: Path, monkeypatch) -> None:
    """Run in ``tmp_path``, so that a tracker writing into its default folder (``./mlruns``, ``./wandb``) instead
    of the run folder fails its test without leaving files in the checkout."""
    monkeypatch.chdir(tmp_path)


def fit(logger: str, data_dir: Path, work: Path, *overrides: str) -> dict:
    """``molar fit`` of the MovieLens SASRec row for one epoch on the fixture, with ``configs/logger/<logger>.yaml``
    composed after it, into ``work/run``; returns the validation entry of ``validation_history.json``."""
    main(["fit", "--config", str(ROOT / "configs/movielens/sasrec.yaml"),
          "--config", str(ROOT / f"configs/logger/{logger}.yaml"),
          "--data.init_args.data_dir", str(data_dir), "--data.init_args.cache_dir", str(work / "cache"),
          "--trainer.default_root_dir", str(work / "run"), "--trainer.max_epochs", "1",
          "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *overrides])
    (history,) = json.loads((run_files(work) / "validation_history.json").read_text())
    return history


def run_files(work: Path) -> Path:
    """The one folder holding the run's config.yaml, and the results beside it."""
    (config,) = (work / "run").rglob("config.yaml")
    assert {"validation_history.json", "results.json", "results.md"} <= {path.name for path in config.parent.iterdir()}
    return config.parent


def test_every_logger_config_is_tested() -> None:
    assert [path.stem for path in LOGGER_CONFIGS] == ["csv", "mlflow", "tensorboard", "wandb"]
    for path in LOGGER_CONFIGS:  # composable after any experiment: a trainer.logger block and nothing else
        assert list(yaml.safe_load(path.read_text())) == ["trainer"]
        assert list(yaml.safe_load(path.read_text())["trainer"]) == ["logger"]


def test_tensorboard_config_is_lightnings_default(ml1m_dir: Path, tmp_path: Path) -> None:
    """Written out, the default logger is the same: TensorBoard, into the same version folder of the run."""
    experiment = ["--config", str(ROOT / "configs/movielens/sasrec.yaml"), "--data.init_args.data_dir", str(ml1m_dir),
                  "--data.init_args.cache_dir", str(tmp_path / "cache"), "--trainer.default_root_dir", str(tmp_path)]
    default = build_cli(experiment, run=False).trainer.logger
    tensorboard = ["--config", str(ROOT / "configs/logger/tensorboard.yaml")]
    written = build_cli([*experiment, *tensorboard], run=False).trainer.logger
    assert type(written) is type(default)
    assert written.log_dir == default.log_dir == str(tmp_path / "lightning_logs" / "version_0")


def test_tensorboard_records_the_validation_ndcg(ml1m_dir: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = fit("tensorboard", ml1m_dir, tmp_path)
    version = tmp_path / "run" / "lightning_logs" / "version_0"  # Lightning's default logger writes here too
    assert run_files(tmp_path) == version
    events = EventAccumulator(str(version))
    events.Reload()
    (scalar,) = events.Scalars("val/ndcg@10")
    assert scalar.value == pytest.approx(history["ndcg@10"], rel=1e-6)  # stored as float32
    hparams = yaml.safe_load((version / "hparams.yaml").read_text())
    assert hparams["encoder"]["init_args"]["hidden_size"] == HIDDEN_SIZE


def test_csv_writes_the_validation_ndcg_column(ml1m_dir: Path, tmp_path: Path) -> None:
    history = fit("csv", ml1m_dir, tmp_path)
    version = tmp_path / "run" / "lightning_logs" / "version_0"
    assert run_files(tmp_path) == version
    with open(version / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["val/ndcg@10"]]
    assert [float(row["val/ndcg@10"]) for row in rows] == [pytest.approx(history["ndcg@10"])]
    hparams = yaml.safe_load((version / "hparams.yaml").read_text())
    assert hparams["encoder"]["init_args"]["hidden_size"] == HIDDEN_SIZE


def test_mlflow_file_store_records_metric_and_params(ml1m_dir: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to use its file store
    history = fit("mlflow", ml1m_dir, tmp_path)
    store = tmp_path / "run"
    assert run_files(tmp_path) == store
    client = MlflowClient(f"file:{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("molar").experiment_id])
    assert run.data.metrics["val/ndcg10"] == pytest.approx(history["ndcg@10"])  # MLflow refuses '@' in a name
    assert run.data.params["encoder/init_args/hidden_size"] == str(HIDDEN_SIZE)  # nested config, flattened


def wandb_records(path: Path) -> Iterator:
    """The protobuf records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then LevelDB's
    log format (32 KiB blocks; each chunk a 7-byte header: CRC, length, type 1 full / 2 first / 3 middle /
    4 last), each record one ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    position, record = 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        record += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            parsed = wandb_internal_pb2.Record()
            parsed.ParseFromString(record)
            record = b""
            yield parsed


def test_wandb_offline_run_records_metric_and_config(ml1m_dir: Path, tmp_path: Path, monkeypatch) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    history = fit("wandb", ml1m_dir, tmp_path, "--trainer.logger.init_args.offline", "true")
    # `molar fit` ends its process, which ends the run and writes out the file; a test process goes on, so it
    # waits for W&B's service to do that (wandb.finish() alone returns before the file is written, at times).
    wandb.teardown()
    assert run_files(tmp_path) == tmp_path / "run"
    (log,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    records = list(wandb_records(log))
    logged = [json.loads(item.value_json) for record in records if record.WhichOneof("record_type") == "history"
              for item in record.history.item if (item.key or "/".join(item.nested_key)) == "val/ndcg@10"]
    assert logged == [pytest.approx(history["ndcg@10"])]
    config = {item.key: json.loads(item.value_json) for record in records
              if record.WhichOneof("record_type") == "config" for item in record.config.update}
    assert config["encoder"]["init_args"]["hidden_size"] == HIDDEN_SIZE


def refusal(logger: str, capsys, *overrides: str) -> str:
    """The message ``molar fit`` with ``configs/logger/<logger>.yaml`` exits with (status 2), before any data."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs/movielens/sasrec.yaml"),
              "--config", str(ROOT / f"configs/logger/{logger}.yaml"),
              "--data.init_args.data_dir", "/nonexistent/ml-1m", *overrides])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("logger", "module", "install"), [("mlflow", "mlflow", "pip install mlflow-skinny"),
                                                          ("wandb", "wandb", "pip install wandb")],
                         ids=["mlflow", "wandb"])
def test_a_logger_without_its_package_is_refused(logger: str, module: str, install: str, capsys,
                                                  monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importlib then finds no such package, as if not installed
    assert f"needs the {module} package, which is not installed: {install}" in refusal(logger, capsys)


def test_mlflow_file_store_unasked_is_refused(capsys, monkeypatch) -> None:
    pytest.importorskip("mlflow.environment_variables")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert "export MLFLOW_ALLOW_FILE_STORE=true" in refusal("mlflow", capsys)


def test_mlflow_remote_store_is_refused(capsys) -> None:
    pytest.importorskip("mlflow")
    error = refusal("mlflow", capsys, "--trainer.logger.init_args.tracking_uri", "sqlite:///mlflow.db")
    assert "tracking_uri sqlite:///mlflow.db has no local folder" in error
