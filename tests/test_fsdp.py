"""End-to-end Molar (a tiny MIRM and DUEG trained together, SASRec post-aligned and trained jointly) under FSDP2
through ``molar fit`` on 2 CPU processes (``configs/trainer/fsdp_cpu.yaml``).

* It trains to the same losses and validation figures as DDP on the same 2 processes: the same data shards
  and negatives, so any difference is the sharding (gathers, reduce-scatters, the averaged gradients of the
  parts left whole). 1 process is not the reference here: the content loss draws its negatives per process.
* A run resumed from its shard-wise checkpoint folder ends where the uninterrupted run ends.
* The end-to-end catalog table and the ranking figures of 2 sharded processes equal those of 1 process.
* The MIRM exported from a sharded stage-1 run equals the one exported from DDP.
* Gradients are clipped by norm, as the shipped Molar configs do, over sharded and whole parts together.
* Under ``bf16-mixed`` the language models' blocks are sharded units and a cached item table stays fp32.
"""

import csv
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.distributed.fsdp import FSDPModule

from molar_lightning.commands import main
from molar_lightning.models.dueg import LLMUserEncoder
from molar_lightning.tasks.molar import MolarModule
from tests.test_configs_run import FIXTURES, free_port, molar, tiny_backbone, tiny_experiment  # noqa: F401

ROOT = Path(__file__).parents[1]
FSDP_CPU = ROOT / "configs" / "trainer" / "fsdp_cpu.yaml"
DDP_CPU = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp_find_unused_parameters_true"]


def molar_experiment(work: Path, tiny: Path, epochs: int = 2) -> Path:
    """End-to-end Molar over the MovieLens fixture, logged at every step."""
    experiment = {
        "seed_everything": 0,
        "trainer": {"max_epochs": epochs, "log_every_n_steps": 1, "enable_progress_bar": False,
                    "gradient_clip_val": 1.0,  # as the shipped Molar configs: a joint norm of sharded and whole parts
                    "enable_model_summary": False, "default_root_dir": str(work / "run"),
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(work / "run")}},
                    "callbacks": [{"class_path": "molar_lightning.callbacks.item_inputs.ItemInputsCallback"}]},
        "model": {"class_path": "molar_lightning.tasks.molar.MolarModule", "init_args": {
            "user_encoder": {"class_path": "molar_lightning.models.dueg.LLMUserEncoder",
                             "init_args": {"backbone": str(tiny), "finetuning": "full"}},
            "item_encoder": {"class_path": "molar_lightning.models.mirm.MultimodalItemEncoder",
                             "init_args": {"backbone": str(tiny), "finetuning": "full", "image_size": 28}},
            "encoder": {"class_path": "molar_lightning.models.id.sasrec.SASRec",
                        "init_args": {"dropout": 0.0, "attention_dropout": 0.0}},
            "train_encoder": True,
            "negatives_per_step": 4,
            "loss": {"class_path": "molar_lightning.losses.ContentInfoNCELoss", "init_args": {"num_negatives": 8}},
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1.0e-3, "weight_decay": 0.0}}}},
        "data": {"class_path": "molar_lightning.data.datamodule.MovieLensDataModule",
                 "init_args": {"data_dir": str(FIXTURES / "movielens" / "ml-1m"), "cache_dir": str(work / "cache"),
                               "batch_size": 4, "eval_batch_size": 4, "num_workers": 0}},
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(experiment))
    return work / "config.yaml"


def launch(args: list[str]) -> str:
    """``molar <args>`` as a user would start it; its output, after checking that it succeeded."""
    run = molar(args, {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())})
    output = run.communicate(timeout=600)[0]
    assert run.returncode == 0, output[-4000:]
    assert "Starting with 2 processes" in output
    return output


def logged(run_dir: Path, version: int = 0) -> dict[str, list[float]]:
    """Every logged value of a run, by name, in logging order."""
    values: dict[str, list[float]] = {}
    for row in csv.DictReader((run_dir / "lightning_logs" / f"version_{version}" / "metrics.csv").open()):
        for name, value in row.items():
            if value and name not in ("epoch", "step"):
                values.setdefault(name, []).append(float(value))
    return values


@pytest.fixture(scope="module")
def fsdp_run(tiny_backbone: Path, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("fsdp")
    launch(["fit", "--config", str(molar_experiment(work, tiny_backbone)), "--config", str(FSDP_CPU)])
    return work / "run"


def test_fsdp_trains_as_ddp_does(fsdp_run: Path, tiny_backbone: Path, tmp_path: Path) -> None:
    launch(["fit", "--config", str(molar_experiment(tmp_path, tiny_backbone)), *DDP_CPU])
    sharded, replicated = logged(fsdp_run), logged(tmp_path / "run")
    for name in ("train/loss", "train/next_item_loss", "train/encoder_loss", "train/align_loss", "val/ndcg@10"):
        assert len(sharded[name]) == len(replicated[name]) >= 2, name
        torch.testing.assert_close(torch.tensor(sharded[name]), torch.tensor(replicated[name]), rtol=1e-4, atol=1e-5,
                                   msg=name)
    assert sharded["train/loss"][-1] != sharded["train/loss"][0]  # it trained


@pytest.mark.slow  # two more 2-process runs (~1 min); `make test-slow`
def test_a_sharded_checkpoint_resumes_to_the_uninterrupted_run(fsdp_run: Path, tiny_backbone: Path,
                                                               tmp_path: Path) -> None:
    config = molar_experiment(tmp_path, tiny_backbone, epochs=1)
    launch(["fit", "--config", str(config), "--config", str(FSDP_CPU)])
    (last,) = (tmp_path / "run").rglob("last.ckpt")
    assert last.is_dir() and len(list(last.glob("*.distcp"))) == 2  # one shard per process
    launch(["fit", "--config", str(config), "--config", str(FSDP_CPU), "--trainer.max_epochs=2",
            f"--ckpt_path={last}"])
    uninterrupted, resumed = logged(fsdp_run), logged(tmp_path / "run", version=1)
    steps = len(resumed["train/loss"])
    assert steps >= 1
    torch.testing.assert_close(torch.tensor(resumed["train/loss"]), torch.tensor(uninterrupted["train/loss"][-steps:]),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(resumed["val/ndcg@10"][-1], uninterrupted["val/ndcg@10"][-1], rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # a 2-process launch (~30 s); `make test-slow`
def test_two_sharded_processes_rank_as_one_process(tiny_backbone: Path, tmp_path: Path) -> None:
    """``molar validate`` of the same (seeded) untrained model: the catalog embedded a share per process and
    gathered, users in even shards, gives the figures of one process to float tolerance."""
    config = molar_experiment(tmp_path, tiny_backbone)
    main(["validate", "--config", str(config), f"--trainer.default_root_dir={tmp_path / 'one'}",
          "--trainer.logger=false"])
    launch(["validate", "--config", str(config), "--config", str(FSDP_CPU),
            f"--trainer.default_root_dir={tmp_path / 'two'}", "--trainer.logger=false"])
    (one,), (two,) = (json.loads(next((tmp_path / name).rglob("validation_history.json")).read_text())
                      for name in ("one", "two"))
    assert one["users"] == two["users"] == 12
    for name in ("ndcg@10", "recall@10", "mrr@10", "ndcg@50"):
        assert abs(one[name] - two[name]) < 1e-5, name


@pytest.mark.slow  # two more 2-process runs (~1 min); `make test-slow`
def test_sharded_stage_one_exports_the_mirm_that_ddp_exports(tiny_backbone: Path, tmp_path: Path) -> None:
    exported = {}
    for name, strategy in (("fsdp", ["--config", str(FSDP_CPU)]), ("ddp", DDP_CPU)):
        config = tiny_experiment(ROOT / "configs" / "movielens" / "mirm_align.yaml", tmp_path / name, tiny_backbone)
        launch(["fit", "--config", str(config), *strategy, "--trainer.precision=32-true",
                "--model.init_args.optimizer.init_args.lr=0.01"])
        exported[name] = load_file(str(tmp_path / name / "mirm_encoder" / "model.safetensors"))
        exported[name]["item_token"] = load_file(str(tmp_path / name / "mirm_encoder" / "item_token.safetensors"))[
            "item_token"]
    initial = load_file(str(tiny_backbone / "model.safetensors"))
    assert exported["fsdp"].keys() == exported["ddp"].keys()  # a tied weight once, as an unsharded export
    for key, weight in exported["fsdp"].items():
        torch.testing.assert_close(weight, exported["ddp"][key], rtol=1e-4, atol=1e-5, msg=key)
    moved = [key for key in initial if key in exported["fsdp"] and not torch.equal(initial[key], exported["fsdp"][key])]
    assert moved  # stage 1 trained, and the export holds the trained weights gathered from both shards


@pytest.mark.slow  # a 2-process launch (~1 min); `make test-slow`
def test_sharded_embedding_of_batches_that_do_not_split_evenly_equals_one_process(tiny_backbone: Path,
                                                                                  tmp_path: Path) -> None:
    """10 items in batches of 4: 3 batches for 2 processes (the second gets the first batch again, so that both
    run 2 sharded forwards); the cache equals one process's."""
    config = tiny_experiment(ROOT / "configs" / "movielens" / "mirm_align.yaml", tmp_path, tiny_backbone)
    tables = {}
    for name, strategy in (("one", []), ("fsdp", ["--config", str(FSDP_CPU)])):
        args = ["embed", "--config", str(config), *strategy, "--trainer.precision=32-true",
                "--trainer.limit_predict_batches=1.0", "--embed.batch_size=4", f"--embed.cache_root={tmp_path / name}"]
        if strategy:
            launch(args)
        else:
            main(args)
        (table,) = (tmp_path / name).rglob("embeddings.safetensors")
        tables[name] = load_file(str(table))["embeddings"]
    assert tables["one"].shape[0] == 11  # the padding row and the fixture's 10 items
    torch.testing.assert_close(tables["fsdp"], tables["one"], rtol=1e-4, atol=1e-5)


class Checks(pl.Callback):
    """Records, at the first training step, which parts are FSDP units and the cached table's dtype."""

    def on_train_batch_start(self, trainer, pl_module: MolarModule, batch, batch_idx) -> None:
        self.decoder_layers_sharded = all(isinstance(layer, FSDPModule)
                                          for layer in pl_module.user_encoder.decoder.layers)
        self.root_sharded = isinstance(pl_module.user_encoder, FSDPModule)
        self.table_dtype = pl_module.items.table.dtype


def test_bf16_sharding_keeps_the_cached_item_table_in_fp32(tiny_backbone: Path, tmp_path: Path) -> None:
    from lightning.pytorch.strategies import ModelParallelStrategy

    from molar_lightning.data.datamodule import MovieLensDataModule

    data = MovieLensDataModule(str(FIXTURES / "movielens" / "ml-1m"), cache_dir=str(tmp_path / "cache"),
                               batch_size=4)
    table = tmp_path / "embeddings.safetensors"
    from safetensors.torch import save_file

    save_file({"embeddings": torch.randn(data.num_items + 1, 64)}, str(table))
    module = MolarModule(LLMUserEncoder(str(tiny_backbone)), item_embeddings=str(table), encoder=None,
                         align_weight=0.0)
    checks = Checks()
    pl.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", max_steps=1, limit_val_batches=0, logger=False,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[checks],
               strategy=ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1,
                                              process_group_backend="gloo")).fit(module, datamodule=data)
    assert checks.decoder_layers_sharded and checks.root_sharded
    assert checks.table_dtype == torch.float32
