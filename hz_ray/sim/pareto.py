"""Ground truth for Pareto (multi-objective) benchmark problems.

A Pareto :class:`~hz_ray.sim.world_base.BenchmarkProblem` trades ``k`` metrics
against each other, each with a sign (+1 maximise, -1 minimise). Everything
here works on *signed* deltas ``y_i = s_i * d_i``, so that larger is better in
every coordinate and the control (every delta 0) is the origin.

- :func:`chebyshev_value`: the weighted Chebyshev scalarisation around the
  control that the tuner's readout uses to pick a point of the front.
- :func:`nondominated_mask` and :func:`hypervolume`: BoTorch's Pareto
  utilities on numpy arrays.
- :func:`true_pareto_front`: the feasible front of a world by a dense
  scrambled-Sobol search of its box (as :func:`~hz_ray.sim.optimum.find_optimum`'s
  global stage), :func:`preferred_optimum` on it, and
  :func:`hypervolume_ratio` to score a set of arms against it.

Not fast, not used by the tuner. BoTorch and SciPy are imported on first use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from hz_ray.errors import ConfigError, field_error
from hz_ray.sim.world_base import BenchmarkProblem, World

#: Violation at or below which a point counts as feasible.
FEASIBLE_TOL = 1e-9


def _require_pareto(problem: BenchmarkProblem) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Return the Pareto metrics, their ``(k,)`` signs and ``(k,)`` preference shares."""
    if not problem.is_pareto:
        raise field_error(ConfigError, "problem.pareto", dict(problem.pareto),
                          "a Pareto problem (two or more metrics)",
                          "Build it with BenchmarkProblem.from_pareto(...).")
    names = list(problem.pareto)
    shares = problem.preference_shares
    return (names, np.array([float(problem.pareto[m]) for m in names]),
            np.array([shares[m] for m in names]))


def chebyshev_value(deltas: Mapping[str, float], problem: BenchmarkProblem) -> float:
    """Return the weighted Chebyshev value ``min_i s_i * d_i / (k * lam_i)`` around control.

    Its maximiser over a front is where the ray from the origin along the
    preference shares ``lam`` (normalised to sum 1) meets the front; with equal
    shares the value is simply ``min_i s_i * d_i``.

    Args:
        deltas: Metric -> true relative delta (every Pareto metric present).
        problem: A Pareto problem (signs ``s_i``, preference shares ``lam_i``).

    Returns:
        The value; > 0 exactly when every Pareto metric improves on control.

    Raises:
        ConfigError: When ``problem`` is not a Pareto problem.
    """
    names, signs, shares = _require_pareto(problem)
    d = np.array([float(deltas[m]) for m in names])
    return float(np.min(signs * d / (len(names) * shares)))


def nondominated_mask(values: np.ndarray) -> np.ndarray:
    """Return which rows are not dominated by any other row (maximisation in every column).

    A row is dominated when another is ``>=`` in every column and ``>`` in one.
    Exact duplicates of a non-dominated row are all kept.

    Args:
        values: ``(n, k)`` objective values, larger is better.

    Returns:
        ``(n,)`` boolean mask.
    """
    import torch
    from botorch.utils.multi_objective.pareto import is_non_dominated

    Y = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if Y.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    mask = is_non_dominated(torch.from_numpy(np.ascontiguousarray(Y)), deduplicate=False)
    return mask.numpy().astype(bool)


def hypervolume(points: np.ndarray, ref: Sequence[float] | np.ndarray) -> float:
    """Return the volume dominated by ``points`` and dominating ``ref`` (maximisation).

    The union over rows ``y`` with ``y > ref`` of the boxes ``[ref, y]``;
    rows not better than ``ref`` in every column add nothing. Computed with
    BoTorch's exact :class:`~botorch.utils.multi_objective.hypervolume.Hypervolume`
    (any ``k``; cost grows quickly with ``k``, fine for ``k <= 4``).

    Args:
        points: ``(n, k)`` objective values, larger is better (``n`` may be 0).
        ref: ``(k,)`` reference point.

    Returns:
        The hypervolume, >= 0.
    """
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume

    ref_a = np.asarray(ref, dtype=np.float64).reshape(-1)
    Y = np.asarray(points, dtype=np.float64).reshape(-1, ref_a.size)
    Y = Y[np.all(ref_a < Y, axis=1)]
    if Y.shape[0] == 0:
        return 0.0
    Y = Y[nondominated_mask(Y)]
    hv = Hypervolume(torch.from_numpy(ref_a.copy()))
    return float(hv.compute(torch.from_numpy(np.ascontiguousarray(Y))))


#: The name the brief used: one function for 2-D and n-D.
@dataclass(frozen=True, eq=False)
class ParetoFront:
    """The feasible non-dominated points a dense search found.

    Attributes:
        metrics: The Pareto metrics, ``k`` of them, in the problem's order.
        params: ``n`` parameter mappings (natural units), sorted by the first
            signed objective, ascending.
        values: ``(n, k)`` signed true deltas ``s_i * d_i`` (larger is better).
        deltas: ``n`` mappings metric -> true delta (every world metric).
        n_searched: Points evaluated by the search.
        n_feasible: How many of them were feasible.
    """

    metrics: tuple[str, ...]
    params: list[dict[str, float]]
    values: np.ndarray
    deltas: list[dict[str, float]]
    n_searched: int
    n_feasible: int

    @property
    def hypervolume(self) -> float:
        """Hypervolume of ``values`` with the control (origin) as reference."""
        return hypervolume(self.values, np.zeros(len(self.metrics)))


def true_pareto_front(world: World, problem: BenchmarkProblem | None = None,
                      n_samples: int = 4096, seed: int = 0,
                      fixed: Mapping[str, float] | None = None, *,
                      refine_rounds: int = 3) -> ParetoFront:
    """Search the world's box for the feasible Pareto front of ``problem``.

    Scrambled Sobol points over the free parameters (log or linear per
    parameter, like :func:`~hz_ray.sim.optimum.find_optimum`'s global stage)
    plus the base point; keeps the feasible ones (``violation == 0``) and of
    those the non-dominated subset. Then ``refine_rounds`` local rounds, each
    of ``n_samples // 2`` uniform points in cubes of half-width 0.1, 0.05,
    ... (unit-cube units) around up to 32 current front points and the base:
    tight guardrails leave few feasible points to a global search (value
    model world: about 1% of the box). No gradient polish.

    Args:
        world: The world to search.
        problem: A Pareto problem; defaults to ``world.default_problem``.
        n_samples: Sobol points (rounded up to a power of 2).
        seed: Seed of the scrambled Sobol sequence.
        fixed: Parameters held at given values (e.g. one weight of a
            scale-invariant world); the rest are searched inside ``world.bounds``.
        refine_rounds: Local rounds after the global stage (0 for none).

    Returns:
        The front, sorted by the first signed objective. Empty (and
        ``n_feasible`` 0) only when no searched point is feasible; the base
        point is searched and is feasible in every shipped world.

    Raises:
        ConfigError: On a non-Pareto problem, unknown metrics or parameters, or
            when nothing is free.
    """
    from scipy.stats import qmc

    from hz_ray.sim.optimum import _encode_base, fixed_and_free

    problem = problem or world.default_problem
    problem.check(world.metrics)
    names, signs, _ = _require_pareto(problem)
    fixed, free, base = fixed_and_free(world, fixed)
    logs = np.array([world.log_scale[world.parameter_names[i]] for i in free])
    box = np.array([world.bounds[world.parameter_names[i]] for i in free], dtype=np.float64)
    lows, highs = box[:, 0].copy(), box[:, 1].copy()
    lows[logs], highs[logs] = np.log(lows[logs]), np.log(highs[logs])

    columns = [world.metrics.index(m) for m in names]

    def evaluate(V: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, f) unit-cube points -> (n, d) params, (n, J) deltas, (n, k) signed values."""
        raw = lows + np.clip(V, 0.0, 1.0) * (highs - lows)
        raw[:, logs] = np.exp(raw[:, logs])
        X = np.tile(base, (V.shape[0], 1))
        X[:, free] = raw
        D = world.true_deltas_batch(X)
        return X, D, D[:, columns] * signs

    def front_of(feasible: np.ndarray, Y: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(feasible)
        return idx[nondominated_mask(Y[idx])] if idx.size else idx

    sampler = qmc.Sobol(len(free), scramble=True, seed=np.random.default_rng(seed))
    base_v = _encode_base(world, free, lows, highs, logs)
    V = np.vstack([sampler.random_base2(max(1, math.ceil(math.log2(max(2, n_samples))))),
                   base_v])
    X, D, Y = evaluate(V)
    feasible = _violations(D, world.metrics, problem) <= FEASIBLE_TOL
    rng = np.random.default_rng(seed)
    for r in range(max(0, int(refine_rounds))):
        idx = front_of(feasible, Y)
        idx = idx[np.argsort(Y[idx, 0], kind="stable")]
        centres = np.vstack([V[idx[np.unique(np.linspace(0, idx.size - 1, min(32, idx.size))
                                             .astype(int))]] if idx.size else base_v, base_v])
        n_each = max(1, (n_samples // 2) // centres.shape[0])
        step = 0.1 / 2 ** r
        local = np.repeat(centres, n_each, axis=0) \
            + rng.uniform(-step, step, size=(centres.shape[0] * n_each, len(free)))
        local = np.clip(local, 0.0, 1.0)
        X2, D2, Y2 = evaluate(local)
        V, X, D, Y = (np.vstack([V, local]), np.vstack([X, X2]), np.vstack([D, D2]),
                      np.vstack([Y, Y2]))
        feasible = np.concatenate(
            [feasible, _violations(D2, world.metrics, problem) <= FEASIBLE_TOL])
    idx = front_of(feasible, Y)
    idx = idx[np.argsort(Y[idx, 0], kind="stable")]
    return ParetoFront(
        metrics=tuple(names),
        params=[dict(zip(world.parameter_names, X[i].tolist(), strict=True)) for i in idx],
        values=Y[idx].copy(),
        deltas=[dict(zip(world.metrics, D[i].tolist(), strict=True)) for i in idx],
        n_searched=int(V.shape[0]), n_feasible=int(feasible.sum()))


def _violations(D: np.ndarray, metrics: Sequence[str], problem: BenchmarkProblem) -> np.ndarray:
    """``(n, J)`` deltas -> ``(n,)`` summed violations, as :meth:`BenchmarkProblem.violation`."""
    total = np.zeros(D.shape[0])
    for m, c in problem.min_deltas.items():
        total += np.clip(c - D[:, list(metrics).index(m)], 0.0, None)
    for m, c in problem.max_deltas.items():
        total += np.clip(D[:, list(metrics).index(m)] - c, 0.0, None)
    return total


def preferred_optimum(front: ParetoFront,
                      problem: BenchmarkProblem) -> tuple[dict[str, float], float]:
    """Return the front point with the best Chebyshev value, and that value.

    The best of the searched points only (no polish), so it slightly
    underestimates the true preferred optimum; a finer front
    (``n_samples``) narrows the gap.

    Args:
        front: From :func:`true_pareto_front` for ``problem``.
        problem: The Pareto problem whose preference picks the point.

    Returns:
        ``(params, value)``: parameter mapping and :func:`chebyshev_value` there.

    Raises:
        ConfigError: On an empty front or a non-Pareto problem.
    """
    if not front.params:
        raise field_error(ConfigError, "front", [], "a non-empty Pareto front",
                          "No feasible point was found; search more points.")
    values = [chebyshev_value(d, problem) for d in front.deltas]
    best = int(np.argmax(values))
    return dict(front.params[best]), float(values[best])


def hypervolume_ratio(arms_true_deltas: Sequence[Mapping[str, float]],
                      problem: BenchmarkProblem, front: ParetoFront) -> float:
    """Return HV(feasible arms) / HV(true front), both with the control as reference.

    Arms are scored on their *true* deltas; infeasible arms (violation > 0)
    count for nothing, as do arms not better than control in every Pareto
    metric.

    Args:
        arms_true_deltas: Per arm, metric -> true delta.
        problem: The Pareto problem (signs and guardrails).
        front: From :func:`true_pareto_front` for ``problem``.

    Returns:
        The ratio, usually in ``[0, 1]`` (slightly above 1 when arms beat the
        sampled front); ``nan`` when the front's hypervolume is 0 (no point
        improves every Pareto metric on control).
    """
    names, signs, _ = _require_pareto(problem)
    rows = [[float(d[m]) * s for m, s in zip(names, signs, strict=True)]
            for d in arms_true_deltas if problem.violation(d) <= FEASIBLE_TOL]
    ref = np.zeros(len(names))
    denom = front.hypervolume
    if denom <= 0:
        return math.nan
    return hypervolume(np.array(rows).reshape(-1, len(names)), ref) / denom
