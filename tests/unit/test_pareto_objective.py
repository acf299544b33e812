"""Pareto objectives: the weighted Chebyshev scalarisation, its Thompson picks, the readout.

Known answers: on the front ``d(t) = r (cos^p t, sin^p t)`` the Chebyshev maximiser at
preference ``lam`` is where ``d_2 / d_1 = lam_2 / lam_1``, i.e. ``tan^p t = lam_2 / lam_1``;
with preferences uniform on the simplex (``lam_1 ~ U(0, 1)``) the picked ``t`` has the CDF
``F(t) = tan^p t / (1 + tan^p t)``. For ``p > 1`` the front is non-convex, and a weighted sum
with positive weights is maximised only at its two ends.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hz_ray.config import config_from_mapping
from hz_ray.errors import StateError
from hz_ray.optimizer import Optimizer
from hz_ray.outcomes import ChebyshevDraws, Outcomes, nondominated
from hz_ray.records import HourlyDelta
from hz_ray.thompson import pick_counts, pick_indices
from tests.conftest import small_config_mapping

T = torch.linspace(0.0, math.pi / 2, 2001, dtype=torch.float64)


def pareto_config(preference=None, direction="maximize", **overrides):
    objective = {"pareto": ["views", "watch_time"], "direction": direction}
    if preference is not None:
        objective["preference"] = preference
    return config_from_mapping(small_config_mapping(objective=objective, **overrides))


def front(p: float, scale: float = 0.02, signs=(1.0, 1.0)) -> torch.Tensor:
    """``N x 3`` deltas (views, watch_time, likes = 0) on ``r (cos^p t, sin^p t)``."""
    return torch.stack([signs[0] * scale * T.cos() ** p, signs[1] * scale * T.sin() ** p,
                        torch.zeros_like(T)], dim=-1)


@pytest.mark.parametrize("shares", [(0.5, 0.5), (0.7, 0.3), (0.2, 0.8), (0.9, 0.1)])
@pytest.mark.parametrize("p", [1.0, 2.0, 4.0])
def test_the_preferred_point_is_where_the_preference_ray_meets_the_front(shares, p):
    config = pareto_config({"views": shares[0], "watch_time": shares[1]})
    outcomes = Outcomes.from_config(config)
    t_best = float(T[int(torch.argmax(outcomes.gain(front(p))))])
    closed_form = math.atan((shares[1] / shares[0]) ** (1 / p))
    assert t_best == pytest.approx(closed_form, abs=2e-3)


def test_a_minimised_metric_is_traded_by_its_sign():
    config = pareto_config({"views": 0.7, "watch_time": 0.3},
                           direction={"views": "maximize", "watch_time": "minimize"})
    outcomes = Outcomes.from_config(config)
    deltas = front(2.0, signs=(1.0, -1.0))  # watch_time falls: the better for a minimum
    t_best = float(T[int(torch.argmax(outcomes.gain(deltas)))])
    assert t_best == pytest.approx(math.atan((0.3 / 0.7) ** 0.5), abs=2e-3)
    # At an equal split the value is the smallest signed improvement.
    value = Outcomes.from_config(pareto_config(direction={"views": "maximize",
                                                          "watch_time": "minimize"})).gain(
        torch.tensor([[0.01, -0.004, 0.0], [0.01, 0.004, 0.0]], dtype=torch.float64))
    assert value.tolist() == pytest.approx([0.004, -0.004])


def draws_of(deltas: torch.Tensor, k: int) -> torch.Tensor:
    return deltas.unsqueeze(0).expand(k, -1, -1).clone()


def test_chebyshev_picks_cover_a_non_convex_front_with_the_closed_form_spread():
    p, k = 3.0, 4000
    outcomes = Outcomes.from_config(pareto_config())
    objective = outcomes.thompson_objective(seed=11)
    picks = pick_indices(draws_of(front(p), k), objective)
    t = T[picks].numpy()
    grid = np.linspace(0.05, math.pi / 2 - 0.05, 40)
    empirical = (t[None, :] <= grid[:, None]).mean(axis=1)
    expected = np.tan(grid) ** p / (1 + np.tan(grid) ** p)
    assert np.abs(empirical - expected).max() < 0.035  # KS bound at k = 4000: about 0.02
    interior = (t > 0.1) & (t < math.pi / 2 - 0.1)
    assert interior.mean() > 0.8


def test_a_weighted_sum_reaches_only_the_ends_of_a_non_convex_front():
    p, k = 3.0, 500
    weights = torch.distributions.Dirichlet(torch.ones(2, dtype=torch.float64)).sample((k,))
    deltas = front(p)
    picks = {int(torch.argmax(deltas[:, :2] @ w)) for w in weights}
    assert picks <= {0, T.numel() - 1}
    chebyshev = set(pick_indices(draws_of(deltas, k),
                                 Outcomes.from_config(pareto_config()).thompson_objective(3)
                                 ).tolist())
    assert len(chebyshev) > 100


def test_draws_near_a_given_preference_pick_near_its_closed_form():
    p, k = 2.0, 2000
    shares = (0.7, 0.3)
    outcomes = Outcomes.from_config(pareto_config({"views": 7, "watch_time": 3}))
    picks = pick_indices(draws_of(front(p), k), outcomes.thompson_objective(5))
    t = T[picks]
    assert float(t.median()) == pytest.approx(math.atan((shares[1] / shares[0]) ** (1 / p)),
                                              abs=0.03)
    uniform = pick_indices(draws_of(front(p), k),
                           Outcomes.from_config(pareto_config()).thompson_objective(5))
    assert float(t.std()) < 0.5 * float(T[uniform].std())


def test_per_draw_preferences_depend_on_the_seed_and_the_draw_count_only():
    outcomes = Outcomes.from_config(pareto_config({"views": 1, "watch_time": 1}))
    a, b = outcomes.thompson_objective(7), outcomes.thompson_objective(7)
    assert torch.equal(a.preferences(64), b.preferences(64))
    assert not torch.equal(a.preferences(64), outcomes.thompson_objective(8).preferences(64))
    shares = a.preferences(20_000)
    assert torch.allclose(shares.sum(dim=1), torch.ones(20_000, dtype=torch.float64))
    assert float(shares[:, 0].mean()) == pytest.approx(0.5, abs=0.01)
    assert isinstance(a, ChebyshevDraws)


def test_guardrails_hold_for_pareto_picks():
    deltas = front(2.0)
    deltas[T > 1.0, 2] = -0.02  # likes break the guardrail on part of the front
    outcomes = Outcomes.from_config(pareto_config())
    counts = pick_counts(draws_of(deltas, 2000), outcomes.thompson_objective(1),
                         outcomes.constraint_matrix, outcomes.constraint_bounds)
    assert int(counts[T > 1.0].sum()) == 0
    assert int(counts[(T > 0.1) & (T <= 1.0)].sum()) > 1000


def test_nondominated_keeps_exactly_the_front():
    values = torch.tensor([[3, 0], [2, 2], [0, 3], [1, 1], [2, 1], [2, 2], [3, -1]],
                          dtype=torch.float64)
    assert nondominated(values).tolist() == [True, True, True, False, False, True, False]
    assert nondominated(torch.zeros(0, 2)).tolist() == []


# ------------------------------------------------------------------------------ optimizer
ARM_DELTAS = {  # views, watch_time, likes
    "front-a": (0.020, 0.000, 0.0), "front-b": (0.016, 0.008, 0.0),
    "front-c": (0.010, 0.012, 0.0), "front-d": (0.004, 0.016, 0.0),
    "front-e": (0.000, 0.020, 0.0), "inside-f": (0.005, 0.005, 0.0),
    "inside-g": (0.008, 0.002, 0.0), "unsafe-h": (0.030, 0.030, -0.02),
}


def fed_optimizer(config) -> Optimizer:
    opt = Optimizer(config)
    rng = np.random.default_rng(0)
    sd = 0.0005
    deltas = []
    for i, (arm_id, values) in enumerate(ARM_DELTAS.items()):
        u = np.array([(i + 0.5) / len(ARM_DELTAS), rng.uniform(), rng.uniform()])
        opt.register_arm(arm_id, opt.space.decode(torch.tensor(u)), hour=0)
        for h in range(12):
            for metric, value in zip(("views", "watch_time", "likes"), values, strict=True):
                deltas.append(HourlyDelta(arm_id, metric, h, value + sd * rng.normal(),
                                          sd**2, 1000))
    assert not opt.observe(deltas).rejected
    opt.refresh()
    return opt


@pytest.mark.parametrize(("preference", "preferred"), [
    ({"views": 0.5, "watch_time": 0.5}, "front-c"),
    ({"views": 0.8, "watch_time": 0.2}, "front-b"),
    ({"views": 0.2, "watch_time": 0.8}, "front-d"),
])
def test_the_pareto_readout_finds_the_feasible_front_and_the_preferred_arm(preference,
                                                                           preferred):
    readout = fed_optimizer(pareto_config(preference)).pareto_readout()
    assert [r.arm_id for r in readout.front] == ["front-e", "front-d", "front-c", "front-b",
                                                 "front-a"]
    assert "unsafe-h" not in {r.arm_id for r in readout.qualified}
    assert {r.arm_id for r in readout.qualified} >= {"inside-f", "inside-g"}
    assert readout.preferred.arm_id == preferred
    best = readout.preferred
    shares = readout.preference
    closed = min(ARM_DELTAS[preferred][0] / (2 * shares["views"]),
                 ARM_DELTAS[preferred][1] / (2 * shares["watch_time"]))
    assert best.objective_mean == pytest.approx(closed, abs=1e-3)
    assert best.objective_lcb < best.objective_mean


def test_pareto_plans_suggest_distinct_arms_and_a_weighted_sum_has_no_pareto_readout():
    opt = fed_optimizer(pareto_config(optimizer={"seed": 0, "bucket_size": 32,
                                                 "thompson_draws": 200, "proposals": 256,
                                                 "proposal_probability": 1.0}))
    first = opt.suggest(3, live_arms=["front-a"])
    assert [s.params for s in first] == [s.params for s in opt.suggest(3, live_arms=["front-a"])]
    assert len({tuple(s.x) for s in first}) == 3
    with pytest.raises(StateError, match="pareto"):
        fed_optimizer(config_from_mapping(small_config_mapping(
            extra_metrics=["watch_time"]))).pareto_readout()
