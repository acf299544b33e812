"""What the posterior service knows of a job besides the GP: arms, rejections, hours.

:class:`JobState` is plain bookkeeping, guarded by the service's lock: every
arm with its slot and lifecycle, the keys of quarantined records (so a retried
batch is not quarantined twice), per-hour counters for progress records, and
the readout logged after every job hour. :meth:`JobState.replay` rebuilds it
from the event log after a restart or on resume.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from hz_ray.records import Recommendation
from hz_ray.service.arm_states import (
    LIVE,
    PROPOSED,
    STOP_FAILED,
    STOPPED,
    STOPPING,
    check_move,
    effective_state,
)
from hz_ray.service.messages import ArmRecord, parse_arm_id
from hz_ray.storage import recommendation_from_event

_REPLAYED_KINDS = ("arm_registered", "arm_state", "arm_retired", "delta_rejected",
                   "recommendation", "job_alarm")


def rejection_key(kind: str, *parts: object) -> str:
    """The de-duplication key of one quarantined record."""
    return json.dumps([kind, *parts], sort_keys=True, default=str)


def logged_rejection_key(row: Mapping[str, Any]) -> str:
    """:func:`rejection_key` of a ``delta_rejected`` event read back from the log."""
    if row.get("payload_json") is not None:
        return rejection_key("raw", json.loads(row["payload_json"]), row["reason"])
    return rejection_key("delta", row["arm_id"], row["metric"], row["hour"], row["mean"],
                         row["var"], row["n"], row.get("control_var"))


@dataclass
class JobState:
    """Arms, rejections and per-hour counters of one job (not thread-safe by itself).

    Attributes:
        job_id: The job's id; arms of other jobs found in the log are foreign.
        arms: Every arm by id, in launch order.
        next_seq: Per slot, the counter of its next arm.
        rejection_keys: Keys of records already quarantined.
        rejected_total: Records quarantined so far (all lives of the job).
        recommendations: The readout logged after each job hour, by hour.
        max_hour: Newest job hour heard of.
        confirmed_live: Arms whose launch the platform accepted (state ``live`` logged).
        metrics_seen: Metrics with at least one accepted delta (any arm).
        first_launch_hour: Job hour of the first arm handed out, or ``None``.
        alarm: Why the job launches no more arms (``job_alarm`` event), or ``None``.
    """

    job_id: str
    arms: dict[str, ArmRecord] = field(default_factory=dict)
    next_seq: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    rejection_keys: set[str] = field(default_factory=set)
    rejected_total: int = 0
    recommendations: dict[int, Recommendation] = field(default_factory=dict)
    max_hour: int = 0
    confirmed_live: set[str] = field(default_factory=set)
    metrics_seen: set[str] = field(default_factory=set)
    first_launch_hour: int | None = None
    alarm: str | None = None
    hour_accepted: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    hour_rejected: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    hour_launched: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    hour_stopped: dict[int, list[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(list))

    # ------------------------------------------------------------- arms
    def live(self) -> list[ArmRecord]:
        """The live arms, in launch order."""
        return [a for a in self.arms.values() if a.live]

    def unsettled(self, slot: int | None = None) -> list[ArmRecord]:
        """Arms the platform may still serve (not stopped nor handed off), in launch order."""
        return [a for a in self.arms.values()
                if not a.settled and (slot is None or a.slot == slot)]

    def stuck_stops(self) -> list[ArmRecord]:
        """Arms whose stop was decided and has failed at least once, not yet stopped."""
        return [a for a in self.arms.values()
                if effective_state(a.state) == STOPPING and a.stop_failures > 0]

    def register(self, record: ArmRecord) -> None:
        """Record a newly handed-out arm."""
        self.arms[record.arm_id] = record
        if record.slot >= 0:
            self.next_seq[record.slot] = max(self.next_seq[record.slot], record.seq + 1)
        self.hour_launched[record.launched_hour].append(record.arm_id)
        if self.first_launch_hour is None or record.launched_hour < self.first_launch_hour:
            self.first_launch_hour = record.launched_hour

    def retire(self, arm_id: str, reason: str, hour: int) -> None:
        """Record that a live arm's stop was decided (its state becomes ``stopping``)."""
        record = self.arms[arm_id]
        state = record.state if record.settled or effective_state(record.state) == STOPPING \
            else STOPPING
        self.arms[arm_id] = replace(record, stopped_hour=int(hour), stop_reason=reason,
                                    state=state)
        self.hour_stopped[int(hour)].append((arm_id, reason))

    def move(self, arm_id: str, state: str, error: str | None = None,
             strict: bool = True, hour: int | None = None) -> bool:
        """Apply a lifecycle step; returns False for a repeat that changes nothing.

        Args:
            arm_id: A known arm.
            state: The new state (:mod:`hz_ray.service.arm_states`).
            error: The error of a failed attempt (``stop_failed``, ``launch_failed``).
            strict: Raise on a step the lifecycle does not allow (replay is lenient:
                the log is the truth, whatever order a crash left it in).
            hour: The job hour of the step; for ``stopped``, the hour in which the
                platform's stop returned (sets :attr:`ArmRecord.served_until`).

        Raises:
            StateError: ``strict`` and the step is not allowed.
        """
        record = self.arms[arm_id]
        if strict:
            check_move(arm_id, record.state, state)
        if state == record.state and state != STOP_FAILED:
            return False
        failures = record.stop_failures + (state == STOP_FAILED)
        served_until = record.served_until
        if state == STOPPED and hour is not None:
            served_until = max(served_until or 0, int(hour) + 1)
        self.arms[arm_id] = replace(record, state=state, stop_failures=failures,
                                    last_error=error if error is not None else record.last_error,
                                    served_until=served_until)
        if state == LIVE:
            self.confirmed_live.add(arm_id)
        return True

    def confirm_live(self, arm_id: str) -> bool:
        """Note that the platform launched a known arm; False if unknown or noted before."""
        if arm_id not in self.arms or arm_id in self.confirmed_live:
            return False
        record = self.arms[arm_id]
        self.confirmed_live.add(arm_id)
        if record.state in (PROPOSED, "launching"):
            self.arms[arm_id] = replace(record, state=LIVE)
        return True

    def quarantine(self, key: str) -> bool:
        """Note a rejection; False when the same record was quarantined before."""
        if key in self.rejection_keys:
            return False
        self.rejection_keys.add(key)
        self.rejected_total += 1
        return True

    def must_wait_for_batch(self, hour: int) -> bool:
        """Synchronous batches: True while an arm launched before ``hour`` is live."""
        return any(a.live and a.launched_hour != hour for a in self.arms.values())

    # ----------------------------------------------------------- replay
    def replay(self, table: pa.Table) -> None:
        """Rebuild from the whole event log (only the small kinds are read whole).

        Args:
            table: The log, as :meth:`hz_ray.storage.EventLog.read` returns it.
        """
        kinds = table.column("kind").to_pylist()
        wanted = [i for i, k in enumerate(kinds) if k in _REPLAYED_KINDS]
        for row in table.take(wanted).to_pylist() if wanted else ():
            kind, arm_id = row["kind"], row["arm_id"]
            if kind == "arm_registered":
                parsed = parse_arm_id(arm_id)
                own = parsed is not None and parsed[0] == self.job_id
                slot, seq = (parsed[1], parsed[2]) if own and parsed else (-1, -1)
                self.register(ArmRecord(arm_id, slot, seq, json.loads(row["params_json"]),
                                        int(row["hour"] or 0)))
            elif kind == "arm_retired" and arm_id in self.arms:
                if self.arms[arm_id].live:
                    self.retire(arm_id, row["reason"], int(row["hour"] or 0))
            elif kind == "arm_state" and arm_id in self.arms and row.get("state"):
                self.move(arm_id, row["state"], row.get("reason"), strict=False,
                          hour=row["hour"])
            elif kind == "delta_rejected":
                self.quarantine(logged_rejection_key(row))
            elif kind == "job_alarm" and self.alarm is None:
                self.alarm = row["reason"]
            elif kind == "recommendation":
                self.recommendations[int(row["hour"])] = recommendation_from_event(row)
        hours = [a.launched_hour for a in self.arms.values()] + list(self.recommendations)
        self.max_hour = max([self.max_hour, *hours])
        self._replay_metrics_seen(table, kinds)

    def _replay_metrics_seen(self, table: pa.Table, kinds: list[str]) -> None:
        """Which metrics have accepted deltas (reads the ``metric`` column only)."""
        metrics = table.column("metric").to_pylist()
        self.metrics_seen.update(m for k, m in zip(kinds, metrics, strict=True)
                                 if k == "delta_accepted" and m is not None)

    def silent_metrics(self, metrics: tuple[str, ...], hour: int, after_hours: int) -> list[str]:
        """Modelled metrics no arm reported ``after_hours`` job hours after the first launch.

        Args:
            metrics: The job's modelled metrics.
            hour: The job hour now.
            after_hours: The silence that raises the alarm (0: never).

        Returns:
            The silent metrics, in configuration order (empty: no alarm).
        """
        if after_hours <= 0 or self.first_launch_hour is None \
                or hour - self.first_launch_hour < after_hours:
            return []
        return [m for m in metrics if m not in self.metrics_seen]
