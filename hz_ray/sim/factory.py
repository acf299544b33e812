"""A picklable backend factory for the simulated worlds (``factory(clock) -> backend``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hz_ray.backends.base import ArmBackend
from hz_ray.clock import Clock


@dataclass(frozen=True)
class SimulatedFactory:
    """Builds a :class:`~hz_ray.sim.SimulatedBackend` over a named world.

    Drivers build one backend per process (each Ray arm worker calls the
    factory on the job clock), so the factory, not the backend, must pickle.

    Attributes:
        world: A name accepted by :func:`hz_ray.sim.make_world`.
        seed: Seed of the hourly noise (the same in every worker, so every
            worker sees the same control group).
        world_seed: Seed of the world's structure.
        realism: Keyword arguments of :class:`~hz_ray.sim.RealismConfig`.
        backend_kwargs: Other keyword arguments of the backend.
    """

    world: str = "smooth"
    seed: int = 0
    world_seed: int = 0
    realism: Mapping[str, Any] = field(default_factory=dict)
    backend_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, clock: Clock) -> ArmBackend:
        """Build the backend on ``clock``."""
        from hz_ray.sim import RealismConfig, SimulatedBackend, make_world

        realism = RealismConfig(**dict(self.realism))
        return SimulatedBackend(make_world(self.world, self.world_seed), clock, seed=self.seed,
                                realism=realism, **dict(self.backend_kwargs))
