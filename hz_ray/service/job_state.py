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
from hz_ray.service.messages import ArmRecord, parse_arm_id
from hz_ray.storage import recommendation_from_event

_REPLAYED_KINDS = ("arm_registered", "arm_state", "arm_retired", "delta_rejected",
                   "recommendation")


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
    """

    job_id: str
    arms: dict[str, ArmRecord] = field(default_factory=dict)
    next_seq: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    rejection_keys: set[str] = field(default_factory=set)
    rejected_total: int = 0
    recommendations: dict[int, Recommendation] = field(default_factory=dict)
    max_hour: int = 0
    confirmed_live: set[str] = field(default_factory=set)
    hour_accepted: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    hour_rejected: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    hour_launched: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    hour_stopped: dict[int, list[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(list))

    # ------------------------------------------------------------- arms
    def live(self) -> list[ArmRecord]:
        """The live arms, in launch order."""
        return [a for a in self.arms.values() if a.live]

    def register(self, record: ArmRecord) -> None:
        """Record a newly handed-out arm."""
        self.arms[record.arm_id] = record
        if record.slot >= 0:
            self.next_seq[record.slot] = max(self.next_seq[record.slot], record.seq + 1)
        self.hour_launched[record.launched_hour].append(record.arm_id)

    def retire(self, arm_id: str, reason: str, hour: int) -> None:
        """Record that a live arm stopped."""
        self.arms[arm_id] = replace(self.arms[arm_id], stopped_hour=int(hour), stop_reason=reason)
        self.hour_stopped[int(hour)].append((arm_id, reason))

    def confirm_live(self, arm_id: str) -> bool:
        """Note that the platform launched a known arm; False if unknown or noted before."""
        if arm_id not in self.arms or arm_id in self.confirmed_live:
            return False
        self.confirmed_live.add(arm_id)
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
            elif kind == "arm_state" and row.get("state") == "live":
                self.confirmed_live.add(arm_id)
            elif kind == "delta_rejected":
                self.quarantine(logged_rejection_key(row))
            elif kind == "recommendation":
                self.recommendations[int(row["hour"])] = recommendation_from_event(row)
        hours = [a.launched_hour for a in self.arms.values()] + list(self.recommendations)
        self.max_hour = max([self.max_hour, *hours])
