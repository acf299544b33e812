"""Simulated worlds: truth at the base, scale invariance, trade-offs, optima, errors."""

from __future__ import annotations

import numpy as np
import pytest

from hz_ray.backends import (
    WORLD_NAMES,
    BenchmarkProblem,
    SmoothWorld,
    TestFunctionWorld,
    ValueModelWorld,
    find_optimum,
    make_world,
)
from hz_ray.errors import ConfigError, InputDataError

_SMALL = {"value_model": {"n_requests": 300}, "paper": {"dim": 4}}


@pytest.fixture(scope="module")
def value_model():
    return ValueModelWorld(0)


@pytest.fixture(scope="module", params=WORLD_NAMES)
def world(request):
    return make_world(request.param, 0, **_SMALL.get(request.param, {}))


def _random_params(world, rng):
    out = {}
    for p in world.parameter_names:
        lo, hi = world.bounds[p]
        u = rng.uniform()
        out[p] = float(lo * (hi / lo) ** u) if world.log_scale[p] else float(lo + u * (hi - lo))
    return out


def test_true_deltas_are_exactly_zero_at_the_base(world):
    assert world.true_deltas(world.base_params) == {m: 0.0 for m in world.metrics}
    base = world.base_vector()[None, :]
    assert np.all(world.true_deltas_batch(base) == 0.0)


def test_true_deltas_move_away_from_the_base_and_stay_a_few_percent(world):
    rng = np.random.default_rng(0)
    X = np.array([[_random_params(world, rng)[p] for p in world.parameter_names]
                  for _ in range(16)])
    D = world.true_deltas_batch(X)
    assert D.shape == (16, len(world.metrics))
    assert np.all(np.isfinite(D))
    assert np.abs(D).max() > 0.002
    assert np.abs(D).max() < 0.5


def test_batch_and_single_evaluations_agree(world):
    rng = np.random.default_rng(1)
    params = [_random_params(world, rng) for _ in range(3)]
    X = np.array([[p[n] for n in world.parameter_names] for p in params])
    D = world.true_deltas_batch(X)
    for row, p in zip(D, params, strict=True):
        single = world.true_deltas(p)
        assert [single[m] for m in world.metrics] == pytest.approx(row.tolist(), abs=1e-12)


def test_levels_cv_and_problem_are_consistent(world):
    assert set(world.base_levels) == set(world.unit_cv) == set(world.metrics)
    assert all(v > 0 for v in world.base_levels.values())
    world.default_problem.check(world.metrics)
    for p in world.parameter_names:
        lo, hi = world.bounds[p]
        assert lo <= world.base_params[p] <= hi


@pytest.mark.parametrize("make", [SmoothWorld, lambda: ValueModelWorld(0, n_requests=400)],
                         ids=["smooth", "value_model"])
def test_scale_invariance_is_exact(make):
    world = make()
    rng = np.random.default_rng(2)
    for _ in range(5):
        params = _random_params(world, rng)
        ref = world.true_deltas(params)
        assert any(v != 0 for v in ref.values())
        for c in (0.1, 0.37, 3.0, 1234.5):
            scaled = {k: v * c for k, v in params.items()}
            assert world.true_deltas(scaled) == ref
        X = np.array([[params[p] * c for p in world.parameter_names] for c in (0.2, 1.0, 7.0)])
        D = world.true_deltas_batch(X)
        assert np.all(D[1:] == D[:1])
    assert world.true_deltas({k: 5.0 * v for k, v in world.base_params.items()}) == \
        {m: 0.0 for m in world.metrics}
    assert world.is_base({k: 0.5 * v for k, v in world.base_params.items()})


def test_test_function_worlds_are_not_scale_invariant():
    world = make_world("test_function:hartmann6")
    x = {p: 0.3 for p in world.parameter_names}
    assert world.true_deltas(x) != world.true_deltas({p: 0.6 for p in world.parameter_names})


def test_value_model_trade_off_like_weight_buys_likes_and_costs_views(value_model):
    base = value_model.base_params
    more_like = value_model.true_deltas({**base, "w_like": base["w_like"] * 2})
    less_like = value_model.true_deltas({**base, "w_like": base["w_like"] / 2})
    assert more_like["likes"] > 0.01 and more_like["views"] < -0.002
    assert less_like["likes"] < -0.01
    more_click = value_model.true_deltas({**base, "w_click": base["w_click"] * 2})
    assert more_click["views"] > 0.01 and more_click["shares"] < 0


def test_value_model_pool_depends_on_seed_only():
    a, b, c = (ValueModelWorld(s, n_requests=200) for s in (1, 1, 2))
    p = {**a.base_params, "w_click": 2.0}
    assert a.true_deltas(p) == b.true_deltas(p)
    assert a.true_deltas(p) != c.true_deltas(p)


def test_smooth_world_trade_off_and_interior_optimum():
    world = SmoothWorld()
    more_like = world.true_deltas({**world.base_params, "w_like": 2.0})
    assert more_like["likes"] > 0 > more_like["views"]
    opt = find_optimum(world, n_samples=1024, n_polish=2)
    assert opt.feasible
    assert 0.02 < opt.deltas["views"] < 0.05
    assert opt.deltas["likes"] == pytest.approx(-0.005, abs=5e-5)     # the guardrail binds
    unconstrained = find_optimum(world, BenchmarkProblem({"views": 1.0}), n_samples=1024,
                                 n_polish=2)
    assert unconstrained.objective > opt.objective + 0.01
    assert unconstrained.deltas["likes"] < -0.005


def test_find_optimum_respects_fixed_parameters():
    world = SmoothWorld()
    opt = find_optimum(world, fixed={"w_click": 1.0}, n_samples=512, n_polish=1)
    assert opt.params["w_click"] == 1.0
    assert opt.feasible and opt.objective > 0.02
    with pytest.raises(ConfigError, match="fixed.w_nope"):
        find_optimum(world, fixed={"w_nope": 1.0})
    with pytest.raises(ConfigError, match="problem.min_deltas"):
        find_optimum(world, BenchmarkProblem({"views": 1.0}, {"bogus": -0.01}))


def test_gramacy_guardrails_are_minus_half_percent_on_the_constraint_boundary():
    world = make_world("test_function:gramacy")
    on_c2 = world.true_deltas({"x1": 1.0, "x2": float(np.sqrt(0.5))})    # x1^2 + x2^2 = 1.5
    assert on_c2["shares"] == pytest.approx(-0.005, abs=1e-12)
    opt = world.true_deltas({"x1": 0.1954, "x2": 0.4044})                 # Gramacy's optimum
    assert opt["views"] == pytest.approx(0.05, abs=1e-4)
    assert opt["likes"] == pytest.approx(-0.005, abs=2e-4)


def test_paper_world_is_calibrated_to_its_target_gain():
    world = make_world("paper", 3, dim=4, target_gain=0.04)
    assert len(world.parameter_names) == 4 and len(world.default_problem.min_deltas) == 2
    opt = find_optimum(world, n_samples=2048, n_polish=3, seed=9)
    assert opt.feasible
    assert opt.objective == pytest.approx(0.04, abs=0.002)
    assert min(opt.deltas[m] for m in world.default_problem.min_deltas) \
        == pytest.approx(-0.005, abs=1e-4)
    other = make_world("paper", 4, dim=4, target_gain=0.04)
    x = {p: 0.5 for p in world.parameter_names}
    assert world.true_deltas(x) != other.true_deltas(x)


def test_world_params_are_validated_with_the_field_name():
    world = make_world("test_function:branin")
    with pytest.raises(InputDataError, match=r"params\.x2.*\[0\.0, 1\.0\]"):
        world.true_deltas({"x1": 0.5, "x2": 1.5})
    with pytest.raises(InputDataError, match=r"params\.x3"):
        world.true_deltas({"x1": 0.5, "x2": 0.5, "x3": 0.1})
    with pytest.raises(InputDataError, match=r"params\.x1"):
        world.true_deltas({"x1": True, "x2": 0.5})


def test_make_world_rejects_unknown_names_and_kwargs():
    with pytest.raises(ConfigError, match="'world' must be one of"):
        make_world("nope", 0)
    with pytest.raises(ConfigError, match="'world' must be one of"):
        make_world("test_function:rosenbrock", 0)
    with pytest.raises(ConfigError, match="kwargs"):
        make_world("smooth", 0, bogus=1)
    with pytest.raises(ConfigError, match="top_k"):
        ValueModelWorld(0, n_items=5, top_k=8)


def test_custom_test_function_world():
    world = TestFunctionWorld(
        "custom", {"views": lambda U: U[:, 0] * 0.1 + U[:, 1] * 0.02,
                   "likes": lambda U: -U[:, 1] * 0.01},
        [0.2, 0.3], BenchmarkProblem({"views": 1.0}, {"likes": -0.005}))
    assert world.true_deltas({"x1": 0.7, "x2": 0.3}) == pytest.approx(
        {"views": 0.05, "likes": 0.0})
    opt = find_optimum(world, n_samples=256, n_polish=1)
    assert opt.params == pytest.approx({"x1": 1.0, "x2": 0.8}, abs=1e-4)     # likes binds
    with pytest.raises(ConfigError, match="base_point"):
        TestFunctionWorld("bad", {"views": lambda U: U[:, 0]}, [1.5],
                          BenchmarkProblem({"views": 1.0}))


def test_config_mapping_builds_a_valid_tuning_config():
    config_module = pytest.importorskip("hz_ray.config")
    world = SmoothWorld()
    config = config_module.config_from_mapping({"name": "t", **world.config_mapping()})
    assert tuple(config.parameter_names) == world.parameter_names
