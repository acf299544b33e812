"""Unit tests of hz_ray.thompson: constrained Thompson sampling and GP-scored proposals."""

from __future__ import annotations

import pytest
import torch

from hz_ray.errors import ConfigError, InputDataError
from hz_ray.surrogate import Surrogate
from hz_ray.thompson import (
    choose_by_counts,
    pick_counts,
    pick_indices,
    propose_candidates,
    refine_on_draws,
)

DT = torch.float64


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=DT)


# ------------------------------------------------------------------------------------------
# pick_counts with hand-built draws
# ------------------------------------------------------------------------------------------

# metric 0 is the objective, metric 1 a guardrail that must stay >= 0
W = t([1.0, 0.0])
G = t([[0.0, 1.0]])
B = t([0.0])


def test_counts_with_feasible_argmax_fallback_and_ties():
    draws = t([
        # (objective, guardrail) at candidates 0, 1, 2
        [[1.0, 1.0], [2.0, 1.0], [3.0, -1.0]],    # 2 is best but infeasible -> 1
        [[3.0, 1.0], [2.0, 1.0], [1.0, 1.0]],     # all feasible -> 0
        [[9.0, -0.5], [0.0, -0.1], [5.0, -0.2]],  # none feasible -> least violation: 1
        [[2.0, 1.0], [2.0, 1.0], [1.0, 1.0]],     # objective tie -> lowest index: 0
        [[1.0, -0.3], [7.0, -0.3], [8.0, -0.4]],  # violation tie -> lowest index: 0
        [[1.0, 0.0], [0.5, 1.0], [4.0, -1e-9]],   # G d == b is feasible -> 0, not 1
    ])
    assert pick_indices(draws, W, G, B).tolist() == [1, 0, 1, 0, 0, 0]
    counts = pick_counts(draws, W, G, B)
    assert counts.dtype == torch.long
    assert counts.tolist() == [4, 2, 0]
    # without constraints: plain argmax of the objective
    assert pick_counts(draws, W).tolist() == [3, 0, 3]


def test_weighted_objective_and_multi_metric_constraints():
    # objective 0.5*d0 + 0.5*d1; constraints d0 - d1 >= -1 and d2 >= 0.2
    w = t([0.5, 0.5, 0.0])
    Gm = t([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    b = t([-1.0, 0.2])
    draws = t([[[0.0, 3.0, 1.0],     # objective 1.5, d0 - d1 = -3: infeasible
                [1.0, 1.5, 0.3],     # objective 1.25, feasible
                [2.0, 2.0, 0.1]]])   # objective 2.0, d2 < 0.2: infeasible
    assert pick_counts(draws, w, Gm, b).tolist() == [0, 1, 0]
    # all infeasible: violations 2.0, 0.15 + ..., pick the least total violation
    draws = t([[[0.0, 3.0, 0.1],     # 2.0 + 0.1 = 2.1
                [0.0, 1.2, 0.1],     # 0.2 + 0.1 = 0.3
                [0.0, 0.0, -0.2]]])  # 0.0 + 0.4 = 0.4
    assert pick_counts(draws, w, Gm, b).tolist() == [0, 1, 0]


def naive_picks(draws, w, Gm, b):
    picks = []
    for k in range(draws.shape[0]):
        best, best_val, least, least_v = None, None, None, None
        for i in range(draws.shape[1]):
            d = draws[k, i]
            g = Gm @ d
            v = float((b - g).clamp_min(0).sum())
            obj = float(w @ d)
            if bool((g >= b).all()) and (best is None or obj > best_val):
                best, best_val = i, obj
            if least is None or v < least_v:
                least, least_v = i, v
        picks.append(best if best is not None else least)
    return picks


def test_vectorised_picks_match_a_naive_loop():
    gen = torch.Generator().manual_seed(0)
    draws = torch.randn(150, 20, 3, generator=gen, dtype=DT)
    w = t([1.0, -0.5, 0.2])
    Gm = t([[1.0, 0.0, 0.0], [0.3, 0.3, 1.0]])
    b = t([0.8, 0.5])  # roughly a third of the draws have no feasible candidate
    picks = pick_indices(draws, w, Gm, b)
    assert picks.tolist() == naive_picks(draws, w, Gm, b)
    any_feasible = ((draws @ Gm.T) >= b).all(-1).any(-1)
    assert 0 < int(any_feasible.sum()) < 150  # both branches are exercised
    assert int(pick_counts(draws, w, Gm, b).sum()) == 150


def test_pick_counts_rejects_bad_inputs():
    draws = torch.zeros(2, 3, 2, dtype=DT)
    with pytest.raises(InputDataError):
        pick_counts(draws, t([1.0]))
    with pytest.raises(InputDataError):
        pick_counts(draws, W, G, None)
    with pytest.raises(InputDataError):
        pick_counts(draws, W, t([[1.0, 0.0, 0.0]]), B)
    with pytest.raises(InputDataError):
        pick_counts(draws.fill_(float("nan")), W)
    with pytest.raises(InputDataError):
        pick_counts(torch.zeros(2, 3, dtype=DT), W)


# ------------------------------------------------------------------------------------------
# pick_counts on a real GP posterior with a known answer
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def known_answer_snapshot():
    """Objective 0.03 x rises; guardrail 0.0115 - 0.03 x >= 0 holds for x <= 0.383.

    On the grid x = i / 20 the best feasible point is x = 0.35 (index 7): its guardrail
    margin is 0.001 and the next point, x = 0.40, violates by 0.0005, with noise sd 1e-4.
    """
    X = torch.linspace(0.0, 1.0, 21, dtype=DT).unsqueeze(-1)
    Y = torch.stack([0.03 * X[:, 0], 0.0115 - 0.03 * X[:, 0]], -1)
    Yvar = torch.full_like(Y, 1e-8)
    gen = torch.Generator().manual_seed(0)
    Y_obs = Y + 1e-4 * torch.randn(Y.shape, generator=gen, dtype=DT)
    snap = Surrogate(["objective", "guardrail"], dim=1).update(X, Y_obs, Yvar)
    return X, snap


def test_picks_concentrate_on_the_best_feasible_point(known_answer_snapshot):
    X, snap = known_answer_snapshot
    K = 2000
    draws = snap.sample(X, K, seed=0)
    counts = pick_counts(draws, W, G, B)
    assert int(counts.sum()) == K
    assert int(counts[7]) > 0.9 * K, counts.tolist()
    assert int(counts.sum() - counts[6:9].sum()) == 0, counts.tolist()  # else only neighbours
    # without the guardrail the unconstrained optimum x = 1 wins instead
    assert int(pick_counts(draws, W)[-1]) > 0.9 * K


def test_flat_uncertain_posterior_spreads_the_picks():
    snap = Surrogate(["objective", "guardrail"], dim=1).update(
        torch.zeros(0, 1), torch.zeros(0, 2), torch.zeros(0, 2))  # the prior
    X = torch.linspace(0.0, 1.0, 20, dtype=DT).unsqueeze(-1)
    K = 2000
    counts = pick_counts(snap.sample(X, K, seed=1), W, G, B)
    assert int((counts > 0).sum()) >= 15, counts.tolist()
    assert int(counts.max()) < 0.25 * K, counts.tolist()


# ------------------------------------------------------------------------------------------
# choose_by_counts
# ------------------------------------------------------------------------------------------


def test_choose_by_counts_frequencies_match_counts():
    counts = torch.tensor([50, 30, 15, 5, 0])
    trials = 2000
    hits = torch.zeros(5)
    for seed in range(trials):
        (i,) = choose_by_counts(counts, 1, seed)
        hits[i] += 1
    assert hits[4] == 0
    expected = counts[:4].to(torch.float64) / counts.sum() * trials
    chi2 = float(((hits[:4] - expected) ** 2 / expected).sum())
    assert chi2 < 16.27, (hits.tolist(), chi2)  # 3 degrees of freedom, p = 0.001


def test_choose_by_counts_without_replacement_is_distinct_and_seeded():
    counts = torch.tensor([0, 10, 1, 7, 0, 3])
    for seed in range(50):
        chosen = choose_by_counts(counts, 3, seed)
        assert len(set(chosen)) == 3 and set(chosen) <= {1, 2, 3, 5}
        assert chosen == choose_by_counts(counts, 3, seed)
    assert sorted(choose_by_counts(counts, 4, 0)) == [1, 2, 3, 5]
    assert len({tuple(choose_by_counts(counts, 3, s)) for s in range(50)}) > 3


def test_choose_by_counts_repeats_most_picked_when_short_of_candidates():
    counts = torch.tensor([3, 0, 6, 1])
    assert choose_by_counts(counts, 6, seed=0) == [2, 2, 2, 0, 0, 3]  # 3.6, 1.8, 0.6 rounded
    assert choose_by_counts(counts, 4, seed=0) == [2, 2, 0, 3]
    assert choose_by_counts(torch.tensor([0, 5]), 3, seed=9) == [1, 1, 1]
    assert choose_by_counts(counts, 0, seed=0) == []


@pytest.mark.parametrize(("counts", "n", "error"), [
    (torch.tensor([0, 0]), 1, InputDataError),
    (torch.tensor([1, -1]), 1, InputDataError),
    (torch.tensor([[1, 2]]), 1, InputDataError),
    (torch.tensor([1, 2]), -1, ConfigError),
])
def test_choose_by_counts_rejects_bad_inputs(counts, n, error):
    with pytest.raises(error):
        choose_by_counts(counts, n, 0)


# ------------------------------------------------------------------------------------------
# propose_candidates
# ------------------------------------------------------------------------------------------


def objective_2d(X):
    return 0.03 - 0.1 * ((X[:, 0] - 0.7) ** 2 + (X[:, 1] - 0.5) ** 2)


def guardrail_2d(X):
    return 0.02 * (0.55 - X[:, 0])  # feasible iff x0 <= 0.55


@pytest.fixture(scope="module")
def bucket_problem():
    """A 4 x 4 bucket that misses the constrained optimum (0.55, 0.5), value 0.02775."""
    g = t([0.1, 0.35, 0.65, 0.9])
    bucket = torch.cartesian_prod(g, g)
    Y = torch.stack([objective_2d(bucket), guardrail_2d(bucket)], -1)
    snap = Surrogate(["objective", "guardrail"], dim=2).update(
        bucket, Y, torch.full_like(Y, 1e-8))
    feasible = guardrail_2d(bucket) >= 0
    best_bucket = float(objective_2d(bucket)[feasible].max())  # 0.0155 at x0 = 0.35
    incumbent = bucket[feasible][objective_2d(bucket)[feasible].argmax()].unsqueeze(0)
    anchors = torch.cat([incumbent, t([[0.5, 0.5]])])  # incumbent and control
    return snap, bucket, anchors, best_bucket


def _propose(problem, seed=0, **kwargs):
    snap, bucket, anchors, _ = problem
    args = dict(num_proposals=256, num_draws=200, max_added=5, local_scale=0.1, seed=seed)
    args.update(kwargs)
    return propose_candidates(snap, bucket, anchors, W, G, B, **args)


def test_proposals_beat_a_bucket_that_misses_the_optimum(bucket_problem):
    best_bucket = bucket_problem[3]
    proposals = _propose(bucket_problem)
    assert 1 <= proposals.shape[0] <= 5 and proposals.shape[1] == 2
    assert bool(((proposals >= 0) & (proposals <= 1)).all())
    assert torch.unique(proposals, dim=0).shape[0] == proposals.shape[0]
    top = proposals[:1]
    assert float(objective_2d(top)) > best_bucket + 0.004, top  # bucket best 0.0155
    assert float(guardrail_2d(top)) > -0.002, top  # (nearly) feasible in truth


def test_proposals_are_deterministic_and_respect_fixed_features(bucket_problem):
    state = torch.get_rng_state()
    a = _propose(bucket_problem, seed=3)
    assert torch.equal(a, _propose(bucket_problem, seed=3))
    assert not torch.equal(a, _propose(bucket_problem, seed=4))
    assert torch.equal(torch.get_rng_state(), state)
    fixed = _propose(bucket_problem, seed=3, fixed_features={1: 0.25})
    assert fixed.shape[0] >= 1 and bool((fixed[:, 1] == 0.25).all())
    assert _propose(bucket_problem, max_added=0).shape == (0, 2)
    assert _propose(bucket_problem, max_added=2).shape[0] <= 2


def test_proposals_only_from_sobol_without_anchors(bucket_problem):
    snap, bucket, _, best_bucket = bucket_problem
    proposals = propose_candidates(snap, bucket, torch.zeros(0, 2, dtype=DT), W, G, B,
                                   num_proposals=128, num_draws=100, max_added=3,
                                   local_scale=0.1, seed=0)
    assert 1 <= proposals.shape[0] <= 3
    assert float(objective_2d(proposals[:1])) > best_bucket


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"num_proposals": 0}, ConfigError),
    ({"num_draws": 0}, ConfigError),
    ({"max_added": -1}, ConfigError),
    ({"local_scale": 0.0}, ConfigError),
    ({"fixed_features": {5: 0.5}}, ConfigError),
])
def test_propose_candidates_rejects_bad_arguments(bucket_problem, kwargs, error):
    with pytest.raises(error):
        _propose(bucket_problem, **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refinement_reaches_each_draws_constrained_optimum(bucket_problem, seed):
    """Against a 201 x 201 grid search on the same draws (an independent optimiser)."""
    snap = bucket_problem[0]
    paths = snap.paths(8, seed)
    coarse = torch.rand(300, 2, dtype=DT, generator=torch.Generator().manual_seed(seed))
    starts = coarse[pick_indices(paths(coarse), W, G, B)]
    refined = refine_on_draws(paths, starts, W, G, B, local_scale=0.1, seed=seed)
    g = torch.linspace(0.0, 1.0, 201, dtype=DT)
    on_grid = paths(torch.cartesian_prod(g, g))  # 8 x 40401 x 2
    grid_best = on_grid[..., 0].masked_fill(on_grid[..., 1] < 0, -1.0).max(dim=1).values
    before = paths.per_draw(starts.unsqueeze(1))[:, 0]
    after = paths.per_draw(refined.unsqueeze(1))[:, 0]
    assert bool((after[:, 1] >= 0).all())  # feasible in its own draw
    assert bool((after[:, 0] >= before[:, 0]).all())  # never worse than the start
    assert float((grid_best - after[:, 0]).max()) < 1e-4  # start gaps reach 2e-3
    assert torch.equal(refined, refine_on_draws(paths, starts, W, G, B, 0.1, seed=seed))


def test_refinement_moves_an_infeasible_start_to_feasibility(bucket_problem):
    snap = bucket_problem[0]
    paths = snap.paths(4, 7)
    starts = t([[0.95, 0.5]] * 4)  # x0 > 0.55 breaks the guardrail in every draw
    assert bool((paths.per_draw(starts.unsqueeze(1))[:, 0, 1] < 0).all())
    refined = refine_on_draws(paths, starts, W, G, B, local_scale=0.5, seed=0,
                              fixed_features={1: 0.5})
    assert bool((refined[:, 1] == 0.5).all())
    assert bool((paths.per_draw(refined.unsqueeze(1))[:, 0, 1] >= 0).all())
    with pytest.raises(InputDataError):
        refine_on_draws(paths, starts[:3], W, G, B, 0.1, seed=0)


def test_refined_proposals_sit_closer_to_the_boundary_optimum(bucket_problem):
    """The constrained optimum is (0.55, 0.5) with objective 0.02775, on the guardrail."""
    for seed in range(3):
        plain = _propose(bucket_problem, seed=seed)[:1]
        refined = _propose(bucket_problem, seed=seed, refine=True)
        assert 1 <= refined.shape[0] <= 5
        top = refined[:1]
        assert float(objective_2d(top)) > 0.02755, top
        assert float(guardrail_2d(top)) > -2e-5, top  # on the boundary, up to the GP error
        assert float(objective_2d(top)) >= float(objective_2d(plain)) - 1e-5
