"""Two sets of finished runs compared as `molar reproduce` compares a row with its base row.

Each set is the log folders (``lightning_logs/version_k``, holding ``results.json`` and, from
``--evaluation.per_user true``, ``results_per_user.csv``) of one setting's seeds, given in the same seed order
for both sets. Prints each metric's mean ± std over seeds, the difference of the means, the paired t-test over
the test users of the seed-averaged per-user metric, and the paired t-test over the seeds' means: the
statistics of ``molar_lightning.reproduce.summary``, for runs that are not rows of one table (a control run
at another batch, say).

    python benchmarks/paired_runs.py \\
        --a runs/reproduce/movielens-converged/runs/duorec/seed{0,1,2}/lightning_logs/version_0 \\
        --b runs/control/sasrec_batch6/seed{0,1,2}/lightning_logs/version_0 --names DuoRec "SASRec at batch 6"
"""

import argparse
import json
from pathlib import Path

from molar_lightning.reproduce.runs import Outcome
from molar_lightning.reproduce.statistics import mean_and_std, paired_t_test
from molar_lightning.reproduce.summary import METRICS, seed_averaged


def outcomes(log_dirs: list[str]) -> list[Outcome]:
    """The finished runs in ``log_dirs``, one a seed, in order."""
    return [Outcome(run=str(folder), seed=seed, status="done", log_dir=str(folder),
                    test=json.loads((Path(folder) / "results.json").read_text()))
            for seed, folder in enumerate(log_dirs)]


def report(a: list[Outcome], b: list[Outcome], names: tuple[str, str]) -> str:
    """A Markdown table: each metric's means, their difference, and the two paired tests of ``a`` against ``b``."""
    if len(a) != len(b):
        raise SystemExit(f"error: --a has {len(a)} runs and --b {len(b)}; the seeds must pair up")
    a_users, b_users = seed_averaged(a), seed_averaged(b)
    if set(a_users) != set(b_users):
        raise SystemExit("error: the two sets ranked different test users; were they run on the same data?")
    def spread(outcomes: list[Outcome], metric: str) -> tuple[float, str]:
        """The mean over seeds, and it as text: with ``± std`` from two seeds on."""
        mean, std = mean_and_std([outcome.test[metric] for outcome in outcomes])
        return mean, f"{mean:.4f} ± {std:.4f}" if len(outcomes) > 1 else f"{mean:.4f}"

    lines = [f"| metric | {names[0]} | {names[1]} | difference | p (users) | p (seeds) |", "|---|---|---|---|---|---|"]
    for metric in METRICS:
        (mean_a, text_a), (mean_b, text_b) = spread(a, metric), spread(b, metric)
        by_users = paired_t_test([a_users[user][metric] for user in a_users],
                                 [b_users[user][metric] for user in a_users])
        by_seeds = paired_t_test([outcome.test[metric] for outcome in a], [outcome.test[metric] for outcome in b])
        p_seeds = "–" if by_seeds is None else f"{by_seeds.p_value:.2g}"
        lines.append(f"| {metric} | {text_a} | {text_b} | "
                     f"{mean_a - mean_b:+.4f} ({(mean_a - mean_b) / mean_b:+.1%}) | {by_users.p_value:.2g} | {p_seeds} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", nargs="+", required=True, help="log folders of the first setting, one a seed")
    parser.add_argument("--b", nargs="+", required=True, help="log folders of the setting it is tested against")
    parser.add_argument("--names", nargs=2, default=("a", "b"), help="the two settings' names in the table")
    arguments = parser.parse_args()
    print(report(outcomes(arguments.a), outcomes(arguments.b), tuple(arguments.names)))


if __name__ == "__main__":
    main()
