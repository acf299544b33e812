"""A deterministic platform whose arms and publications survive the death of its process.

Used by ``tests/unit/test_kill_points.py``: a job is killed (SIGKILL) and resumed
in a new process, and the platform must remember what the killed process
launched and stopped, as a real one would. Each arm's launch and stop job hour
is kept in one small JSON file (written atomically, under a ``filelock``), so
every process of a job sees one platform.

What it publishes is a pure function of the file: an arm launched in job hour
``L`` and stopped in hour ``S`` (``None`` while live) serves the hours
``L <= h < S``, and hour ``h`` is published once the job clock reaches
``h + 1``, one reading per metric, whose values depend only on ``(arm_id,
metric, h)`` (and the arm's weights, themselves fixed by ``arm_id``).
:func:`published` gives the same readings' keys to the test.

A ``launch`` of a live arm is a no-op; a ``launch`` of a stopped arm is refused
(``ArmStoppedError``) and noted in the file (``relaunched_after_stop``); a ``stop``
of an unknown or stopped arm is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from hz_ray.clock import Clock
from hz_ray.errors import ArmStoppedError
from hz_ray.records import GroupStats, HourlyReading

METRICS = ("views", "likes")
UNITS = 20_000
_CONTROL = {"views": (10.0, 25.0), "likes": (2.0, 4.0)}  # per-unit mean, variance
_EPS = 1e-9


def _unit(*key: object) -> float:
    """A pseudo-random number in [0, 1), a pure function of ``key``."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def _true_delta(metric: str, params: Mapping[str, float]) -> float:
    x = math.log(float(params.get("w_click", 1.0)))
    y = math.log(float(params.get("w_like", 1.0)))
    if metric == "views":
        return 0.03 * math.exp(-((x - 0.4) ** 2 + (y - 0.2) ** 2))
    return -0.02 * x + 0.01 * y


def reading(arm_id: str, metric: str, hour: int, params: Mapping[str, float]) -> HourlyReading:
    """The one reading the platform publishes for ``(arm_id, metric, hour)``."""
    level, var = _CONTROL[metric]
    season = 1.0 + 0.3 * math.sin(2 * math.pi * hour / 24)
    control = level * season * (1 + 0.01 * (_unit("c", metric, hour) - 0.5))
    noise = 0.004 * (_unit("t", arm_id, metric, hour) - 0.5)
    test = control * (1 + _true_delta(metric, params) + noise)
    return HourlyReading(arm_id, hour, metric, GroupStats(test, var, UNITS),
                         GroupStats(control, var, UNITS))


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The platform's file: ``{"arms": {arm_id: {...}}, "relaunched_after_stop": [...]}``."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {"arms": {}, "relaunched_after_stop": []}


def published(state: Mapping[str, Any], until_hour: int) -> set[tuple[str, str, int]]:
    """``(arm_id, metric, hour)`` of every reading served and published by ``until_hour``."""
    out = set()
    for arm_id, arm in state["arms"].items():
        end = arm["stop"] if arm["stop"] is not None else math.inf
        for hour in range(arm["launch"], int(min(end, until_hour))):  # hour + 1 <= until_hour
            out.update((arm_id, metric, hour) for metric in METRICS)
    return out


class KillPlatform:
    """The backend (``launch``/``fetch``/``stop``); every process of a job shares ``state``.

    Args:
        state: The JSON file that holds the platform's arms.
        clock: The job clock (given by the backend factory).
    """

    def __init__(self, state: str, clock: Clock) -> None:
        self.path = Path(state)
        self.clock = clock
        self._lock = FileLock(f"{self.path}.lock")

    def _now(self) -> float:
        return float(self.clock.now_hours())

    def _write(self, state: Mapping[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, sort_keys=True))
        os.replace(tmp, self.path)

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Serve ``params`` from the current job hour on (a live arm: nothing changes)."""
        with self._lock:
            state = load_state(self.path)
            arm = state["arms"].get(arm_id)
            if arm is not None and arm["stop"] is not None:
                state["relaunched_after_stop"].append([arm_id, self._now()])
                self._write(state)
                raise ArmStoppedError(f"arm {arm_id!r} was stopped; it cannot be launched again")
            if arm is None:
                state["arms"][arm_id] = {
                    "launch": math.floor(self._now() + _EPS), "stop": None,
                    "params": {k: float(v) for k, v in params.items()}}
                self._write(state)

    def fetch(self, arm_id: str, since_hour: int) -> list[HourlyReading]:
        """Every published reading of the arm with ``hour >= since_hour``."""
        with self._lock:
            arm = load_state(self.path)["arms"].get(arm_id)
        if arm is None:
            return []
        now = self._now()
        end = arm["stop"] if arm["stop"] is not None else math.inf
        return [reading(arm_id, metric, hour, arm["params"])
                for hour in range(max(arm["launch"], int(since_hour)),
                                  int(min(end, math.floor(now + _EPS))))
                for metric in METRICS]

    def stop(self, arm_id: str) -> None:
        """Stop serving the arm (no-op for an unknown or stopped arm)."""
        with self._lock:
            state = load_state(self.path)
            arm = state["arms"].get(arm_id)
            if arm is None or arm["stop"] is not None:
                return
            arm["stop"] = max(arm["launch"], math.ceil(self._now() - _EPS))
            self._write(state)
