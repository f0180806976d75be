"""Mean and spread over seeds, and the paired t-test that says whether two rows differ beyond noise.

The t distribution's tail comes from the regularised incomplete beta function (a continued fraction, evaluated
by the modified Lentz method), so no statistics library is needed:
``P(|T| >= t) = I_x(df / 2, 1 / 2)`` with ``x = df / (df + t^2)``.
"""

import math
from dataclasses import dataclass
from typing import Optional, Sequence


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``n - 1`` in the denominator; 0 for a single value)."""
    if not values:
        raise ValueError("mean_and_std needs at least one value")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (len(values) - 1))


def _continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function ``I_x(a, b)``, for ``x < (a + 1) / (a + b + 2)``."""
    tiny, epsilon = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < epsilon:
            return fraction
    raise ArithmeticError(f"the incomplete beta function did not converge at a={a}, b={b}, x={x}")


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _continued_fraction(b, a, 1.0 - x) / b


def two_sided_t_p_value(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return incomplete_beta(df / 2, 0.5, df / (df + t * t))


@dataclass(frozen=True)
class PairedTest:
    """A two-sided paired t-test of ``a - b``: the mean difference, t, the degrees of freedom and the p-value."""

    mean_difference: float
    t: float
    df: int
    p_value: float


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> Optional[PairedTest]:
    """Paired t-test of the pairs ``(a[i], b[i])``; None with fewer than two pairs (no spread to test against).

    Identical differences (no spread) give ``p = 1`` when they are all 0 and ``p = 0`` otherwise.
    """
    if len(a) != len(b):
        raise ValueError(f"a paired test needs pairs: {len(a)} values against {len(b)}")
    if len(a) < 2:
        return None
    differences = [x - y for x, y in zip(a, b)]
    mean, std = mean_and_std(differences)
    df = len(differences) - 1
    if std == 0.0:
        return PairedTest(mean, 0.0 if mean == 0.0 else math.copysign(math.inf, mean), df, 1.0 if mean == 0.0 else 0.0)
    t = mean / (std / math.sqrt(len(differences)))
    return PairedTest(mean, t, df, two_sided_t_p_value(t, df))
