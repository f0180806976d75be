"""``molar quickstart``: the whole Molar pipeline on the built-in shop, on a CPU, in a few minutes, with a report.

The stages are the ones a real run takes, each through the same ``molar`` commands and the YAML files in
``configs/quickstart/``, with paths pointed into one output folder:

1. write the shop (:mod:`molar_lightning.data.sources.quickstart`, PixelRec's raw layout);
2. build a tiny random-weight Qwen2-VL with the real Qwen2 tokenizer and image processor
   (:mod:`molar_lightning.models.tiny`), saved like a hub checkpoint;
3. MIRM alignment fine-tuning on the IT + SA + UB mixtures (``molar fit``, ``mirm_align.yaml``);
4. item embeddings of the aligned encoder into the cache (``molar embed``);
5. SASRec, the ID baseline and the model Molar post-aligns with (``sasrec.yaml``);
6. DUEG over the cached embeddings without post-alignment (``align_weight: 0``, the paper's "w/o CL") and
   Molar with it (``molar.yaml`` + ``molar_cached.yaml``);
7. Molar end to end, the aligned MIRM fine-tuned with DUEG (``molar.yaml``);

then writes ``report.md`` (test NDCG/Recall@10/20/50 per model, both Molar rows against SASRec, where every
run left its checkpoints and logs) and ``validation_ndcg.png`` (validation NDCG@10 per epoch).
``python -m molar_lightning quickstart --help`` lists the options; ``--smoke`` is the seconds-long
version the tests run.
"""

import argparse
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from molar_lightning.cli import build_cli
from molar_lightning.data.sources.quickstart import ShopParams, write_shop
from molar_lightning.embed import embed
from molar_lightning.models.tiny import build_qwen_tokenizer, build_tiny_backbone, tiny_qwen2_vl_config
from molar_lightning.report import RunResult, plot_validation_curves, results_table

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "quickstart"
HIDDEN_SIZE = 64  # the tiny Qwen2-VL's width, which configs/quickstart/molar.yaml's item_adapter expects
MOLAR_ROWS = {"Molar (end to end)": "end to end", "Molar (cached)": "cached"}  # report name -> what the headline says


@dataclass
class QuickstartSize:
    """How much data and training each stage gets."""

    num_users: int
    align_examples: int
    epochs: int  # SASRec's
    molar_epochs: int  # each DUEG run's (w/o CL, Molar cached, Molar end to end)


FULL = QuickstartSize(num_users=600, align_examples=300, epochs=30, molar_epochs=7)
SMOKE = QuickstartSize(num_users=40, align_examples=8, epochs=2, molar_epochs=2)


class StageClock:
    """Prints a numbered header for each stage and records its seconds for the report."""

    def __init__(self, total: int) -> None:
        self.total, self.seconds = total, {}

    @contextmanager
    def stage(self, name: str, title: str) -> Iterator[None]:
        print(f"\n=== [{len(self.seconds) + 1}/{self.total}] {title} ===", flush=True)
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        print(f"=== {name}: {self.seconds[name]:.1f} s ===", flush=True)


def fit(config: str, root: Path, overrides: list[str]):
    """``molar fit --config configs/quickstart/<config>`` into ``root``; returns the finished CLI."""
    shutil.rmtree(root, ignore_errors=True)
    return build_cli(["fit", "--config", str(CONFIGS / config), f"--trainer.default_root_dir={root}",
                      "--trainer.enable_model_summary=false", *overrides])


def run_quickstart(out: str = "runs/quickstart", size: QuickstartSize = FULL, seed: int = 0) -> Path:
    """Run every stage into ``out`` and return the path of ``report.md``."""
    if not CONFIGS.is_dir():
        raise FileNotFoundError(f"{CONFIGS} not found: molar quickstart runs the configs of a repository checkout; "
                                f"run it from a clone of molar_lightning")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock(total=8)
    shop_dir, aligned = out / "shop", out / "mirm_encoder"
    cache_dir = f"--data.init_args.cache_dir={out / 'cache'}"
    data = [f"--data.init_args.data_dir={shop_dir}", cache_dir]
    mirm_data = [f"--data.init_args.source.init_args.data_dir={shop_dir}", cache_dir]

    with clock.stage("shop", "write the quickstart shop"):
        write_shop(str(shop_dir), ShopParams(num_users=size.num_users, seed=seed))
    with clock.stage("tiny backbone", "build a tiny random-weight Qwen2-VL (real tokenizer and image processor)"):
        tiny = build_tiny_backbone(out / "tiny-qwen2-vl", tiny_qwen2_vl_config(HIDDEN_SIZE),
                                   build_qwen_tokenizer(out / "qwen-tokenizer"), with_images=True, seed=seed)
    with clock.stage("MIRM alignment", "MIRM alignment fine-tuning on IT + SA + UB"):
        fit("mirm_align.yaml", out / "mirm_align",
            [f"--model.init_args.encoder.init_args.backbone={tiny}", f"--model.init_args.export_dir={aligned}",
             *mirm_data, f"--data.init_args.examples_per_mixture={size.align_examples}"])
    with clock.stage("item embeddings", "item embeddings of the aligned MIRM"):
        cache = embed(["--config", str(CONFIGS / "mirm_align.yaml"), *mirm_data,
                       f"--model.init_args.encoder.init_args.backbone={aligned}",
                       f"--trainer.default_root_dir={out / 'mirm_align'}",
                       f"--embed.cache_root={out / 'item_embeddings'}"])
    with clock.stage("SASRec", "SASRec (the ID baseline, and Molar's ID model)"):
        sasrec = fit("sasrec.yaml", out / "sasrec", [*data, f"--trainer.max_epochs={size.epochs}"])
    molar_args = [*data, f"--trainer.max_epochs={size.molar_epochs}",
                  f"--model.init_args.encoder_checkpoint={sasrec.trainer.checkpoint_callback.best_model_path}",
                  f"--model.init_args.user_encoder.init_args.backbone={tiny}"]
    cached = ["--config", str(CONFIGS / "molar_cached.yaml"), f"--model.init_args.item_embeddings={cache.folder}"]
    with clock.stage("DUEG w/o CL", "DUEG over the cached item embeddings, without post-alignment (align_weight 0)"):
        content = fit("molar.yaml", out / "dueg", [*cached, *molar_args, "--model.init_args.align_weight=0"])
    with clock.stage("Molar (cached)", "Molar over the cached item embeddings: DUEG post-aligned with SASRec"):
        molar_cached = fit("molar.yaml", out / "molar_cached", [*cached, *molar_args])
    with clock.stage("Molar (end to end)", "Molar end to end: the aligned MIRM fine-tuned with DUEG"):
        molar = fit("molar.yaml", out / "molar",
                    [*molar_args, f"--model.init_args.item_encoder.init_args.backbone={aligned}"])

    runs = [RunResult.read("SASRec", sasrec.trainer.log_dir),
            RunResult.read("DUEG w/o CL (cached)", content.trainer.log_dir),
            RunResult.read("Molar (cached)", molar_cached.trainer.log_dir),
            RunResult.read("Molar (end to end)", molar.trainer.log_dir)]
    report = write_report(out, runs, clock.seconds)
    print("\n" + report.read_text())
    return report


def write_report(out: Path, runs: list[RunResult], seconds: dict[str, float]) -> Path:
    """``report.md`` and ``validation_ndcg.png`` in ``out``."""
    plot = plot_validation_curves(runs, str(out / "validation_ndcg.png"))
    by_name = {run.name: run for run in runs}
    verdicts = []
    for name, mode in MOLAR_ROWS.items():
        gain = by_name[name].test["ndcg@10"] / by_name["SASRec"].test["ndcg@10"] - 1
        verdicts.append(f"Molar {mode} {'beats' if gain > 0 else 'does NOT beat'} SASRec ({100 * gain:+.1f}% NDCG@10)")
    lines = [
        "# molar quickstart report", "",
        f"Test set: each user's last item, ranked against all items (history excluded). {'; '.join(verdicts)}.", "",
        results_table(runs, baseline="SASRec"), "",
        f"Validation NDCG@10 per epoch: `{plot}`", "",
        "| stage | seconds |", "|---|---|",
        *(f"| {stage} | {value:.1f} |" for stage, value in seconds.items()),
        f"| total | {sum(seconds.values()):.1f} |", "",
        "Runs (checkpoints under `checkpoints/`, logs and `config.yaml` beside them):", "",
        *(f"- {run.name}: `{run.log_dir}`" for run in runs),
        f"- MIRM alignment: `{out / 'mirm_align'}`, aligned encoder `{out / 'mirm_encoder'}`",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="molar quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shop and the tiny model")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run on a tiny shop (for tests)")
    options = parser.parse_args(args)
    run_quickstart(options.out, SMOKE if options.smoke else FULL, options.seed)
