"""A run comparison as a Markdown table and a PNG line plot, from the files every ``molar fit`` leaves.

:class:`~molar_lightning.callbacks.evaluation.RankingEvaluationCallback` writes ``results.json`` (test
metrics) and ``validation_history.json`` (one entry per validation epoch) into a run's log folder;
:func:`compare` reads them back. The plot is drawn with Pillow, so no plotting library is needed.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

METRICS = ("ndcg@10", "recall@10", "ndcg@20", "recall@20", "ndcg@50", "recall@50")
LINE_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207))


@dataclass
class RunResult:
    """One model's test metrics and validation curve, read from its log folder."""

    name: str
    log_dir: Path
    test: dict[str, float]
    validation: list[dict[str, float]]

    @classmethod
    def read(cls, name: str, log_dir: str) -> "RunResult":
        folder = Path(log_dir)
        results, history = folder / "results.json", folder / "validation_history.json"
        for path in (results, history):
            if not path.is_file():
                raise FileNotFoundError(f"{name}: {path} is missing; did `molar fit` finish its test?")
        return cls(name, folder, json.loads(results.read_text()), json.loads(history.read_text()))


def results_table(runs: Sequence[RunResult], baseline: str) -> str:
    """Markdown table of ``METRICS`` per run, with each run's NDCG@10 change against ``baseline``."""
    reference = next(run for run in runs if run.name == baseline).test["ndcg@10"]
    header = "| model | " + " | ".join(name.replace("ndcg", "NDCG").replace("recall", "Recall") for name in METRICS)
    lines = [header + f" | NDCG@10 vs {baseline} |", "|---" * (len(METRICS) + 2) + "|"]
    for run in runs:
        change = "" if run.name == baseline else f"{100 * (run.test['ndcg@10'] / reference - 1):+.1f}%"
        lines.append(f"| {run.name} | " + " | ".join(f"{run.test[name]:.4f}" for name in METRICS) + f" | {change} |")
    return "\n".join(lines)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def plot_validation_curves(runs: Sequence[RunResult], path: str, metric: str = "ndcg@10",
                           size: tuple[int, int] = (800, 500)) -> Path:
    """Validation ``metric`` per epoch, one line per run, with axes, ticks and a legend, saved as PNG."""
    width, height = size
    left, right, top, bottom = 70, 20, 40, 60
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    curves = [[entry[metric] for entry in run.validation] for run in runs]
    epochs = max(len(curve) for curve in curves)
    peak = max(max(curve) for curve in curves if curve)
    y_max = max(math.ceil(peak * 10) / 10, 0.1)

    def to_pixel(epoch: float, value: float) -> tuple[float, float]:
        x = left + (width - left - right) * (epoch / max(epochs - 1, 1))
        return x, height - bottom - (height - top - bottom) * value / y_max

    small, label = _font(12), _font(14)
    for tick in range(11):  # y grid and labels every tenth of the range
        value = y_max * tick / 10
        y = to_pixel(0, value)[1]
        draw.line([(left, y), (width - right, y)], fill=(230, 230, 230))
        draw.text((left - 8, y), f"{value:.2f}", fill="black", font=small, anchor="rm")
    for epoch in range(epochs):
        x = to_pixel(epoch, 0)[0]
        if epochs <= 20 or epoch % 5 == 0:
            draw.text((x, height - bottom + 8), str(epoch), fill="black", font=small, anchor="mt")
    draw.line([(left, top), (left, height - bottom), (width - right, height - bottom)], fill="black", width=2)
    draw.text((width // 2, height - 20), "epoch", fill="black", font=label, anchor="mm")
    draw.text((width // 2, 18), f"validation {metric.upper()} per epoch", fill="black",
              font=label, anchor="mm")
    for index, (run, curve) in enumerate(zip(runs, curves)):
        colour = LINE_COLOURS[index % len(LINE_COLOURS)]
        points = [to_pixel(epoch, value) for epoch, value in enumerate(curve)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        for x, y in points:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    legend_top = height - bottom - 20 * len(runs) - 16  # bottom right, below curves that rise
    draw.rectangle((width - right - 200, legend_top, width - right - 10, height - bottom - 8), fill="white",
                   outline=(180, 180, 180))
    for index, run in enumerate(runs):
        colour, legend_y = LINE_COLOURS[index % len(LINE_COLOURS)], legend_top + 14 + 20 * index
        draw.line([(width - right - 190, legend_y), (width - right - 160, legend_y)], fill=colour, width=3)
        draw.text((width - right - 152, legend_y), run.name, fill="black", font=small, anchor="lm")
    image.save(path)
    return Path(path)
