"""Unit tests of hz_ray.surrogate: the per-metric GP, refit policy and snapshots."""

from __future__ import annotations

import json
import math

import pytest
import torch

import hz_ray.surrogate as surrogate_module
from hz_ray.errors import ConfigError, InputDataError, StateError
from hz_ray.surrogate import (
    DEFAULT_PRIOR_SD,
    SCHEMA_VERSION,
    PosteriorSnapshot,
    RefitPolicy,
    Surrogate,
    fit_metric_gp,
    prior_hyperparameters,
)

DT = torch.float64


def f_true(X: torch.Tensor) -> torch.Tensor:
    """A smooth lift surface of a few % on [0, 1]^2."""
    return 0.02 * torch.sin(3.0 * X[:, 0]) + 0.015 * torch.cos(4.0 * X[:, 1]) - 0.01


def noisy_data(n: int, seed: int, dim: int = 2):
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, dim, generator=gen, dtype=DT)
    sd = 0.0005 + 0.002 * torch.rand(n, generator=gen, dtype=DT)  # heteroskedastic
    y = f_true(X) + sd * torch.randn(n, generator=gen, dtype=DT)
    return X, y, sd**2


def grid2d(k: int) -> torch.Tensor:
    g = torch.linspace(0.0, 1.0, k, dtype=DT)
    return torch.cartesian_prod(g, g)


def textbook_posterior(model, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and covariance of the latent f from the GP formulas, by hand."""
    with torch.no_grad():
        Xtr = model.train_inputs[0]
        ytr = model.train_targets  # standardised
        noise = model.likelihood.noise  # standardised, floored
        centre = model.outcome_transform.means.reshape(())
        scale = model.outcome_transform.stdvs.reshape(())
        c = model.mean_module.constant.reshape(())
        k = model.covar_module
        Ktt = k(Xtr, Xtr).to_dense() + torch.diag(noise)
        Kst = k(X, Xtr).to_dense()
        Kss = k(X, X).to_dense()
        L = torch.linalg.cholesky(Ktt)
        alpha = torch.cholesky_solve((ytr - c).unsqueeze(-1), L).squeeze(-1)
        V = torch.linalg.solve_triangular(L, Kst.T, upper=False)
        mean = c + Kst @ alpha
        cov = Kss - V.T @ V
    return centre + scale * mean, scale**2 * cov


# ------------------------------------------------------------------------------------------
# fit_metric_gp
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_2d():
    X, y, yvar = noisy_data(60, seed=1)
    return X, y, yvar, fit_metric_gp(X, y, yvar)


def test_gp_recovers_smooth_function_with_calibrated_intervals(fitted_2d):
    X, y, yvar, model = fitted_2d
    G = grid2d(15)
    snap = PosteriorSnapshot.build(X, y[:, None], yvar[:, None], ["m"],
                                   [surrogate_module._extract_hyperparameters(model)])
    mean, var = snap.mean_and_var(G)
    err = mean[:, 0] - f_true(G)
    sd = var[:, 0].sqrt()
    rmse = float(err.pow(2).mean().sqrt())
    assert rmse < 0.002, rmse  # the signal's sd over the grid is ~0.013
    coverage = float((err.abs() <= 1.96 * sd).to(DT).mean())
    assert 0.85 <= coverage <= 1.0, coverage
    mean_z2 = float((err / sd).pow(2).mean())
    assert 0.1 < mean_z2 < 3.0, mean_z2  # neither over- nor grossly under-confident


def test_mean_and_var_match_textbook_formulas_and_exclude_noise(fitted_2d):
    X, y, yvar, model = fitted_2d
    hp = surrogate_module._extract_hyperparameters(model)
    snap = PosteriorSnapshot.build(X, y[:, None], yvar[:, None], ["m"], [hp])
    Xq = torch.cat([X[:5], grid2d(4)])
    mean, var = snap.mean_and_var(Xq)
    ref_mean, ref_cov = textbook_posterior(snap.models[0], Xq)
    torch.testing.assert_close(mean[:, 0], ref_mean, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(var[:, 0], ref_cov.diagonal(), rtol=1e-6, atol=1e-14)
    # latent variance at a training point is below that point's observation noise
    assert bool((var[:5, 0] < yvar[:5]).all())


def test_huge_noise_point_is_ignored(fitted_2d):
    X, y, yvar, model = fitted_2d
    hp = surrogate_module._extract_hyperparameters(model)
    x_star = torch.tensor([[0.5, 0.5]], dtype=DT)
    y_star = f_true(x_star) + 0.5  # a wild reading
    Xo, yo = torch.cat([X, x_star]), torch.cat([y, y_star])
    base = float(model.posterior(x_star).mean.detach())
    # refitted from scratch, the hyperparameters and the mean ignore the point ...
    noisy = fit_metric_gp(Xo, yo, torch.cat([yvar, torch.tensor([100.0], dtype=DT)]))
    assert abs(float(noisy.posterior(x_star).mean.detach()) - base) < 1e-3
    assert abs(float(noisy.posterior(x_star).mean.detach()) - float(f_true(x_star))) < 3e-3
    # the outcome standardisation (precision-weighted) is not thrown off by it either
    torch.testing.assert_close(noisy.outcome_transform.stdvs, model.outcome_transform.stdvs,
                               rtol=0.02, atol=0)
    torch.testing.assert_close(noisy.outcome_transform.means, model.outcome_transform.means,
                               rtol=0, atol=1e-4)
    # ... whereas the same reading with a small variance drags the posterior to it
    trusted = fit_metric_gp(Xo, yo, torch.cat([yvar, torch.tensor([1e-6], dtype=DT)]), hp)
    assert float(trusted.posterior(x_star).mean.detach()) > base + 0.1


@pytest.mark.parametrize("n", [1, 2])
def test_small_n_fits_have_a_sane_scale(n):
    X = torch.tensor([[0.2, 0.3], [0.8, 0.6]], dtype=DT)[:n]
    y = torch.full((n,), 0.01, dtype=DT)  # n = 2 with equal values: zero sample sd
    yvar = torch.full((n,), 1e-8, dtype=DT)
    model = fit_metric_gp(X, y, yvar)
    far = torch.tensor([[1.0, 0.0]], dtype=DT)
    with torch.no_grad():
        post_obs, post_far = model.posterior(X), model.posterior(far)
    torch.testing.assert_close(post_obs.mean.reshape(-1), y, atol=1e-3, rtol=0)
    sd_far = float(post_far.variance.sqrt())
    # plain Standardize would give sd ~ 1 (100%) at n = 1; ours stays on the prior's scale
    assert 0.25 * DEFAULT_PRIOR_SD < sd_far < 2.0 * DEFAULT_PRIOR_SD
    assert bool((post_obs.variance.reshape(-1) < 1e-6).all())


def test_duplicate_rows_with_zero_noise_are_well_posed():
    X = torch.tensor([[0.5], [0.5], [0.5], [0.1], [0.9]], dtype=DT)
    y = torch.tensor([0.01, 0.01, 0.012, 0.0, -0.01], dtype=DT)
    yvar = torch.zeros(5, dtype=DT)
    model = fit_metric_gp(X, y, yvar)
    post = model.posterior(torch.linspace(0, 1, 11, dtype=DT).unsqueeze(-1))
    assert bool(torch.isfinite(post.mean).all() and torch.isfinite(post.variance).all())
    # the disagreeing duplicates (equal noise) average out
    assert abs(float(model.posterior(X[:1]).mean.detach()) - 0.032 / 3) < 1e-3


def test_hyperparameters_given_means_no_fit(monkeypatch, fitted_2d):
    X, y, yvar, model = fitted_2d
    hp = surrogate_module._extract_hyperparameters(model)

    def boom(*args, **kwargs):
        raise AssertionError("must not fit")

    monkeypatch.setattr(surrogate_module, "fit_gpytorch_mll", boom)
    again = fit_metric_gp(X, y, yvar, hp)
    after = surrogate_module._extract_hyperparameters(again)
    assert all(torch.equal(after[k], hp[k]) for k in hp)
    grid = grid2d(5)
    torch.testing.assert_close(again.posterior(grid).mean, model.posterior(grid).mean,
                               rtol=1e-12, atol=1e-15)


def test_failed_fit_falls_back_to_prior_and_never_crashes(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("cholesky exploded")

    monkeypatch.setattr(surrogate_module, "fit_gpytorch_mll", broken)
    X, y, yvar = noisy_data(10, seed=3)
    surrogate = Surrogate(["a", "b"], dim=2)
    snap = surrogate.update(X, torch.stack([y, -y], -1), torch.stack([yvar, yvar], -1))
    assert surrogate.num_fit_failures == 2 and surrogate.num_refits == 1
    prior = prior_hyperparameters(2)
    for hp in snap.hyperparameters:
        for key in ("mean_module.raw_constant", "covar_module.raw_outputscale",
                    "covar_module.base_kernel.raw_lengthscale"):
            assert torch.equal(hp[key], prior[key])
    assert bool(torch.isfinite(snap.mean_and_var(grid2d(3))[0]).all())


def test_bad_inputs_raise_typed_errors():
    X, y, yvar = noisy_data(5, seed=0)
    with pytest.raises(InputDataError, match="unit cube"):
        fit_metric_gp(X + 1.0, y, yvar)
    with pytest.raises(InputDataError, match="finite"):
        fit_metric_gp(X, torch.where(y > 0, float("nan"), y), yvar)
    with pytest.raises(InputDataError, match="variance"):
        fit_metric_gp(X, y, -yvar)
    with pytest.raises(InputDataError):
        fit_metric_gp(X, y[:3], yvar)
    with pytest.raises(StateError):
        fit_metric_gp(X, y, yvar, prior_hyperparameters(3))
    with pytest.raises(ConfigError):
        Surrogate([], dim=2)
    with pytest.raises(ConfigError):
        Surrogate(["a", "a"], dim=2)
    with pytest.raises(InputDataError, match="shape"):
        Surrogate(["a"], dim=2).update(X, y[:, None], yvar[:, None].expand(5, 2))


# ------------------------------------------------------------------------------------------
# Refit policy and the stateful surrogate
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"min_new_points": 0}, {"min_new_points": 2.5}, {"min_new_points": True},
    {"growth": -0.1}, {"growth": float("nan")}, {"noise_shrink": 1.0}, {"noise_shrink": 0.5},
])
def test_refit_policy_validation(kwargs):
    with pytest.raises(ConfigError):
        RefitPolicy(**kwargs)


@pytest.mark.parametrize(("n", "last", "shrink", "expected"), [
    (0, None, 1.0, False),      # nothing to fit
    (1, None, 1.0, True),       # never fitted
    (6, 3, 1.0, False),         # 3 new < max(4, 0.75)
    (7, 3, 1.0, True),          # 4 new >= 4
    (49, 40, 1.0, False),       # 9 new < max(4, 10)
    (50, 40, 1.0, True),        # 10 new >= 10
    (40, 40, 1.99, False),      # noise shrank by less than 2x
    (40, 40, 2.0, True),        # noise halved
    (39, 40, 1.0, True),        # data set shrank: replaced
])
def test_refit_policy_due_truth_table(n, last, shrink, expected):
    assert RefitPolicy(min_new_points=4, growth=0.25, noise_shrink=2.0).due(n, last, shrink) \
        is expected


def test_refit_policy_without_noise_trigger():
    assert RefitPolicy(noise_shrink=None).due(40, 40, 100.0) is False


def _data_1d(n: int, noise_var: float = 1e-6):
    X = torch.linspace(0.0, 1.0, n, dtype=DT).unsqueeze(-1)
    Y = torch.stack([0.02 * torch.sin(4.0 * X[:, 0])], -1)
    return X, Y, torch.full_like(Y, noise_var)


def test_surrogate_refits_exactly_when_due():
    s = Surrogate(["m"], dim=1, policy=RefitPolicy(min_new_points=4, growth=0.25))
    expected = [(0, 0), (3, 1), (6, 1), (7, 2), (10, 2), (11, 3)]
    for n, refits in expected:
        s.update(*_data_1d(n))
        assert s.num_refits == refits, (n, s.num_refits)
    assert s.last_fit_seconds is not None and s.last_fit_seconds > 0
    s.update(*_data_1d(11, noise_var=0.6e-6))  # noise shrank by 1.67x: no refit
    assert s.num_refits == 3
    s.update(*_data_1d(11, noise_var=0.5e-6))  # halved since the last fit: refit
    assert s.num_refits == 4
    s.update(*_data_1d(11, noise_var=0.5e-6), force_refit=True)
    assert s.num_refits == 5
    assert s.version == len(expected) + 3


def test_cheap_conditioning_keeps_hyperparameters_and_uses_the_data():
    s = Surrogate(["m"], dim=1)
    X, Y, Yvar = _data_1d(8)
    s.update(X, Y, Yvar)
    before = {k: v.clone() for k, v in s.hyperparameters["m"].items()}
    x_new = torch.tensor([[0.3]], dtype=DT)
    y_new = torch.tensor([[0.05]], dtype=DT)  # far above the curve there (~0.019)
    snap = s.update(torch.cat([X, x_new]), torch.cat([Y, y_new]),
                    torch.cat([Yvar, torch.full((1, 1), 1e-8, dtype=DT)]))
    assert s.num_refits == 1
    assert all(torch.equal(s.hyperparameters["m"][k], before[k]) for k in before)
    assert all(torch.equal(snap.hyperparameters[0][k], before[k]) for k in before)
    assert abs(float(snap.mean_and_var(x_new)[0]) - 0.05) < 1e-3


def test_state_dict_round_trip_gives_identical_predictions():
    X, y, yvar = noisy_data(20, seed=5)
    Y, Yvar = torch.stack([y, 2 * y], -1), torch.stack([yvar, yvar], -1)
    s = Surrogate(["a", "b"], dim=2)
    s.update(X, Y, Yvar)
    state = json.loads(json.dumps(s.state_dict()))
    assert state["schema_version"] == SCHEMA_VERSION
    s2 = Surrogate(["a", "b"], dim=2)
    s2.load_state_dict(state)
    snap1, snap2 = s.update(X, Y, Yvar), s2.update(X, Y, Yvar)
    assert s.num_refits == s2.num_refits == 1  # bookkeeping restored: no refit
    assert snap1.version == snap2.version
    G = grid2d(6)
    m1, v1 = snap1.mean_and_var(G)
    m2, v2 = snap2.mean_and_var(G)
    assert torch.equal(m1, m2) and torch.equal(v1, v2)
    assert torch.equal(snap1.sample(G, 3, seed=1), snap2.sample(G, 3, seed=1))


def test_load_state_dict_rejects_incompatible_state():
    s = Surrogate(["a"], dim=1)
    s.update(*_data_1d(5))
    good = json.loads(json.dumps(s.state_dict()))
    with pytest.raises(StateError, match="schema_version"):
        Surrogate(["a"], dim=1).load_state_dict({**good, "schema_version": 99})
    with pytest.raises(StateError, match="metrics"):
        Surrogate(["b"], dim=1).load_state_dict(good)
    with pytest.raises(StateError):
        Surrogate(["a"], dim=2).load_state_dict({**good, "dim": 2})
    broken = json.loads(json.dumps(good))
    broken["hyperparameters"]["a"]["covar_module.base_kernel.raw_lengthscale"] = [[1.0, 2.0]]
    with pytest.raises(StateError, match="shape"):
        Surrogate(["a"], dim=1).load_state_dict(broken)


# ------------------------------------------------------------------------------------------
# Snapshots: prior, sampling, conditioning
# ------------------------------------------------------------------------------------------


def test_empty_data_gives_the_documented_prior():
    s = Surrogate(["a", "b"], dim=3)
    snap = s.update(torch.zeros(0, 3), torch.zeros(0, 2), torch.zeros(0, 2))
    assert snap.num_points == 0 and s.num_refits == 0
    Xq = torch.rand(7, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    mean, var = snap.mean_and_var(Xq)
    assert torch.equal(mean, torch.zeros(7, 2, dtype=DT))
    torch.testing.assert_close(var, torch.full((7, 2), DEFAULT_PRIOR_SD**2, dtype=DT),
                               rtol=1e-9, atol=0)
    draws = snap.sample(Xq, 4000, seed=0)
    assert draws.shape == (4000, 7, 2)
    emp_sd = draws.std(dim=0)
    assert bool(((emp_sd / DEFAULT_PRIOR_SD - 1).abs() < 0.08).all())
    # fantasy observations on the prior
    cond = snap.condition(Xq[:1], torch.tensor([[0.01, -0.01]], dtype=DT),
                          torch.full((1, 2), 1e-10, dtype=DT))
    torch.testing.assert_close(cond.mean_and_var(Xq[:1])[0],
                               torch.tensor([[0.01, -0.01]], dtype=DT), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def snap_1d():
    X = torch.tensor([[0.05], [0.3], [0.45], [0.7], [0.95]], dtype=DT)
    Y = torch.stack([0.02 * torch.sin(5 * X[:, 0]), 0.01 * X[:, 0]], -1)
    Yvar = torch.tensor([[4e-6, 1e-6], [1e-6, 1e-6], [9e-6, 4e-6], [1e-6, 1e-6],
                         [4e-6, 1e-6]], dtype=DT)
    return Surrogate(["a", "b"], dim=1).update(X, Y, Yvar)


@pytest.fixture(scope="module")
def snap_sparse_1d():
    """Two points only: away from them the posterior variance is close to the prior's."""
    X = torch.tensor([[0.25], [0.6]], dtype=DT)
    Y = torch.tensor([[0.01, -0.005], [-0.004, 0.002]], dtype=DT)
    Yvar = torch.tensor([[1e-6, 4e-6], [4e-6, 1e-6]], dtype=DT)
    return Surrogate(["a", "b"], dim=1).update(X, Y, Yvar)


def prior_variance(model) -> float:
    with torch.no_grad():
        return float(model.covar_module.outputscale * model.outcome_transform._stdvs_sq)


@pytest.mark.parametrize("which", ["snap_1d", "snap_sparse_1d"])
@pytest.mark.parametrize("method", ["exact", "pathwise"])
def test_joint_draws_match_posterior_moments(request, which, method):
    """Monte Carlo moments of K joint draws against the textbook posterior.

    Exact draws: covariance within 6% of the largest posterior variance (MC error ~2%).
    Pathwise draws approximate the prior with random Fourier features, whose covariance
    error is a few % of the *prior* variance; the sparse snapshot, where the posterior
    variance is of the prior's order, makes that tolerance bite.
    """
    snap = request.getfixturevalue(which)
    Xq = torch.linspace(0.0, 1.0, 12, dtype=DT).unsqueeze(-1)
    K = 6000
    draws = snap.sample(Xq, K, seed=11, method=method)
    assert draws.shape == (K, 12, 2)
    for j, model in enumerate(snap.models):
        ref_mean, ref_cov = textbook_posterior(model, Xq)
        d = draws[:, :, j]
        se = ref_cov.diagonal().sqrt() / math.sqrt(K)
        assert bool(((d.mean(0) - ref_mean).abs() < 5 * se).all())
        emp_cov = torch.cov(d.T)
        if method == "exact":
            tol = 0.06 * float(ref_cov.diagonal().max())
        else:
            tol = 0.05 * prior_variance(model)
            assert which == "snap_1d" or float(ref_cov.diagonal().max()) > 10 * tol
        assert float((emp_cov - ref_cov).abs().max()) < tol
        # joint, not marginal: the most correlated neighbours keep their correlation
        ref_sd, emp_sd = ref_cov.diagonal().sqrt(), emp_cov.diagonal().sqrt()
        ref_corr = ref_cov.diagonal(1) / (ref_sd[:-1] * ref_sd[1:])
        emp_corr = emp_cov.diagonal(1) / (emp_sd[:-1] * emp_sd[1:])
        i = int(ref_corr.argmax())
        assert float(ref_corr[i]) > 0.5 and abs(float(emp_corr[i] - ref_corr[i])) < 0.1
    # metrics are independent
    cross = torch.corrcoef(torch.stack([draws[:, 8, 0], draws[:, 8, 1]]))[0, 1]
    assert abs(float(cross)) < 0.06


@pytest.mark.parametrize("method", ["exact", "pathwise", "auto"])
def test_sampling_is_deterministic_per_seed_and_leaves_global_rng_alone(snap_1d, method):
    Xq = torch.linspace(0.0, 1.0, 9, dtype=DT).unsqueeze(-1)
    state = torch.get_rng_state()
    a = snap_1d.sample(Xq, 50, seed=3, method=method)
    b = snap_1d.sample(Xq, 50, seed=3, method=method)
    c = snap_1d.sample(Xq, 50, seed=4, method=method)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_fitting_is_deterministic_and_leaves_global_rng_alone():
    X, y, yvar = noisy_data(15, seed=8)
    state = torch.get_rng_state()
    m1 = fit_metric_gp(X, y, yvar)
    m2 = fit_metric_gp(X, y, yvar)
    assert torch.equal(torch.get_rng_state(), state)
    h1 = surrogate_module._extract_hyperparameters(m1)
    h2 = surrogate_module._extract_hyperparameters(m2)
    assert all(torch.equal(h1[k], h2[k]) for k in h1)


def test_auto_switches_to_pathwise_above_the_exact_limit(snap_1d, monkeypatch):
    calls = []
    real = surrogate_module._pathwise_draws

    def spy(*args, **kwargs):
        calls.append(args[1].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(surrogate_module, "_pathwise_draws", spy)
    small = torch.rand(snap_1d.exact_limit, 1, dtype=DT)
    snap_1d.sample(small[:10], 2, seed=0)
    assert calls == []
    big = torch.rand(snap_1d.exact_limit + 1, 1, generator=torch.Generator().manual_seed(0),
                     dtype=DT)
    assert snap_1d.sample(big, 2, seed=0).shape == (2, snap_1d.exact_limit + 1, 2)
    assert calls == [snap_1d.exact_limit + 1] * 2


def test_condition_adds_points_without_refit_and_leaves_original_alone(snap_1d):
    Xq = torch.tensor([[0.6]], dtype=DT)
    mean_before, _ = snap_1d.mean_and_var(Xq)
    cond = snap_1d.condition(Xq, torch.tensor([[0.04, -0.03]], dtype=DT),
                             torch.full((1, 2), 1e-10, dtype=DT))
    assert cond.version == snap_1d.version and cond.num_points == snap_1d.num_points + 1
    for hp_new, hp_old in zip(cond.hyperparameters, snap_1d.hyperparameters, strict=True):
        assert all(torch.equal(hp_new[k], hp_old[k]) for k in hp_old)
    torch.testing.assert_close(cond.mean_and_var(Xq)[0],
                               torch.tensor([[0.04, -0.03]], dtype=DT), atol=1e-5, rtol=0)
    assert torch.equal(snap_1d.mean_and_var(Xq)[0], mean_before)
    assert snap_1d.condition(torch.zeros(0, 1), torch.zeros(0, 2), torch.zeros(0, 2)) is snap_1d


def test_paths_are_functions_consistent_with_pathwise_sample(snap_1d):
    """A path evaluated at different point sets, in pieces or per draw, is one function."""
    Xa = torch.linspace(0.0, 1.0, 7, dtype=DT).unsqueeze(-1)
    Xb = torch.linspace(0.05, 0.95, 5, dtype=DT).unsqueeze(-1)
    paths = snap_1d.paths(6, seed=21)
    assert paths.num_draws == 6 and paths.num_metrics == 2
    both = paths(torch.cat([Xa, Xb]))
    torch.testing.assert_close(both, snap_1d.sample(torch.cat([Xa, Xb]), 6, seed=21,
                                                    method="pathwise"), rtol=0, atol=0)
    torch.testing.assert_close(paths(Xa), both[:, :7], rtol=0, atol=1e-14)
    torch.testing.assert_close(paths(Xb), both[:, 7:], rtol=0, atol=1e-14)
    # draw k at its own points: the k-th row of an evaluation at all of them
    own = torch.rand(6, 3, 1, dtype=DT, generator=torch.Generator().manual_seed(0))
    per = paths.per_draw(own)
    assert per.shape == (6, 3, 2)
    for k in range(6):
        torch.testing.assert_close(per[k], paths(own[k])[k], rtol=0, atol=1e-12)
    with pytest.raises(InputDataError):
        paths.per_draw(torch.rand(5, 3, 1, dtype=DT))
    with pytest.raises(ConfigError):
        snap_1d.paths(0, seed=1)


# ------------------------------------------------------------------------------------------
# shared control noise
# ------------------------------------------------------------------------------------------


def _shared_control_design(n: int = 40, hours: int = 10, seed: int = 0):
    """Arms over staggered 4-hour windows; every hour's control error is shared by its arms."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=gen, dtype=DT)
    A = torch.zeros(n, hours, dtype=DT)
    for i in range(n):
        A[i, i % 7:i % 7 + 4] = 0.25  # N-weights of the arm's hours
    control_var, test_var = 4e-6, 4e-6  # per hour, equal groups
    U = A * math.sqrt(control_var)
    Yvar = test_var * (A**2).sum(1) + (U**2).sum(1)
    # the control row: delta 0 by definition, no shared error
    X = torch.cat([torch.full((1, 2), 0.5, dtype=DT), X])
    U = torch.cat([torch.zeros(1, hours, dtype=DT), U])
    Yvar = torch.cat([torch.tensor([1e-10], dtype=DT), Yvar])
    return X, A, U, Yvar, test_var, control_var


def _lift(X):
    return 0.01 * torch.sin(3 * X[:, 0]) + 0.005 * X[:, 1]


def test_shared_control_noise_matches_the_textbook_posterior():
    X, _, U, Yvar, _, _ = _shared_control_design()
    y = _lift(X) - _lift(X[:1])
    Y, YV = torch.stack([y, -y], -1), torch.stack([Yvar, Yvar], -1)
    snap = Surrogate(["a", "b"], dim=2).update(X, Y, YV, loadings=torch.stack([U, U]))
    Xq = torch.rand(9, 2, dtype=DT, generator=torch.Generator().manual_seed(5))
    mean, var = snap.mean_and_var(Xq)
    for j, model in enumerate(snap.models):
        with torch.no_grad():
            s2 = model.outcome_transform.stdvs.reshape(()) ** 2
            centre = model.outcome_transform.means.reshape(())
            k = model.covar_module
            c = model.mean_module.constant.reshape(())
            sigma = (torch.diag(Yvar - (U**2).sum(1)).clamp_min(0) + U @ U.T) / s2
            sigma = sigma + torch.diag(torch.full((X.shape[0],), 1e-6, dtype=DT)) * (
                torch.diag(sigma) < 1e-6)  # the model's floor on the control row
            Ktt = k(X, X).to_dense() + sigma
            ytr = (Y[:, j] - centre) / s2.sqrt()
            Kst = k(Xq, X).to_dense()
            ref_mean = centre + s2.sqrt() * (c + Kst @ torch.linalg.solve(Ktt, ytr - c))
            ref_var = s2 * (k(Xq, Xq).to_dense().diagonal()
                            - (Kst @ torch.linalg.solve(Ktt, Kst.T)).diagonal())
        torch.testing.assert_close(mean[:, j], ref_mean, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(var[:, j], ref_var, rtol=1e-5, atol=1e-12)
    # fantasies share nothing: conditioning pads the loadings with zeros
    cond = snap.condition(Xq[:2], torch.zeros(2, 2, dtype=DT), torch.full((2, 2), 1e-6, dtype=DT))
    assert cond.train_loadings.shape == (2, X.shape[0] + 2, U.shape[1])
    assert bool((cond.train_loadings[:, -2:] == 0).all())


def test_shared_control_noise_keeps_intervals_calibrated():
    """Monte Carlo: the truth at a well-explored point lies in the 95% interval ~95% of the time.

    40 arms ran near one point in staggered 4-hour windows, so each hour's control error is
    shared by up to 24 of them. Pooling them through the GP averages their own errors away,
    but not the control errors they share: an independent-noise GP believes the pooled
    estimate too precise there. Asserted: at least 34 of 40 intervals cover the truth with the
    shared noise, at most 30 of 40 without.
    """
    X, A, U, Yvar, test_var, control_var = _shared_control_design()
    gen = torch.Generator().manual_seed(4)
    centre = torch.tensor([[0.3, 0.7]], dtype=DT)
    X = X.clone()
    X[1:] = (centre + 0.03 * torch.randn(X.shape[0] - 1, 2, generator=gen, dtype=DT)).clamp(0, 1)
    truth = float(_lift(centre) - _lift(X[:1]))
    inside = {"shared": 0, "independent": 0}
    reps = 40
    for rep in range(reps):
        gen = torch.Generator().manual_seed(100 + rep)
        e_control = math.sqrt(control_var) * torch.randn(A.shape[1], generator=gen, dtype=DT)
        own = (test_var * (A**2).sum(1)).sqrt() * torch.randn(A.shape[0], generator=gen,
                                                               dtype=DT)
        y = _lift(X) - _lift(X[:1])
        y[1:] += own - A @ e_control
        Y, YV = torch.stack([y, y], -1), torch.stack([Yvar, Yvar], -1)
        loadings = torch.stack([U, torch.zeros_like(U)])  # metric 1: told "independent"
        snap = Surrogate(["shared", "independent"], dim=2).update(X, Y, YV, loadings=loadings)
        mean, var = snap.mean_and_var(centre)
        z = (truth - mean[0]) / var[0].sqrt()
        inside["shared"] += int(z[0].abs() < 1.96)
        inside["independent"] += int(z[1].abs() < 1.96)
    assert inside["shared"] >= 0.85 * reps, inside
    assert inside["independent"] <= 0.75 * reps, inside


def test_loadings_are_validated():
    X, _, U, Yvar, _, _ = _shared_control_design(n=5)
    Y = torch.zeros(X.shape[0], 1, dtype=DT)
    s = Surrogate(["a"], dim=2)
    with pytest.raises(InputDataError, match="loadings.shape"):
        s.update(X, Y, Yvar.unsqueeze(-1), loadings=U)
    with pytest.raises(InputDataError, match="above Yvar"):
        s.update(X, Y, Yvar.unsqueeze(-1), loadings=(3 * U).unsqueeze(0))
