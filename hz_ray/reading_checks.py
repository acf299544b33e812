"""One validation of readings and deltas at the edge, before idempotency.

A platform's reading is checked here, once, before it may claim its
idempotency key ``(arm_id, metric, hour)``: a bad reading that arrived first
must not shadow the valid one that follows. Every check returns a reason (the
field, the value and why) instead of raising, whatever the object: readings
and deltas that crossed a process boundary were unpickled without their
``__post_init__`` checks and may hold anything.

Rules for a reading of one arm (:func:`check_reading`), in the order applied:

1. it is an :class:`~hz_ray.records.HourlyReading`;
2. it is labelled with the arm it was fetched for;
3. its metric is one the job models;
4. its hour is an integer >= 0 and not before the arm's launch hour;
5. its means and variances are finite numbers (variances may be ``None``),
   variances >= 0, unit counts ``n`` integers in ``[1, 2**53]`` (``bool`` is
   not a count), see :func:`hz_ray.delta.normalize_reading`;
6. the means are in the domain of the relative delta ``X/X0 - 1`` of per-unit
   counts and durations: control mean > 0, test mean >= 0, and a test mean of
   exactly 0 (an hour without activity, kept because dropping it would bias
   the arm upwards) with a test variance of 0 or ``None``, see
   :func:`hz_ray.delta.check_ratio_domain`;
7. the resulting delta (mean, variance, control share) is finite;
8. its hour is not at or after ``data_end`` (the first hour the stopped arm
   did not serve), not in the future (``hour > now_hour``) and not before
   ``oldest_hour`` (past the late-data window).

The rules on the time come last, so a reading with bad values is rejected for
its values whenever it is fetched (one rule, so one report by
:class:`~hz_ray.arm_feed.ArmFeed`); a valid reading of a future hour is
rejected at a poll before its hour and accepted at one after it.

For a delta (:func:`check_delta`, for what arrives at the central service):
an :class:`~hz_ray.records.HourlyDelta` of a known arm and a modelled metric,
with a key of exact strings and an hour in ``[0, 2**63)``, a finite mean,
``var`` and ``control_var`` finite and >= 0 or ``None``, and ``n`` an integer
in ``[1, 2**53]``.

:func:`to_payload` turns any object into strict-JSON data for the log.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

from hz_ray.delta import MAX_UNITS, Shown, normalize_reading, reading_to_delta
from hz_ray.errors import ConfigError, HzRayError, field_error
from hz_ray.records import HourlyDelta, HourlyReading

__all__ = [
    "MAX_HOUR", "ScreenedDelta", "ScreenedReading", "check_delta", "check_reading",
    "delta_payload", "reading_payload", "screen_delta", "screen_reading", "to_payload",
]

#: Largest hour index a delta may carry: the event log stores hours as int64.
MAX_HOUR = 2**63 - 1

_MISSING = object()
_PAYLOAD_DEPTH = 6
_PAYLOAD_ITEMS = 64
_PAYLOAD_CHARS = 1000


@dataclass(frozen=True)
class ScreenedReading:
    """The verdict on one reading.

    Attributes:
        reading: The reading re-built from exact builtins (see
            :func:`hz_ray.delta.normalize_reading`) when valid, else ``None``.
        delta: Its relative delta when valid, else ``None``.
        reason: ``None`` when valid, else why not (field, value, rule).
        rule: Which rule decided: ``"ok"``, ``"type"``, ``"arm"``, ``"metric"``,
            ``"hour"``, ``"before_launch"``, ``"future"``, ``"after_stop"``,
            ``"too_old"``, ``"value"`` or ``"unreadable"``. Time-dependent reasons
            name the current hour; the rule does not change with it.
    """

    reading: HourlyReading | None
    delta: HourlyDelta | None
    reason: str | None
    rule: str


@dataclass(frozen=True)
class ScreenedDelta:
    """The verdict on one delta.

    Attributes:
        delta: The delta when its fields are valid (the object itself when
            every field is an exact builtin, else a copy made of them), even if
            ``reason`` rejects it for its arm or metric; ``None`` when a field is
            invalid or the object is no :class:`~hz_ray.records.HourlyDelta`.
        reason: ``None`` when the delta may be ingested, else why not.
    """

    delta: HourlyDelta | None
    reason: str | None


# ------------------------------------------------------------------ readings


def check_reading(
    reading: object,
    *,
    arm_id: str,
    metrics: tuple[str, ...],
    first_hour: int,
    now_hour: int,
    data_end: int | None,
    oldest_hour: int | None,
) -> str | None:
    """Check one fetched reading of one arm; never raises for any ``reading``.

    Args:
        reading: What the platform returned (any object).
        arm_id: The arm it was fetched for.
        metrics: The metrics the job models.
        first_hour: The arm's launch hour (job hours); earlier hours are invalid.
        now_hour: The current job hour; later hours are in the future.
        data_end: The first hour a stopped arm did not serve (hours at or after
            it are invalid), ``None`` while the arm is live.
        oldest_hour: The oldest hour still accepted (older hours are past the
            late-data window), ``None`` for no limit.

    Returns:
        ``None`` when the reading is valid, else the reason: the field, the value
        and the rule it breaks (see the module docstring for the rules).

    Raises:
        ConfigError: Only for bad settings (a caller's bug), never because of
            ``reading``.
    """
    return screen_reading(
        reading, arm_id=arm_id, metrics=metrics, first_hour=first_hour, now_hour=now_hour,
        data_end=data_end, oldest_hour=oldest_hour,
    ).reason


def screen_reading(
    reading: object,
    *,
    arm_id: str,
    metrics: tuple[str, ...],
    first_hour: int,
    now_hour: int,
    data_end: int | None,
    oldest_hour: int | None,
) -> ScreenedReading:
    """:func:`check_reading` with the normalized reading, its delta and the rule.

    Args and raises as :func:`check_reading`.

    Returns:
        The :class:`ScreenedReading`.
    """
    _check_settings(arm_id, metrics, first_hour, now_hour, data_end, oldest_hour)
    try:
        return _screen_reading(reading, arm_id, metrics, first_hour, now_hour, data_end,
                               oldest_hour)
    except Exception as exc:  # noqa: BLE001 - last resort: a verdict, never a crash
        return _bad("unreadable", f"The reading could not be checked: {type(exc).__name__} "
                                  f"{Shown.text_of(exc)}.")


def _screen_reading(
    reading: object, arm_id: str, metrics: tuple[str, ...], first_hour: int, now_hour: int,
    data_end: int | None, oldest_hour: int | None,
) -> ScreenedReading:
    if not isinstance(reading, HourlyReading):
        return _bad("type", f"Not an HourlyReading: got a {_type_name(reading)} "
                            f"{Shown.repr_of(reading)}.")
    label = _get(reading, "arm_id")
    if not isinstance(label, str) or str.__str__(label) != arm_id:
        shown = "no label" if label is _MISSING else f"labelled {Shown.repr_of(label)}"
        return _bad("arm", f"'arm_id' must be {arm_id!r} (the arm it was fetched for); got "
                           f"{shown}.")
    metric = _get(reading, "metric")
    if not isinstance(metric, str) or str.__str__(metric) not in metrics:
        shown = "none" if metric is _MISSING else Shown.repr_of(metric)
        return _bad("metric", f"'metric' must be one of {list(metrics)!r} (the job's metrics); "
                              f"got {shown}.")
    hour = _get(reading, "hour")
    if hour is _MISSING or isinstance(hour, bool) or not isinstance(hour, int) \
            or int.__index__(hour) < 0:
        shown = "none" if hour is _MISSING else Shown.repr_of(hour)
        return _bad("hour", f"'hour' must be an integer hour index >= 0; got {shown}.")
    hour = int.__index__(hour)
    if hour < first_hour:
        return _bad("before_launch", f"'hour' must be >= {first_hour} (the arm's launch hour); "
                                     f"got {hour}.")
    try:
        clean = normalize_reading(reading)
        delta = reading_to_delta(clean)  # also holds it to the ratio's domain
    except HzRayError as exc:
        return _bad("value", str(exc))
    if data_end is not None and hour >= data_end:
        return _bad("after_stop", f"'hour' must be < {data_end} (the arm stopped serving at "
                                  f"hour {data_end}); got {hour}.")
    if hour > now_hour:
        return _bad("future", f"'hour' must be <= {now_hour} (the current job hour); got "
                              f"{hour}, an hour in the future.")
    if oldest_hour is not None and hour < oldest_hour:
        return _bad("too_old", f"'hour' must be >= {oldest_hour} (older data is past the arm's "
                               f"late-data window); got {hour}.")
    return ScreenedReading(clean, delta, None, "ok")


def _bad(rule: str, reason: str) -> ScreenedReading:
    return ScreenedReading(None, None, reason, rule)


def _check_settings(arm_id: object, metrics: object, first_hour: object, now_hour: object,
                    data_end: object, oldest_hour: object) -> None:
    if type(arm_id) is not str or not arm_id:
        raise field_error(ConfigError, "arm_id", Shown.of(arm_id), "a non-empty string")
    if type(metrics) is not tuple or not all(type(m) is str for m in metrics):
        raise field_error(ConfigError, "metrics", Shown.of(metrics), "a tuple of metric names")
    for name, value, optional in (("first_hour", first_hour, False),
                                  ("now_hour", now_hour, False),
                                  ("data_end", data_end, True),
                                  ("oldest_hour", oldest_hour, True)):
        if value is None and optional:
            continue
        if type(value) is not int:
            raise field_error(ConfigError, name, Shown.of(value),
                              "an int" + (" or None" if optional else ""))


# -------------------------------------------------------------------- deltas


def check_delta(
    delta: object, *, known_arms: Container[str], metrics: Container[str]
) -> str | None:
    """Check one delta before it is ingested; never raises for any ``delta``.

    Args:
        delta: Any object (e.g. an unpickled :class:`~hz_ray.records.HourlyDelta`,
            which skipped its own checks).
        known_arms: The registered arm ids (a set, a dict keyed by id, ...).
        metrics: The modelled metrics.

    Returns:
        ``None`` when the delta may be ingested, else the reason (field, value
        and rule; see the module docstring).
    """
    return screen_delta(delta, known_arms=known_arms, metrics=metrics).reason


def screen_delta(
    delta: object, *, known_arms: Container[str], metrics: Container[str]
) -> ScreenedDelta:
    """:func:`check_delta` with the validated delta; never raises for any ``delta``.

    Args and returns as :func:`check_delta`, but the verdict is a
    :class:`ScreenedDelta`.
    """
    try:
        clean = _clean_delta(delta)
    except HzRayError as exc:
        return ScreenedDelta(None, str(exc))
    except Exception as exc:  # noqa: BLE001 - last resort: a verdict, never a crash
        return ScreenedDelta(None, f"The delta could not be checked: {type(exc).__name__} "
                                   f"{Shown.text_of(exc)}.")
    if not isinstance(clean, HourlyDelta):
        return ScreenedDelta(None, clean)
    try:
        if clean.arm_id not in known_arms:
            return ScreenedDelta(clean, (
                f"arm_id {clean.arm_id!r} is not registered; register_arm() it before "
                "ingesting its deltas."))
        if clean.metric not in metrics:
            shown = list(metrics) if isinstance(metrics, (tuple, list)) else metrics
            return ScreenedDelta(clean, (
                f"metric {clean.metric!r} is not modelled; the job's metrics are {shown!r}."))
    except Exception as exc:  # noqa: BLE001 - an odd container is the caller's; still no crash
        return ScreenedDelta(clean, f"The delta's arm or metric could not be looked up: "
                                    f"{type(exc).__name__} {Shown.text_of(exc)}.")
    return ScreenedDelta(clean, None)


def _clean_delta(delta: object) -> HourlyDelta | str:
    """The delta of exact builtins (``delta`` itself when it already is), or a reason."""
    if not isinstance(delta, HourlyDelta):
        return f"Not an HourlyDelta: got a {_type_name(delta)} {Shown.repr_of(delta)}."
    values: dict[str, Any] = {}
    for name in ("arm_id", "metric", "hour", "mean", "var", "n", "control_var"):
        value = _get(delta, name)
        if value is _MISSING:
            return f"{name!r} is missing or unreadable."
        values[name] = value
    for name in ("arm_id", "metric"):
        value = values[name]
        if not isinstance(value, str) or not value:
            return f"{name!r} must be a non-empty string; got {Shown.repr_of(value)}."
        values[name] = str.__str__(value)
    hour = values["hour"]
    if isinstance(hour, bool) or not isinstance(hour, int) \
            or not 0 <= int.__index__(hour) <= MAX_HOUR:
        return f"'hour' must be an integer hour index in [0, 2**63); got {Shown.repr_of(hour)}."
    values["hour"] = int.__index__(hour)
    for name, optional in (("mean", False), ("var", True), ("control_var", True)):
        value = values[name]
        if value is None and optional:
            continue
        number = _finite_or_none(value)
        if number is None:
            what = "a finite number" + (" >= 0 or None" if optional else "")
            return f"{name!r} must be {what}; got {Shown.repr_of(value)}."
        if optional and number < 0:
            return f"{name!r} must be a variance >= 0 or None; got {number!r}."
        values[name] = number
    n = values["n"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= int.__index__(n) <= MAX_UNITS:
        return f"'n' must be an integer unit count in [1, 2**53]; got {Shown.repr_of(n)}."
    values["n"] = int.__index__(n)
    if type(delta) is HourlyDelta and all(
            type(_get(delta, k)) is type(v) for k, v in values.items()):
        return delta  # already exact: keep the object (callers match records by identity)
    return HourlyDelta(**values)


def _finite_or_none(value: object) -> float | int | None:
    """The exact finite number ``value`` holds, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        number = int.__index__(value)
        try:
            return number if math.isfinite(float(number)) else None
        except OverflowError:
            return None
    number_f = float.__float__(value)
    return number_f if math.isfinite(number_f) else None


# ------------------------------------------------------------------- payloads


def reading_payload(reading: object) -> Any:
    """A fetched item as strict-JSON data for the log; never raises.

    An :class:`~hz_ray.records.HourlyReading` (even one whose attributes are
    missing or odd) becomes ``{"arm_id", "hour", "metric", "test": {"mean",
    "var", "n"}, "control": {...}}`` with the fields it has (a ``"missing"`` list
    names the others), a mapping becomes itself, anything else
    ``{"type", "repr"}``. Values go through :func:`to_payload`.
    """
    try:
        if isinstance(reading, HourlyReading):
            return _fields_payload(reading, ("arm_id", "hour", "metric", "test", "control"),
                                   HourlyReading)
        if isinstance(reading, Mapping):
            return to_payload(reading)
    except Exception:  # noqa: BLE001 - fall back to the repr
        pass
    return {"type": _type_name(reading), "repr": Shown.repr_of(reading)}


def delta_payload(delta: object) -> Any:
    """A delta-like item as strict-JSON data for the log; never raises.

    Like :func:`reading_payload`, for :class:`~hz_ray.records.HourlyDelta`
    fields (``arm_id``, ``metric``, ``hour``, ``mean``, ``var``, ``n``,
    ``control_var``).
    """
    try:
        if isinstance(delta, HourlyDelta):
            return _fields_payload(
                delta, ("arm_id", "metric", "hour", "mean", "var", "n", "control_var"),
                HourlyDelta)
        if isinstance(delta, Mapping):
            return to_payload(delta)
    except Exception:  # noqa: BLE001 - fall back to the repr
        pass
    return {"type": _type_name(delta), "repr": Shown.repr_of(delta)}


def _fields_payload(obj: object, names: tuple[str, ...], cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    missing: list[str] = []
    for name in names:
        value = _get(obj, name)
        if value is _MISSING:
            missing.append(name)
        elif name in ("test", "control") and dataclasses.is_dataclass(value) \
                and not isinstance(value, type):
            out[name] = {k: to_payload(v) for k, v in _group_items(value)}
            if len(out[name]) < 3:
                missing.extend(f"{name}.{k}" for k in ("mean", "var", "n") if k not in out[name])
        else:
            out[name] = to_payload(value)
    if missing:
        out["missing"] = missing
    if type(obj) is not cls:
        out["type"] = _type_name(obj)
    return out


def _group_items(stats: object) -> list[tuple[str, Any]]:
    items = []
    for name in ("mean", "var", "n"):
        value = _get(stats, name)
        if value is not _MISSING:
            items.append((name, value))
    return items


def to_payload(value: object, _depth: int = 0) -> Any:
    """Any value as strict-JSON data (``json.dumps(..., allow_nan=False)`` works); never raises.

    ``None``, ``bool``, strings (cut to 1000 characters), integers of up to
    64 bits and finite floats stay as they are (subclasses such as
    ``numpy.float64`` become the builtin); non-finite floats become the strings
    ``"nan"``, ``"inf"`` and ``"-inf"`` (as in the event log); larger integers
    become their decimal string (or a note of their size); mappings (with
    string keys), sequences and sets, and dataclasses (with a ``"type"``) are
    converted item by item, up to 64 items and 6 levels deep; anything else
    becomes its ``repr``, cut short.
    """
    try:
        return _to_payload(value, _depth)
    except Exception:  # noqa: BLE001 - last resort
        return Shown.repr_of(value)


def _to_payload(value: object, depth: int) -> Any:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        text = str.__str__(value)
        return text if len(text) <= _PAYLOAD_CHARS else text[:_PAYLOAD_CHARS] + "..."
    if isinstance(value, int):
        number = int.__index__(value)
        if number.bit_length() <= 63:
            return number
        if number.bit_length() <= 3000:
            return str(number)
        return f"<int of {number.bit_length()} bits>"
    if isinstance(value, float):
        number_f = float.__float__(value)
        if math.isfinite(number_f):
            return number_f
        return "nan" if math.isnan(number_f) else ("inf" if number_f > 0 else "-inf")
    if depth >= _PAYLOAD_DEPTH:
        return Shown.repr_of(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for count, (key, item) in enumerate(value.items()):
            if count >= _PAYLOAD_ITEMS:
                out["..."] = "more items left out"
                break
            name = str.__str__(key) if isinstance(key, str) else Shown.repr_of(key)
            out[name] = to_payload(item, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = []
        for count, item in enumerate(value):
            if count >= _PAYLOAD_ITEMS:
                items.append("... more items left out")
                break
            items.append(to_payload(item, depth + 1))
        return items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields: dict[str, Any] = {"type": _type_name(value)}
        for f in dataclasses.fields(value):
            item = _get(value, f.name)
            if item is not _MISSING:
                fields[f.name] = to_payload(item, depth + 1)
        return fields
    return Shown.repr_of(value)


# -------------------------------------------------------------------- helpers


def _get(obj: object, name: str) -> object:
    """``getattr(obj, name)``, or ``_MISSING`` when it is absent or fails."""
    try:
        return getattr(obj, name)
    except Exception:  # noqa: BLE001 - missing (object.__new__) or a failing property
        return _MISSING


def _type_name(value: object) -> str:
    try:
        name = type(value).__name__
        return name if type(name) is str else "object"
    except Exception:  # noqa: BLE001
        return "object"
