"""Student's t against published critical values (Abramowitz and Stegun, table 26.10; NIST/SEMATECH
e-Handbook 1.3.6.7.2), and the paired comparison against the formulas written out."""
import math
import statistics

import pytest

from llmcourse.core import stats
from llmcourse.core.stats import paired_comparison, t_critical, t_two_sided_mass

# two-sided level -> {degrees of freedom: critical value}, as printed in the tables (3 decimals)
PUBLISHED = {
    0.95: {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 20: 2.086, 30: 2.042, 100: 1.984},
    0.99: {1: 63.657, 2: 9.925, 4: 4.604, 10: 3.169, 30: 2.750},
    0.90: {1: 6.314, 4: 2.132, 10: 1.812},
}


@pytest.mark.parametrize("level", sorted(PUBLISHED))
def test_critical_values_match_the_published_tables(level):
    for dof, value in PUBLISHED[level].items():
        assert round(t_critical(level, dof), 3) == value, (level, dof)


def test_the_distribution_has_its_closed_forms_and_tends_to_the_normal():
    assert t_two_sided_mass(1.0, 1) == pytest.approx(0.5, abs=1e-15)  # Cauchy: P(|T| <= 1) = 1/2
    assert t_two_sided_mass(1.0, 2) == pytest.approx(1 / math.sqrt(3), abs=1e-15)  # dof 2: t / sqrt(2 + t^2)
    assert t_two_sided_mass(0.0, 7) == 0.0 and t_two_sided_mass(math.inf, 7) == 1.0
    assert t_two_sided_mass(1.959964, 2000) == pytest.approx(0.95, abs=2e-4)
    values = [t_two_sided_mass(x / 10, 5) for x in range(60)]
    assert all(b > a for a, b in zip(values, values[1:]))  # increasing in t


def test_paired_comparison_is_the_formula_written_out():
    a, b = [0.74, 0.75, 0.73, 0.76, 0.745], [0.70, 0.72, 0.71, 0.70, 0.73]
    c = paired_comparison(a, b)
    d = [x - y for x, y in zip(a, b)]
    se = statistics.stdev(d) / math.sqrt(5)
    assert c.mean == pytest.approx(statistics.mean(d), abs=1e-15) and c.t == pytest.approx(c.mean / se, rel=1e-12)
    assert c.low == pytest.approx(c.mean - 2.776445 * se, abs=1e-6) and c.high == pytest.approx(c.mean + 2.776445 * se, abs=1e-6)
    assert c.significant and (c.wins, c.losses, c.n) == (5, 0, 5)
    assert c.p_value == pytest.approx(1 - t_two_sided_mass(abs(c.t), 4), abs=0)
    flat = paired_comparison([1.0, 2.0, 3.0], [1.5, 1.0, 3.5])
    assert not flat.significant and flat.low < 0 < flat.high and flat.p_value > 0.05


def test_no_spread_and_bad_input():
    same = paired_comparison([1.0, 2.0], [1.0, 2.0])
    assert (same.t, same.p_value, same.low, same.high) == (0.0, 1.0, 0.0, 0.0) and not same.significant
    shifted = paired_comparison([1.5, 2.5], [1.0, 2.0])
    assert shifted.t == math.inf and shifted.p_value == 0.0 and shifted.significant
    with pytest.raises(ValueError, match="come in pairs"):
        paired_comparison([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_comparison([1.0], [2.0])
    with pytest.raises(ValueError, match="finite numbers"):
        paired_comparison([1.0, math.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="level must be a float"):
        t_critical(95, 4)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_critical(0.95, 0)


# ---- McNemar and the paired bootstrap ---------------------------------------------------------------
def test_mcnemar_matches_scipy_exact_binomial():
    scipy_stats = pytest.importorskip("scipy.stats")
    a = [1] * 61 + [0] * 75 + [1] * 300 + [0] * 100
    b = [0] * 61 + [1] * 75 + [1] * 300 + [0] * 100
    m = stats.mcnemar(a, b)
    assert (m.only_a, m.only_b) == (61, 75)
    assert m.p_value == pytest.approx(scipy_stats.binomtest(61, 136, 0.5).pvalue, rel=1e-9)
    assert m.z == pytest.approx((61 - 75) / math.sqrt(136))
    assert m.verdict() == "not distinguishable from"
    strong = stats.mcnemar([1] * 40 + [0] * 5, [0] * 40 + [1] * 5)
    assert strong.verdict() == "better than" and stats.mcnemar([0] * 40 + [1] * 5, [1] * 40 + [0] * 5).verdict() == "worse than"
    assert stats.mcnemar([1, 0], [1, 0]).p_value == 1.0


def test_mcnemar_rejects_bad_input():
    with pytest.raises(ValueError, match="pairs"):
        stats.mcnemar([1, 0], [1])
    with pytest.raises(ValueError, match="0/1"):
        stats.mcnemar([1, 2], [1, 0])


def test_paired_bootstrap_covers_the_mean_and_is_seeded():
    a = [float(i % 3 == 0) for i in range(300)]
    b = [float(i % 4 == 0) for i in range(300)]
    r = stats.paired_bootstrap(a, b, resamples=1000)
    assert r.mean == pytest.approx(sum(a) / 300 - sum(b) / 300)
    assert r.low < r.mean < r.high and r == stats.paired_bootstrap(a, b, resamples=1000)
    assert not stats.paired_bootstrap(a, a, resamples=100).significant
    with pytest.raises(ValueError, match="resamples"):
        stats.paired_bootstrap(a, b, resamples=10)
