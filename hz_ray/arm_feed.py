"""One live arm's feed: a fetch cursor and the conversion of readings to deltas.

Shared by the local driver and the Ray arm worker, so both read a platform the
same way. The cursor is the first hour for which some metric is still missing;
``fetch(arm_id, since_hour=cursor)`` re-reads only what may still change.
Readings that cannot become a valid delta are returned as rejections with a
reason (never dropped), each one once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from hz_ray.delta import reading_to_delta
from hz_ray.errors import HzRayError
from hz_ray.records import HourlyDelta, HourlyReading, InvalidReading


@dataclass(frozen=True)
class FeedRejection:
    """A reading that could not become a delta, with the reason."""

    payload: dict
    reason: str


@dataclass
class ArmFeed:
    """Fetch cursor and delta conversion for one arm.

    Attributes:
        arm_id: The arm.
        metrics: Metrics the job models; the cursor waits for all of them.
        first_hour: First hour of data the arm can have (its launch hour).
    """

    arm_id: str
    metrics: tuple[str, ...]
    first_hour: int
    _received: dict[int, set[str]] = field(default_factory=dict)
    _rejected_keys: set[tuple[str, object]] = field(default_factory=set)

    @property
    def since_hour(self) -> int:
        """First hour >= ``first_hour`` that still lacks a metric."""
        hour = self.first_hour
        while len(self._received.get(hour, ())) == len(self.metrics):
            hour += 1
        return hour

    @property
    def hours_complete(self) -> int:
        """Hours with every metric received."""
        return sum(1 for got in self._received.values() if len(got) == len(self.metrics))

    def complete_before(self, hour: int) -> bool:
        """True when every hour in ``[first_hour, hour)`` has every metric."""
        return self.since_hour >= hour

    def absorb(
        self, readings: Iterable[HourlyReading | InvalidReading]
    ) -> tuple[list[HourlyDelta], list[FeedRejection]]:
        """Turn fetched readings into deltas.

        Args:
            readings: What ``backend.fetch`` returned.

        Returns:
            ``(deltas, rejections)``; deltas of known metrics and hours, in the
            order read (the ledger de-duplicates); rejections once per key.
        """
        deltas: list[HourlyDelta] = []
        rejections: list[FeedRejection] = []
        for reading in readings:
            if isinstance(reading, InvalidReading):
                raw_key = ("invalid", json.dumps(dict(reading.payload), sort_keys=True,
                                                 default=str))
                if raw_key not in self._rejected_keys:
                    self._rejected_keys.add(raw_key)
                    rejections.append(FeedRejection(dict(reading.payload), reading.reason))
                continue
            key = (getattr(reading, "metric", "?"), getattr(reading, "hour", -1))
            reason = self._problem(reading)
            if reason is None:
                try:
                    delta = reading_to_delta(reading)
                except HzRayError as exc:
                    reason = str(exc)
            if reason is not None:
                if key not in self._rejected_keys:
                    self._rejected_keys.add(key)
                    rejections.append(FeedRejection(_payload(reading), reason))
                continue
            self._received.setdefault(reading.hour, set()).add(reading.metric)
            deltas.append(delta)
        return deltas, rejections

    def _problem(self, reading: object) -> str | None:
        if not isinstance(reading, HourlyReading):
            return f"not an HourlyReading: {type(reading).__name__}"
        if reading.arm_id != self.arm_id:
            return f"fetched for arm {self.arm_id!r} but labelled {reading.arm_id!r}"
        if reading.metric not in self.metrics:
            return f"unknown metric {reading.metric!r}; the job models {list(self.metrics)}"
        if reading.hour < self.first_hour:
            return f"hour {reading.hour} precedes the arm's launch hour {self.first_hour}"
        return None


def _payload(reading: object) -> dict:
    if isinstance(reading, HourlyReading):
        return {"arm_id": reading.arm_id, "hour": reading.hour, "metric": reading.metric,
                "test": vars(reading.test), "control": vars(reading.control)}
    return {"repr": repr(reading)[:500]}
