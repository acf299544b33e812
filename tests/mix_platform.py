"""A platform that publishes a Hypothesis mix of valid and invalid readings to one arm.

Used by the driver-level property tests (both drivers): the mix comes from
``tests/unit/test_readings_property.py`` (:func:`reading_mixes`), written for an
arm named ``ARM`` launched at ``FIRST_HOUR``. The platform refuses every launch
before ``FIRST_HOUR`` (so the job's first live arm starts there, on either
driver's clock), relabels the mix's arm to the arm it launched, and at each job
hour ``h`` returns every batch of the mix polled at ``h`` (a driver polling
several times in an hour gets the same batch again: identical re-fetches).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

from hz_ray.clock import Clock
from hz_ray.records import HourlyReading, InvalidReading


def relabel(item: object, old: str, new: str) -> object:
    """``item`` with its arm label ``old`` replaced by ``new`` (no validation runs)."""
    if isinstance(item, (HourlyReading, InvalidReading)) and \
            getattr(item, "arm_id", None) == old:
        clone = copy.copy(item)
        object.__setattr__(clone, "arm_id", new)
        return clone
    return item


class MixPlatform:
    """The backend (``launch``/``fetch``/``stop``) serving one mix."""

    def __init__(self, mix, clock: Clock, arm_label: str, launch_from: int) -> None:
        self.mix = mix
        self.clock = clock
        self.arm_label = arm_label
        self.launch_from = launch_from
        self.live: str | None = None
        self.launches: list[tuple[str, float]] = []

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        now = self.clock.now_hours()
        if now < self.launch_from - 1e-9:
            raise ConnectionError(f"platform closed until hour {self.launch_from}")
        self.launches.append((arm_id, now))
        if self.live is None:
            self.live = arm_id

    def fetch(self, arm_id: str, since_hour: int) -> list[object]:
        if arm_id != self.live:
            return []
        now = math.floor(self.clock.now_hours() + 1e-9)
        return [relabel(item, self.arm_label, arm_id)
                for hour, items in self.mix.fetches() if hour == now for item in items]

    def stop(self, arm_id: str) -> None:
        return None


@dataclass(frozen=True)
class MixFactory:
    """Builds a :class:`MixPlatform` in each Ray worker (picklable with its mix)."""

    mix: object
    arm_label: str
    launch_from: int

    def __call__(self, clock: Clock) -> MixPlatform:
        return MixPlatform(self.mix, clock, self.arm_label, self.launch_from)
