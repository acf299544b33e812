"""A testing kit for the Ray layer: a *shared platform* hosted by a Ray actor.

One backend hosted by a Ray actor that every worker talks to, as with a real
experiment platform, so that a restarted worker finds its arms where it left
them. Backend wrappers and helpers that need no Ray live in :mod:`hz_ray.testing`.

Nothing here imports torch.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hz_ray.backends.base import ArmBackend, BackendFactory
from hz_ray.backends.recorded import Publication
from hz_ray.clock import Clock
from hz_ray.records import HourlyReading


class PlatformHost:
    """One backend for the whole job, hosted in a Ray actor (a stand-in real platform).

    Built lazily on the first call with the job clock, from ``factory``.

    Args:
        factory: Builds the hosted backend.
    """

    def __init__(self, factory: BackendFactory) -> None:
        self.factory = factory
        self.backend: ArmBackend | None = None
        self._lock = threading.Lock()

    def attach(self, clock: Clock) -> None:
        """Build the backend on ``clock`` if not built yet."""
        with self._lock:
            if self.backend is None:
                self.backend = self.factory(clock)

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Forwarded to the hosted backend."""
        assert self.backend is not None
        self.backend.launch(arm_id, params)

    def fetch(self, arm_id: str, since_hour: int) -> list[HourlyReading]:
        """Forwarded to the hosted backend."""
        assert self.backend is not None
        return list(self.backend.fetch(arm_id, since_hour))

    def stop(self, arm_id: str) -> None:
        """Forwarded to the hosted backend."""
        assert self.backend is not None
        self.backend.stop(arm_id)

    def publications(self, arm_id: str, until: float) -> list[Publication]:
        """Every publication of an arm up to job hour ``until`` (simulated backends)."""
        assert self.backend is not None
        return list(self.backend.publications(arm_id, 0, until=until))  # type: ignore[attr-defined]

    def arm_ids(self) -> tuple[str, ...]:
        """Arms launched on the platform."""
        assert self.backend is not None
        return tuple(self.backend.arm_ids)  # type: ignore[attr-defined]


class RemoteBackend:
    """An :class:`ArmBackend` that forwards to a :class:`PlatformHost` actor.

    The host is attached to the job clock on the first call (after the job's
    clock has started; see :meth:`actors.arm_worker.ArmWorker.prepare`).

    Args:
        host: The platform actor's handle.
        clock: The job clock.
        timeout_s: Longest wait per call.
    """

    def __init__(self, host: Any, clock: Clock, timeout_s: float = 60.0) -> None:
        self.host = host
        self.clock = clock
        self.timeout_s = timeout_s
        self._attached = False

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        if not self._attached:
            ray.get(self.host.attach.remote(self.clock), timeout=self.timeout_s)
            self._attached = True
        return ray.get(getattr(self.host, method).remote(*args), timeout=self.timeout_s)

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Launch on the platform."""
        self._call("launch", arm_id, dict(params))

    def fetch(self, arm_id: str, since_hour: int) -> Sequence[HourlyReading]:
        """Fetch from the platform."""
        return self._call("fetch", arm_id, since_hour)

    def stop(self, arm_id: str) -> None:
        """Stop on the platform."""
        self._call("stop", arm_id)


@dataclass(frozen=True)
class SharedPlatformFactory:
    """Connects every worker to one :class:`PlatformHost` actor.

    Attributes:
        host: The platform actor's handle (from :func:`start_platform`).
    """

    host: Any

    def __call__(self, clock: Clock) -> ArmBackend:
        """Return a client of the shared platform."""
        return RemoteBackend(self.host, clock)


def start_platform(factory: BackendFactory, **options: Any) -> Any:
    """Start a :class:`PlatformHost` actor (threaded, ``num_cpus=0``) and return its handle."""
    import ray

    opts = {"num_cpus": 0, "max_concurrency": 16, **options}
    return ray.remote(**opts)(PlatformHost).remote(factory)


