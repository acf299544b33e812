"""A testing kit for drivers and backends (shipped, like BoTorch's ``test_utils``).

Backend wrappers that misbehave on purpose (stragglers, failures), a stand-in
platform behind the file-drop adapter (:class:`FileDropPlatform`), and small
helpers for tests and benchmarks. Nothing here imports Ray or torch.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hz_ray.backends.base import ArmBackend, BackendFactory
from hz_ray.clock import Clock
from hz_ray.errors import TransientError
from hz_ray.records import HourlyReading, parse_arm_id


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


class FileDropPlatform:
    """Plays an experiment platform behind a :class:`~hz_ray.backends.file_drop.FileDropBackend`.

    A thread that, like a real platform, reads the launch and stop requests
    hz-ray drops in ``requests/`` and, once a job hour has passed on ``clock``,
    writes each serving arm's readings of that hour to ``readings/`` (one
    Parquet file per arm and hour, written under a temporary name and renamed).
    An arm serves from the hour its launch request was seen until the hour of
    its stop request. Its test groups show ``lift(params)[metric]`` over the
    control, with sampling noise from a generator seeded per arm and hour.

    Args:
        root: The shared folder (the backend's ``root``).
        clock: The platform's clock (a wall-time clock shared with the job).
        lift: ``params -> {metric: relative delta}``.
        units: Test and control units per group-hour.
        poll_s: Wall seconds between looks at the requests.
    """

    def __init__(self, root: str | Path, clock: Clock,
                 lift: Callable[[Mapping[str, float]], Mapping[str, float]],
                 units: int = 20_000, poll_s: float = 0.05) -> None:
        self.root = Path(root)
        self.clock = clock
        self.lift = lift
        self.units = units
        self.poll_s = poll_s
        self.launched: dict[str, tuple[int, dict[str, float]]] = {}
        self.stopped: dict[str, int] = {}
        self.written: set[tuple[str, str, int]] = set()  # (arm_id, metric, hour)
        self.launch_requests: list[str] = []  # every launch request seen, repeats included
        self._seen: dict[Path, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="file-drop-platform",
                                        daemon=True)
        (self.root / "requests").mkdir(parents=True, exist_ok=True)
        (self.root / "readings").mkdir(parents=True, exist_ok=True)

    def start(self) -> FileDropPlatform:
        """Start playing; returns self."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop playing."""
        self._stop.set()
        self._thread.join(timeout=10)

    def live(self) -> set[str]:
        """Arms served now (launched and not stopped)."""
        return set(self.launched) - set(self.stopped)

    def _loop(self) -> None:
        while not self._stop.is_set():
            hour = math.floor(self.clock.now_hours() + 1e-9)
            self._read_requests(hour)
            self._publish(hour)
            self._stop.wait(self.poll_s)

    def _read_requests(self, hour: int) -> None:
        for path in sorted((self.root / "requests").glob("*.json")):
            mtime = path.stat().st_mtime
            if self._seen.get(path) == mtime:
                continue
            self._seen[path] = mtime
            request = json.loads(path.read_text())
            arm_id = request["arm_id"]
            if request["action"] == "launch":
                self.launch_requests.append(arm_id)
                self.launched.setdefault(arm_id, (max(hour, 0), dict(request["params"])))
            elif request["action"] == "stop" and arm_id in self.launched:
                self.stopped.setdefault(arm_id, max(hour, self.launched[arm_id][0]))

    def _publish(self, hour: int) -> None:
        """Write every serving arm's readings of each complete hour before ``hour``."""
        for arm_id, (first, params) in list(self.launched.items()):
            last = min(hour, self.stopped.get(arm_id, hour))  # exclusive
            lift = self.lift(params)
            for h in range(first, last):
                todo = [m for m in lift if (arm_id, m, h) not in self.written]
                if not todo:
                    continue
                rng = random.Random(f"{arm_id}:{h}")
                rows = []
                for metric in todo:
                    control = 2.0 * (1 + 0.01 * rng.gauss(0, 1))
                    test = control * (1 + lift[metric] + 0.005 * rng.gauss(0, 1))
                    rows.append({"arm_id": arm_id, "hour": h, "metric": metric,
                                 "test_mean": test, "test_var": 4.0, "test_n": self.units,
                                 "control_mean": control, "control_var": 4.0,
                                 "control_n": self.units})
                final = self.root / "readings" / f"{arm_id}-h{h:05d}.parquet"
                tmp = final.with_name(f".{final.name}.tmp")
                pq.write_table(pa.Table.from_pylist(rows), tmp)
                os.replace(tmp, final)
                self.written.update((arm_id, m, h) for m in todo)
