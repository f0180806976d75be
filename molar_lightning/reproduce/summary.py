"""One paper table as this run measured it: mean ± std over seeds, the paper's figure, paired tests, plots.

Each row that ran is tested against the table's base row on the same test users: ``p (users)`` is a paired
t-test over the users of the per-user metric averaged over the seeds, and ``p (seeds)`` a paired t-test over
the seeds of the two rows' test means (the seeds pair up: a seed fixes the initialisation of both rows).
"""

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from molar_lightning.atomic_files import write_atomically
from molar_lightning.plots import BarRow, plot_table_bars, plot_validation_curves
from molar_lightning.reproduce.runs import Outcome
from molar_lightning.reproduce.statistics import PairedTest, mean_and_std, paired_t_test
from molar_lightning.reproduce.tables import Row, Table

METRICS = ("ndcg@10", "ndcg@20", "recall@10", "recall@20")  # the paper's MovieLens columns
DATA_SET_NAMES = {"movielens": "ML-1M", "amazon": "Amazon", "pixelrec": "PixelRec"}  # the paper's data sets


@dataclass
class RowResult:
    """One table row: what ran (or why not), the figures over seeds and the tests against the base row."""

    row: Row
    status: str  # "ran", "failed" or "skipped"
    reason: str = ""
    stands_in: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    paper: dict[str, float] = field(default_factory=dict)
    by_users: dict[str, Optional[PairedTest]] = field(default_factory=dict)  # metric -> test against the base row
    by_seeds: dict[str, Optional[PairedTest]] = field(default_factory=dict)


def seed_averaged(outcomes: Sequence[Outcome]) -> dict[int, dict[str, float]]:
    """Each test user's metrics averaged over the runs (seeds) ``outcomes``, each run's file read once."""
    per_seed = [outcome.per_user() for outcome in outcomes]
    users = set(per_seed[0])
    if any(set(seed) != users for seed in per_seed):
        raise ValueError("the seeds' runs ranked different test users; were they run on different data?")
    return {user: {metric: sum(seed[user][metric] for seed in per_seed) / len(per_seed) for metric in METRICS}
            for user in sorted(users)}


def compare(result: RowResult, base: RowResult, base_users: dict[int, dict[str, float]]) -> None:
    """Fill ``result``'s paired tests against ``base`` (both ran, with the same seeds in the same order), whose
    seed-averaged per-user metrics are ``base_users``."""
    row_users = seed_averaged(result.outcomes)
    if set(row_users) != set(base_users):
        raise ValueError(f"{result.row.name} and {base.row.name} ranked different test users")
    for metric in METRICS:
        result.by_users[metric] = paired_t_test([row_users[u][metric] for u in row_users],
                                                [base_users[u][metric] for u in row_users])
        result.by_seeds[metric] = paired_t_test([o.test[metric] for o in result.outcomes],
                                                [o.test[metric] for o in base.outcomes])


def summarise(table: Table, data: str, results: list[RowResult]) -> list[RowResult]:
    """Means, spreads and paper figures of every row that ran, and its tests against the base row."""
    base = next(result for result in results if result.row.key == table.base)
    base_users = seed_averaged(base.outcomes) if base.status == "ran" else None
    for result in results:
        result.paper = table.paper_figures(data, result.row.key)[1]
        if result.status != "ran":
            continue
        for metric in METRICS:
            result.means[metric], result.stds[metric] = mean_and_std([o.test[metric] for o in result.outcomes])
        if result is not base and base_users is not None:
            compare(result, base, base_users)
    return results


def _p(test: Optional[PairedTest]) -> str:
    return "–" if test is None else f"{test.p_value:.2g}" if test.p_value >= 1e-4 else "<1e-4"


def markdown(table: Table, data: str, header: str, results: list[RowResult]) -> str:
    """The table as Markdown: one line per row that ran or failed, then the skipped rows with their reasons."""
    paper_data = table.paper_figures(data, table.base)[0]
    base = next(result for result in results if result.row.key == table.base)
    paper_name = DATA_SET_NAMES.get(paper_data, "–")
    columns = [f"{label(metric)} | paper ({paper_name})" for metric in METRICS]
    lines = [f"# {table.title}", "", header, "",
             f"| row | {' | '.join(columns)} | {label(METRICS[0])} vs {base.row.name} | p (users) | p (seeds) "
             f"| fit s |", "|---" * (3 + 2 * len(METRICS) + 2) + "|"]
    for result in results:
        if result.status == "skipped":
            continue
        name = result.row.name + (" †" if result.stands_in else "")
        if result.status == "failed":
            lines.append(f"| {name} | failed: {result.reason} |" + " |" * (2 * len(METRICS) + 3))
            continue
        cells = []
        for metric in METRICS:
            paper = result.paper.get(metric)
            cells += [f"{result.means[metric]:.4f} ± {result.stds[metric]:.4f}", "–" if paper is None else f"{paper:.4f}"]
        test = result.by_users.get(METRICS[0])
        versus = "base" if result is base else "–" if test is None else (
            f"{test.mean_difference:+.4f} ({100 * test.mean_difference / base.means[METRICS[0]]:+.1f}%)")
        seconds = sum(o.seconds for o in result.outcomes) / len(result.outcomes)
        lines.append(f"| {name} | {' | '.join(cells)} | {versus} | {_p(test)} | {_p(result.by_seeds.get(METRICS[0]))} "
                     f"| {seconds:.0f} |")
    skipped = [result for result in results if result.status == "skipped"]
    if skipped:
        lines += ["", "Skipped:", *(f"- {result.row.name}: {result.reason}" for result in skipped)]
    return "\n".join(lines) + "\n"


def csv_text(table: Table, results: list[RowResult]) -> str:
    """One CSV line per row: status, seeds, and per metric mean, std, paper figure, difference and p-values."""
    fields = ["table", "row", "name", "status", "reason", "stands_in", "seeds", "fit_seconds"]
    for metric in METRICS:
        fields += [f"{metric}_{part}" for part in ("mean", "std", "paper", "vs_base", "p_users", "p_seeds")]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, lineterminator="\n")
    writer.writeheader()
    for result in results:
        line = {"table": table.number, "row": result.row.key, "name": result.row.name, "status": result.status,
                "reason": result.reason, "stands_in": result.stands_in,
                "seeds": " ".join(str(o.seed) for o in result.outcomes if result.status == "ran")}
        if result.status == "ran":
            line["fit_seconds"] = repr(sum(o.seconds for o in result.outcomes) / len(result.outcomes))
        for metric in METRICS:
            users, seeds = result.by_users.get(metric), result.by_seeds.get(metric)
            line.update({f"{metric}_mean": result.means.get(metric, ""), f"{metric}_std": result.stds.get(metric, ""),
                         f"{metric}_paper": result.paper.get(metric, ""),
                         f"{metric}_vs_base": "" if users is None else users.mean_difference,
                         f"{metric}_p_users": "" if users is None else users.p_value,
                         f"{metric}_p_seeds": "" if seeds is None else seeds.p_value})
        writer.writerow(line)
    return buffer.getvalue()


def label(metric: str) -> str:
    """``ndcg@10`` -> ``NDCG@10``, ``recall@20`` -> ``Recall@20``."""
    name, k = metric.split("@")
    return f"{'NDCG' if name == 'ndcg' else name.capitalize()}@{k}"


def write(table: Table, data: str, header: str, results: list[RowResult], out: Path) -> list[Path]:
    """``table<N>.md``, ``table<N>.csv``, ``table<N>.png`` (bars) and ``table<N>_validation.png`` in ``out``."""
    stem = out / f"table{table.number}"
    write_atomically(stem.with_suffix(".md"), markdown(table, data, header, results))
    write_atomically(stem.with_suffix(".csv"), csv_text(table, results))
    ran = [result for result in results if result.status == "ran"]
    paper_data = table.paper_figures(data, table.base)[0]
    # The paper's marks only where its data set is this one (ML-1M beside ML-100K, not PixelRec beside MovieLens).
    bars = [BarRow(result.row.name, result.means, result.stds, result.paper if paper_data == data else {})
            for result in ran]
    written = [stem.with_suffix(".md"), stem.with_suffix(".csv")]
    if ran:
        written.append(plot_table_bars(bars, METRICS, f"{stem}.png", f"Table {table.number} on {data}: mean ± std over seeds"))
        curves = {result.row.name: [entry[METRICS[0]] for entry in result.outcomes[0].validation()] for result in ran}
        best = {result.row.name: result.outcomes[0].best_epoch for result in ran}
        written.append(plot_validation_curves(curves, f"{stem}_validation.png", METRICS[0], best,
                                              f"{table.title}: validation NDCG@10, seed {ran[0].outcomes[0].seed}"))
    return written
