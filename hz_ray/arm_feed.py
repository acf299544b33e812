"""One live arm's feed: a fetch cursor and the conversion of readings to deltas.

Shared by the local driver and the Ray arm worker, so both read a platform the
same way. The cursor is the first hour for which some metric is still missing;
``fetch(arm_id, since_hour=cursor)`` re-reads only what may still change.

Every reading is checked by :func:`hz_ray.reading_checks.screen_reading`
*before* it may claim its key ``(metric, hour)``, so a bad reading that comes
first never shadows the valid one that follows. Inside the feed the first
valid value of a key stands; readings that cannot become a valid delta, or
that restate a key with other values, are returned as rejections with a
reason (never dropped), each distinct one once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hz_ray.delta import Shown
from hz_ray.errors import ConfigError, field_error
from hz_ray.reading_checks import reading_payload, screen_reading, to_payload
from hz_ray.records import GroupStats, HourlyDelta, HourlyReading, InvalidReading

__all__ = ["ArmFeed", "FeedRejection"]


@dataclass(frozen=True)
class FeedRejection:
    """A fetched item that did not become a delta, with the reason.

    Attributes:
        payload: The raw item as strict-JSON data (non-finite numbers as the
            strings ``"nan"``, ``"inf"``, ``"-inf"``; see
            :func:`hz_ray.reading_checks.reading_payload`).
        reason: Why it was rejected: the field, the value and the rule.
    """

    payload: Any
    reason: str


@dataclass
class ArmFeed:
    """Fetch cursor and delta conversion for one arm.

    Which hours are accepted (see :func:`hz_ray.reading_checks.check_reading`
    for the rules on the values):

    - from ``first_hour`` (the launch hour) to ``now_hour`` (the job hour of the
      poll; later hours are in the future);
    - once the arm stopped, only hours before :attr:`data_end`;
    - the late-data window: while the arm is live there is no age limit (an
      hour may come as late as the platform likes). Once it has stopped, every
      hour it served is accepted as long as the feed is polled within
      ``late_data_hours`` of :attr:`data_end` (``now_hour <= data_end +
      late_data_hours``), and also at the first poll after that (the job may
      have been down, so what that poll sees may have been published within
      the window: the slot's catch-up poll on resume). Polls after that one
      reject every hour as past the window (an identical re-fetch of a value
      already kept still yields its delta). So a delayed hour of a stopped arm
      polled within its window is never rejected for its age. ``None`` turns
      the window off.

    Attributes:
        arm_id: The arm.
        metrics: Metrics the job models; the cursor waits for all of them.
        first_hour: First hour of data the arm can have (its launch hour).
        late_data_hours: Hours after :attr:`data_end` during which a stopped
            arm's data are still accepted (keyword; ``None``: no limit).
        data_end: The first hour the arm did not serve, set by the slot when
            the arm stops; ``None`` while it is live.

    Raises:
        ConfigError: A bad ``arm_id``, ``metrics``, ``first_hour`` or
            ``late_data_hours``.
    """

    arm_id: str
    metrics: tuple[str, ...]
    first_hour: int
    late_data_hours: int | None = field(default=None, kw_only=True)
    data_end: int | None = field(default=None, kw_only=True)
    _received: dict[int, set[str]] = field(default_factory=dict, init=False, repr=False)
    _first: dict[tuple[str, int], tuple[HourlyReading, HourlyDelta]] = field(
        default_factory=dict, init=False, repr=False)
    _reported: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False)
    _last_poll: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if type(self.arm_id) is not str or not self.arm_id:
            raise field_error(ConfigError, "arm_id", Shown.of(self.arm_id), "a non-empty string")
        if isinstance(self.metrics, str):
            raise field_error(ConfigError, "metrics", self.metrics, "a sequence of metric names")
        try:
            names = tuple(self.metrics)
        except TypeError:
            raise field_error(ConfigError, "metrics", Shown.of(self.metrics),
                              "a sequence of metric names") from None
        if not names or any(type(m) is not str or not m for m in names) \
                or len(set(names)) != len(names):
            raise field_error(ConfigError, "metrics", Shown.of(names),
                              "unique non-empty metric names")
        self.metrics = names
        _check_hour_setting("first_hour", self.first_hour, optional=False)
        _check_hour_setting("late_data_hours", self.late_data_hours, optional=True)
        _check_hour_setting("data_end", self.data_end, optional=True)

    @property
    def since_hour(self) -> int:
        """First hour >= ``first_hour`` that still lacks a metric (valid readings only)."""
        hour = self.first_hour
        while len(self._received.get(hour, ())) == len(self.metrics):
            hour += 1
        return hour

    @property
    def hours_complete(self) -> int:
        """Hours with a valid reading of every metric."""
        return sum(1 for got in self._received.values() if len(got) == len(self.metrics))

    def complete_before(self, hour: int) -> bool:
        """True when every hour in ``[first_hour, hour)`` has every metric."""
        return self.since_hour >= hour

    def oldest_hour(self, now_hour: int) -> int | None:
        """The oldest hour a poll at ``now_hour`` accepts; ``None`` for no limit.

        See the class docstring: no limit while the arm is live, within the
        window, or at the first poll past it; :attr:`data_end` (so no hour is
        accepted) at later polls past the window.
        """
        if self.data_end is None or self.late_data_hours is None:
            return None
        window_end = self.data_end + self.late_data_hours
        if now_hour <= window_end or self._last_poll is None or self._last_poll <= window_end:
            return None
        return self.data_end

    def absorb(
        self, readings: Iterable[HourlyReading | InvalidReading], *, now_hour: int
    ) -> tuple[list[HourlyDelta], list[FeedRejection]]:
        """Check fetched readings and turn the valid ones into deltas.

        Never raises because of what ``readings`` holds (any object, a reading
        that skipped validation, a result that is not iterable or fails while
        iterated); a failure becomes a rejection.

        Args:
            readings: What ``backend.fetch`` returned.
            now_hour: The job hour of this poll (keyword).

        Returns:
            ``(deltas, rejections)``. ``deltas``, in the order read: one per valid
            reading. The first valid value of a key ``(metric, hour)`` stands: an
            identical re-fetch of it yields the same delta again (the slot drops
            the ones already acknowledged, the ledger counts the rest as
            duplicates), so a delta lost on the way is sent again. ``rejections``:
            invalid readings, :class:`~hz_ray.records.InvalidReading` rows and
            readings that restate a kept key with other values ("conflicts
            with the first valid value ... (kept)"), each returned once per
            distinct (raw payload, rule): a re-fetch of the same raw row is not
            returned again, a different bad row of the same key is.

        Raises:
            ConfigError: ``now_hour`` or :attr:`data_end` is not an int (a
                caller's bug).
        """
        _check_hour_setting("now_hour", now_hour, optional=False, minimum=None)
        _check_hour_setting("data_end", self.data_end, optional=True)
        oldest = self.oldest_hour(now_hour)
        deltas: list[HourlyDelta] = []
        rejections: list[FeedRejection] = []
        for item in _items(readings, rejections, self):
            self._absorb_one(item, now_hour, oldest, deltas, rejections)
        self._last_poll = now_hour if self._last_poll is None else max(self._last_poll, now_hour)
        return deltas, rejections

    def _absorb_one(self, item: object, now_hour: int, oldest: int | None,
                    deltas: list[HourlyDelta], rejections: list[FeedRejection]) -> None:
        if isinstance(item, InvalidReading):
            payload = to_payload(_get(item, "payload"))
            reason = _get(item, "reason")
            if isinstance(reason, str) and reason:
                reason = str.__str__(reason)
            else:
                reason = f"An invalid reading without a reason text: {Shown.repr_of(reason)}."
            self._reject(payload, "invalid:" + reason, reason, rejections)
            return
        screened = screen_reading(
            item, arm_id=self.arm_id, metrics=self.metrics, first_hour=self.first_hour,
            now_hour=now_hour, data_end=self.data_end, oldest_hour=oldest,
        )
        if screened.rule == "too_old":  # past the window: only a re-fetch of a kept value
            again = screen_reading(
                item, arm_id=self.arm_id, metrics=self.metrics, first_hour=self.first_hour,
                now_hour=now_hour, data_end=self.data_end, oldest_hour=None,
            )
            kept = self._first.get((again.reading.metric, again.reading.hour)) \
                if again.reading is not None else None
            if kept is not None and kept[0] == again.reading:
                deltas.append(kept[1])
                return
        if screened.reading is None or screened.delta is None:
            self._reject(reading_payload(item), screened.rule, screened.reason or "invalid",
                         rejections)
            return
        clean, delta = screened.reading, screened.delta
        key = (clean.metric, clean.hour)
        first = self._first.get(key)
        if first is None:
            self._first[key] = (clean, delta)
            self._received.setdefault(clean.hour, set()).add(clean.metric)
            deltas.append(delta)
        elif first[0] == clean:
            deltas.append(first[1])
        else:
            self._reject(reading_payload(item), "conflict", (
                f"(metric {clean.metric!r}, hour {clean.hour}) with {_values(clean)} conflicts "
                f"with the first valid value {_values(first[0])} (kept)."), rejections)

    def _reject(self, payload: Any, rule: str, reason: str,
                rejections: list[FeedRejection]) -> None:
        try:
            text = json.dumps(payload, sort_keys=True)
        except Exception:  # noqa: BLE001 - to_payload's output always dumps; be sure anyway
            text = Shown.repr_of(payload)
        key = (text, rule)
        if key not in self._reported:
            self._reported.add(key)
            rejections.append(FeedRejection(payload, reason))


def _items(readings: object, rejections: list[FeedRejection], feed: ArmFeed) -> Iterator[Any]:
    """Iterate a fetch result; a result that is not iterable or fails becomes a rejection."""
    try:
        iterator = iter(readings)  # type: ignore[call-overload]
    except Exception:  # noqa: BLE001 - e.g. a backend that returned None
        feed._reject({"type": type(readings).__name__, "repr": Shown.repr_of(readings)},
                     "fetch", f"The fetch result is not an iterable of readings: a "
                              f"{type(readings).__name__}.", rejections)
        return
    count = 0
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a failing generator: keep what was read
            feed._reject({"fetch_error": type(exc).__name__, "after_items": count}, "fetch",
                         f"Reading the fetch result failed after {count} items: "
                         f"{type(exc).__name__} {Shown.text_of(exc)}; the rest is fetched "
                         "again at the next poll.", rejections)
            return
        count += 1
        yield item


def _get(obj: object, name: str) -> object:
    try:
        return getattr(obj, name)
    except Exception:  # noqa: BLE001 - missing or a failing property
        return None


def _values(reading: HourlyReading) -> str:
    return f"test={_stats(reading.test)}, control={_stats(reading.control)}"


def _stats(stats: GroupStats) -> str:
    return f"(mean={stats.mean!r}, var={stats.var!r}, n={stats.n!r})"


def _check_hour_setting(name: str, value: object, *, optional: bool,
                        minimum: int | None = 0) -> None:
    if value is None and optional:
        return
    if type(value) is not int or (minimum is not None and value < minimum):
        what = "an int" if minimum is None else f"an integer >= {minimum}"
        raise field_error(ConfigError, name, Shown.of(value),
                          what + (" or None" if optional else ""))
