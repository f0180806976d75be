"""A run comparison as a Markdown table and a validation-curve PNG, from the files every ``molar fit`` leaves.

:class:`~molar_lightning.callbacks.evaluation.RankingEvaluationCallback` writes ``results.json`` (test
metrics) and ``validation_history.json`` (one entry per validation epoch) into a run's log folder;
:class:`RunResult` reads them back. The plot is :func:`molar_lightning.plots.plot_validation_curves`, with a mark
at the epoch whose checkpoint each run tested.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from molar_lightning.plots import first_argmax, metric_label, plot_validation_curves

METRICS = ("ndcg@10", "recall@10", "ndcg@20", "recall@20", "ndcg@50", "recall@50")
MONITORED = "ndcg@10"  # the checkpoint callback's monitor, val/ndcg@10 (molar_lightning.cli), mode max


@dataclass
class RunResult:
    """One model's test metrics and validation history, read from its log folder."""

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

    def curve(self, metric: str) -> list[float]:
        """The validation ``metric`` after each epoch, entry ``i`` for 0-based epoch ``i``."""
        return [entry[metric] for entry in self.validation]

    def best_epoch(self) -> int:
        """The epoch of the checkpoint the run tested: the first maximum of validation NDCG@10, since
        ModelCheckpoint(mode="max") replaces its best only with a strictly better score."""
        return int(self.validation[first_argmax(self.curve(MONITORED))]["epoch"])


def results_table(runs: Sequence[RunResult], baseline: str) -> str:
    """Markdown table of ``METRICS`` per run, with each run's NDCG@10 change against ``baseline``."""
    reference = next(run for run in runs if run.name == baseline).test["ndcg@10"]
    header = "| model | " + " | ".join(metric_label(name) for name in METRICS)
    lines = [header + f" | NDCG@10 vs {baseline} |", "|---" * (len(METRICS) + 2) + "|"]
    for run in runs:
        change = "" if run.name == baseline else f"{100 * (run.test['ndcg@10'] / reference - 1):+.1f}%"
        lines.append(f"| {run.name} | " + " | ".join(f"{run.test[name]:.4f}" for name in METRICS) + f" | {change} |")
    return "\n".join(lines)


def plot_runs(runs: Sequence[RunResult], path: str | Path) -> Path:
    """Validation NDCG@10 per epoch of ``runs``, each marked at its best epoch, saved as a PNG at ``path``."""
    return plot_validation_curves({run.name: run.curve(MONITORED) for run in runs}, path, metric=MONITORED,
                                  best_epochs={run.name: run.best_epoch() for run in runs})
