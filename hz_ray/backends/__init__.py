"""Arm backends: the port to an experiment platform, and simulated platforms behind it.

- :class:`ArmBackend` / :class:`GroundTruth`: the protocols (``base.py``).
- :class:`SimulatedBackend`: a simulated A/B platform over a :class:`World`,
  with seasonality, shocks, sampling noise, delays and other realism
  (:class:`RealismConfig`).
- :class:`RecordedBackend`: replays recorded :class:`Publication` s.
- Worlds: :class:`SmoothWorld`, :class:`ValueModelWorld`,
  :class:`TestFunctionWorld`, :func:`paper_world`; :func:`make_world` by name;
  :func:`find_optimum` for the true feasible optimum.
"""

from __future__ import annotations

from hz_ray.backends.base import ArmBackend, GroundTruth
from hz_ray.backends.optimum import Optimum, find_optimum
from hz_ray.backends.realism import RealismConfig
from hz_ray.backends.recorded import Publication, RecordedBackend
from hz_ray.backends.simulated import SimulatedBackend
from hz_ray.backends.worlds import (
    WORLD_NAMES,
    BenchmarkProblem,
    SmoothWorld,
    TestFunctionWorld,
    ValueModelWorld,
    World,
    make_world,
    paper_world,
)

__all__ = [
    "WORLD_NAMES",
    "ArmBackend",
    "BenchmarkProblem",
    "GroundTruth",
    "Optimum",
    "Publication",
    "RealismConfig",
    "RecordedBackend",
    "SimulatedBackend",
    "SmoothWorld",
    "TestFunctionWorld",
    "ValueModelWorld",
    "World",
    "find_optimum",
    "make_world",
    "paper_world",
]
