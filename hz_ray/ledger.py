"""Per-arm running aggregates of hourly deltas, idempotent by ``(arm_id, metric, hour)``.

The :class:`Ledger` is the tuner's record R (HyperZero notes 2.4): every arm
ever launched, with its weights, and every accepted hourly delta. Ingest is
idempotent: a record whose key was already accepted with the same values is a
no-op (a worker retried), with different values it is rejected (a platform
restated a published hour; the first value stands, the conflict is reported).
One bad record never stops the others.

Estimates are computed from each arm x metric's deltas in hour order and cached
until new data for that arm x metric arrives, so they are bit-identical for any
arrival order of the distinct records.

The ledger imports neither storage nor pyarrow; :func:`hz_ray.storage.replay_into`
rebuilds it from the event log. It is not thread-safe (one owner: the
optimizer, inside one actor).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hz_ray.delta import Shown, aggregate
from hz_ray.errors import ConfigError, InputDataError, StateError, field_error
from hz_ray.reading_checks import delta_payload, screen_delta
from hz_ray.records import ArmEstimate, HourlyDelta, check_arm_id

if TYPE_CHECKING:
    from hz_ray.config import OptimizerSpec

__all__ = ["ArmInfo", "IngestResult", "Ledger", "RejectedRecord", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

_RECORD_COLUMNS = ("arm_id", "metric", "hour", "mean", "var", "n", "control_var")
_OPTIONAL_COLUMNS = ("control_var",)  # absent from states written before it existed


@dataclass(frozen=True)
class ArmInfo:
    """One registered arm.

    Attributes:
        arm_id: The arm's id.
        params: Its weights by parameter name (a copy; changing it changes nothing).
        registered_hour: Job hour of registration, or ``None`` if not given.
        retired_reason: Why the arm was stopped, or ``None`` while it is live.
    """

    arm_id: str
    params: Mapping[str, float]
    registered_hour: int | None = None
    retired_reason: str | None = None

    @property
    def retired(self) -> bool:
        """True once the arm has been retired."""
        return self.retired_reason is not None


@dataclass(frozen=True)
class RejectedRecord:
    """An item the ledger refused, with the reason.

    Exactly one of ``record`` and ``raw`` is set.

    Attributes:
        record: The refused delta when its fields are valid (an unknown arm or
            metric, a conflicting restatement): the item itself, or a copy of
            exact builtins when its fields were subclasses (e.g. ``numpy.float64``).
            ``None`` when the item is not a valid :class:`HourlyDelta`.
        reason: Why it was refused: the field, the value and the rule.
        raw: When ``record`` is ``None``: the item as strict-JSON data
            (:func:`hz_ray.reading_checks.delta_payload`; non-finite numbers
            as ``"nan"``/``"inf"``/``"-inf"``), else ``None``.
    """

    record: HourlyDelta | None
    reason: str
    raw: Any = None


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one :meth:`Ledger.ingest` call.

    Attributes:
        accepted: New records, in input order.
        duplicates: Records whose key was already accepted with the same values.
        rejected: Refused records with their reasons, in input order.
    """

    accepted: tuple[HourlyDelta, ...] = ()
    duplicates: int = 0
    rejected: tuple[RejectedRecord, ...] = ()


def _same_values(a: HourlyDelta, b: HourlyDelta) -> bool:
    return (a.mean == b.mean and a.var == b.var and a.n == b.n
            and a.control_var == b.control_var)


def _describe(delta: HourlyDelta) -> str:
    return (f"(mean={delta.mean!r}, var={delta.var!r}, n={delta.n!r}, "
            f"control_var={delta.control_var!r})")


class Ledger:
    """Registered arms and their accepted hourly deltas, with cached N-weighted estimates.

    Args:
        metrics: The metric names the job models, unique, non-empty.
        var_floor: Smallest variance of one hour's delta, (relative delta)^2,
            > 0 (see :meth:`hz_ray.delta.DeltaSummary.estimate`).
        min_hours_for_spread: Hours from which the across-hour spread bounds the
            variance from below, >= 2.
        ramp_hours: The first hours of each arm, counted from its registration
            hour (or its first hour of data when it has none), that its estimates
            leave out: hours in which its effect is still growing, whose deltas
            would pull the estimate toward zero. They stay in the ledger (and in
            :meth:`deltas` and :meth:`hours_observed`). 0 keeps every hour.

    Raises:
        ConfigError: A bad metric list, ``var_floor``, ``min_hours_for_spread`` or
            ``ramp_hours``.
    """

    def __init__(
        self, metrics: Sequence[str], var_floor: float, min_hours_for_spread: int = 3,
        ramp_hours: int = 0,
    ) -> None:
        self._metrics = _check_metrics(metrics)
        self._var_floor = _check_positive_floor(var_floor)
        if (
            isinstance(min_hours_for_spread, bool)
            or not isinstance(min_hours_for_spread, int)
            or min_hours_for_spread < 2
        ):
            raise field_error(
                ConfigError, "min_hours_for_spread", min_hours_for_spread, "an integer >= 2")
        self._min_hours = min_hours_for_spread
        if isinstance(ramp_hours, bool) or not isinstance(ramp_hours, int) or ramp_hours < 0:
            raise field_error(ConfigError, "ramp_hours", ramp_hours, "an integer >= 0",
                              "0 keeps every hour of each arm in its estimate.")
        self._ramp_hours = ramp_hours
        self._arms: dict[str, ArmInfo] = {}
        # arm_id -> metric -> hour -> delta
        self._records: dict[str, dict[str, dict[int, HourlyDelta]]] = {}
        self._cache: dict[tuple[str, str], ArmEstimate] = {}
        self._loadings_cache: dict[tuple[str, str], dict[int, float] | None] = {}
        self._version = 0
        self._num_records = 0

    @classmethod
    def for_job(cls, metrics: Sequence[str], optimizer: OptimizerSpec) -> Ledger:
        """The ledger of a job: its metrics and its ``optimizer`` spec's ledger settings.

        Args:
            metrics: The job's modelled metrics.
            optimizer: The job's :class:`~hz_ray.config.OptimizerSpec` (``var_floor``,
                ``ramp_hours``).
        """
        return cls(metrics, var_floor=optimizer.var_floor, ramp_hours=optimizer.ramp_hours)

    # ----------------------------------------------------------------- views
    @property
    def metrics(self) -> tuple[str, ...]:
        """The modelled metrics, in configuration order."""
        return self._metrics

    @property
    def var_floor(self) -> float:
        """The per-hour variance floor."""
        return self._var_floor

    @property
    def version(self) -> int:
        """Counter that bumps on every accepted record."""
        return self._version

    @property
    def num_records(self) -> int:
        """Number of accepted records."""
        return self._num_records

    @property
    def arms(self) -> dict[str, ArmInfo]:
        """Every registered arm, in registration order (a fresh copy)."""
        return {
            arm_id: ArmInfo(arm_id, dict(info.params), info.registered_hour, info.retired_reason)
            for arm_id, info in self._arms.items()
        }

    # ------------------------------------------------------------------ arms
    def register_arm(
        self, arm_id: str, params: Mapping[str, float], hour: int | None = None
    ) -> bool:
        """Register an arm and its weights; idempotent for the same weights.

        Args:
            arm_id: Non-empty id.
            params: Weights by parameter name, finite numbers (stored as floats).
            hour: Job hour of registration (>= 0) or ``None``. A repeated
                registration keeps the first hour.

        Returns:
            True when the arm is new, False for a repeat with the same weights.

        Raises:
            InputDataError: A bad id, weights or hour, or the id is registered
                with different weights.
        """
        _check_arm_id(arm_id)
        clean = _check_params(params)
        if hour is not None and (isinstance(hour, bool) or not isinstance(hour, int) or hour < 0):
            raise field_error(InputDataError, "hour", hour, "an integer hour index >= 0 or None")
        known = self._arms.get(arm_id)
        if known is not None:
            if dict(known.params) != clean:
                raise field_error(
                    InputDataError, "params", clean,
                    f"the weights arm {arm_id!r} was registered with ({dict(known.params)!r})",
                    "Arm ids are permanent; give new weights a new arm id.",
                )
            return False
        self._arms[arm_id] = ArmInfo(arm_id, clean, hour, None)
        self._records[arm_id] = {}
        return True

    def retire_arm(self, arm_id: str, reason: str) -> bool:
        """Mark an arm as stopped; its data stay, and late hours are still accepted.

        Args:
            arm_id: A registered arm.
            reason: Why it stopped (non-empty). A repeated retirement keeps the
                first reason.

        Returns:
            True when the arm was live, False when it was already retired.

        Raises:
            StateError: The arm is not registered.
            InputDataError: ``reason`` is not a non-empty string.
        """
        info = self._require_arm(arm_id)
        if not isinstance(reason, str) or not reason:
            raise field_error(InputDataError, "reason", reason, "a non-empty string")
        if info.retired_reason is not None:
            return False
        self._arms[arm_id] = ArmInfo(arm_id, info.params, info.registered_hour, reason)
        return True

    # ---------------------------------------------------------------- ingest
    def ingest(self, deltas: Iterable[HourlyDelta]) -> IngestResult:
        """Accept new hourly deltas; idempotent per ``(arm_id, metric, hour)``.

        Each item is judged on its own by
        :func:`hz_ray.reading_checks.screen_delta` and then by its key: not an
        :class:`HourlyDelta`, an invalid field (an unpickled delta skips its own
        checks: NaN, ``n = 0``, a string), an unknown arm (register it first) or
        an unknown metric -> rejected with a reason; the key already accepted
        with other values -> rejected, the first accepted value stands (the
        reason names both values); the key already accepted with the same
        values -> counted as a duplicate; otherwise accepted. Late records of
        retired arms are accepted. No item of any type makes this raise.

        Args:
            deltas: The records, in any order.

        Returns:
            The :class:`IngestResult`.

        Raises:
            InputDataError: ``deltas`` itself is not iterable, or iterating it
                fails (nothing is ingested then).
        """
        try:
            items = list(deltas)
        except Exception as exc:  # noqa: BLE001 - the argument, not an item, is wrong
            raise field_error(
                InputDataError, "deltas", Shown.of(deltas), "an iterable of HourlyDelta",
                f"Iterating it failed with {type(exc).__name__}; pass a list of deltas.",
            ) from exc
        accepted: list[HourlyDelta] = []
        rejected: list[RejectedRecord] = []
        duplicates = 0
        for item in items:
            screened = screen_delta(item, known_arms=self._arms, metrics=self._metrics)
            delta = screened.delta
            if delta is None:
                rejected.append(RejectedRecord(None, screened.reason or "invalid",
                                               delta_payload(item)))
                continue
            if screened.reason is not None:
                rejected.append(RejectedRecord(delta, screened.reason))
                continue
            by_hour = self._records[delta.arm_id].setdefault(delta.metric, {})
            known = by_hour.get(delta.hour)
            if known is None:
                by_hour[delta.hour] = delta
                self._cache.pop((delta.arm_id, delta.metric), None)
                self._loadings_cache.pop((delta.arm_id, delta.metric), None)
                self._version += 1
                self._num_records += 1
                accepted.append(delta)
            elif _same_values(known, delta):
                duplicates += 1
            else:
                rejected.append(RejectedRecord(delta, (
                    f"{delta.key!r} with {_describe(delta)} conflicts with the accepted record "
                    f"{_describe(known)}; the first accepted value stands."
                )))
        return IngestResult(tuple(accepted), duplicates, tuple(rejected))

    # ------------------------------------------------------------- estimates
    def deltas(self, arm_id: str, metric: str) -> tuple[HourlyDelta, ...]:
        """The accepted deltas of one arm x metric, in hour order."""
        self._require_arm(arm_id)
        self._require_metric(metric)
        by_hour = self._records[arm_id].get(metric, {})
        return tuple(by_hour[h] for h in sorted(by_hour))

    def estimate(self, arm_id: str, metric: str) -> ArmEstimate | None:
        """N-weighted estimate of one arm x metric, or ``None`` before its first delta.

        Raises:
            StateError: The arm is not registered.
            InputDataError: The metric is not modelled.
        """
        self._require_arm(arm_id)
        self._require_metric(metric)
        key = (arm_id, metric)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        series = self._estimated_deltas(arm_id, metric)
        if not series:
            return None
        result = aggregate(series, self._var_floor, self._min_hours)
        self._cache[key] = result
        return result

    def control_loadings(self, arm_id: str, metric: str) -> dict[int, float] | None:
        r"""How the arm's estimate of ``metric`` loads on each hour's control error.

        The estimate is the N-weighted mean ``sum_t a_t d_t`` with ``a_t = n_t / N``, and
        hour ``t``'s delta carries the shared control error with variance
        ``control_var_t``, so the loading on hour ``t`` is ``a_t * sqrt(control_var_t)``:
        two arms' estimates covary by ``sum_t loading_i[t] * loading_j[t]``.

        Returns:
            ``{hour: loading}`` (lift units), or ``None`` when the arm has no data for the
            metric or some hour did not report the control's share of its variance. Cached
            until new data for the arm x metric arrives, like :meth:`estimate`; do not
            modify the returned dict.

        Raises:
            StateError: The arm is not registered.
            InputDataError: The metric is not modelled.
        """
        key = (arm_id, metric)
        if key in self._loadings_cache:
            return self._loadings_cache[key]
        series = self._estimated_deltas(arm_id, metric)
        loads = None
        if series and all(d.control_var is not None for d in series):
            total = float(sum(d.n for d in series))
            loads = {d.hour: d.n / total * math.sqrt(d.control_var) for d in series}
        self._loadings_cache[key] = loads
        return loads

    def _estimated_deltas(self, arm_id: str, metric: str) -> tuple[HourlyDelta, ...]:
        """The deltas an estimate uses: those after the arm's first ``ramp_hours`` hours.

        An arm with no hour past its ramp yet (a young arm, or one stopped in its
        ramp) is estimated from the hours it has: diluted data are better than
        none. Without them the model would never learn of an arm stopped early,
        and its first hours would not count toward an early guardrail stop (a ramp
        shrinks a harm toward zero, so a harm they show is real).
        """
        series = self.deltas(arm_id, metric)
        if self._ramp_hours == 0 or not series:
            return series
        start = self._arms[arm_id].registered_hour
        if start is None:
            start = series[0].hour
        past_ramp = tuple(d for d in series if d.hour >= start + self._ramp_hours)
        return past_ramp or series

    def estimates(self, arm_id: str) -> dict[str, ArmEstimate]:
        """Estimates of every metric with data (past the ramp) for one arm, in metric order."""
        out: dict[str, ArmEstimate] = {}
        for metric in self._metrics:
            est = self.estimate(arm_id, metric)
            if est is not None:
                out[metric] = est
        return out

    def hours_observed(self, arm_id: str) -> int:
        """Number of distinct hours with a delta of any metric."""
        self._require_arm(arm_id)
        hours: set[int] = set()
        for by_hour in self._records[arm_id].values():
            hours.update(by_hour)
        return len(hours)

    def _require_arm(self, arm_id: str) -> ArmInfo:
        info = self._arms.get(arm_id) if isinstance(arm_id, str) else None
        if info is None:
            raise field_error(
                StateError, "arm_id", arm_id, "a registered arm id",
                "Call register_arm() first.",
            )
        return info

    def _require_metric(self, metric: str) -> None:
        if metric not in self._metrics:
            raise field_error(
                InputDataError, "metric", metric, f"one of {list(self._metrics)!r}",
            )

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot: settings, every arm, every accepted record (columns).

        Records are ordered by arm registration, metric order, then hour, so two
        ledgers with the same content give equal dicts whatever the arrival
        order.
        """
        columns: dict[str, list[Any]] = {name: [] for name in _RECORD_COLUMNS}
        for arm_id in self._arms:
            for metric in self._metrics:
                for delta in self.deltas(arm_id, metric):
                    for name in _RECORD_COLUMNS:
                        columns[name].append(getattr(delta, name))
        return {
            "schema_version": SCHEMA_VERSION,
            "metrics": list(self._metrics),
            "var_floor": self._var_floor,
            "min_hours_for_spread": self._min_hours,
            "ramp_hours": self._ramp_hours,
            "version": self._version,
            "arms": [
                {
                    "arm_id": info.arm_id,
                    "params": dict(info.params),
                    "registered_hour": info.registered_hour,
                    "retired_reason": info.retired_reason,
                }
                for info in self._arms.values()
            ],
            "records": columns,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Ledger:
        """Rebuild a ledger from :meth:`state_dict` output (possibly via JSON).

        Raises:
            StateError: Wrong schema version, or an inconsistent or malformed state.
        """
        if not isinstance(state, Mapping) or state.get("schema_version") != SCHEMA_VERSION:
            got = state.get("schema_version") if isinstance(state, Mapping) else state
            raise field_error(
                StateError, "schema_version", got, f"{SCHEMA_VERSION}",
                "This state was written by another hz-ray version; replay the event log.",
            )
        try:
            ledger = cls(
                state["metrics"], state["var_floor"], state.get("min_hours_for_spread", 3),
                state.get("ramp_hours", 0))
            for arm in state["arms"]:
                ledger.register_arm(arm["arm_id"], arm["params"], arm["registered_hour"])
                if arm["retired_reason"] is not None:
                    ledger.retire_arm(arm["arm_id"], arm["retired_reason"])
            columns = dict(state["records"])
            for name in _OPTIONAL_COLUMNS:
                columns.setdefault(name, [None] * len(columns["arm_id"]))
            lengths = {len(columns[name]) for name in _RECORD_COLUMNS}
            if len(lengths) != 1:
                raise StateError("'records' columns differ in length.", "The state is corrupt.")
            records = [
                HourlyDelta(arm_id=a, metric=m, hour=h, mean=mu, var=v, n=n, control_var=c)
                for a, m, h, mu, v, n, c in zip(
                    *(columns[name] for name in _RECORD_COLUMNS), strict=True)
            ]
        except (KeyError, TypeError, InputDataError, ConfigError) as exc:
            raise StateError(
                f"Malformed ledger state: {exc!s}.",
                "Discard the checkpoint and replay the event log.",
            ) from exc
        result = ledger.ingest(records)
        if result.rejected or result.duplicates:
            first = result.rejected[0].reason if result.rejected else "duplicate keys"
            raise StateError(
                f"Ledger state holds records that do not fit it: {first}",
                "Discard the checkpoint and replay the event log.",
            )
        version = state.get("version", ledger.version)
        if isinstance(version, bool) or not isinstance(version, int) or version < ledger.version:
            raise field_error(StateError, "version", version, f"an integer >= {ledger.version}")
        ledger._version = version
        return ledger


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    if isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise field_error(ConfigError, "metrics", metrics, "a sequence of metric names")
    names = tuple(metrics)
    if not names or any(not isinstance(m, str) or not m for m in names):
        raise field_error(ConfigError, "metrics", list(names), "non-empty metric names")
    if len(set(names)) != len(names):
        raise field_error(ConfigError, "metrics", list(names), "unique metric names")
    return names


def _check_positive_floor(var_floor: float) -> float:
    if (
        isinstance(var_floor, bool)
        or not isinstance(var_floor, (int, float))
        or not math.isfinite(var_floor)
        or var_floor <= 0
    ):
        raise field_error(
            ConfigError, "var_floor", var_floor, "a finite variance > 0",
            "It is the smallest variance of one hour's delta; 1e-4 means an hourly sd of 1%.",
        )
    return float(var_floor)


def _check_arm_id(arm_id: str) -> None:
    check_arm_id(arm_id)  # the one arm-id rule (hz_ray.records)


def _check_params(params: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(params, Mapping):
        raise field_error(InputDataError, "params", params, "a mapping of name -> weight")
    clean: dict[str, float] = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name:
            raise field_error(InputDataError, "params", name, "keyed by non-empty names")
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
        ):
            raise field_error(InputDataError, f"params[{name!r}]", value, "a finite number")
        clean[name] = float(value)
    return clean
