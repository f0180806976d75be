"""MIRMAlignmentModule through the real CLI and the shipped MovieLens config (full fine-tuning; a tiny Qwen2-VL
swapped in): the answer-token loss falls, checkpoints keep only trained weights, the exported encoder loads
back with equal embeddings, and ``molar embed`` fills the cache from it."""

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from molar_lightning.cli import build_cli
from molar_lightning.commands import main
from molar_lightning.data.item_inputs import collate_items
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.tasks.mirm_alignment import MIRMAlignmentModule
from tests.models.conftest import (  # noqa: F401 - fixtures
    IMAGE_SIZE,
    add_posters_and_plots,
    qwen_tokenizer_dir,
    tiny_bert_dir,
    tiny_mllama_dir,
    tiny_qwen2_vl_dir,
)

ROOT = Path(__file__).parents[2]
ENCODER = "--model.init_args.encoder.init_args."


def tiny_args(data_dir: Path, model_dir: Path, run_dir: Path) -> list[str]:
    return ["--config", str(ROOT / "configs/movielens/mirm_align.yaml"),
            f"{ENCODER}backbone", str(model_dir), f"{ENCODER}dtype", "float32",
            f"{ENCODER}gradient_checkpointing", "false", f"{ENCODER}image_size", str(IMAGE_SIZE),
            "--model.init_args.optimizer.init_args.lr", "0.01", "--model.init_args.export_dir", str(run_dir / "mirm"),
            "--data.init_args.source.init_args.data_dir", str(data_dir),
            "--data.init_args.cache_dir", str(run_dir / "cache"), "--data.init_args.num_workers", "0",
            "--data.init_args.batch_size", "4", "--data.init_args.examples_per_mixture", "4",
            "--data.init_args.val_fraction", "0.25",
            "--trainer.precision", "32", "--trainer.default_root_dir", str(run_dir),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture
def data_dir(ml1m_dir: Path) -> Path:
    return add_posters_and_plots(ml1m_dir)


def test_alignment_loss_falls_and_the_aligned_encoder_round_trips(data_dir, tiny_qwen2_vl_dir, tmp_path):
    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    main(["fit", *tiny_args(data_dir, tiny_qwen2_vl_dir, run_dir), "--trainer.max_epochs", "8",
          "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(run_dir),
          "--trainer.log_every_n_steps", "1"])
    rows = list(csv.DictReader(next(run_dir.rglob("metrics.csv")).open()))
    epoch_loss: dict[int, list[float]] = {}
    for row in rows:
        if row.get("train/loss"):
            epoch_loss.setdefault(int(row["epoch"]), []).append(float(row["train/loss"]))
    first, last = (sum(epoch_loss[e]) / len(epoch_loss[e]) for e in (min(epoch_loss), max(epoch_loss)))
    assert last < 0.6 * first, (first, last)  # from ln(vocab) = 11.9 nats
    assert any(row.get("val/loss") for row in rows) and any(row.get("test/loss") for row in rows)

    last = torch.load(next(run_dir.rglob("last.ckpt")), map_location="cpu", weights_only=False)["state_dict"]
    cli = build_cli(tiny_args(data_dir, tiny_qwen2_vl_dir, tmp_path / "probe") + ["--trainer.logger", "false"],
                    run=False)
    assert all(p.requires_grad for p in cli.model.parameters())
    assert set(last) == {name for name, _ in cli.model.named_parameters()}  # trained weights only (all of them)
    # [Cur_Item] sits after each item in the prompts, so stage 1 trains it away from its start (the mean embedding)
    initial = cli.model.encoder.item_token_embedding.detach()
    assert (last["encoder.item_token_embedding"] - initial).norm() > 0.1 * initial.norm()
    cli.model.load_state_dict(last, strict=False)
    trained = cli.model.encoder.eval()
    exported = MultimodalItemEncoder(backbone=str(run_dir / "mirm"), image_size=IMAGE_SIZE).eval()
    catalog = cli.datamodule.catalog
    items = [(i, catalog.text(i), catalog.image(i, max_size=IMAGE_SIZE)) for i in (1, 5, 10)]
    embeddings = []
    for encoder in (trained, exported):
        batch = collate_items([(i, encoder.item_inputs(text, im)) for i, text, im in items],
                              encoder.prompts.pad_token_id)
        with torch.no_grad():
            embeddings.append(encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                                      batch.image_inputs))
    torch.testing.assert_close(embeddings[1], embeddings[0], atol=1e-6, rtol=0)

    main(["embed", *tiny_args(data_dir, tiny_qwen2_vl_dir, tmp_path / "embed"),
          f"{ENCODER}backbone", str(run_dir / "mirm"), "--embed.cache_root", str(tmp_path / "embeddings"),
          "--embed.batch_size", "4"])
    (merged,) = (tmp_path / "embeddings").rglob("embeddings.safetensors")
    from safetensors.torch import load_file

    table = load_file(str(merged))["embeddings"]
    assert table.shape == (11, 32)
    torch.testing.assert_close(table[[1, 5, 10]], embeddings[1], atol=1e-5, rtol=0)


def test_the_item_token_can_stay_out_of_stage_1(data_dir, tiny_qwen2_vl_dir, tmp_path):
    """``train_item_token: false``: no prompt holds [Cur_Item], and the exported token is its initial value."""
    run_dir = tmp_path / "run"
    main(["fit", *tiny_args(data_dir, tiny_qwen2_vl_dir, run_dir), "--trainer.max_epochs", "1",
          "--model.init_args.train_item_token", "false", "--trainer.logger", "false"])
    fresh = MultimodalItemEncoder(backbone=str(tiny_qwen2_vl_dir), image_size=IMAGE_SIZE)
    exported = MultimodalItemEncoder(backbone=str(run_dir / "mirm"), image_size=IMAGE_SIZE)
    torch.testing.assert_close(exported.item_token_embedding, fresh.item_token_embedding, atol=0, rtol=0)


def test_a_headless_encoder_can_embed_but_not_be_aligned(tiny_bert_dir) -> None:
    module = MIRMAlignmentModule(MultimodalItemEncoder(backbone=str(tiny_bert_dir), modality="text",
                                                       pooling="mean"))
    module.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    module.setup("predict")  # `molar embed` serves text encoders such as MiniLM
    with pytest.raises(ValueError, match="no language-model head"):
        module.setup("fit")


@pytest.mark.slow  # ~14 s; tests/models/test_mllama.py checks its cross-attention inputs in the fast suite
def test_llama_vision_aligns_through_its_cross_attention_inputs(data_dir, tiny_mllama_dir, tmp_path):
    """Mllama reads images through cross-attention: alignment batches (several images a row in UB) get the
    masks its processor builds, and the answer loss falls."""
    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    main(["fit", *tiny_args(data_dir, tiny_mllama_dir, run_dir), "--trainer.max_epochs", "6",
          "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(run_dir),
          "--trainer.log_every_n_steps", "1"])
    losses = [float(row["train/loss"]) for row in csv.DictReader(next(run_dir.rglob("metrics.csv")).open())
              if row.get("train/loss")]
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses
