"""``optimizer.pooled_noise``: a sparse metric's own variances bias the GP low; pooled ones do not.

A Monte Carlo world with a known, flat truth: every arm moves a rare count metric by
``TRUE_DELTA``. Counts are Poisson, so each hour's per-unit variance is its own count over
units, and an arm that drew few events also reports a small variance. Weighted by those
variances, the GP's pooled estimate sits below the truth by about the variance of one arm's
relative delta (``-E[Var]``, a closed form for inverse-count weighting); with the per-unit
variance pooled over arms the weights no longer depend on the draws.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hz_ray.config import config_from_mapping
from hz_ray.delta import reading_to_delta
from hz_ray.optimizer import Optimizer
from hz_ray.records import GroupStats, HourlyReading
from tests.conftest import small_config_mapping

TRUE_DELTA = -0.01
#: Units per test group per hour, the metric's events per unit in the control, and the
#: control's units (large, so that its own error, shared by every arm, stays small).
UNITS, RATE, CONTROL_UNITS = 2000, 0.005, 800_000
ARMS, HOURS = 320, 4


def _poisson_group(rng: np.random.Generator, rate: float, units: int) -> GroupStats:
    count = max(int(rng.poisson(rate * units)), 1)
    mean = count / units
    return GroupStats(mean=mean, var=mean * (1.0 - mean), n=units)


def _fed_optimizer(pooled: bool, seed: int = 0) -> tuple[Optimizer, float, float]:
    """An optimizer fed ARMS x HOURS Poisson readings of both metrics.

    Returns:
        The optimizer (refitted), the closed-form bias of inverse-variance weighting
        (``-mean_i sem_i**2`` of ``likes``) and the control's realised relative error of
        ``likes`` over the hours (every arm's delta carries it: ``d ~ delta - error``).
    """
    raw = small_config_mapping()
    raw["optimizer"] = {**raw["optimizer"], "pooled_noise": pooled}
    opt = Optimizer(config_from_mapping(raw))
    rng = np.random.default_rng(seed)
    deltas, own_var, control_error = [], [], []
    for i in range(ARMS):
        arm_id = f"arm-{i:03d}"
        opt.register_arm(arm_id, opt.space.decode(torch.tensor(rng.uniform(size=3))), hour=0)
    for h in range(HOURS):
        control = {m: _poisson_group(rng, RATE, CONTROL_UNITS) for m in ("views", "likes")}
        control_error.append(control["likes"].mean / RATE - 1.0)
        for i in range(ARMS):
            for metric in ("views", "likes"):
                test = _poisson_group(rng, RATE * (1 + TRUE_DELTA), UNITS)
                deltas.append(reading_to_delta(HourlyReading(
                    arm_id=f"arm-{i:03d}", hour=h, metric=metric, test=test,
                    control=control[metric])))
    assert not opt.observe(deltas).rejected
    for i in range(ARMS):
        own_var.append(opt.ledger.estimate(f"arm-{i:03d}", "likes").sem ** 2)
    opt.refresh(force_refit=True)
    return opt, -float(np.mean(own_var)), float(np.mean(control_error))


def _bias(opt: Optimizer) -> float:
    """Mean over the arms of (posterior mean of ``likes`` - truth)."""
    view = opt.view()
    mean, _ = opt.snapshot().mean_and_var(view.X[1:])
    return float(mean[:, 1].mean()) - TRUE_DELTA


@pytest.fixture(scope="module")
def fitted():
    return {pooled: _fed_optimizer(pooled) for pooled in (False, True)}


def test_own_variances_bias_the_pooled_estimate_low_by_about_the_closed_form(fitted):
    opt, expected, control_error = fitted[False]
    # The Monte Carlo error of a mean over the arms is about one arm's sd over sqrt(ARMS):
    # the world is built so that the closed-form bias is several of those.
    assert expected < -3 * (-expected) ** 0.5 / ARMS ** 0.5
    assert 2 * expected < _bias(opt) + control_error < 0.5 * expected


def test_pooled_variances_remove_the_bias(fitted):
    opt, expected, control_error = fitted[True]
    assert abs(_bias(opt) + control_error) < 0.4 * abs(expected)


def test_pooled_variances_keep_each_arms_own_mean_and_units(fitted):
    own, pooled = fitted[False][0], fitted[True][0]
    a, b = own.view(), pooled.view()
    assert torch.equal(a.Y, b.Y)
    per_unit = (b.Yvar[1:] * torch.tensor(
        [[float(pooled.ledger.estimate(arm, m).n) for m in pooled.metrics]
         for arm in b.train_ids[1:]], dtype=torch.float64))
    assert torch.allclose(per_unit, per_unit[0].expand_as(per_unit), rtol=1e-9)
    assert not torch.allclose(a.Yvar, b.Yvar)
