"""Tests of hz_ray.delta: the delta method against Monte Carlo, and the N-weighted aggregate."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from hz_ray.delta import DeltaSummary, aggregate, delta_moments, reading_to_delta
from hz_ray.errors import ConfigError, InputDataError, StateError
from hz_ray.records import GroupStats, HourlyDelta, HourlyReading

# ---------------------------------------------------------------- per-unit worlds


def lognormal_units(sigma: float):
    """Lognormal views per user with a given mean; returns (sampler, per-unit variance)."""

    def sample(rng, shape, mean):
        return rng.lognormal(math.log(mean) - sigma**2 / 2, sigma, size=shape)

    def unit_var(mean):
        return (math.exp(sigma**2) - 1) * mean * mean

    return sample, unit_var


def zip_units(pi_zero: float):
    """Zero-inflated Poisson views per user: 0 w.p. pi_zero, else Poisson(lam)."""

    def sample(rng, shape, mean):
        lam = mean / (1 - pi_zero)
        return rng.poisson(lam, size=shape) * (rng.random(shape) >= pi_zero)

    def unit_var(mean):
        lam = mean / (1 - pi_zero)
        return (1 - pi_zero) * lam * (1 + pi_zero * lam)

    return sample, unit_var


def simulate_groups(sample, n_test, n_control, mean_test, mean_control, reps, seed, chunk=2000):
    """Replicate one hour: per replication the group means and sampling variances of the means.

    Returns arrays of shape (reps,): a, v_a, b, v_b.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, reps, chunk):
        k = min(chunk, reps - start)
        test = sample(rng, (k, n_test), mean_test)
        control = sample(rng, (k, n_control), mean_control)
        parts.append((
            test.mean(1), test.var(1, ddof=1) / n_test,
            control.mean(1), control.var(1, ddof=1) / n_control,
        ))
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


MEAN_CONTROL = 0.9  # views per user
RATIO = 1.05  # true X(w) / X(w0): a +5% lift


def truth(unit_var, n):
    """True r, p = Var(a)/mu_B^2 and q = Var(b)/mu_B^2 of the simulated hour."""
    mean_test = RATIO * MEAN_CONTROL
    p = unit_var(mean_test) / n / MEAN_CONTROL**2
    q = unit_var(MEAN_CONTROL) / n / MEAN_CONTROL**2
    return RATIO, p, q


def first_order_term(a, b):
    """T1 = (a - mu_A)/mu_B - r (b - mu_B)/mu_B: known mean 0 and variance p + r^2 q.

    Used as a control variate: subtracting it leaves the second-order part of
    the estimator, whose Monte Carlo error is far smaller.
    """
    return (a - RATIO * MEAN_CONTROL) / MEAN_CONTROL - RATIO * (b - MEAN_CONTROL) / MEAN_CONTROL


# ------------------------------------------------------------------ delta method


@pytest.mark.parametrize(
    ("units", "n"),
    [(lognormal_units(1.2), 300), (zip_units(0.7), 200)],
    ids=["lognormal-cv1.9-n300", "zip-cv1.6-n200"],
)
def test_second_order_mean_removes_the_ratio_bias(units, n):
    sample, unit_var = units
    a, v_a, b, v_b = simulate_groups(sample, n, n, RATIO * MEAN_CONTROL, MEAN_CONTROL, 20_000, 1)
    r, _, q = truth(unit_var, n)
    corrected, _ = delta_moments(a, v_a, b, v_b)
    plain = a / b - 1
    t1 = first_order_term(a, b)
    bias_plain = float(np.mean(plain - (r - 1) - t1))
    bias_corrected = float(np.mean(corrected - (r - 1) - t1))
    # The plain ratio's bias is r q to second order (Monte Carlo agrees within 10%)...
    assert bias_plain == pytest.approx(r * q, rel=0.10)
    # ...and the correction removes at least 80% of it.
    assert abs(bias_corrected) < 0.2 * bias_plain


@pytest.mark.parametrize(
    ("units", "n"),
    [
        (lognormal_units(1.2), 300),
        (lognormal_units(0.8), 2000),
        (zip_units(0.7), 300),
        (zip_units(0.9), 1000),
    ],
    ids=["lognormal-cv1.9-n300", "lognormal-cv0.9-n2000", "zip-cv1.6-n300", "zip-cv3.2-n1000"],
)
def test_variance_formula_matches_monte_carlo(units, n):
    sample, unit_var = units
    reps = 10_000 if n < 1000 else 6_000
    a, v_a, b, v_b = simulate_groups(sample, n, n, RATIO * MEAN_CONTROL, MEAN_CONTROL, reps, 2)
    estimate, plug_in = delta_moments(a, v_a, b, v_b)
    mc_var = float(np.var(estimate))
    r, p, q = truth(unit_var, n)
    _, at_truth = delta_moments(r, p, 1.0, q)
    # The formula at the true moments: within 5% of the sampling variance.
    assert at_truth == pytest.approx(mc_var, rel=0.05)
    # The plug-in estimate, on average: within 10% (it is what the GP sees).
    assert float(np.mean(plug_in)) == pytest.approx(mc_var, rel=0.10)


@pytest.mark.parametrize(
    ("units", "n"),
    [(zip_units(0.9), 300), (zip_units(0.8), 300)],
    ids=["zip-cv3.2-n300", "zip-cv2.2-n300"],
)
def test_second_order_variance_terms_match_monte_carlo(units, n):
    """Var[delta] - (p + r^2 q), estimated with T1 as control variate, is p q + 2 r^2 q^2."""
    sample, unit_var = units
    a, v_a, b, v_b = simulate_groups(sample, n, n, RATIO * MEAN_CONTROL, MEAN_CONTROL, 20_000, 3)
    estimate, _ = delta_moments(a, v_a, b, v_b)
    t1 = first_order_term(a, b)
    excess = (estimate - estimate.mean()) ** 2 - t1**2
    mc_excess = float(excess.mean())
    mc_se = float(excess.std() / math.sqrt(excess.size))
    r, p, q = truth(unit_var, n)
    predicted = p * q + 2 * r * r * q * q
    assert mc_excess > 3 * mc_se  # first order (excess 0) is measurably wrong here
    assert abs(mc_excess - predicted) < 3 * mc_se  # second order is within MC noise
    assert abs(mc_excess - predicted) < abs(mc_excess)


def test_reading_to_delta_uses_delta_moments_and_test_n():
    sample, _ = zip_units(0.7)
    rng = np.random.default_rng(4)
    for _ in range(50):
        test = sample(rng, 250, 1.0)
        control = sample(rng, 400, 0.95)
        if control.mean() == 0:
            continue
        reading = HourlyReading(
            "arm-1", 7, "views",
            GroupStats(float(test.mean()), float(test.var(ddof=1)), 250),
            GroupStats(float(control.mean()), float(control.var(ddof=1)), 400),
        )
        delta = reading_to_delta(reading)
        mean, var = delta_moments(
            float(test.mean()), float(test.var(ddof=1)) / 250,
            float(control.mean()), float(control.var(ddof=1)) / 400,
        )
        assert (delta.mean, delta.var, delta.n) == (mean, var, 250)
        assert delta.key == ("arm-1", "views", 7)


def test_reading_to_delta_hand_values():
    # a = 1.1, b = 1.0, v_a = 0.5 / 100, v_b = 0.4 / 200.
    reading = HourlyReading("a", 0, "m", GroupStats(1.1, 0.5, 100), GroupStats(1.0, 0.4, 200))
    delta = reading_to_delta(reading)
    p, q = 0.005, 0.002
    rho = 1.1 / (1 + q)
    assert delta.mean == pytest.approx(rho - 1, rel=1e-12)
    assert delta.var == pytest.approx(p + rho**2 * q + p * q + 2 * rho**2 * q**2, rel=1e-12)
    assert delta.n == 100


def test_missing_variances():
    test, control = GroupStats(1.2, 2.0, 100), GroupStats(1.0, 3.0, 100)
    no_test_var = reading_to_delta(HourlyReading("a", 0, "m", GroupStats(1.2, None, 100), control))
    no_control_var = reading_to_delta(
        HourlyReading("a", 0, "m", test, GroupStats(1.0, None, 100)))
    assert no_test_var.var is None and no_control_var.var is None
    # The control variance alone still buys the bias correction.
    assert no_test_var.mean == pytest.approx(1.2 / (1 + 3.0 / 100) - 1)
    assert no_control_var.mean == pytest.approx(0.2)


# ------------------------------------------------------------------ aggregation


def d(hour, mean, var, n, arm="a", metric="m"):
    return HourlyDelta(arm, metric, hour, mean, var, n)


def test_aggregate_weights_by_units_hand_example():
    est = aggregate([d(0, 0.01, 4e-4, 100), d(1, 0.03, 1e-4, 300)], var_floor=0.0)
    assert est.mean == pytest.approx((100 * 0.01 + 300 * 0.03) / 400)
    assert est.sem**2 == pytest.approx((100**2 * 4e-4 + 300**2 * 1e-4) / 400**2)
    assert (est.n, est.hours) == (400, 2)


def test_aggregate_spread_when_variances_are_missing_hand_example():
    est = aggregate([d(0, 0.0, None, 100), d(1, 0.02, None, 100), d(2, 0.01, None, 200)], 0.0)
    # m = 0.01; sum n (d - m)^2 = 0.02; sigma^2 = 0.02 / (3 - 1) = 0.01; var = sigma^2 / N.
    assert est.mean == pytest.approx(0.01)
    assert est.sem**2 == pytest.approx(0.01 / 400)


def test_aggregate_mixed_known_and_missing_variances_hand_example():
    deltas = [d(0, 0.0, 1e-3, 100), d(1, 0.02, None, 100)]
    est = aggregate(deltas, 0.0)  # H = 2 < 3: no spread check
    sigma2 = (100 * 0.01**2 + 100 * 0.01**2) / 1
    assert est.sem**2 == pytest.approx((100**2 * 1e-3 + sigma2 * 100) / 200**2)


def test_spread_check_takes_the_larger_variance():
    # Delta-method variances tiny, hours far apart: the spread wins from 3 hours on.
    deltas = [d(0, 0.0, 1e-8, 100), d(1, 0.1, 1e-8, 100), d(2, 0.05, 1e-8, 100)]
    spread = (100 * 0.05**2 * 2) / 2 / 300
    assert aggregate(deltas, 0.0).sem ** 2 == pytest.approx(spread)
    assert aggregate(deltas, 0.0, min_hours_for_spread=4).sem ** 2 == pytest.approx(
        3 * 100**2 * 1e-8 / 300**2)


def test_variance_floor_is_per_hour():
    one = aggregate([d(0, 0.01, 1e-9, 1000)], var_floor=1e-4)
    assert one.sem == pytest.approx(math.sqrt(1e-4))
    two = aggregate([d(0, 0.01, 1e-9, 1000), d(1, 0.01, 1e-9, 1000)], var_floor=1e-4)
    assert two.sem**2 == pytest.approx(1e-4 / 2)
    big = aggregate([d(0, 0.01, 1.0, 10)], var_floor=1e-4)
    assert big.sem == pytest.approx(1.0)  # the floor only ever raises the variance


def test_one_hour_without_variance_is_unidentified_but_floored():
    assert aggregate([d(0, 0.02, None, 50)], var_floor=1e-3).sem == pytest.approx(math.sqrt(1e-3))
    assert aggregate([d(0, 0.02, None, 50)], var_floor=0.0).sem == math.inf


def random_deltas(seed, hours=30, missing=0.3):
    rng = random.Random(seed)
    return [
        d(h, rng.gauss(0.01, 0.05), None if rng.random() < missing else rng.uniform(1e-4, 1e-2),
          rng.randint(50, 5000))
        for h in range(hours)
    ]


def test_merge_is_commutative_bit_exactly_and_associative():
    parts = [DeltaSummary.empty(), DeltaSummary.empty(), DeltaSummary.empty()]
    for i, delta in enumerate(random_deltas(5)):
        parts[i % 3] = parts[i % 3].add(delta)
    a, b, c = parts
    assert a.merge(b) == b.merge(a)
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    assert (left.hours, left.sum_n, left.sum_n_missing) == (right.hours, right.sum_n,
                                                            right.sum_n_missing)
    for name in ("sum_n_mean", "sum_n_sq_dev", "sum_n2_var"):
        assert getattr(left, name) == pytest.approx(getattr(right, name), rel=1e-12)
    assert a.merge(DeltaSummary.empty()) == a == DeltaSummary.empty().merge(a)


def test_merge_equals_sequential_fold():
    deltas = random_deltas(6)
    folded = DeltaSummary.empty()
    for delta in deltas:
        folded = folded.add(delta)
    halves = DeltaSummary.empty()
    for delta in deltas[:13]:
        halves = halves.add(delta)
    rest = DeltaSummary.empty()
    for delta in deltas[13:]:
        rest = rest.add(delta)
    merged = halves.merge(rest)
    e1, e2 = folded.estimate(1e-6), merged.estimate(1e-6)
    assert e1.mean == pytest.approx(e2.mean, rel=1e-12)
    assert e1.sem == pytest.approx(e2.sem, rel=1e-12)
    # Against a direct two-pass computation of the centred squares.
    n = np.array([x.n for x in deltas], float)
    m = np.array([x.mean for x in deltas])
    centre = (n * m).sum() / n.sum()
    assert folded.sum_n_sq_dev == pytest.approx(float((n * (m - centre) ** 2).sum()), rel=1e-10)


def test_aggregate_is_bit_identical_in_any_order():
    deltas = random_deltas(7)
    reference = aggregate(deltas, 1e-6)
    rng = random.Random(8)
    for _ in range(20):
        shuffled = deltas[:]
        rng.shuffle(shuffled)
        assert aggregate(shuffled, 1e-6) == reference


def test_spread_is_stable_far_from_zero():
    # Deltas near +100% with a tiny spread: the centred sums keep the digits.
    deltas = [d(h, 1.0 + 1e-7 * (h % 2), None, 1000) for h in range(10)]
    est = aggregate(deltas, 0.0)
    sigma2 = 1000 * (0.5e-7) ** 2 * 10 / 9
    assert est.sem**2 == pytest.approx(sigma2 / 10_000, rel=1e-6)


def test_spread_fallback_matches_the_aggregate_sampling_variance():
    """No variances reported: the sem from the across-hour spread matches Monte Carlo.

    Twelve hours with a shared time-of-day factor, unequal group sizes and
    skewed (lognormal) users; the delta of each hour is a plain ratio.
    """
    sample, _ = lognormal_units(0.8)
    hours, reps = 12, 2_000
    rng = np.random.default_rng(9)
    sizes = rng.integers(100, 600, size=hours)
    season = 1 + 0.5 * np.sin(np.arange(hours) / 24 * 2 * np.pi)
    deltas = np.empty((reps, hours))
    for h, (n, s) in enumerate(zip(sizes, season, strict=True)):
        a, _, b, _ = simulate_groups(sample, int(n), int(n), RATIO * s, float(s), reps, 100 + h)
        deltas[:, h] = a / b - 1
    means, sem2 = [], []
    for rep in range(reps):
        est = aggregate(
            [d(h, float(deltas[rep, h]), None, int(sizes[h])) for h in range(hours)], 0.0)
        means.append(est.mean)
        sem2.append(est.sem**2)
    mc_var = float(np.var(means))
    assert float(np.mean(sem2)) == pytest.approx(mc_var, rel=0.10)
    # Sanity of the world: the N-weighted mean is (nearly) unbiased for the lift.
    assert float(np.mean(means)) == pytest.approx(RATIO - 1, abs=3 * math.sqrt(mc_var / reps)
                                                  + 0.002)


def test_spread_check_catches_hour_to_hour_treatment_variation():
    """Known delta-method variances understate the truth when the lift varies by hour."""
    hours, reps, sigma2_unit, tau2 = 24, 2_000, 2.0, 4e-4
    rng = np.random.default_rng(10)
    sizes = rng.integers(2000, 8000, size=hours)
    within = sigma2_unit / sizes
    hourly = 0.02 + rng.normal(size=(reps, hours)) * np.sqrt(within + tau2)
    means, sem2 = [], []
    for rep in range(reps):
        est = aggregate([d(h, float(hourly[rep, h]), float(within[h]), int(sizes[h]))
                         for h in range(hours)], 0.0)
        means.append(est.mean)
        sem2.append(est.sem**2)
    mc_var = float(np.var(means))
    delta_method = float((sizes**2 * within).sum() / sizes.sum() ** 2)
    assert delta_method < 0.6 * mc_var  # the delta method alone is overconfident here
    assert float(np.mean(sem2)) == pytest.approx(mc_var, rel=0.12)


def test_spread_check_costs_little_when_hours_are_iid():
    """Without treatment variation the max() rule is conservative, but only mildly (24 h)."""
    hours, reps = 24, 2_000
    rng = np.random.default_rng(12)
    sizes = rng.integers(2000, 8000, size=hours)
    within = 2.0 / sizes
    hourly = 0.02 + rng.normal(size=(reps, hours)) * np.sqrt(within)
    sem2 = [
        aggregate([d(h, float(hourly[rep, h]), float(within[h]), int(sizes[h]))
                   for h in range(hours)], 0.0).sem ** 2
        for rep in range(reps)
    ]
    true_var = float((sizes**2 * within).sum() / sizes.sum() ** 2)
    assert 1.03 < float(np.mean(sem2)) / true_var < 1.2

# ------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: GroupStats(float("nan"), 1.0, 10), "'mean'"),
        (lambda: GroupStats(1.0, float("inf"), 10), "'var'"),
        (lambda: GroupStats(1.0, -1.0, 10), "'var'"),
        (lambda: GroupStats(1.0, 1.0, 0), "'n'"),
        (lambda: HourlyReading("a", 0, "m", GroupStats(1, 1, 1), GroupStats(0.0, 1, 1)),
         "'control.mean'"),
        (lambda: HourlyDelta("a", "m", 0, float("nan"), None, 1), "'mean'"),
        (lambda: HourlyDelta("a", "m", -1, 0.0, None, 1), "'hour'"),
    ],
)
def test_bad_records_name_the_field(build, field):
    with pytest.raises(InputDataError) as info:
        build()
    assert field in str(info.value)


def test_overflowing_ratio_is_rejected_with_the_field():
    reading = HourlyReading("a", 3, "m", GroupStats(1e308, 1.0, 10), GroupStats(1e-10, 1.0, 10))
    with pytest.raises(InputDataError, match="test.mean / control.mean"):
        reading_to_delta(reading)
    tiny = HourlyReading("a", 3, "m", GroupStats(1.0, None, 10), GroupStats(1e-200, 1.0, 10))
    with pytest.raises(InputDataError, match="control.var"):
        reading_to_delta(tiny)


def test_not_a_reading():
    with pytest.raises(InputDataError, match="'reading'"):
        reading_to_delta({"arm_id": "a"})  # type: ignore[arg-type]


def test_aggregate_rejects_mixed_series_duplicates_and_empty():
    with pytest.raises(InputDataError, match="'deltas'"):
        aggregate([d(0, 0.0, 1e-4, 10), d(1, 0.0, 1e-4, 10, arm="b")], 0.0)
    with pytest.raises(InputDataError, match="'hour'"):
        aggregate([d(0, 0.0, 1e-4, 10), d(0, 0.1, 1e-4, 10)], 0.0)
    with pytest.raises(StateError):
        aggregate([], 0.0)
    with pytest.raises(InputDataError, match="'deltas'"):
        aggregate([0.1], 0.0)  # type: ignore[list-item]


@pytest.mark.parametrize("floor", [float("nan"), -1e-4, float("inf"), "1e-4", True])
def test_bad_var_floor(floor):
    with pytest.raises(ConfigError, match="'var_floor'"):
        aggregate([d(0, 0.0, 1e-4, 10)], floor)  # type: ignore[arg-type]


@pytest.mark.parametrize("hours", [1, 0, 2.5])
def test_bad_min_hours(hours):
    with pytest.raises(ConfigError, match="'min_hours_for_spread'"):
        aggregate([d(0, 0.0, 1e-4, 10)], 0.0, hours)  # type: ignore[arg-type]


def test_summary_rejects_foreign_objects():
    with pytest.raises(InputDataError, match="'delta'"):
        DeltaSummary.empty().add("x")  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match="'other'"):
        DeltaSummary.empty().merge("x")  # type: ignore[arg-type]


def test_every_grouping_of_four_parts_agrees():
    deltas = random_deltas(11, hours=16)
    parts = []
    for i in range(4):
        s = DeltaSummary.empty()
        for delta in deltas[i::4]:
            s = s.add(delta)
        parts.append(s)
    estimates = set()
    for order in itertools.permutations(parts):
        total = DeltaSummary.empty()
        for p in order:
            total = total.merge(p)
        est = total.estimate(1e-6)
        estimates.add((round(est.mean, 12), round(est.sem, 12), est.n, est.hours))
    assert len(estimates) == 1


@pytest.mark.parametrize("units", [lognormal_units(0.8), zip_units(0.6)])
def test_control_var_is_the_covariance_of_two_arms_sharing_the_control(units):
    """Monte Carlo: two test groups against one control group of the same hour.

    Their deltas covary through the control's sampling error only, by
    ``sqrt(control_var_1 * control_var_2)``; ``control_var`` is also that part of ``var``.
    """
    sample, _ = units
    rng = np.random.default_rng(7)
    n, reps = 400, 4000
    d1, d2, c1, c2, v1 = [], [], [], [], []
    for _ in range(reps):
        control = sample(rng, n, MEAN_CONTROL)
        cstats = GroupStats(float(control.mean()), float(control.var(ddof=1)), n)
        deltas = []
        for ratio in (1.05, 0.97):
            test = sample(rng, n, ratio * MEAN_CONTROL)
            reading = HourlyReading("a", 0, "m",
                                    GroupStats(float(test.mean()), float(test.var(ddof=1)), n),
                                    cstats)
            deltas.append(reading_to_delta(reading))
        d1.append(deltas[0].mean)
        d2.append(deltas[1].mean)
        c1.append(deltas[0].control_var)
        c2.append(deltas[1].control_var)
        v1.append(deltas[0].var)
        assert 0 < deltas[0].control_var < deltas[0].var
    cov = float(np.cov(d1, d2)[0, 1])
    predicted = float(np.mean(np.sqrt(np.array(c1) * np.array(c2))))
    # s.e. of a sample covariance ~ sqrt(var1 var2 / reps) ~ 1.6% of var here
    assert cov == pytest.approx(predicted, rel=0.15)
    # the control's share is about half the variance with equal groups and a small lift
    assert 0.35 < float(np.mean(c1)) / float(np.mean(v1)) < 0.6
    assert reading_to_delta(HourlyReading("a", 0, "m", GroupStats(1.2, None, 100),
                                          cstats)).control_var is None


# ------------------------------------------------- readings that skipped validation


def unvalidated(test=(1.1, 0.5, 100), control=(1.0, 0.4, 200), arm="a", hour=0, metric="m"):
    """A reading built as unpickling builds it: no ``__post_init__`` runs."""

    def stats(values):
        if not isinstance(values, tuple):
            return values
        out = object.__new__(GroupStats)
        for name, value in zip(("mean", "var", "n"), values, strict=True):
            object.__setattr__(out, name, value)
        return out

    reading = object.__new__(HourlyReading)
    for name, value in (("arm_id", arm), ("hour", hour), ("metric", metric),
                        ("test", stats(test)), ("control", stats(control))):
        object.__setattr__(reading, name, value)
    return reading


def test_an_unvalidated_but_good_reading_gives_the_same_delta():
    good = HourlyReading("a", 0, "m", GroupStats(1.1, 0.5, 100), GroupStats(1.0, 0.4, 200))
    assert reading_to_delta(unvalidated()) == reading_to_delta(good)


@pytest.mark.parametrize(("reading", "field"), [
    (unvalidated(test=(1.1, 0.5, 0)), "'test.n'"),             # ZeroDivisionError before
    (unvalidated(control=(1.0, 0.4, 0)), "'control.n'"),
    (unvalidated(test=("abc", 0.5, 100)), "'test.mean'"),      # ValueError before
    (unvalidated(test=("1.5", 0.5, 100)), "'test.mean'"),      # silently float()ed before
    (unvalidated(control=(None, 0.4, 200)), "'control.mean'"),  # TypeError before
    (unvalidated(test=(1.1, 0.5, None)), "'test.n'"),
    (unvalidated(test=(1.1, "x", 100)), "'test.var'"),
    (unvalidated(test=(1.1, 0.5, True)), "'test.n'"),
    (unvalidated(test=(1.1, 0.5, 2.5)), "'test.n'"),
    (unvalidated(test=(1.1, -0.5, 100)), "'test.var'"),
    (unvalidated(test=(float("nan"), 0.5, 100)), "'test.mean'"),
    (unvalidated(control=(10**400, 0.4, 200)), "'control.mean'"),  # OverflowError before
    (unvalidated(test=(1.1, 0.5, 10**400)), "'test.n'"),
    (unvalidated(control=(0.0, 0.4, 200)), "'control.mean'"),
    (unvalidated(test=None), "'test'"),
    (unvalidated(hour="3"), "'hour'"),
    (object.__new__(HourlyReading), "'arm_id'"),                  # no attributes at all
    (unvalidated(test=object.__new__(GroupStats)), "'test.mean'"),
])
def test_reading_that_skipped_validation_raises_only_input_data_error(reading, field):
    with pytest.raises(InputDataError) as info:
        reading_to_delta(reading)
    assert field in str(info.value)


def test_an_object_whose_methods_raise_still_gives_input_data_error():
    class Evil(float):
        def __repr__(self):
            raise RuntimeError("repr")

        def __float__(self):
            raise RuntimeError("float")

    class Odd:
        def __repr__(self):
            raise RuntimeError("repr")

    # a float subclass is read by its value, not by its own methods
    assert reading_to_delta(unvalidated(test=(Evil(1.1), 0.5, 100))).mean == \
        reading_to_delta(unvalidated()).mean
    with pytest.raises(InputDataError, match="'test.mean'.*failing repr"):
        reading_to_delta(unvalidated(test=(Odd(), 0.5, 100)))


# ---------------------------------------------------------- domain of the ratio


@pytest.mark.parametrize(("test_mean", "control_mean", "old_delta"), [
    (1.0, -0.98, -2.02),     # a negative control flips the sign: -202%
    (-1.0, -0.485, 1.06),    # both negative: +206%
])
def test_negative_control_mean_is_outside_the_ratio_domain(test_mean, control_mean, old_delta):
    reading = HourlyReading("a", 0, "m", GroupStats(test_mean, 0.5, 1000),
                            GroupStats(control_mean, 0.5, 1000))
    assert test_mean / control_mean - 1 == pytest.approx(old_delta, abs=0.01)
    with pytest.raises(InputDataError, match=r"'control.mean' must be > 0"):
        reading_to_delta(reading)


def test_negative_test_mean_is_outside_the_ratio_domain():
    reading = HourlyReading("a", 0, "m", GroupStats(-0.01, 0.5, 1000),
                            GroupStats(1.0, 0.5, 1000))
    with pytest.raises(InputDataError, match=r"'test.mean' must be >= 0"):
        reading_to_delta(reading)


def test_a_test_hour_without_activity_is_a_delta_of_minus_one():
    control = GroupStats(0.05, 0.05, 10_000)
    for var in (0.0, None):
        delta = reading_to_delta(HourlyReading("a", 0, "m", GroupStats(0.0, var, 20), control))
        assert delta.mean == -1.0
        assert delta.var == (0.0 if var is not None else None)
    # a mean of 0 over values >= 0 means every unit was 0: a variance > 0 is impossible
    with pytest.raises(InputDataError, match=r"'test.var' must be 0"):
        reading_to_delta(HourlyReading("a", 0, "m", GroupStats(0.0, 0.3, 20), control))


def test_keeping_hours_without_activity_keeps_a_sparse_arm_unbiased():
    """Monte Carlo: 20 users at 0.05 events each, no true lift; P(no event) = e**-1.

    Rejecting exactly the hours with a test mean of 0 would bias the N-weighted
    aggregate by E[a | a > 0] / E[a] - 1 = 1 / (1 - e**-1) - 1 = +58%.
    """
    rng = np.random.default_rng(11)
    lam, users, hours = 0.05, 20, 10_000
    counts = rng.poisson(lam, size=(hours, users)).astype(float)
    control = GroupStats(lam, lam, 10**6)  # a big control group: b is exact, q tiny
    deltas = [reading_to_delta(HourlyReading(
        "a", h, "m", GroupStats(float(row.mean()), float(row.var(ddof=1)), users), control))
        for h, row in enumerate(counts)]
    kept = aggregate(deltas, 1e-6)
    zero = [d for d in deltas if d.mean == -1.0]
    assert len(zero) / hours == pytest.approx(math.exp(-1), abs=0.015)
    # one hour's delta has sd sqrt(lam / users) / lam = 1, so the mean's s.e. is 0.01
    assert abs(kept.mean) < 0.04
    dropped = aggregate([d for d in deltas if d.mean != -1.0], 1e-6)
    assert dropped.mean == pytest.approx(1 / (1 - math.exp(-1)) - 1, abs=0.06)
