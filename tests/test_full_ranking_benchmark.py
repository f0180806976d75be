"""``benchmarks/full_ranking.py`` at a tiny size: both passes run over the same users, the fraction and the
Pixel8M projection are the figures they say they are, and the printed lines carry them."""

import math
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import full_ranking  # noqa: E402


def test_the_tiny_benchmark_prints_its_rates_fraction_and_projection(capsys) -> None:
    result = full_ranking.main(["--users", "96", "--items", "3000", "--dims", "8", "--batch-size", "32",
                                "--item-chunk-size", "700", "--history", "5", "--ks", "10", "20"])
    printed = capsys.readouterr().out

    assert result["users"] == 96 and result["items"] == 3000 and result["dims"] == 8
    assert result["bare_seconds"] > 0 and result["metric_seconds"] > 0
    assert result["fraction_of_bare"] == result["bare_seconds"] / result["metric_seconds"]
    assert result["metric_users_per_second"] == 96 / result["metric_seconds"]
    # 8.9M users x 407k items at the measured pairs/s, scaled by 2048 / 8 dims.
    pairs_per_second = 96 * 3000 / result["metric_seconds"]
    expected_hours = 8_900_000 * 407_000 / pairs_per_second * 256 / 3600
    assert math.isclose(result["pixel8m_hours"], expected_hours, rel_tol=1e-12)
    assert result["pixel8m_dims_scale"] == 256
    assert 0 <= result["ndcg@10_random_model"] < 0.05, "random embeddings rank the target near chance"
    assert f"fraction of the bare pass: {result['fraction_of_bare']:.2f}" in printed
    assert f"{result['pixel8m_hours']:.2f} h, scaled x256 from 8 dims" in printed
    assert printed.splitlines()[-1].startswith("RESULT {")
