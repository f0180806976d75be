"""``benchmarks/paired_runs.py`` compares two sets of runs with the figures a hand computation gives."""

import json
import math
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import paired_runs  # noqa: E402

METRICS = ("ndcg@10", "ndcg@20", "recall@10", "recall@20")


def run_folder(folder: Path, per_user: dict[int, float]) -> str:
    """A log folder whose every metric of user ``u`` is ``per_user[u]``, and whose test means are their mean."""
    folder.mkdir(parents=True)
    lines = ["user," + ",".join(METRICS)] + [f"{user}," + ",".join([str(value)] * 4) for user, value in per_user.items()]
    (folder / "results_per_user.csv").write_text("\n".join(lines) + "\n")
    mean = sum(per_user.values()) / len(per_user)
    (folder / "results.json").write_text(json.dumps({metric: mean for metric in METRICS}))
    return str(folder)


def test_the_table_holds_the_hand_computed_means_and_paired_tests(tmp_path: Path) -> None:
    """Users 0-2, two seeds. Seed-averaged per-user differences a - b: 0.15, 0.05, 0.15; the seeds' mean
    differences: 0.1, 0.1333. Student's t has closed forms at 1 and 2 degrees of freedom, so both p-values are
    computed here without the module's incomplete beta function."""
    a = [run_folder(tmp_path / "a0", {0: 0.4, 1: 0.2, 2: 0.3}), run_folder(tmp_path / "a1", {0: 0.5, 1: 0.3, 2: 0.4})]
    b = [run_folder(tmp_path / "b0", {0: 0.3, 1: 0.2, 2: 0.1}), run_folder(tmp_path / "b1", {0: 0.3, 1: 0.2, 2: 0.3})]
    table = paired_runs.report(paired_runs.outcomes(a), paired_runs.outcomes(b), ("A", "B")).splitlines()
    assert table[0] == "| metric | A | B | difference | p (users) | p (seeds) |"

    def t_statistic(differences: list[float]) -> float:
        return statistics.mean(differences) / (statistics.stdev(differences) / math.sqrt(len(differences)))

    t_users = t_statistic([0.15, 0.05, 0.15])
    p_users = 1 - t_users / math.sqrt(2 + t_users ** 2)  # two-sided, 2 degrees of freedom
    t_seeds = t_statistic([0.3 - 0.2, 0.4 - 0.8 / 3])
    p_seeds = 1 - 2 / math.pi * math.atan(t_seeds)  # two-sided, 1 degree of freedom
    means = (0.35, 0.7 / 3)
    stds = (statistics.stdev([0.3, 0.4]), statistics.stdev([0.2, 0.8 / 3]))
    expected = (f"| ndcg@10 | {means[0]:.4f} ± {stds[0]:.4f} | {means[1]:.4f} ± {stds[1]:.4f} | +0.1167 (+50.0%) | "
                f"{p_users:.2g} | {p_seeds:.2g} |")
    assert table[2] == expected and len(table) == 6, (table[2], expected)


def test_sets_of_different_sizes_are_refused(tmp_path: Path) -> None:
    a = [run_folder(tmp_path / "a0", {0: 0.4}), run_folder(tmp_path / "a1", {0: 0.5})]
    with pytest.raises(SystemExit, match="--a has 2 runs and --b 1"):
        paired_runs.report(paired_runs.outcomes(a), paired_runs.outcomes(a[:1]), ("A", "B"))


def test_one_seed_a_side_gives_no_spread_and_no_test_over_seeds(tmp_path: Path) -> None:
    a = [run_folder(tmp_path / "a0", {0: 0.4, 1: 0.2, 2: 0.3})]
    b = [run_folder(tmp_path / "b0", {0: 0.3, 1: 0.2, 2: 0.1})]
    row = paired_runs.report(paired_runs.outcomes(a), paired_runs.outcomes(b), ("A", "B")).splitlines()[2]
    assert row.startswith("| ndcg@10 | 0.3000 | 0.2000 | +0.1000 (+50.0%) | ") and row.endswith(" | – |")
