"""The soak's platform (issue 13): the value-model world, bad readings, the fault schedule.

:class:`SoakWorld` runs in one Ray actor (:class:`SoakHost`), created by the
soak's orchestrator so that it outlives a driver kill, on the head node so that
it outlives the worker node: the simulated value-model world with realistic
delays, stragglers, duplicates and late (out-of-order) hours, behind
:class:`benchmarks.reliability.BadReadings`, whose invalid readings are released
by the seeded per-hour schedule (:func:`make_schedule`). It records every
reading key it published and the most arms it served at once (the truth).
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.reliability import KINDS, BadReadings
from benchmarks.soak_platform import CALL_KINDS, Fault
from hz_ray.clock import Clock

REALISM = {"late_fraction": 0.2, "late_max_hours": 3, "duplicate_fraction": 0.1,
           "duplicate_max_lag_hours": 2, "straggler_fraction": 0.1,
           "straggler_delay_hours": 3, "activation_delay_hours": 0.5}


def make_schedule(seed: int, hours: int, *, short: bool, call_timeout_s: float,
                  node_kill: bool, driver_kill: bool) -> list[Fault]:
    """The seeded fault schedule of one soak.

    Every hour (from hour 1): one backend error on a call kind drawn by the seed, one
    hang on another (half shorter than the call timeout, half longer), one bad reading
    (the kinds in turn, so every kind appears) and one arm-worker kill every few hours;
    one central-actor kill per simulated day; the node and driver kills once, mid-run.
    ``short``: a handful of each cheap kind over a few hours.
    """
    rng = random.Random(seed * 7919 + 13)
    out: list[Fault] = []
    reading_i = 0
    for hour in range(1, max(1, hours - 1)):
        call = rng.choice(CALL_KINDS)
        out.append(Fault(f"h{hour}-err-{call}", hour, "backend", call, "error"))
        hcall = rng.choice(CALL_KINDS)
        long = rng.random() < 0.5
        seconds = call_timeout_s * (1.5 if long else 0.3)
        out.append(Fault(f"h{hour}-hang-{hcall}", hour, "backend", hcall, "hang", seconds))
        for _ in range(3 if short else 1):
            out.append(Fault(f"h{hour}-bad-{reading_i}", hour, "reading",
                             how=KINDS[reading_i % len(KINDS)]))
            reading_i += 1
        if (hour % 3 == 2) if short else (hour % 4 == 2):
            out.append(Fault(f"h{hour}-wkill", hour, "worker_kill"))
    days = max(1, math.ceil(hours / 24))
    for day in range(days):
        lo, hi = day * 24 + 3, min(hours - 2, day * 24 + 21)
        if hi >= lo:
            out.append(Fault(f"d{day}-ckill", rng.randint(lo, hi), "central_kill"))
    # the node early enough, and the driver by mid-run: the job clock runs on while a new
    # driver starts (as a real one would), so a late kill would resume after the end
    if node_kill:
        out.append(Fault("node-kill", max(2, hours // 3), "node_kill"))
    if driver_kill:
        out.append(Fault("driver-kill", max(3, hours // 2), "driver_kill"))
    return sorted(out, key=lambda f: (f.hour, f.fid))


class SoakWorld(BadReadings):
    """The world behind :class:`BadReadings`, whose injections follow the schedule.

    A bad reading of a kind is released at the first fetch after its hour that can
    carry it. Every key the platform returns is recorded (``published``), with the
    platform's own live set (``max_live``).
    """

    def __init__(self, inner: Any, metrics: Sequence[str], job_hours: int,
                 schedule: Sequence[Fault]) -> None:
        super().__init__(inner, metrics, job_hours)
        self.pending = [f for f in schedule if f.kind == "reading"]
        self.fired: list[dict[str, Any]] = []
        self.published: set[tuple[str, str, int]] = set()
        self.live: set[str] = set()
        self.max_live = 0
        self.launches = 0
        self.sticky: dict[str, list[tuple[int, Any]]] = {}
        self.first_launch: set[str] = set()
        self._lock = threading.Lock()

    def _once(self, arm_id: str, kind: str) -> bool:
        now = self.inner.clock.now_hours()
        for i, f in enumerate(self.pending):
            if f.how == kind and f.hour <= now:
                del self.pending[i]
                self.injected[kind] += 1
                self.fired.append({"fid": f.fid, "hour": now, "arm_id": arm_id, "how": kind})
                return True
        return False

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        with self._lock:
            super().launch(arm_id, params)
            # BadReadings (written for a clock that stands on whole hours) takes the ceiling
            # of the launch time; here an arm launched at 0.98 was registered in hour 0, or
            # earlier when its launch was retried: two hours back is before launch for sure.
            # Only the first launch counts (a restarted worker launches its live arm again).
            if arm_id not in self.first_launch:
                self.first_launch.add(arm_id)
                self._launch_hour[arm_id] = max(0, math.floor(self.inner.clock.now_hours()) - 1)
            self.launches += 1
            self.live.add(arm_id)
            self.max_live = max(self.max_live, len(self.live))

    def stop(self, arm_id: str) -> None:
        with self._lock:
            super().stop(arm_id)
            self.live.discard(arm_id)

    def fetch(self, arm_id: str, since_hour: int) -> list[Any]:
        with self._lock:
            seen = {kind: len(keys) for kind, keys in self.injected_keys.items()}
            out = super().fetch(arm_id, since_hour)
            anchor = max([0] + [int(r.hour) for r in out if r.arm_id == arm_id
                                and r.metric in self.metrics and r.hour < 1000])
            fresh = set()
            for kind, keys in self.injected_keys.items():
                new = keys[seen.get(kind, 0):]
                for k in new:
                    fresh.add(id(k[3]))
                    self.sticky.setdefault(arm_id, []).append((anchor, k[3]))
                new_keys = [list(k[:3]) for k in new]
                for f in self.fired:
                    if new_keys and f["how"] == kind and "key" not in f:
                        f["key"] = new_keys.pop(0)
            # A platform keeps what it published: a bad reading comes back with every
            # fetch that covers the hour it was published with (as its valid data does).
            out += [r for hour, r in self.sticky.get(arm_id, ())
                    if hour >= since_hour and id(r) not in fresh]
            for r in out:
                self.published.add((str(r.arm_id), str(r.metric), int(r.hour)))
            return out

    def report(self) -> dict[str, Any]:
        with self._lock:
            returned = [[*k, d.mean, d.var, d.n] for k, d in self.returned.items()]
            return {"published": sorted(self.published), "fired": list(self.fired),
                    "returned": returned,
                    "pending": [f.fid for f in self.pending], "live": sorted(self.live),
                    "max_live": self.max_live, "launches": self.launches}


@dataclass(frozen=True)
class SoakWorldFactory:
    """Builds the :class:`SoakWorld` in the host actor, on the job clock."""

    seed: int
    metrics: tuple[str, ...]
    job_hours: int
    schedule: tuple[Fault, ...] = ()
    realism: Mapping[str, Any] = field(default_factory=lambda: dict(REALISM))

    def __call__(self, clock: Clock) -> SoakWorld:
        """The platform."""
        from hz_ray.sim import RealismConfig, SimulatedBackend, make_world

        inner = SimulatedBackend(make_world("value_model"), clock, seed=self.seed,
                                 realism=RealismConfig(**dict(self.realism)))
        return SoakWorld(inner, self.metrics, self.job_hours, self.schedule)
