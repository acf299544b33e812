"""A testing kit for drivers and backends (shipped, like BoTorch's ``test_utils``).

Backend wrappers that misbehave on purpose (stragglers, failures) and small
helpers for tests and benchmarks. Nothing here imports Ray or torch.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hz_ray.backends.base import ArmBackend
from hz_ray.clock import Clock
from hz_ray.errors import TransientError
from hz_ray.records import HourlyReading, parse_arm_id

BackendFactory = Callable[[Clock], Any]


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
    """Picklable predicate: true for arm ids (``<job>.s<slot>-<seq>``) of the chosen slots."""

    slots: frozenset[int]

    def __call__(self, arm_id: str) -> bool:
        """Return True for arms of the chosen slots."""
        parsed = parse_arm_id(arm_id)
        return parsed is not None and parsed[1] in self.slots


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
