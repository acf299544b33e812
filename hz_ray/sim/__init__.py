"""Simulated A/B platforms: worlds, realism, ground truth and the simulated backend.

- :class:`SimulatedBackend`: a simulated experiment platform over a :class:`World`,
  with seasonality, shocks, sampling noise, delays and other realism
  (:class:`RealismConfig`).
- Worlds: :class:`SmoothWorld`, :class:`ValueModelWorld`,
  :class:`ValueModelParetoWorld`, :class:`TestFunctionWorld`,
  :func:`paper_world`; :func:`make_world` by name.
- :func:`find_optimum`: the true feasible optimum of a world (for benchmarks).
- :mod:`hz_ray.sim.pareto`: the true Pareto front of a Pareto problem
  (:func:`true_pareto_front`), its preferred point, hypervolume scores.
- :class:`SimulatedFactory`: a picklable ``factory(clock) -> SimulatedBackend``.
"""

from __future__ import annotations

from hz_ray.sim.factory import SimulatedFactory
from hz_ray.sim.optimum import Optimum, find_optimum
from hz_ray.sim.pareto import (
    ParetoFront,
    chebyshev_value,
    hypervolume,
    hypervolume_ratio,
    nondominated_mask,
    preferred_optimum,
    true_pareto_front,
)
from hz_ray.sim.realism import RealismConfig
from hz_ray.sim.simulated import SimulatedBackend
from hz_ray.sim.worlds import (
    WORLD_NAMES,
    BenchmarkProblem,
    SmoothWorld,
    TestFunctionWorld,
    ValueModelParetoWorld,
    ValueModelWorld,
    World,
    make_world,
    paper_world,
)

__all__ = [
    "WORLD_NAMES",
    "BenchmarkProblem",
    "Optimum",
    "ParetoFront",
    "RealismConfig",
    "SimulatedBackend",
    "SimulatedFactory",
    "SmoothWorld",
    "TestFunctionWorld",
    "ValueModelParetoWorld",
    "ValueModelWorld",
    "World",
    "chebyshev_value",
    "find_optimum",
    "hypervolume",
    "hypervolume_ratio",
    "make_world",
    "nondominated_mask",
    "paper_world",
    "preferred_optimum",
    "true_pareto_front",
]
