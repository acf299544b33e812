"""Pareto ground truth: hypervolume, dominance, Chebyshev value, Pareto worlds and configs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hz_ray.config import config_from_mapping
from hz_ray.errors import ConfigError
from hz_ray.sim import WORLD_NAMES, BenchmarkProblem, make_world
from hz_ray.sim.pareto import (
    ParetoFront,
    chebyshev_value,
    hypervolume,
    hypervolume_ratio,
    nondominated_mask,
    preferred_optimum,
    true_pareto_front,
)

PARETO = BenchmarkProblem.from_pareto({"views": 1.0, "watch_time": 1.0}, {"likes": -0.005})


@pytest.fixture(scope="module")
def branin_currin():
    world = make_world("test_function:branin_currin")
    return world, true_pareto_front(world, n_samples=512, refine_rounds=1)


def test_hypervolume_matches_a_2d_staircase():
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(points, [0.0, 0.0]) == pytest.approx(3.0 + 2.0 + 1.0)
    # Dominated points, points not beyond the reference and duplicates add nothing.
    extra = np.vstack([points, [[1.0, 1.0], [-1.0, 5.0], [2.0, 2.0], [4.0, 0.0]]])
    assert hypervolume(extra, [0.0, 0.0]) == pytest.approx(6.0)
    assert hypervolume(points, [0.5, 0.5]) == pytest.approx(0.5 * 2.5 + 1.0 * 1.5 + 1.0 * 0.5)
    assert hypervolume(np.zeros((0, 2)), [0.0, 0.0]) == 0.0
    assert hypervolume(np.array([[-1.0, 2.0]]), [0.0, 0.0]) == 0.0


def test_hypervolume_matches_monte_carlo_in_3d():
    rng = np.random.default_rng(0)
    points = rng.uniform(0.2, 1.0, size=(12, 3))
    samples = rng.uniform(0.0, 1.0, size=(200_000, 3))
    covered = np.any(np.all(samples[:, None, :] <= points[None, :, :], axis=2), axis=1)
    p = covered.mean()
    se = math.sqrt(p * (1 - p) / samples.shape[0])
    exact = hypervolume(points, np.zeros(3))
    assert 0.1 < exact < 0.9
    assert abs(exact - p) < 5 * se
    # A single box is its volume.
    assert hypervolume(points[:1], np.zeros(3)) == pytest.approx(float(np.prod(points[0])))


def test_nondominated_mask_on_a_known_set():
    values = np.array([[1, 3], [2, 2], [3, 1], [1, 1], [2, 2], [0, 4], [3, 0.5], [0, 3]],
                      dtype=float)
    assert nondominated_mask(values).tolist() == [True, True, True, False, True, True, False,
                                                  False]
    assert nondominated_mask(np.zeros((0, 2))).shape == (0,)
    assert nondominated_mask(np.array([[1.0, 2.0, 3.0]])).tolist() == [True]


def test_chebyshev_value_closed_form_and_signs():
    prob = BenchmarkProblem.from_pareto({"views": 1, "watch_time": 1},
                                        preference={"views": 0.7, "watch_time": 0.3})
    d = {"views": 0.02, "watch_time": 0.01}
    assert chebyshev_value(d, prob) == pytest.approx(min(0.02 / 1.4, 0.01 / 0.6))
    scaled = BenchmarkProblem.from_pareto({"views": 1, "watch_time": 1},
                                          preference={"views": 7, "watch_time": 3})
    assert chebyshev_value(d, scaled) == pytest.approx(chebyshev_value(d, prob))
    mixed = BenchmarkProblem.from_pareto({"views": 1, "watch_time": -1})
    assert chebyshev_value({"views": 0.02, "watch_time": -0.01}, mixed) == pytest.approx(0.01)
    assert chebyshev_value({"views": 0.02, "watch_time": 0.01}, mixed) == pytest.approx(-0.01)
    with pytest.raises(ConfigError):
        chebyshev_value(d, BenchmarkProblem({"views": 1.0}))


@pytest.mark.parametrize("lam1", [0.2, 0.5, 0.7, 0.9])
def test_chebyshev_maximiser_on_the_quarter_circle(lam1):
    lam2 = 1.0 - lam1
    prob = BenchmarkProblem.from_pareto({"views": 1, "watch_time": 1},
                                        preference={"views": lam1, "watch_time": lam2})
    t = np.linspace(0.0, math.pi / 2, 2001)
    values = np.stack([np.cos(t), np.sin(t)], axis=1)
    deltas = [{"views": float(a), "watch_time": float(b)} for a, b in values]
    cheb = np.array([chebyshev_value(d, prob) for d in deltas])
    expected = math.atan(lam2 / lam1)
    assert t[int(np.argmax(cheb))] == pytest.approx(expected, abs=2e-3)
    front = ParetoFront(("views", "watch_time"), [{"x1": float(v)} for v in t], values, deltas,
                        n_searched=t.size, n_feasible=t.size)
    params, best = preferred_optimum(front, prob)
    assert params["x1"] == pytest.approx(expected, abs=2e-3)
    # At the kink cos t / lam1 = sin t / lam2, so the value is 1 / (2 |lam|).
    assert best == pytest.approx(1.0 / (2 * math.hypot(lam1, lam2)), rel=2e-3)
    assert front.hypervolume == pytest.approx(math.pi / 4, rel=1e-3)


def test_problem_check_rejects_malformed_pareto_problems():
    metrics = ("views", "likes", "watch_time")
    PARETO.check(metrics)
    bad = [
        BenchmarkProblem.from_pareto({"views": 1.0}),
        BenchmarkProblem.from_pareto({"views": 1.0, "watch_time": 2.0}),
        BenchmarkProblem.from_pareto({"views": 1.0, "watch_time": True}),
        BenchmarkProblem.from_pareto({"views": 1.0, "bogus": 1.0}),
        BenchmarkProblem.from_pareto({"views": 1.0, "watch_time": 1.0},
                                     preference={"views": 1.0}),
        BenchmarkProblem.from_pareto({"views": 1.0, "watch_time": 1.0},
                                     preference={"views": 1.0, "watch_time": 0.0}),
        BenchmarkProblem({"views": 1.0}, preference={"views": 1.0}),
    ]
    for problem in bad:
        with pytest.raises(ConfigError):
            problem.check(metrics)


def test_weighted_sum_config_mapping_is_unchanged():
    problem = BenchmarkProblem({"views": 1.0}, {"likes": -0.005}, {"shares": 0.01})
    assert not problem.is_pareto and problem.preference_shares == {}
    assert problem.to_config_mapping() == {
        "objective": {"weights": {"views": 1.0}},
        "constraints": [{"metric": "likes", "min_delta": -0.005},
                        {"metric": "shares", "max_delta": 0.01}]}


@pytest.mark.parametrize("preference", [None, {"views": 0.7, "watch_time": 0.3}])
def test_pareto_config_mapping_round_trips(preference):
    world = make_world("test_function:branin_currin")
    problem = BenchmarkProblem.from_pareto({"views": 1.0, "watch_time": -1.0}, {"likes": -0.005},
                                           preference=preference)
    problem.check(world.metrics)
    mapping = problem.to_config_mapping()
    assert mapping["objective"]["direction"] == {"views": "maximize", "watch_time": "minimize"}
    assert ("preference" in mapping["objective"]) == (preference is not None)
    config = config_from_mapping({"parameters": world.parameter_specs(), **mapping})
    assert config.objective.is_pareto
    assert config.objective.pareto == ("views", "watch_time")
    assert config.objective.signs == {"views": 1.0, "watch_time": -1.0}
    assert config.objective.preference_shares == pytest.approx(problem.preference_shares)
    assert [(c.metric, c.min_delta) for c in config.constraints] == [("likes", -0.005)]
    assert config_from_mapping(config.to_mapping()).objective == config.objective
    default = config_from_mapping(world.config_mapping())
    assert default.objective.is_pareto and default.objective.signs == {"views": 1.0,
                                                                       "watch_time": 1.0}


@pytest.mark.parametrize("name,kwargs", [("value_model_pareto", {"n_requests": 200}),
                                         ("test_function:branin_currin", {})])
def test_pareto_worlds_build_and_are_zero_at_the_base(name, kwargs):
    assert name in WORLD_NAMES
    world = make_world(name, 0, **kwargs)
    assert world.name == name
    assert world.default_problem.is_pareto
    assert world.default_problem.preference is None
    assert world.true_deltas(world.base_params) == {m: 0.0 for m in world.metrics}
    assert world.default_problem.violation(world.true_deltas(world.base_params)) == 0.0
    # The signed-sum objective keeps weighted-sum code paths working.
    assert dict(world.default_problem.objective) == {"views": 1.0, "watch_time": 1.0}


def test_value_model_pareto_is_the_value_model_with_another_problem():
    plain = make_world("value_model", 3, n_requests=200)
    pareto = make_world("value_model_pareto", 3, n_requests=200)
    params = {**plain.base_params, "w_watch": 0.05}
    assert plain.true_deltas(params) == pareto.true_deltas(params)
    assert dict(pareto.default_problem.min_deltas) == {"likes": -0.005, "shares": -0.01,
                                                       "follows": -0.01}
    assert dict(pareto.default_problem.pareto) == {"views": 1.0, "watch_time": 1.0}


def test_value_model_pareto_front_trades_views_for_watch_time():
    world = make_world("value_model_pareto", 0, n_requests=200)
    front = true_pareto_front(world, n_samples=64, fixed={"w_click": 1.0}, refine_rounds=1)
    assert len(front.params) >= 3
    assert all(world.default_problem.violation(d) == 0.0 for d in front.deltas)
    assert np.corrcoef(front.values.T)[0, 1] < -0.5
    assert all(p["w_click"] == 1.0 for p in front.params)


def test_branin_currin_front_is_a_feasible_trade_off(branin_currin):
    world, front = branin_currin
    problem = world.default_problem
    assert front.metrics == ("views", "watch_time")
    assert front.n_feasible > 0 and len(front.params) >= 10
    assert all(problem.violation(d) == 0.0 for d in front.deltas)
    for params, row, deltas in zip(front.params, front.values, front.deltas, strict=True):
        assert world.true_deltas(params) == pytest.approx(deltas)
        assert row.tolist() == pytest.approx([deltas["views"], deltas["watch_time"]])
    assert nondominated_mask(front.values).all()
    assert np.all(np.diff(front.values[:, 0]) >= 0) and np.all(np.diff(front.values[:, 1]) <= 0)
    # A real trade-off: a stretch of the front dominates the control, and the
    # ends of the front each give up the other metric.
    beats_base = np.all(front.values > 0, axis=1)
    assert beats_base.sum() >= 3
    assert front.values[:, 0].max() > 0.03 and front.values[:, 1].max() > 0.02
    assert front.values[np.argmax(front.values[:, 0]), 1] < 0
    assert front.values[np.argmax(front.values[:, 1]), 0] < 0
    assert front.hypervolume > 0


def test_preferences_pick_different_front_points(branin_currin):
    world, front = branin_currin
    picked = {}
    for lam in (0.1, 0.5, 0.9):
        prob = BenchmarkProblem.from_pareto({"views": 1, "watch_time": 1}, {"likes": -0.005},
                                            preference={"views": lam, "watch_time": 1 - lam})
        params, value = preferred_optimum(front, prob)
        assert value > 0
        assert value == pytest.approx(chebyshev_value(world.true_deltas(params), prob))
        picked[lam] = world.true_deltas(params)
    assert picked[0.1]["views"] < picked[0.5]["views"] < picked[0.9]["views"]
    assert picked[0.1]["watch_time"] > picked[0.5]["watch_time"] > picked[0.9]["watch_time"]


def test_hypervolume_ratio_scores_feasible_arms(branin_currin):
    world, front = branin_currin
    problem = world.default_problem
    assert hypervolume_ratio(front.deltas, problem, front) == pytest.approx(1.0)
    assert hypervolume_ratio([], problem, front) == 0.0
    assert hypervolume_ratio([world.true_deltas(world.base_params)], problem, front) == 0.0
    params, _ = preferred_optimum(front, problem)
    one = hypervolume_ratio([world.true_deltas(params)], problem, front)
    assert 0.0 < one < 1.0
    infeasible = {"views": 0.04, "watch_time": 0.04, "likes": -0.01}
    assert hypervolume_ratio([infeasible], problem, front) == 0.0
    assert hypervolume_ratio([{**infeasible, "likes": 0.0}], problem, front) > 1.0
