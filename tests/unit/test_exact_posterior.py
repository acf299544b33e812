"""The lean exact posterior (one factor per metric, fantasy borders) against references."""

from __future__ import annotations

import math

import pytest
import torch

import hz_ray.surrogate as surrogate_module
from hz_ray.exact_posterior import MetricPosterior, noise_parts
from hz_ray.optimizer import Optimizer
from hz_ray.surrogate import PosteriorSnapshot, Surrogate, fit_rows
from tests.unit.test_optimizer import feed, grid_arms
from tests.unit.test_surrogate import _lift, _shared_control_design

DT = torch.float64


@pytest.fixture(scope="module")
def shared_snapshot():
    X, _, U, Yvar, _, _ = _shared_control_design(n=60, hours=12, seed=3)
    y = _lift(X) - _lift(X[:1])
    Y, YV = torch.stack([y, -0.5 * y], -1), torch.stack([Yvar, 2 * Yvar], -1)
    return Surrogate(["a", "b"], dim=2).update(X, Y, YV, loadings=torch.stack([U, U]))


def _fresh(snapshot: PosteriorSnapshot) -> PosteriorSnapshot:
    """The same data and hyperparameters, factorised from scratch (no border)."""
    return PosteriorSnapshot.build(snapshot.train_X, snapshot.train_Y, snapshot.train_Yvar,
                                   snapshot.metrics, snapshot.hyperparameters,
                                   prior_sd=snapshot.prior_sd, loadings=snapshot.train_loadings)


def test_a_bordered_factor_gives_the_posterior_of_a_fresh_factorisation(shared_snapshot):
    gen = torch.Generator().manual_seed(8)
    X_extra = torch.rand(5, 2, generator=gen, dtype=DT)
    Y_extra = 0.01 * torch.randn(5, 2, generator=gen, dtype=DT)
    conditioned = shared_snapshot.condition(X_extra, Y_extra, torch.full((5, 2), 3e-6, dtype=DT))
    assert conditioned.base is shared_snapshot
    assert conditioned.posteriors[0].border is not None
    assert conditioned.posteriors[0].factor is shared_snapshot.posteriors[0].factor  # shared
    again = conditioned.condition(X_extra[:2] * 0.5, Y_extra[:2], torch.full((2, 2), 1e-6,
                                                                             dtype=DT))
    Xq = torch.rand(40, 2, generator=gen, dtype=DT)
    for snap in (conditioned, again):
        fresh = _fresh(snap)
        assert fresh.posteriors[0].border is None
        mean, var = snap.mean_and_var(Xq)
        ref_mean, ref_var = fresh.mean_and_var(Xq)
        torch.testing.assert_close(mean, ref_mean, rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(var, ref_var, rtol=1e-6, atol=1e-14)
        torch.testing.assert_close(snap.sample(Xq[:12], 50, seed=4, method="exact"),
                                   fresh.sample(Xq[:12], 50, seed=4, method="exact"),
                                   rtol=1e-6, atol=1e-10)
        torch.testing.assert_close(snap.sample(Xq, 50, seed=4, method="pathwise"),
                                   fresh.sample(Xq, 50, seed=4, method="pathwise"),
                                   rtol=1e-6, atol=1e-10)


def test_mean_alone_equals_the_mean_of_mean_and_var(shared_snapshot):
    Xq = torch.rand(1100, 2, generator=torch.Generator().manual_seed(2), dtype=DT)
    mean, _ = shared_snapshot.mean_and_var(Xq)
    torch.testing.assert_close(shared_snapshot.mean(Xq), mean, rtol=1e-10, atol=1e-14)


def test_low_rank_noise_draws_have_the_noise_covariance(shared_snapshot):
    """Monte Carlo: sqrt(r) z + U z_H has covariance diag(r) + U U^T (the model's noise)."""
    posterior: MetricPosterior = shared_snapshot.posteriors[0]
    residual, loadings = noise_parts(posterior.model)
    assert loadings is not None
    K = 40_000
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(residual.shape[0], K, generator=gen, dtype=DT)
    eps = posterior.noise_draws(z, gen)
    target = torch.diag(residual) + loadings @ loadings.T
    empirical = eps @ eps.T / K
    scale = float(target.diagonal().max())
    assert float((empirical - target).abs().max()) < 0.05 * scale


def test_pathwise_draws_above_the_dense_noise_limit_match_the_posterior(shared_snapshot,
                                                                      monkeypatch):
    """The low-rank noise path of pathwise draws, checked by its Monte Carlo moments."""
    monkeypatch.setattr(surrogate_module, "_DENSE_NOISE_LIMIT", 0)
    Xq = torch.linspace(0.05, 0.95, 10, dtype=DT).unsqueeze(-1).expand(10, 2).contiguous()
    K = 6000
    draws = shared_snapshot.sample(Xq, K, seed=21, method="pathwise")
    mean, var = shared_snapshot.mean_and_var(Xq)
    se = var.sqrt() / math.sqrt(K)
    assert bool(((draws.mean(0) - mean).abs() < 5 * se + 1e-12).all())
    prior_var = torch.stack([m.covar_module.outputscale.reshape(()) for m in
                             shared_snapshot.models]) * torch.stack(
        [m.outcome_transform.stdvs.reshape(()) ** 2 for m in shared_snapshot.models])
    # the feature approximation's error is a few % of the prior variance
    assert bool(((draws.var(0) - var).abs() < 0.05 * prior_var).all())


def test_fit_rows_keep_the_control_row_and_are_a_seeded_subset():
    assert fit_rows(50, limit=100) is None
    rows = fit_rows(500, limit=100)
    assert rows.shape == (100,) and int(rows[0]) == 0
    assert bool((rows[1:] > 0).all()) and len(set(rows.tolist())) == 100
    assert torch.equal(rows, fit_rows(500, limit=100))
    assert not torch.equal(rows, fit_rows(501, limit=100))


def test_a_fit_on_a_subset_predicts_nearly_as_well_as_the_full_fit(monkeypatch):
    """Above FIT_POINTS_LIMIT hyperparameters come from a subset; the posterior uses all points."""
    gen = torch.Generator().manual_seed(5)
    X = torch.rand(400, 2, generator=gen, dtype=DT)
    truth = _lift(X)
    Y = (truth + 0.002 * torch.randn(400, generator=gen, dtype=DT)).unsqueeze(-1)
    Yvar = torch.full((400, 1), 4e-6, dtype=DT)
    Xq = torch.rand(200, 2, generator=gen, dtype=DT)
    full = Surrogate(["a"], dim=2).update(X, Y, Yvar)
    monkeypatch.setattr(surrogate_module, "FIT_POINTS_LIMIT", 60)
    subset_surrogate = Surrogate(["a"], dim=2)
    subset = subset_surrogate.update(X, Y, Yvar)
    assert subset.num_points == 400
    # refit again, now warm-started from the first subset fit
    subset_surrogate.update(X, Y, Yvar, force_refit=True)
    assert subset_surrogate.num_fit_failures == 0
    rmse_full = float((full.mean(Xq)[:, 0] - _lift(Xq)).pow(2).mean().sqrt())
    rmse_subset = float((subset.mean(Xq)[:, 0] - _lift(Xq)).pow(2).mean().sqrt())
    assert rmse_subset < 1.5 * rmse_full + 1e-5


def test_only_a_fit_on_a_subset_stops_at_the_looser_tolerance(monkeypatch):
    """Fits on all points keep scipy's default tolerance; subset fits use SUBSET_FIT_FTOL."""
    seen: list[object] = []
    real = surrogate_module.fit_gpytorch_mll

    def recording(mll, **kwargs):
        seen.append(kwargs.get("optimizer_kwargs"))
        return real(mll, **kwargs)

    monkeypatch.setattr(surrogate_module, "fit_gpytorch_mll", recording)
    gen = torch.Generator().manual_seed(6)
    X = torch.rand(80, 2, generator=gen, dtype=DT)
    Y = (_lift(X) + 0.002 * torch.randn(80, generator=gen, dtype=DT)).unsqueeze(-1)
    Yvar = torch.full((80, 1), 4e-6, dtype=DT)
    Surrogate(["a"], dim=2).update(X, Y, Yvar)
    monkeypatch.setattr(surrogate_module, "FIT_POINTS_LIMIT", 60)
    Surrogate(["a"], dim=2).update(X, Y, Yvar)
    assert seen == [None, {"options": {"ftol": surrogate_module.SUBSET_FIT_FTOL}}]


def _brute_force_recommendation(opt: Optimizer) -> str:
    """The readout's rule over every arm's full assessment (the pre-lazy implementation)."""
    o = opt.config.optimizer
    feasible = [a for a in opt.assess() if a.hours >= o.recommend_min_hours
                and a.p_feasible >= o.feasibility_threshold and a.gain_mean > 0]
    return max(feasible, key=lambda a: (a.gain_mean, a.arm_id)).arm_id if feasible else "control"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_lazy_readout_picks_what_ranking_every_arm_picks(small_config, monkeypatch, seed):
    monkeypatch.setattr("hz_ray.optimizer.READOUT_CHUNK", 3)  # force several chunks
    opt = Optimizer(small_config)
    arms = grid_arms(opt, n=24, seed=seed)
    feed(opt, arms, range(8), seed=seed, sd=0.004)
    opt.refresh(force_refit=True)
    rec = opt.recommend()
    assert rec.arm_id == _brute_force_recommendation(opt)
    # the anchors are the best three with P(feasible) >= 0.5, as a full ranking says
    view = opt._view
    arm_X = opt.space.encode_many(view.arm_params)
    ranked = sorted((a for a in opt.assess() if a.p_feasible >= 0.5 and a.hours > 0),
                    key=lambda a: -a.gain_mean)[:3]
    anchors = opt._anchors(opt.snapshot(), view, arm_X)
    expected = torch.stack([opt.space.control_point()]
                           + [arm_X[view.arm_ids.index(a.arm_id)] for a in ranked])
    torch.testing.assert_close(anchors, expected)


@pytest.mark.parametrize("fantasies", [0, 3])
def test_training_rows_give_the_same_means_and_draws_without_kernel_products(
        shared_snapshot, fantasies):
    """At a training input, ``y - Sigma alpha`` (mean) and ``y - eps - Sigma alpha`` (draw)."""
    snap = shared_snapshot
    gen = torch.Generator().manual_seed(1)
    if fantasies:
        snap = snap.condition(torch.rand(fantasies, 2, generator=gen, dtype=DT),
                              torch.zeros(fantasies, 2, dtype=DT),
                              torch.full((fantasies, 2), 2e-6, dtype=DT))
    n = snap.train_X.shape[0]
    new_points = torch.rand(7, 2, generator=gen, dtype=DT)
    pick = torch.tensor([0, 5, n - 1, 5, 17], dtype=torch.long)  # a duplicate, the control
    X = torch.cat([snap.train_X[pick], new_points])
    rows = torch.cat([pick, torch.full((7,), -1, dtype=torch.long)])
    torch.testing.assert_close(snap.mean(X, rows), snap.mean(X), rtol=1e-7, atol=1e-12)
    with_rows = snap.sample(X, 64, seed=3, method="pathwise", training_rows=rows)
    without = snap.sample(X, 64, seed=3, method="pathwise")
    torch.testing.assert_close(with_rows, without, rtol=1e-6, atol=1e-10)


def test_training_rows_that_are_not_the_points_are_refused(shared_snapshot):
    from hz_ray.errors import InputDataError

    X = shared_snapshot.train_X[:3]
    with pytest.raises(InputDataError, match="training_rows"):
        shared_snapshot.mean(X, torch.tensor([0, 2, 1]))
    with pytest.raises(InputDataError, match="training_rows"):
        shared_snapshot.mean(X, torch.tensor([0, 1]))
    with pytest.raises(InputDataError, match="training_rows"):
        shared_snapshot.sample(X, 4, seed=0, method="pathwise",
                               training_rows=torch.tensor([0, 1, 10**6]))


def _lower_factor(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=gen, dtype=DT)
    return torch.linalg.cholesky(A @ A.T / n + 0.1 * torch.eye(n, dtype=DT))


@pytest.mark.parametrize("n", [1, 7, 300, 600])  # one block, several blocks of rows
def test_two_packed_factors_solve_as_the_separate_factors_do(n):
    from hz_ray.exact_posterior import LowerFactor

    La, Lb = _lower_factor(n, 1), _lower_factor(n, 2)
    first, second = LowerFactor.pack(La.clone(), Lb.clone())
    assert first.storage is second.storage  # one matrix for both
    R = torch.randn(n, 5, generator=torch.Generator().manual_seed(3), dtype=DT)
    for factor, L in ((first, La), (second, Lb)):
        torch.testing.assert_close(factor.dense(), L, rtol=1e-13, atol=1e-13)
        # against a general (not triangular) solver with the dense factor
        torch.testing.assert_close(factor.solve(R), torch.linalg.solve(L, R),
                                   rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(factor.solve_transposed(R), torch.linalg.solve(L.T, R),
                                   rtol=1e-9, atol=1e-10)


def test_metrics_two_by_two_share_one_matrix_and_keep_their_own_posteriors():
    X = torch.rand(80, 2, generator=torch.Generator().manual_seed(5), dtype=DT)
    y = _lift(X) - _lift(X[:1])
    Y = torch.stack([y, -0.5 * y, y**2], -1)  # three metrics: a pair and one alone
    Yvar = torch.full_like(Y, 1e-5)
    snap = Surrogate(["a", "b", "c"], dim=2).update(X, Y, Yvar)
    posteriors = snap.posteriors
    assert posteriors[0].factor.storage is posteriors[1].factor.storage
    assert posteriors[2].factor.storage is not posteriors[0].factor.storage
    Xq = torch.rand(30, 2, generator=torch.Generator().manual_seed(6), dtype=DT)
    for posterior, model in zip(posteriors, snap.models, strict=True):
        alone = MetricPosterior.from_model(model)  # its own matrix, nothing shared
        for got, ref in zip(posterior.mean_and_var(Xq, 16), alone.mean_and_var(Xq, 16),
                            strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-14)
        torch.testing.assert_close(posterior.alpha, alone.alpha, rtol=1e-9, atol=1e-12)
