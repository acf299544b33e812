"""A testing kit for the Ray layer (shipped, like BoTorch's ``test_utils``).

Picklable backend factories for :func:`~actors.driver.run_on_ray` (each worker
builds its backend from them), backend wrappers that misbehave on purpose
(stragglers, failures), and a *shared platform*: one backend hosted by a Ray
actor that every worker talks to, as with a real experiment platform, so that
a restarted worker finds its arms where it left them.

Nothing here imports torch.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hz_ray.backends.base import ArmBackend
from hz_ray.backends.recorded import Publication, RecordedBackend
from hz_ray.clock import Clock
from hz_ray.errors import TransientError
from hz_ray.records import HourlyReading

BackendFactory = Callable[[Clock], ArmBackend]


@dataclass(frozen=True)
class SimulatedFactory:
    """Builds a :class:`~hz_ray.backends.SimulatedBackend` over a named world.

    Attributes:
        world: A name accepted by :func:`hz_ray.backends.make_world`.
        seed: Seed of the hourly noise (the same in every worker, so every
            worker sees the same control group).
        world_seed: Seed of the world's structure.
        realism: Keyword arguments of :class:`~hz_ray.backends.RealismConfig`.
        backend_kwargs: Other keyword arguments of the backend.
    """

    world: str = "smooth"
    seed: int = 0
    world_seed: int = 0
    realism: Mapping[str, Any] = field(default_factory=dict)
    backend_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, clock: Clock) -> ArmBackend:
        """Build the backend on ``clock``."""
        from hz_ray.backends import RealismConfig, SimulatedBackend, make_world

        realism = RealismConfig(**dict(self.realism))
        return SimulatedBackend(make_world(self.world, self.world_seed), clock, seed=self.seed,
                                realism=realism, **dict(self.backend_kwargs))


@dataclass(frozen=True)
class RecordedFactory:
    """Builds a :class:`~hz_ray.backends.RecordedBackend` replaying fixed publications.

    Attributes:
        publications: The recording.
    """

    publications: tuple[Publication, ...]

    def __call__(self, clock: Clock) -> ArmBackend:
        """Build the backend on ``clock``."""
        return RecordedBackend(self.publications, clock)


class StragglerBackend:
    """Wraps a backend: chosen slots' arms publish late and answer ``fetch`` slowly.

    Args:
        inner: The wrapped backend.
        clock: The job clock.
        is_straggler: Whether an arm id straggles.
        extra_delay_hours: Extra publication delay of a straggler's readings.
        fetch_delay_s: Wall seconds every ``fetch`` of a straggler blocks.
    """

    def __init__(self, inner: ArmBackend, clock: Clock, is_straggler: Callable[[str], bool],
                 extra_delay_hours: float, fetch_delay_s: float) -> None:
        self.inner = inner
        self.clock = clock
        self.is_straggler = is_straggler
        self.extra_delay_hours = extra_delay_hours
        self.fetch_delay_s = fetch_delay_s

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Launch on the inner backend."""
        self.inner.launch(arm_id, params)

    def fetch(self, arm_id: str, since_hour: int) -> Sequence[HourlyReading]:
        """Fetch from the inner backend; stragglers see only readings ``extra_delay_hours`` old."""
        readings = self.inner.fetch(arm_id, since_hour)
        if not self.is_straggler(arm_id):
            return readings
        time.sleep(self.fetch_delay_s)
        cutoff = self.clock.now_hours() - 1.0 - self.extra_delay_hours
        return [r for r in readings if r.hour <= cutoff]

    def stop(self, arm_id: str) -> None:
        """Stop on the inner backend."""
        self.inner.stop(arm_id)


@dataclass(frozen=True)
class SlotSet:
    """Picklable predicate: true for arm ids (``s<slot>-<seq>``) of the chosen slots."""

    slots: frozenset[int]

    def __call__(self, arm_id: str) -> bool:
        """Return True for arms of the chosen slots."""
        from actors.messages import parse_arm_id

        parsed = parse_arm_id(arm_id)
        return parsed is not None and parsed[0] in self.slots


@dataclass(frozen=True)
class StragglerFactory:
    """Wraps another factory's backend in a :class:`StragglerBackend`.

    Attributes:
        inner: The wrapped factory.
        straggler_slots: Slots whose arms straggle.
        extra_delay_hours: Extra publication delay of their readings.
        fetch_delay_s: Wall seconds each of their fetches blocks.
    """

    inner: BackendFactory
    straggler_slots: frozenset[int]
    extra_delay_hours: float = 6.0
    fetch_delay_s: float = 0.0

    def __call__(self, clock: Clock) -> ArmBackend:
        """Build the wrapped backend on ``clock``."""
        return StragglerBackend(self.inner(clock), clock, SlotSet(self.straggler_slots),
                                self.extra_delay_hours, self.fetch_delay_s)


class FlakyBackend:
    """Wraps a backend; calls on chosen arms fail a given number of times.

    Args:
        inner: The wrapped backend.
        failures: ``(method, arm_id) -> number of failures before success``;
            ``math.inf`` fails forever. Methods: ``"launch"``, ``"fetch"``, ``"stop"``.
    """

    def __init__(self, inner: ArmBackend,
                 failures: Mapping[tuple[str, str], float]) -> None:
        self.inner = inner
        self.left = dict(failures)
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _maybe_fail(self, method: str, arm_id: str) -> None:
        with self._lock:
            self.calls.append((method, arm_id))
            left = self.left.get((method, arm_id), 0)
            if left > 0:
                self.left[(method, arm_id)] = left - 1
                raise TransientError(f"simulated {method} failure for {arm_id}", "retry")

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Launch, unless a failure is due."""
        self._maybe_fail("launch", arm_id)
        self.inner.launch(arm_id, params)

    def fetch(self, arm_id: str, since_hour: int) -> Sequence[HourlyReading]:
        """Fetch, unless a failure is due."""
        self._maybe_fail("fetch", arm_id)
        return self.inner.fetch(arm_id, since_hour)

    def stop(self, arm_id: str) -> None:
        """Stop, unless a failure is due."""
        self._maybe_fail("stop", arm_id)
        self.inner.stop(arm_id)


# --------------------------------------------------------------- shared platform


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


def wait_for(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step_s)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
