"""RecordedBackend: replay a fixed list of published hourly readings against a clock.

Used to feed two drivers (e.g. ``run_local`` and the Ray layer) exactly the
same data: record the publications of a simulated run once, then replay them.
"""

from __future__ import annotations

import math
import numbers
import threading
from dataclasses import dataclass
from typing import Iterable, Mapping

from hz_ray.clock import Clock
from hz_ray.errors import ArmStoppedError, InputDataError, StateError, field_error
from hz_ray.records import CONTROL_ARM_ID, HourlyReading
from hz_ray.records import check_arm_id as records_check_arm_id


@dataclass(frozen=True)
class Publication:
    """One reading and the job hour at which the platform published it.

    Attributes:
        publish_hour: Job hour (float) from which ``fetch`` returns the reading.
        reading: The reading itself.
    """

    publish_hour: float
    reading: HourlyReading


def check_arm_id(arm_id: object) -> str:
    """Return ``arm_id`` if it is a safe arm id (``records.check_arm_id``) other than control."""
    records_check_arm_id(arm_id)
    if arm_id == CONTROL_ARM_ID:
        raise field_error(InputDataError, "arm_id", arm_id,
                          f"a non-empty string other than {CONTROL_ARM_ID!r}",
                          "The control group is implicit; name test arms e.g. 'arm-0001'.")
    return arm_id


def check_since_hour(since_hour: object) -> int:
    """Return ``since_hour`` as an int if it is an integer hour index >= 0."""
    if isinstance(since_hour, bool) or not isinstance(since_hour, numbers.Integral) \
            or since_hour < 0:
        raise field_error(InputDataError, "since_hour", since_hour,
                          "an integer hour index >= 0", "Pass 0 to fetch everything.")
    return int(since_hour)


class RecordedBackend:
    """An :class:`~hz_ray.backends.base.ArmBackend` that replays recorded publications.

    ``fetch`` returns the recorded readings of the arm with ``hour >= since_hour``
    whose publish hour has passed on ``clock``, in publication order (a
    reading recorded twice is returned twice).

    Args:
        publications: The recording, as :class:`Publication` or
            ``(publish_hour, reading)`` pairs, in any order.
        clock: The clock shared with the driver.
        params: Optional arm id -> the params it was launched with; ``launch``
            then refuses other params for that arm (a replay must match).

    Raises:
        InputDataError: On a non-finite publish hour or a non-reading entry.
    """

    def __init__(self, publications: Iterable[Publication | tuple[float, HourlyReading]],
                 clock: Clock, *, params: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self.clock = clock
        items: list[Publication] = []
        for i, item in enumerate(publications):
            pub = item if isinstance(item, Publication) else Publication(*item)
            if not isinstance(pub.publish_hour, (int, float)) \
                    or not math.isfinite(pub.publish_hour):
                raise field_error(InputDataError, f"publications[{i}].publish_hour",
                                  pub.publish_hour, "a finite job hour")
            if not isinstance(pub.reading, HourlyReading):
                raise field_error(InputDataError, f"publications[{i}].reading",
                                  type(pub.reading).__name__, "an HourlyReading")
            items.append(pub)
        order = sorted(range(len(items)), key=lambda i: (items[i].publish_hour, i))
        self._by_arm: dict[str, list[Publication]] = {}
        for i in order:
            self._by_arm.setdefault(items[i].reading.arm_id, []).append(items[i])
        self._params = {a: dict(p) for a, p in (params or {}).items()}
        self._launched: dict[str, dict[str, float]] = {}
        self._stopped: set[str] = set()
        self._lock = threading.Lock()

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Record the launch; refuse params that differ from the recording's.

        Raises:
            InputDataError: On a bad arm id.
            StateError: When the arm was launched, or recorded, with other params.
            ArmStoppedError: When the arm was stopped on this backend (ids are single-use).
        """
        check_arm_id(arm_id)
        params = dict(params)
        with self._lock:
            if arm_id in self._stopped:
                raise field_error(ArmStoppedError, "arm_id", arm_id, "an arm id not stopped",
                                  "Arm ids are single-use; this arm was stopped.")
            expected = self._launched.get(arm_id, self._params.get(arm_id))
            if expected is not None and expected != params:
                raise field_error(StateError, f"params of arm {arm_id!r}", params,
                                  f"the recorded params {expected!r}",
                                  "A replay must launch the same arms with the same params.")
            self._launched.setdefault(arm_id, params)

    def fetch(self, arm_id: str, since_hour: int) -> list[HourlyReading]:
        """Return the arm's recorded readings with ``hour >= since_hour`` published by now.

        Raises:
            InputDataError: On an arm neither launched nor recorded, or a bad hour.
        """
        since = check_since_hour(since_hour)
        with self._lock:
            if arm_id not in self._launched and arm_id not in self._by_arm:
                raise field_error(InputDataError, "arm_id", arm_id,
                                  "an arm launched on, or recorded by, this backend")
            now = self.clock.now_hours() + 1e-9
            return [p.reading for p in self._by_arm.get(arm_id, ())
                    if p.publish_hour <= now and p.reading.hour >= since]

    def stop(self, arm_id: str) -> None:
        """Mark the arm stopped (idempotent); its readings stay fetchable.

        Stopping an arm this backend never launched is a no-op (the protocol's rule).
        """
        check_arm_id(arm_id)
        with self._lock:
            if arm_id in self._launched:
                self._stopped.add(arm_id)

    @property
    def arm_ids(self) -> tuple[str, ...]:
        """Arms launched so far, in launch order."""
        return tuple(self._launched)


@dataclass(frozen=True)
class RecordedFactory:
    """Builds a :class:`RecordedBackend` replaying fixed publications (picklable).

    Attributes:
        publications: The recording.
    """

    publications: tuple[Publication, ...]

    def __call__(self, clock: Clock) -> RecordedBackend:
        """Build the backend on ``clock``."""
        return RecordedBackend(self.publications, clock)
