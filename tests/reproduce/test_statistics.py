"""The t-test's p-values against closed forms and printed tables, and the paired test against its formula."""

import math

import pytest

from molar_lightning.reproduce.statistics import mean_and_std, paired_t_test, two_sided_t_p_value


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 12.7062, 40.0])
def test_p_value_with_one_and_two_degrees_of_freedom_equals_the_closed_forms(t: float) -> None:
    # df = 1 is the Cauchy distribution; df = 2 has P(|T| >= t) = 1 - t / sqrt(2 + t^2).
    assert two_sided_t_p_value(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-10, abs=1e-14)
    assert two_sided_t_p_value(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("t, df, p", [(2.228, 10, 0.05), (2.086, 20, 0.05), (2.845, 20, 0.01), (1.960, 10**7, 0.05),
                                      (3.291, 10**7, 0.001), (4.032, 5, 0.01)])
def test_p_value_at_the_printed_critical_values(t: float, df: int, p: float) -> None:
    assert two_sided_t_p_value(t, df) == pytest.approx(p, rel=2e-3)  # the tables print 3 or 4 digits of t


def test_mean_and_sample_standard_deviation() -> None:
    assert mean_and_std([1.0, 2.0, 4.0]) == pytest.approx((7 / 3, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                                                               + (4 - 7 / 3) ** 2) / 2)))
    assert mean_and_std([0.25]) == (0.25, 0.0)


def test_paired_test_follows_its_formula() -> None:
    a, b = [0.5, 0.7, 0.2, 0.9], [0.4, 0.4, 0.3, 0.6]
    differences = [0.1, 0.3, -0.1, 0.3]
    mean = sum(differences) / 4
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / 3)
    test = paired_t_test(a, b)
    assert (test.mean_difference, test.df) == (pytest.approx(mean), 3)
    assert test.t == pytest.approx(mean / (std / 2))
    assert test.p_value == pytest.approx(two_sided_t_p_value(mean / (std / 2), 3))
    assert paired_t_test(a, a).p_value == 1.0 and paired_t_test([1.0, 2.0], [0.0, 1.0]).p_value == 0.0
    assert paired_t_test([0.5], [0.4]) is None  # one pair has no spread to test against
