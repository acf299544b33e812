r"""Constrained Thompson sampling over a candidate bucket, and GP-scored proposals.

This is HyperZero's Algorithm 1 (select arms) and Algorithm 3 (propose candidates), on top of
:class:`~hz_ray.surrogate.PosteriorSnapshot`.

Outcome conventions (``m`` metrics, ``c`` constraints):

- A draw ``d`` (an ``m``-vector of metric deltas at one candidate) has the scalar objective
  ``w . d`` with weights ``w`` (``m``,), to be maximised (the optimizer negates ``w`` to
  minimise). In place of ``w`` every function also takes a per-draw scalarisation
  (:class:`~hz_ray.outcomes.ChebyshevDraws`, a Pareto objective): draw ``k`` is then scored
  by its own preference, and everything below holds for that score.
- Constraints are ``G d >= b`` elementwise, with ``G`` (``c x m``) and ``b`` (``c``,); a draw
  is feasible iff every row holds, and its violation is ``sum_i max(0, b_i - (G d)_i)``.
- In each posterior draw the pick is the feasible candidate with the largest objective; if no
  candidate is feasible in that draw, the candidate with the least total violation. Exact ties
  go to the lowest candidate index (so a bucket, listed first, wins ties with proposals).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from hz_ray.errors import ConfigError, InputDataError, field_error
from hz_ray.outcomes import ChebyshevDraws
from hz_ray.surrogate import DTYPE, PosteriorPaths, PosteriorSnapshot

#: The objective of a draw: weights ``w`` (``m``,) or a per-draw scalarisation.
Objective = Tensor | ChebyshevDraws

__all__ = [
    "choose_by_counts",
    "local_search",
    "pick_counts",
    "pick_indices",
    "propose_candidates",
    "refine_on_draws",
]


def _as_tensor(name: str, value: Any, ndim: int) -> Tensor:
    t = torch.as_tensor(value, dtype=DTYPE)
    if t.dim() != ndim:
        raise field_error(InputDataError, f"{name}.shape", tuple(t.shape), f"a {ndim}-dim tensor")
    if not torch.isfinite(t).all():
        raise field_error(InputDataError, name, "a non-finite entry", "finite everywhere")
    return t


def _as_points(name: str, value: Any, d: int) -> Tensor:
    """Validate an ``n x d`` tensor of points in the unit cube (``n`` may be 0)."""
    t = torch.as_tensor(value, dtype=DTYPE)
    if t.numel() == 0:
        return t.reshape(0, d)
    t = _as_tensor(name, t, 2)
    if t.shape[1] != d or t.min() < 0 or t.max() > 1:
        raise field_error(InputDataError, name, tuple(t.shape),
                          f"an n x {d} tensor inside the unit cube")
    return t


def _check_outcome_spec(
    num_metrics: int,
    objective_weights: Any,
    constraint_matrix: Any | None,
    constraint_bounds: Any | None,
) -> tuple[Objective, Tensor, Tensor]:
    """Validate ``w`` (``m``), ``G`` (``c x m``) and ``b`` (``c``); ``None`` means no constraint.

    ``w`` may be a :class:`~hz_ray.outcomes.ChebyshevDraws` over ``m`` metrics instead.
    """
    if isinstance(objective_weights, ChebyshevDraws):
        if objective_weights.num_metrics != num_metrics:
            raise field_error(InputDataError, "objective_weights.num_metrics",
                              objective_weights.num_metrics, f"{num_metrics}, the draws' metrics")
        w: Objective = objective_weights
    else:
        w = _as_tensor("objective_weights", objective_weights, 1)
        if w.shape != (num_metrics,):
            raise field_error(InputDataError, "objective_weights.shape", tuple(w.shape),
                              f"({num_metrics},), one weight per metric")
    if (constraint_matrix is None) != (constraint_bounds is None):
        raise field_error(InputDataError, "constraint_bounds",
                          "given" if constraint_bounds is not None else None,
                          "given exactly when constraint_matrix is given")
    if constraint_matrix is None:
        return w, torch.zeros(0, num_metrics, dtype=DTYPE), torch.zeros(0, dtype=DTYPE)
    G = _as_tensor("constraint_matrix", constraint_matrix, 2)
    b = _as_tensor("constraint_bounds", constraint_bounds, 1)
    if G.shape[1] != num_metrics or b.shape != (G.shape[0],):
        raise field_error(InputDataError, "constraint shapes", (tuple(G.shape), tuple(b.shape)),
                          f"G: c x {num_metrics} and b: c")
    return w, G, b


def pick_indices(
    draws: Tensor,
    objective_weights: Objective,
    constraint_matrix: Tensor | None = None,
    constraint_bounds: Tensor | None = None,
) -> Tensor:
    r"""The candidate picked in each posterior draw (vectorised over draws).

    Args:
        draws: ``K x N x m`` joint draws of the ``m`` metric deltas at ``N`` candidates.
        objective_weights: ``m`` objective weights ``w`` (objective ``w . d``, maximised).
        constraint_matrix: ``c x m`` matrix ``G``, or None for no constraints.
        constraint_bounds: ``c`` bounds ``b`` (feasible iff ``G d >= b``), or None.

    Returns:
        ``K`` long tensor: per draw, the index of the feasible argmax of the objective, or of the
        least total violation when no candidate is feasible; ties go to the lowest index.
    """
    draws = _as_tensor("draws", draws, 3)
    K, N, m = draws.shape
    if K < 1 or N < 1:
        raise field_error(InputDataError, "draws.shape", (K, N, m), "K >= 1 draws, N >= 1 points")
    w, G, b = _check_outcome_spec(m, objective_weights, constraint_matrix, constraint_bounds)
    return _picks(*_draw_scores(draws, w, G, b))


def _draw_scores(draws: Tensor, w: Objective, G: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``(objective, total violation)`` of ``K x ... x m`` draws, each ``K x ...``."""
    objective = w(draws) if isinstance(w, ChebyshevDraws) else draws @ w
    violation = torch.zeros_like(objective)
    for row in range(G.shape[0]):  # one constraint at a time: no ... x c temporary
        violation += (b[row] - draws @ G[row]).clamp_min_(0.0)
    return objective, violation


def _picks(objective: Tensor, violation: Tensor) -> Tensor:
    """Per row of ``K x N`` scores: the feasible argmax, else the least violation.

    Feasible means zero violation, i.e. every constraint row holds; ties go to the lowest index.
    """
    feasible = violation <= 0
    best_feasible = objective.masked_fill(~feasible, -torch.inf).argmax(dim=-1)
    return torch.where(feasible.any(dim=-1), best_feasible, violation.argmin(dim=-1))


def pick_counts(
    draws: Tensor,
    objective_weights: Objective,
    constraint_matrix: Tensor | None = None,
    constraint_bounds: Tensor | None = None,
) -> Tensor:
    r"""Constrained Thompson sampling (Algorithm 1): how often each candidate wins a draw.

    Args:
        draws: ``K x N x m`` joint posterior draws of the metric deltas at ``N`` candidates
            (e.g. :meth:`~hz_ray.surrogate.PosteriorSnapshot.sample`).
        objective_weights: ``m`` objective weights ``w``.
        constraint_matrix: ``c x m`` constraint matrix ``G``, or None.
        constraint_bounds: ``c`` constraint bounds ``b``, or None.

    Returns:
        ``N`` long tensor of pick counts, summing to ``K``. ``counts / K`` estimates each
        candidate's posterior probability of being the best feasible one (infeasible draws
        count for the least-violating candidate).
    """
    picks = pick_indices(draws, objective_weights, constraint_matrix, constraint_bounds)
    return torch.bincount(picks, minlength=draws.shape[1])


#: Perturbation sd of each local-search round, as fractions of ``local_scale``.
REFINE_SCALES = (0.5, 0.2, 0.08)
#: Perturbations per draw in each local-search round.
REFINE_POINTS = 64


def _better(obj_a: Tensor, viol_a: Tensor, obj_b: Tensor, viol_b: Tensor) -> Tensor:
    """Where ``a`` beats ``b`` in one draw: feasible first, then gain, else less violation."""
    feas_a, feas_b = viol_a <= 0, viol_b <= 0
    return torch.where(feas_a & feas_b, obj_a > obj_b,
                       torch.where(feas_a | feas_b, feas_a, viol_a < viol_b))


def local_search(
    score: Callable[[Tensor], tuple[Tensor, Tensor]],
    starts: Tensor,
    local_scale: float,
    seed: int,
    *,
    fixed_features: Mapping[int, float] | None = None,
    scales: tuple[float, ...] = REFINE_SCALES,
    points_per_round: int = REFINE_POINTS,
) -> Tensor:
    r"""Shrinking Gaussian local search of ``K`` independent problems at once.

    Problem ``k`` starts at ``starts[k]``. Each round perturbs the current point
    ``points_per_round`` times (sd ``local_scale * scale`` per coordinate, clamped to the cube,
    fixed features kept) and moves to the best perturbation if it beats the current point:
    feasible (zero violation) beats infeasible, then higher objective; among infeasible
    points, less violation.

    Args:
        score: ``K x M x d`` points -> ``(objective, violation)``, each ``K x M``; problem ``k``
            is scored on row ``k``.
        starts: ``K x d`` start points (unit cube).
        local_scale: Base perturbation sd, unit-cube units, > 0.
        seed: Seed of the perturbations.
        fixed_features: ``{dimension: value}`` held fixed.
        scales: Per round, the perturbation sd as a fraction of ``local_scale``.
        points_per_round: Perturbations per problem and round, >= 1.

    Returns:
        ``K x d``: per problem, a point at least as good as its start.
    """
    points_per_round = _check_count("points_per_round", points_per_round, 1)
    K, d = starts.shape
    gen = torch.Generator().manual_seed(int(seed))
    best = starts.clone()
    best_obj, best_viol = (t[:, 0] for t in score(best.unsqueeze(1)))
    rows = torch.arange(K)
    for scale in scales:
        noise = torch.randn(K, points_per_round, d, generator=gen, dtype=DTYPE)
        trial = (best.unsqueeze(1) + local_scale * scale * noise).clamp(0.0, 1.0)
        for dim_index, value in (fixed_features or {}).items():
            trial[:, :, dim_index] = float(value)
        obj, viol = score(trial)  # K x M
        top = _picks(obj, viol)
        cand_obj, cand_viol = obj[rows, top], viol[rows, top]
        move = _better(cand_obj, cand_viol, best_obj, best_viol)
        best = torch.where(move.unsqueeze(-1), trial[rows, top], best)
        best_obj = torch.where(move, cand_obj, best_obj)
        best_viol = torch.where(move, cand_viol, best_viol)
    return best


def refine_on_draws(
    paths: PosteriorPaths,
    starts: Tensor,
    objective_weights: Objective,
    constraint_matrix: Tensor | None,
    constraint_bounds: Tensor | None,
    local_scale: float,
    seed: int,
    *,
    fixed_features: Mapping[int, float] | None = None,
) -> Tensor:
    r"""Local search on each Thompson sample, from that sample's best candidate.

    Thompson sampling maximises one posterior draw; over a finite candidate set the argmax
    lands near, not on, the draw's constrained optimum, which in a value model usually sits
    on a guardrail boundary. Draw ``k`` is searched by :func:`local_search` from
    ``starts[k]``, every point scored *in draw k*. The draws are functions
    (:class:`~hz_ray.surrogate.PosteriorPaths`), so every evaluation is on the same sample.

    Args:
        paths: ``K`` pathwise posterior draws.
        starts: ``K x d`` start points, one per draw (unit cube).
        objective_weights: ``m`` objective weights.
        constraint_matrix: ``c x m`` constraint matrix, or None.
        constraint_bounds: ``c`` constraint bounds, or None.
        local_scale: Base perturbation sd, unit-cube units, > 0.
        seed: Seed of the perturbations.
        fixed_features: ``{dimension: value}`` held fixed.

    Returns:
        ``K x d``: per draw, a point at least as good as its start in that draw.
    """
    K = paths.num_draws
    starts = _as_points("starts", starts, paths.dim)
    if starts.shape[0] != K:
        raise field_error(InputDataError, "starts.shape", tuple(starts.shape),
                          f"({K}, {paths.dim}): one start per draw")
    w, G, b = _check_outcome_spec(paths.num_metrics, objective_weights, constraint_matrix,
                                  constraint_bounds)
    return local_search(lambda X: _draw_scores(paths.per_draw(X), w, G, b), starts,
                        local_scale, seed, fixed_features=fixed_features)


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise field_error(ConfigError, name, value, f"an integer >= {minimum}")
    return value


def choose_by_counts(counts: Tensor, n: int, seed: int) -> list[int]:
    r"""Choose ``n`` arms to run, with probability proportional to Thompson pick counts.

    If at least ``n`` candidates have a positive count, ``n`` distinct ones are drawn without
    replacement (successive sampling, each step proportional to the counts of those left).
    Otherwise every picked candidate is chosen and the remaining slots repeat the most-picked
    ones: the ``n`` slots are apportioned to the picked candidates in proportion to their
    counts (Sainte-Lague highest averages, at least one slot each), so traffic follows picks.

    Args:
        counts: ``N`` non-negative pick counts (e.g. :func:`pick_counts`), not all zero.
        n: Number of slots to fill, >= 0.
        seed: Seed; the same counts, ``n`` and seed give the same list.

    Returns:
        ``n`` candidate indices. Without replacement: in the order drawn. With repeats: grouped
        by candidate, most-picked first.
    """
    counts = torch.as_tensor(counts)
    if counts.dim() != 1 or counts.is_floating_point() and not torch.isfinite(counts).all():
        raise field_error(InputDataError, "counts", tuple(counts.shape), "a finite 1-dim tensor")
    counts = counts.to(DTYPE)
    n = _check_count("n", n, 0)
    if (counts < 0).any() or (n > 0 and not (counts > 0).any()):
        raise field_error(InputDataError, "counts", counts.tolist(),
                          "non-negative with at least one positive entry")
    if n == 0:
        return []
    positive = (counts > 0).nonzero().reshape(-1)
    if n <= positive.numel():
        gen = torch.Generator().manual_seed(int(seed))
        return [int(i) for i in torch.multinomial(counts, n, replacement=False, generator=gen)]
    # Fewer picked candidates than slots: apportion n slots (Sainte-Lague, >= 1 each).
    order = positive[torch.argsort(-counts[positive], stable=True)]
    votes = counts[order]
    seats = torch.ones_like(votes)
    for _ in range(n - order.numel()):
        seats[int(torch.argmax(votes / (2.0 * seats + 1.0)))] += 1.0
    return [int(i) for i, s in zip(order, seats, strict=True) for _ in range(int(s))]


def _new_rows(existing: Tensor, points: Tensor) -> Tensor:
    """The rows of ``points`` that repeat neither a row of ``existing`` nor an earlier point."""
    pool = torch.cat([existing, points])
    keep = _first_occurrences(pool)
    keep[:existing.shape[0]] = True
    return pool[existing.shape[0]:][keep[existing.shape[0]:]]


def _first_occurrences(X: Tensor) -> Tensor:
    """Boolean mask of rows of ``X`` (``n x d``) that do not repeat an earlier row exactly."""
    _, inverse = torch.unique(X, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), X.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(X.shape[0]), reduce="amin")
    mask = torch.zeros(X.shape[0], dtype=torch.bool)
    mask[first] = True
    return mask


def propose_candidates(
    snapshot: PosteriorSnapshot,
    bucket_X: Tensor,
    anchors_X: Tensor,
    objective_weights: Objective,
    constraint_matrix: Tensor | None,
    constraint_bounds: Tensor | None,
    num_proposals: int,
    num_draws: int,
    max_added: int,
    local_scale: float,
    seed: int,
    *,
    fixed_features: Mapping[int, float] | None = None,
    refine: bool = False,
    num_features: int | None = None,
    training_rows: Tensor | None = None,
) -> Tensor:
    r"""GP-scored candidate proposal (Algorithm 3): new points that win Thompson draws.

    ``num_proposals`` points are generated: ``ceil(P/2)`` scrambled Sobol points over the cube
    and ``floor(P/2)`` Gaussian perturbations (sd ``local_scale`` per coordinate, clamped to the
    cube) around the anchors, cycled in order (all Sobol when there is no anchor). Proposals
    that repeat a bucket point or an earlier proposal are dropped. The rest are scored jointly
    with the bucket by ``num_draws`` posterior draws (the new points have no data: the GP
    interpolates them): per draw, the feasible argmax (or least violation) over
    bucket + proposals wins. The proposals that won at least one draw are returned, most wins
    first (ties: generation order), at most ``max_added``.

    With ``refine``, the draws are pathwise functions and each draw's winner (bucket point or
    proposal) is improved by :func:`refine_on_draws` on that same draw; the refined points
    replace the proposals and are ranked by the draws they win among bucket + refined points.

    Args:
        snapshot: Posterior to score with.
        bucket_X: ``B x d`` current candidates (unit cube), ``B >= 0``.
        anchors_X: ``a x d`` centres of the local proposals (the incumbent(s) and the control),
            ``a >= 0``.
        objective_weights: ``m`` objective weights.
        constraint_matrix: ``c x m`` constraint matrix, or None.
        constraint_bounds: ``c`` constraint bounds, or None.
        num_proposals: Number of points to generate, >= 1.
        num_draws: Number of posterior draws to score with, >= 1.
        max_added: Maximum number of points to return, >= 0.
        local_scale: Standard deviation of local perturbations, in unit-cube units, > 0.
        seed: Seed for the proposals and the draws.
        fixed_features: Optional ``{dimension: value}`` held fixed by the optimizer; proposals
            get these values before scoring, so that the scored points are the points returned.
        refine: Local search on each draw from its winner (see above).
        num_features: Random Fourier features of the pathwise draws with ``refine``
            (default: the snapshot's).
        training_rows: Optional ``B`` indices: the snapshot's training row that each row of
            ``bucket_X`` is, or -1; refined draws there skip the kernel products (same values).

    Returns:
        ``k x d`` proposals, ``k <= max_added`` (``k`` may be 0).
    """
    d = snapshot.dim
    bucket_X = _as_points("bucket_X", bucket_X, d)
    anchors_X = _as_points("anchors_X", anchors_X, d)
    num_proposals = _check_count("num_proposals", num_proposals, 1)
    num_draws = _check_count("num_draws", num_draws, 1)
    max_added = _check_count("max_added", max_added, 0)
    if isinstance(local_scale, bool) or not isinstance(local_scale, (int, float)) or not (
        0 < local_scale < float("inf")
    ):
        raise field_error(ConfigError, "local_scale", local_scale, "a finite number > 0",
                          "E.g. 0.1 perturbs each coordinate by 10% of its range.")
    fixed = dict(fixed_features or {})
    for dim_index, value in fixed.items():
        if not (isinstance(dim_index, int) and 0 <= dim_index < d and 0.0 <= value <= 1.0):
            raise field_error(ConfigError, "fixed_features", {dim_index: value},
                              f"{{dimension in [0, {d}): value in [0, 1]}}")
    _check_outcome_spec(len(snapshot.metrics), objective_weights, constraint_matrix,
                        constraint_bounds)
    if max_added == 0:
        return torch.zeros(0, d, dtype=DTYPE)

    gen = torch.Generator().manual_seed(int(seed))
    sobol_seed, draw_seed = (int(s) for s in torch.randint(0, 2**62, (2,), generator=gen))
    num_local = num_proposals // 2 if anchors_X.shape[0] > 0 else 0
    num_sobol = num_proposals - num_local
    sobol = torch.quasirandom.SobolEngine(d, scramble=True, seed=sobol_seed % 2**31)
    parts = [sobol.draw(num_sobol, dtype=DTYPE)]
    if num_local:
        centres = anchors_X[torch.arange(num_local) % anchors_X.shape[0]]
        noise = torch.randn(num_local, d, generator=gen, dtype=DTYPE)
        parts.append((centres + local_scale * noise).clamp(0.0, 1.0))
    proposals = torch.cat(parts)
    for dim_index, value in fixed.items():
        proposals[:, dim_index] = float(value)

    B = bucket_X.shape[0]
    proposals = _new_rows(bucket_X, proposals)  # the bucket is scored as given
    candidates = torch.cat([bucket_X, proposals])
    if proposals.shape[0] == 0:
        return torch.zeros(0, d, dtype=DTYPE)
    if not refine:
        draws = snapshot.sample(candidates, num_draws, draw_seed)
        counts = pick_counts(draws, objective_weights, constraint_matrix, constraint_bounds)[B:]
        winners = (counts > 0).nonzero().reshape(-1)
        winners = winners[torch.argsort(-counts[winners], stable=True)][:max_added]
        return proposals[winners].clone()
    paths = snapshot.paths(num_draws, draw_seed, num_features)
    rows = None
    if training_rows is not None:
        rows = torch.cat([torch.as_tensor(training_rows, dtype=torch.long),
                          torch.full((proposals.shape[0],), -1, dtype=torch.long)])
    draws = paths(candidates, training_rows=rows)
    picks = pick_indices(draws, objective_weights, constraint_matrix, constraint_bounds)
    refined = refine_on_draws(paths, candidates[picks], objective_weights, constraint_matrix,
                              constraint_bounds, local_scale,
                              seed=int(torch.randint(0, 2**62, (1,), generator=gen)),
                              fixed_features=fixed)
    refined = _new_rows(bucket_X, refined)
    if refined.shape[0] == 0:
        return torch.zeros(0, d, dtype=DTYPE)
    counts = pick_counts(torch.cat([draws[:, :B], paths(refined)], dim=1), objective_weights,
                         constraint_matrix, constraint_bounds)[B:]
    winners = (counts > 0).nonzero().reshape(-1)
    winners = winners[torch.argsort(-counts[winners], stable=True)][:max_added]
    return refined[winners].clone()
