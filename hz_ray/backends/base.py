"""The port through which hz-ray drives an experiment platform."""

from __future__ import annotations

from collections.abc import Callable
from typing import Mapping, Protocol, Sequence, runtime_checkable

from hz_ray.clock import Clock
from hz_ray.records import HourlyReading


@runtime_checkable
class ArmBackend(Protocol):
    """How hz-ray launches, reads and stops test arms on an experiment platform.

    The platform runs a fixed control arm (the production weights) all the
    time; every reading of a test arm comes with the control group's statistics
    of the same hour.
    """

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Start serving ``params`` to a fresh test group named ``arm_id``."""
        ...

    def fetch(self, arm_id: str, since_hour: int) -> Sequence[HourlyReading]:
        """Return every published reading of ``arm_id`` with ``hour >= since_hour``.

        Hours may arrive late, out of order, or twice. Readings of a stopped
        arm stay fetchable.
        """
        ...

    def stop(self, arm_id: str) -> None:
        """Stop serving the arm (its published readings stay fetchable)."""
        ...


@runtime_checkable
class GroundTruth(Protocol):
    """Optional extra of simulated worlds: true deltas, for benchmarks only.

    The tuner never calls this; benchmarks and tests use it to score results.
    """

    def true_deltas(self, params: Mapping[str, float]) -> Mapping[str, float]:
        """Return the noise-free relative delta of every metric at ``params``."""
        ...


#: Builds a backend on the job clock, in the process that will use it (each Ray
#: arm worker calls it; it must pickle, the backend need not).
BackendFactory = Callable[[Clock], ArmBackend]
