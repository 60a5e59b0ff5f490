"""Paired comparisons over seeds: Student's t test and confidence interval (配对比较与置信区间).

When two methods are run with the same seeds (the same labelled subset, the same initial head, the
same batch order), the per-seed differences ``d_i = a_i - b_i`` remove what the seeds share, and the
question "is A better than B?" becomes "is the mean of ``d`` different from 0?". With ``n`` seeds,
``t = mean(d) / (sd(d) / sqrt(n))`` follows Student's t with ``n - 1`` degrees of freedom if the
differences are roughly normal, and the interval ``mean(d) -/+ t_crit * sd(d) / sqrt(n)`` covers the
true mean difference with the stated probability. An interval that excludes 0 is the same verdict as
the two-sided test at that level.

The t distribution is computed exactly for integer degrees of freedom (Abramowitz and Stegun 26.7.3-4),
so nothing beyond the standard library is needed; ``tests/test_stats.py`` checks it against published
critical values.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def _check_dof(dof) -> int:
    if isinstance(dof, bool) or not isinstance(dof, int) or dof < 1:
        raise ValueError(f"degrees of freedom must be an int >= 1, got {dof!r}")
    return dof


def t_two_sided_mass(t: float, dof: int) -> float:
    """``P(|T| <= t)`` for Student's T with ``dof`` degrees of freedom (``t >= 0``)."""
    _check_dof(dof)
    if t < 0:
        raise ValueError(f"t must be >= 0, got {t!r}")
    if math.isinf(t):
        return 1.0
    theta = math.atan(t / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    if dof % 2 == 0:  # sin(theta) * (1 + 1/2 c2 + 1*3/(2*4) c2^2 + ...), dof/2 terms
        term, total = 1.0, 1.0
        for k in range(1, dof // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return math.sin(theta) * total
    if dof == 1:
        return 2 * theta / math.pi
    term, total = 1.0, 1.0  # (2/pi)(theta + sin cos (1 + 2/3 c2 + 2*4/(3*5) c2^2 + ...)), (dof-1)/2 terms
    for k in range(1, (dof - 1) // 2):
        term *= c2 * (2 * k) / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


def t_critical(level: float, dof: int) -> float:
    """The two-sided critical value: ``P(|T| <= t_critical) = level`` (2.776 for 95 % and 4 dof)."""
    _check_dof(dof)
    if not isinstance(level, float) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be a float in (0, 1), e.g. 0.95, got {level!r}")
    low, high = 0.0, 1.0
    while t_two_sided_mass(high, dof) < level:
        high *= 2
    for _ in range(200):  # bisection to the float's resolution
        mid = (low + high) / 2
        if mid in (low, high):
            break
        low, high = (mid, high) if t_two_sided_mass(mid, dof) < level else (low, mid)
    return high


@dataclass(frozen=True)
class PairedComparison:
    """The paired differences ``a - b`` summarised: their mean, standard deviation, Student's t, the
    two-sided p-value, the interval at ``level`` and how many pairs went each way."""

    n: int
    mean: float
    sd: float
    t: float
    p_value: float
    level: float
    low: float
    high: float
    wins: int  # pairs with a > b
    losses: int  # pairs with a < b

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (the two-sided test rejects "no difference" at ``1 - level``)."""
        return self.low > 0 or self.high < 0


def paired_comparison(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedComparison:
    """Compare ``a`` and ``b``, paired by position (seed ``i`` of one with seed ``i`` of the other)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"paired values must come in pairs: {len(a)} values of a, {len(b)} of b")
    if len(a) < 2:
        raise ValueError(f"a paired comparison needs at least 2 pairs (seeds), got {len(a)}")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in a + b):
        raise ValueError("paired values must be finite numbers")
    d = [x - y for x, y in zip(a, b)]
    n, mean, sd = len(d), statistics.fmean(d), statistics.stdev(d)
    se = sd / math.sqrt(n)
    half = t_critical(level, n - 1) * se
    if se == 0:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        t = mean / se
    p_value = 1.0 - t_two_sided_mass(abs(t), n - 1)
    return PairedComparison(n, mean, sd, t, p_value, level, mean - half, mean + half,
                            sum(x > 0 for x in d), sum(x < 0 for x in d))


# ---- paired over items: the same test items judged by two methods --------------------------------------
@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on paired right/wrong outcomes: only the discordant items count."""

    only_a: int  # items A gets right and B wrong
    only_b: int  # items B gets right and A wrong
    p_value: float  # two-sided, exact binomial (only_a ~ Binomial(only_a + only_b, 1/2) if A and B are equal)

    @property
    def z(self) -> float:
        """(only_a - only_b) / sqrt(only_a + only_b), the normal approximation's statistic."""
        n = self.only_a + self.only_b
        return (self.only_a - self.only_b) / math.sqrt(n) if n else 0.0

    def verdict(self, level: float = 0.95) -> str:
        """``"better than"``, ``"worse than"`` or ``"not distinguishable from"`` (A against B)."""
        if self.p_value >= 1 - level:
            return "not distinguishable from"
        return "better than" if self.only_a > self.only_b else "worse than"


def _check_outcomes(name: str, values) -> list[int]:
    values = list(values)
    if any(v not in (0, 1) for v in values):
        raise ValueError(f"{name} must hold 0/1 (or False/True) outcomes, one per item")
    return [int(v) for v in values]


def mcnemar(correct_a: Sequence[int], correct_b: Sequence[int]) -> McNemar:
    """McNemar's test of ``correct_a`` against ``correct_b``: per item 1 if the method was right, else 0."""
    a, b = _check_outcomes("correct_a", correct_a), _check_outcomes("correct_b", correct_b)
    if len(a) != len(b) or not a:
        raise ValueError(f"paired outcomes must come in pairs over at least one item: {len(a)} of a, {len(b)} of b")
    only_a = sum(x > y for x, y in zip(a, b))
    only_b = sum(y > x for x, y in zip(a, b))
    n, k = only_a + only_b, min(only_a, only_b)
    # exact two-sided binomial p: twice the smaller tail, in log space so that large n does not underflow
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2))
               for i in range(k + 1)) if n else 1.0
    return McNemar(only_a, only_b, min(1.0, 2 * tail) if only_a != only_b else 1.0)


@dataclass(frozen=True)
class BootstrapInterval:
    """Paired bootstrap of ``mean(a) - mean(b)`` over items: the estimate and a percentile interval."""

    mean: float
    low: float
    high: float
    level: float
    resamples: int

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 2000, level: float = 0.95,
                     seed: int = 0) -> BootstrapInterval:
    """Resample the items (with replacement, the same draw for both methods) ``resamples`` times."""
    import torch  # only here: the rest of this module needs nothing beyond the standard library

    a, b = list(a), list(b)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired values must come in pairs over at least 2 items: {len(a)} of a, {len(b)} of b")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"resamples must be an int >= 100, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    if not torch.isfinite(d).all():
        raise ValueError("paired values must be finite numbers")
    rows = torch.randint(len(d), (resamples, len(d)), generator=torch.Generator().manual_seed(seed))
    means = d[rows].mean(1).sort().values
    lo = means[int(math.floor((1 - level) / 2 * resamples))].item()
    hi = means[min(resamples - 1, int(math.ceil((1 + level) / 2 * resamples)) - 1)].item()
    return BootstrapInterval(d.mean().item(), lo, hi, level, resamples)


__all__ = ["BootstrapInterval", "McNemar", "PairedComparison", "mcnemar", "paired_bootstrap", "paired_comparison",
           "t_critical", "t_two_sided_mass"]
