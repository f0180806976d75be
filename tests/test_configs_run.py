"""Every shipped YAML under ``configs/`` runs end to end: fit, then test and predict from its best checkpoint.

Found by globbing, so a config is covered the day it is added. Each runs as written, with tiny substitutes
for what cannot be had here: the raw fixtures for the data, a tiny random-weight Qwen2-VL for every
``backbone`` (and its width for the item width an end-to-end config states for the real MIRM), seeded random
features for an embedding cache, an ID-model checkpoint trained by that data set's own ID config for
``encoder_checkpoint``, and two training steps. A variant (a YAML without a data section, such as the cached
Molar rows' ``molar_cached.yaml``) runs composed after every end-to-end config of its folder, as ``--config
X.yaml --config <variant>.yaml``. Trainer configs compose with an experiment and run on CPU processes in a
subprocess, as a user would launch them.
"""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from safetensors.torch import save_file

from molar_lightning.commands import main
from molar_lightning.data.datamodule import SequentialDataModule
from molar_lightning.models.tiny import build_qwen_tokenizer, build_tiny_backbone, tiny_qwen2_vl_config

ROOT = Path(__file__).parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
# configs/trainer/ and configs/logger/ compose with an experiment; the loggers run in test_logger_configs.py.
CONFIGS = sorted(path for path in (ROOT / "configs").glob("*/*.yaml") if path.parent.name not in ("trainer", "logger"))
VARIANTS = [path for path in CONFIGS if "data" not in yaml.safe_load(path.read_text())]
EXPERIMENTS = [path for path in CONFIGS if path not in VARIANTS]
# Each variant after every end-to-end config (a MIRM in item_encoder) of its folder.
VARIANT_RUNS = [(base, variant) for variant in VARIANTS for base in EXPERIMENTS if base.parent == variant.parent
                and (yaml.safe_load(base.read_text())["model"].get("init_args") or {}).get("item_encoder")]
TRAINER_CONFIGS = sorted((ROOT / "configs" / "trainer").glob("*.yaml"))
# Rows whose code path a fast test already runs go with the slow tests (`make test-slow`): Amazon's and
# PixelRec's other ID models (their SASRec rows run the data, the MovieLens rows the models); end to end the
# Table 4, CoLLM and HLLM rows (molar.yaml runs the end-to-end path); MIRM alignment and the quickstart's Molar
# configs (the smoke quickstart runs its own); the cached variant after rows other than the quickstart's (the
# same variant, another row); FSDP on CPU composed with HLLM (tests/test_fsdp.py trains end-to-end Molar
# through fsdp_cpu.yaml), fsdp.yaml (fsdp_cpu.yaml with its GPU values overridden), cpu.yaml (one CPU
# process, as every experiment row runs) and multinode.yaml (ddp.yaml's strategy over node settings).
SLOW_ROWS = {"amazon/fpmc", "amazon/gru4rec", "amazon/duorec", "pixelrec/fpmc", "pixelrec/gru4rec", "pixelrec/duorec",
             "movielens/molar_fpmc", "movielens/molar_gru4rec", "movielens/molar_duorec", "movielens/collm",
             "movielens/hllm", "movielens/mirm_align", "quickstart/mirm_align", "quickstart/molar"}
FAST_VARIANT_ROWS = {"quickstart/molar"}
SLOW_TRAINER_CONFIGS = {"trainer/fsdp", "trainer/fsdp_cpu", "trainer/cpu", "trainer/multinode"}


def row(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def marked(paths: list[Path], slow: set[str]) -> list[Any]:
    """``paths`` as pytest parameters, those named in ``slow`` marked slow."""
    return [pytest.param(path, marks=pytest.mark.slow) if row(path) in slow else path for path in paths]


def marked_variant_runs() -> list[Any]:
    """:data:`VARIANT_RUNS` as pytest parameters, slow after rows outside :data:`FAST_VARIANT_ROWS`."""
    return [pytest.param(base, variant, marks=() if row(base) in FAST_VARIANT_ROWS else pytest.mark.slow)
            for base, variant in VARIANT_RUNS]
TINY_HIDDEN = 64  # configs/quickstart/molar.yaml's item_adapter expects the quickstart's 64-wide tiny MIRM
FAST_TRAINER = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 1,
                "limit_predict_batches": 1, "enable_model_summary": False}
DATA_FOLDERS = {"MovieLens": FIXTURES / "movielens" / "ml-1m", "PixelRec": FIXTURES / "pixelrec",
                "Amazon": FIXTURES / "amazon" / "2018"}


def test_every_yaml_is_found() -> None:
    """No YAML hides deeper than ``configs/<group>/``, where the globs above would miss it, and every variant
    has an end-to-end config to run after."""
    logger_configs = list((ROOT / "configs" / "logger").glob("*.yaml"))
    assert sorted((ROOT / "configs").rglob("*.yaml")) == sorted(CONFIGS + TRAINER_CONFIGS + logger_configs)
    assert {variant for _, variant in VARIANT_RUNS} == set(VARIANTS)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """The quickstart's tiny Qwen2-VL (real tokenizer and image processor), standing in for every hub model."""
    folder = tmp_path_factory.getbasetemp() / "configs-run"
    return build_tiny_backbone(folder / "tiny-qwen2-vl", tiny_qwen2_vl_config(TINY_HIDDEN),
                               build_qwen_tokenizer(folder / "qwen-tokenizer"), with_images=True)


def nodes(value: Any) -> Iterator[dict]:
    """Every mapping inside a config, depth first."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from nodes(item)
    elif isinstance(value, list):
        for item in value:
            yield from nodes(item)


def short_name(class_path: str) -> str:
    return class_path.rpartition(".")[2]


def substitute_data(data: dict, work: Path) -> None:
    """Point the data section (or the alignment data's source) at the raw fixture of its format."""
    init_args = data.setdefault("init_args", {})
    init_args.update(cache_dir=str(work / "cache"), num_workers=0)
    if short_name(data["class_path"]).startswith("Amazon"):  # 5-core and the rating threshold empty the fixture
        init_args.update(min_user_interactions=0, min_item_interactions=0, rating_threshold=None)
    source = init_args.get("source")
    target = source.setdefault("init_args", {}) if isinstance(source, dict) else init_args
    kind = short_name(source["class_path"] if isinstance(source, dict) else data["class_path"])
    target["data_dir"] = str(next(folder for name, folder in DATA_FOLDERS.items() if kind.startswith(name)))
    if isinstance(source, dict):  # the alignment data: a few examples per mixture
        init_args["examples_per_mixture"] = 8


def item_width(model_args: dict) -> int:
    """Width the item embedding cache must have for this task: the adapter's input, else the user model's."""
    adapter = (model_args.get("item_adapter") or {}).get("init_args", {})
    user = (model_args.get("user_encoder") or {}).get("init_args", {})
    return adapter.get("in_features") or adapter.get("input_size") or user.get("input_size") or TINY_HIDDEN


def num_items(data: dict) -> int:
    """Items in the data set that ``data`` (a config section) prepares."""
    parser = ArgumentParser()
    parser.add_subclass_arguments(SequentialDataModule, "data")
    return parser.instantiate_classes(parser.parse_object({"data": data})).data.num_items


def fake_cache(paths: Any, width: int, num_items: int, work: Path) -> Any:
    """Seeded random feature files in place of ``molar embed`` caches, splitting ``width`` over a list."""
    names = paths if isinstance(paths, list) else [paths]
    generator = torch.Generator().manual_seed(0)
    written = []
    for index in range(len(names)):
        file = work / f"features-{index}.safetensors"
        save_file({"embeddings": torch.randn(num_items + 1, width // len(names), generator=generator)}, str(file))
        written.append(str(file))
    return written if isinstance(paths, list) else written[0]


def tiny_item_width(model_args: dict) -> None:
    """End to end the items are the tiny MIRM's ``TINY_HIDDEN`` wide: the width a config states for its real
    MIRM (DUEG's ``input_size``, and the post-alignment projection's output where it equals it) becomes that.
    Only that value is replaced, so a config whose stated widths disagree still fails."""
    user = model_args["user_encoder"].setdefault("init_args", {})
    width = user.get("input_size")
    if width is None or model_args.get("item_adapter"):  # DUEG takes the backbone's width, or the adapter's
        return
    user["input_size"] = TINY_HIDDEN
    projection = (model_args.get("align_projection") or {}).get("init_args", {})
    if projection.get("out_features") == width:
        projection["out_features"] = TINY_HIDDEN


def tiny_experiment(config: Path, work: Path, tiny: Path) -> Path:
    """``config`` with tiny substitutes, written as ``work/config.yaml``, runs into ``work/run``."""
    experiment = yaml.safe_load(config.read_text())
    experiment.setdefault("trainer", {}).update(FAST_TRAINER, default_root_dir=str(work / "run"))
    substitute_data(experiment["data"], work)
    model_args = experiment["model"].setdefault("init_args", {})
    for node in nodes(experiment["model"]):
        if isinstance(node.get("backbone"), str):
            node["backbone"] = str(tiny)
    if model_args.get("item_encoder"):
        tiny_item_width(model_args)
    if "export_dir" in model_args or short_name(experiment["model"]["class_path"]) == "MIRMAlignmentModule":
        model_args["export_dir"] = str(work / "mirm_encoder")
    # Cached-mode content rows read an embedding cache, named in the config or (quickstart) on the command line.
    if short_name(experiment["model"]["class_path"]) == "MolarModule" and not model_args.get("item_encoder"):
        model_args["item_embeddings"] = fake_cache(model_args.get("item_embeddings", "cache"),
                                                   item_width(model_args), num_items(experiment["data"]), work)
    if model_args.get("encoder_checkpoint"):
        id_config = config.parent / f"{short_name(model_args['encoder']['class_path']).lower()}.yaml"
        model_args["encoder_checkpoint"] = str(run_experiment(id_config, work / "id-model", tiny))
    written = work / "config.yaml"
    work.mkdir(parents=True, exist_ok=True)
    written.write_text(yaml.safe_dump(experiment))
    return written


def tiny_variant(variant: Path, work: Path) -> Path:
    """``variant`` with tiny substitutes for composing after ``work/config.yaml`` (:func:`tiny_experiment`),
    written as ``work/variant.yaml``: where it turns the cached mode on (``item_encoder: null``), random
    features of that experiment's item width for ``item_embeddings``, named there or (quickstart) not."""
    layer = yaml.safe_load(variant.read_text())
    model_args = layer["model"].setdefault("init_args", {})
    if "item_encoder" in model_args and model_args["item_encoder"] is None:
        experiment = yaml.safe_load((work / "config.yaml").read_text())
        model_args["item_embeddings"] = fake_cache(model_args.get("item_embeddings", "cache"),
                                                   item_width(experiment["model"]["init_args"]),
                                                   num_items(experiment["data"]), work)
    written = work / "variant.yaml"
    written.write_text(yaml.safe_dump(layer))
    return written


def run_experiment(config: Path, work: Path, tiny: Path, variant: Optional[Path] = None) -> Path:
    """Fit ``config``, and ``variant`` composed after it, with tiny substitutes into ``work``; returns its best
    checkpoint."""
    configs = ["--config", str(tiny_experiment(config, work, tiny))]
    if variant is not None:
        configs += ["--config", str(tiny_variant(variant, work))]
    main(["fit", *configs])
    (best,) = (work / "run").rglob("best-*.ckpt")
    return best


def check_test_and_predict(configs: list[str], best: Path, work: Path) -> None:
    """``molar test`` and ``molar predict`` of ``best`` under ``configs``: finite metrics, recommendations."""
    for command in ("test", "predict"):
        top_k = [] if command == "test" else ["--model.init_args.top_k=5"]  # the fixtures have 10 items
        main([command, *configs, "--ckpt_path", str(best), f"--trainer.default_root_dir={work / command}", *top_k])
    (results,) = (work / "test").rglob("results.json")
    metrics = json.loads(results.read_text())
    assert math.isfinite(metrics["ndcg@10"]) and 0 <= metrics["recall@50"] <= 1
    (written,) = (work / "predict").rglob("recommendations.jsonl")
    assert written.read_text().strip()


@pytest.mark.parametrize("config", marked(EXPERIMENTS, SLOW_ROWS), ids=row)
def test_experiment_runs_fit_test_predict(config: Path, tiny_backbone: Path, tmp_path: Path) -> None:
    best = run_experiment(config, tmp_path, tiny_backbone)
    alignment = yaml.safe_load(config.read_text())["model"]["class_path"].endswith("MIRMAlignmentModule")
    if alignment:  # its test is the answer loss, and its predict is `molar embed` from the aligned encoder
        main(["test", "--config", str(tmp_path / "config.yaml"), "--ckpt_path", str(best),
              f"--trainer.default_root_dir={tmp_path / 'test'}"])
        main(["embed", "--config", str(tmp_path / "config.yaml"), f"--embed.cache_root={tmp_path / 'embeddings'}",
              f"--model.init_args.encoder.init_args.backbone={tmp_path / 'mirm_encoder'}"])
        assert list((tmp_path / "embeddings").rglob("embeddings.safetensors"))
        return
    check_test_and_predict(["--config", str(tmp_path / "config.yaml")], best, tmp_path)


@pytest.mark.parametrize(("config", "variant"), marked_variant_runs(), ids=row)
def test_variant_runs_after_its_experiments(config: Path, variant: Path, tiny_backbone: Path, tmp_path: Path) -> None:
    """The cached variant turns an end-to-end row into its cached twin: the run records the MIRM gone, the cache
    in its place and the row's own ID model, and trains, tests and predicts."""
    best = run_experiment(config, tmp_path, tiny_backbone, variant)
    (recorded,) = (tmp_path / "run").rglob("config.yaml")
    model_args = yaml.safe_load(recorded.read_text())["model"]["init_args"]
    assert model_args["item_encoder"] is None and Path(model_args["item_embeddings"]).is_file()
    row_encoder = yaml.safe_load(config.read_text())["model"]["init_args"]["encoder"]
    assert (model_args["encoder"] or {}).get("class_path") == (row_encoder or {}).get("class_path")
    check_test_and_predict(["--config", str(tmp_path / "config.yaml"), "--config", str(tmp_path / "variant.yaml")],
                           best, tmp_path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def molar(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "molar_lightning", *args], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# What each trainer config needs to run here: CPU processes instead of GPUs (2 in all), gloo for NCCL, and for
# FSDP2 a 2-process mesh in float32.
ON_CPU = {"cpu": [], "ddp": ["--trainer.accelerator=cpu", "--trainer.devices=2"],
          "multinode": ["--trainer.accelerator=cpu", "--trainer.devices=1"],
          "fsdp": ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.precision=32-true",
                   "--trainer.strategy.init_args.data_parallel_size=2",
                   "--trainer.strategy.init_args.process_group_backend=gloo"],
          "fsdp_cpu": []}
PROCESSES = {"cpu": 1, "ddp": 2, "multinode": 2, "fsdp": 2, "fsdp_cpu": 2}
# FSDP shards language models only, so an ID-only task cannot use it: the FSDP configs run the end-to-end HLLM
# row (item and user LLM, tiny here), the others SASRec.
EXPERIMENT = {"fsdp": "hllm", "fsdp_cpu": "hllm"}


@pytest.mark.parametrize("config", marked(TRAINER_CONFIGS, SLOW_TRAINER_CONFIGS), ids=lambda path: path.stem)
def test_trainer_config_runs(config: Path, tiny_backbone: Path, tmp_path: Path) -> None:
    """Each trainer config composed with an experiment on MovieLens (:data:`EXPERIMENT`): fit, test of the best
    checkpoint, results written.

    ``multinode`` runs as 2 nodes of 1 process on this machine, launched the way torchrun or SLURM would
    (``NODE_RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR/PORT`` in each process's environment).
    """
    row = EXPERIMENT.get(config.stem, "sasrec")
    experiment = tiny_experiment(ROOT / "configs" / "movielens" / f"{row}.yaml", tmp_path, tiny_backbone)
    args = ["fit", "--config", str(experiment), "--config", str(config), *ON_CPU[config.stem],
            "--trainer.enable_progress_bar=false"]
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    nodes = yaml.safe_load(config.read_text())["trainer"].get("num_nodes", 1)
    if nodes == 1:
        runs = [molar(args, rendezvous)]
    else:
        runs = [molar(args, {**rendezvous, "NODE_RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": str(nodes)})
                for rank in range(nodes)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs), "\n".join(output[-3000:] for output in outputs)
    if PROCESSES[config.stem] > 1:  # really distributed, not one process per launch
        assert f"Starting with {PROCESSES[config.stem]} processes" in outputs[0], outputs[0][-3000:]
    (results,) = (tmp_path / "run").rglob("results.json")
    metrics = json.loads(results.read_text())
    assert metrics["users"] == 12 and math.isfinite(metrics["ndcg@10"])  # every user counted once over the ranks
