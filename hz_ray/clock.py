"""Clocks that tell a driver and a backend what hour of the job it is.

Time is measured in *job hours*: hours since the job's epoch, as a float.
Hour ``h`` covers ``[h, h + 1)``; its readings can be complete at ``h + 1``.

- :class:`SimClock` is advanced by a driver, one step at a time (``run_local``).
- :class:`AcceleratedClock` runs on wall time, ``seconds_per_hour`` seconds per
  job hour, so asynchrony between Ray actors is real but a 72-hour job takes a
  minute. It is picklable: every process that holds a copy agrees on the hour.
- :class:`WallClock` is real time for a live platform.
"""

from __future__ import annotations

import math
import time
from typing import Protocol, runtime_checkable

from hz_ray.errors import ConfigError, field_error


@runtime_checkable
class Clock(Protocol):
    """Anything that tells the current job hour."""

    def now_hours(self) -> float:
        """Return hours since the job's epoch (fractional)."""
        ...


def current_hour(clock: Clock) -> int:
    """Return the index of the hour in progress, ``floor(now_hours)``."""
    return math.floor(clock.now_hours() + 1e-9)


class SimClock:
    """A clock that only moves when the driver advances it.

    Args:
        start_hours: Job hour at creation, >= 0.
    """

    def __init__(self, start_hours: float = 0.0) -> None:
        if not math.isfinite(start_hours) or start_hours < 0:
            raise field_error(ConfigError, "start_hours", start_hours, "a finite number >= 0")
        self._now = float(start_hours)

    def now_hours(self) -> float:
        """Return the current job hour."""
        return self._now

    def advance(self, hours: float = 1.0) -> float:
        """Move the clock forward.

        Args:
            hours: How far to move, > 0.

        Returns:
            The new job hour.
        """
        if not math.isfinite(hours) or hours <= 0:
            raise field_error(ConfigError, "hours", hours, "a finite number > 0")
        self._now += float(hours)
        return self._now


class AcceleratedClock:
    """Wall time scaled so that one job hour lasts ``seconds_per_hour`` seconds.

    Args:
        seconds_per_hour: Wall seconds per job hour, > 0 (e.g. 0.5).
        epoch_s: Unix time of job hour 0; defaults to now. Pass the same value
            to every process so they agree.
    """

    def __init__(self, seconds_per_hour: float, epoch_s: float | None = None) -> None:
        if not math.isfinite(seconds_per_hour) or seconds_per_hour <= 0:
            raise field_error(
                ConfigError, "seconds_per_hour", seconds_per_hour, "a finite number > 0",
                "Use e.g. 0.5 to run a 72-hour job in about 36 s.",
            )
        self.seconds_per_hour = float(seconds_per_hour)
        self.epoch_s = time.time() if epoch_s is None else float(epoch_s)

    def now_hours(self) -> float:
        """Return the current job hour (may be negative before the epoch)."""
        return (time.time() - self.epoch_s) / self.seconds_per_hour

    def seconds_until(self, hours: float) -> float:
        """Wall seconds until job hour ``hours`` (0 if it has passed)."""
        return max(0.0, (hours - self.now_hours()) * self.seconds_per_hour)


class WallClock(AcceleratedClock):
    """Real time: one job hour is one hour.

    Args:
        epoch_s: Unix time of job hour 0 (the job's start); defaults to now.
    """

    def __init__(self, epoch_s: float | None = None) -> None:
        super().__init__(3600.0, epoch_s)
