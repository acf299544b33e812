"""The true feasible optimum of a world, for scoring benchmarks.

Dense scrambled-Sobol search of the world's search box (log or linear per
parameter), then a derivative-free constrained polish (SciPy's COBYQA) from
the best few points. Not fast, not used by the tuner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from hz_ray.errors import ConfigError, field_error
from hz_ray.sim.world_base import BenchmarkProblem, World


@dataclass(frozen=True)
class Optimum:
    """The best point found.

    Attributes:
        params: Parameter name -> value (natural units).
        deltas: Metric -> true relative delta at ``params``.
        objective: True objective at ``params`` (relative lift).
        violation: Summed constraint violation at ``params`` (0 when feasible).
        feasible: Whether every constraint holds (violation <= 1e-9).
    """

    params: dict[str, float]
    deltas: dict[str, float]
    objective: float
    violation: float
    feasible: bool


def fixed_and_free(world: World, fixed: Mapping[str, float] | None
                   ) -> tuple[dict[str, float], list[int], np.ndarray]:
    """Check the held parameters; the free ones' indices and the base vector with them set.

    Args:
        world: The world searched.
        fixed: Parameter -> value held fixed, or None.

    Returns:
        ``(fixed, free, base)``: the held values, the indices of the free parameters and
        the ``d``-vector of base parameters with the held values in place.

    Raises:
        ConfigError: On an unknown parameter, a bad value, or nothing left free.
    """
    fixed = dict(fixed or {})
    for name in fixed:
        if name not in world.parameter_names:
            raise field_error(ConfigError, f"fixed.{name}", fixed[name],
                              f"a parameter of world {world.name!r}")
    free = [i for i, p in enumerate(world.parameter_names) if p not in fixed]
    if not free:
        raise field_error(ConfigError, "fixed", fixed, "leaving at least one parameter free")
    base = world.base_vector()
    for name, value in fixed.items():
        base[world.parameter_names.index(name)] = float(value)
    world.validate_params(dict(zip(world.parameter_names, base.tolist(), strict=True)), "fixed")
    return fixed, free, base


def find_optimum(
    world: World,
    problem: BenchmarkProblem | None = None,
    *,
    fixed: Mapping[str, float] | None = None,
    n_samples: int = 4096,
    n_polish: int = 4,
    seed: int = 0,
    method: str = "auto",
) -> Optimum:
    """Search the world's box for the best feasible point of ``problem``.

    Args:
        world: The world to search.
        problem: Objective and guardrails; defaults to ``world.default_problem``.
        fixed: Parameters held at given values (e.g. one weight, to remove the
            scale invariance); the rest are searched inside ``world.bounds``.
        n_samples: Sobol points of the global stage (rounded up to a power of 2).
        n_polish: Best points (feasible first) polished with COBYQA.
        seed: Seed of the scrambled Sobol sequence.
        method: SciPy polish method: ``"COBYQA"`` (derivative-free; right for
            piecewise-constant ranking worlds), ``"SLSQP"`` (finite
            differences; faster on smooth worlds) or ``"auto"`` (COBYQA when
            ``world.piecewise_constant``, else SLSQP).

    Returns:
        The best feasible point found, or the least-violating one (with
        ``feasible=False``) when no feasible point was found.

    Raises:
        ConfigError: On unknown metrics or parameters, or when nothing is free.
    """
    from scipy.stats import qmc

    if method == "auto":
        method = "COBYQA" if world.piecewise_constant else "SLSQP"
    if method not in ("COBYQA", "SLSQP"):
        raise field_error(ConfigError, "method", method, "'auto', 'COBYQA' or 'SLSQP'")
    problem = problem or world.default_problem
    problem.check(world.metrics)
    fixed, free, base = fixed_and_free(world, fixed)

    lows, highs, logs = [], [], []
    for i in free:
        p = world.parameter_names[i]
        lo, hi = world.bounds[p]
        logs.append(world.log_scale[p])
        lows.append(math.log(lo) if logs[-1] else lo)
        highs.append(math.log(hi) if logs[-1] else hi)
    lows_a, highs_a, logs_a = np.array(lows), np.array(highs), np.array(logs)

    def decode(V: np.ndarray) -> np.ndarray:
        """(n, k) unit-cube points -> (n, d) natural parameters."""
        raw = lows_a + np.clip(V, 0.0, 1.0) * (highs_a - lows_a)
        X = np.tile(base, (V.shape[0], 1))
        X[:, free] = np.where(logs_a, np.exp(raw), raw)
        return X

    obj_w = np.array([problem.objective.get(m, 0.0) for m in world.metrics])
    lo_c = [(world.metrics.index(m), c) for m, c in problem.min_deltas.items()]
    hi_c = [(world.metrics.index(m), c) for m, c in problem.max_deltas.items()]

    def slacks(D: np.ndarray) -> np.ndarray:
        """(n, J) deltas -> (n, m) slacks, >= 0 when feasible."""
        cols = [D[:, j] - c for j, c in lo_c] + [c - D[:, j] for j, c in hi_c]
        return np.stack(cols, axis=1) if cols else np.zeros((D.shape[0], 0))

    sampler = qmc.Sobol(len(free), scramble=True, seed=np.random.default_rng(seed))
    V = sampler.random_base2(max(1, math.ceil(math.log2(max(2, n_samples)))))
    V = np.vstack([V, _encode_base(world, free, lows_a, highs_a, logs_a)])
    D = world.true_deltas_batch(decode(V))
    objective = D @ obj_w
    violation = np.clip(-slacks(D), 0.0, None).sum(axis=1)
    order = np.lexsort((-objective, violation > 1e-9))  # feasible first, then best objective
    best_v, best_key = None, (math.inf, -math.inf)

    def consider(v: np.ndarray) -> None:
        nonlocal best_v, best_key
        d = world.true_deltas_batch(decode(v[None, :]))
        viol = float(np.clip(-slacks(d), 0.0, None).sum())
        key = (viol if viol > 1e-9 else 0.0, -float(d[0] @ obj_w))
        if key < best_key:
            best_v, best_key = v.copy(), key

    for idx in order[: max(1, n_polish)]:
        consider(V[idx])
        polished = _polish(world, decode, V[idx], obj_w, slacks, method)
        if polished is not None:
            consider(polished)
    assert best_v is not None
    x = decode(best_v[None, :])[0]
    params = dict(zip(world.parameter_names, x.tolist(), strict=True))
    deltas = world.true_deltas(params)
    viol = problem.violation(deltas)
    return Optimum(params=params, deltas=deltas, objective=problem.objective_value(deltas),
                   violation=viol, feasible=viol <= 1e-9)


def _encode_base(world: World, free: list[int], lows: np.ndarray, highs: np.ndarray,
                 logs: np.ndarray) -> np.ndarray:
    """Return the base point in the unit cube of the free parameters, shape (1, k)."""
    raw = world.base_vector()[free]
    raw = np.where(logs, np.log(raw), raw)
    return np.clip((raw - lows) / (highs - lows), 0.0, 1.0)[None, :]


def _polish(world: World, decode, v0: np.ndarray, obj_w: np.ndarray, slacks,
            method: str) -> np.ndarray | None:
    """Run ``method`` from ``v0`` in the unit cube; return the final point or None on failure."""
    from scipy.optimize import Bounds, NonlinearConstraint, minimize

    memo: dict[bytes, np.ndarray] = {}

    def deltas(v: np.ndarray) -> np.ndarray:
        k = v.tobytes()
        if k not in memo:
            memo.clear()
            memo[k] = world.true_deltas_batch(decode(v[None, :]))
        return memo[k]

    constraints = []
    if slacks(deltas(v0)).shape[1]:
        constraints.append(NonlinearConstraint(lambda v: slacks(deltas(v))[0], 0.0, np.inf))
    options = ({"maxfev": 400, "initial_tr_radius": 0.1, "final_tr_radius": 1e-5}
               if method == "COBYQA" else {"maxiter": 200, "ftol": 1e-12})
    try:
        res = minimize(lambda v: -float(deltas(v)[0] @ obj_w), v0, method=method,
                       bounds=Bounds(0.0, 1.0), constraints=constraints, options=options)
    except (ValueError, RuntimeError):  # pragma: no cover - a failed polish is not fatal
        return None
    return np.clip(res.x, 0.0, 1.0)
