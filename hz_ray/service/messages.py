"""What passes between the slot runners, the posterior service and the drivers.

Plain frozen dataclasses of builtins and :mod:`hz_ray.records` types, so they
pickle cheaply (the Ray shells send them between processes) and this module
imports no torch (arm workers import it).

Every request a worker sends is idempotent, so Ray task retries and the
worker's own retry loop are safe:

- :class:`Report` is keyed by its deltas' ``(arm_id, metric, hour)``;
- a sample request is keyed by ``(slot, seq)``, which names the arm
  (:func:`arm_id_for`);
- a retirement is keyed by the arm id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hz_ray.records import HourlyDelta, Recommendation, arm_id_for, parse_arm_id
from hz_ray.service.arm_states import PROPOSED, SETTLED

__all__ = ["arm_id_for", "parse_arm_id"]  # the arm id scheme, defined in hz_ray.records

STOP_BACKEND_ERROR = "backend_error"
STOP_LAUNCH_FAILED = "launch_failed"
STOP_JOB_END = "job_end"
STOP_INTERRUPTED = "interrupted"
STOP_RECONCILED = "reconciled"
#: A resumed slot found its live arm already stopped on the platform (the stop had
#: reached the platform, its retirement not the central service).
STOP_FOUND_STOPPED = "found_stopped"


@dataclass(frozen=True)
class FeedRejectionRecord:
    """A fetched reading that could not become a delta (quarantined centrally).

    Attributes:
        payload: JSON-able view of the raw reading.
        reason: Why it was rejected.
    """

    payload: Mapping[str, object]
    reason: str


@dataclass(frozen=True)
class Report:
    """One batch of hourly deltas from one slot.

    Attributes:
        slot: The reporting slot.
        hour: The worker's current job hour (for telemetry).
        arm_id: The slot's live arm, whose assessment the ack carries, or
            ``None`` between arms.
        deltas: New hourly deltas of the slot's arms (live or draining).
        rejections: Readings the worker could not turn into deltas.
        launched: ``(arm_id, hour)`` of arms the platform accepted (``launch``
            returned) since the last acknowledged report: they are live.
    """

    slot: int
    hour: int
    arm_id: str | None = None
    deltas: tuple[HourlyDelta, ...] = ()
    rejections: tuple[FeedRejectionRecord, ...] = ()
    launched: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ReportAck:
    """The central actor's answer to a :class:`Report`; sent after the log is durable.

    Attributes:
        accepted: Deltas newly accepted.
        duplicates: Deltas already held with the same values (retries).
        rejected: Deltas and readings rejected (quarantined in the log).
        data_version: Ledger version after the batch.
        p_feasible: Posterior P(all constraints hold) of ``Report.arm_id`` in
            the newest posterior snapshot, or ``None`` when not yet assessed.
        assessed_version: Data version of that snapshot (-1 if none).
        incarnation: Id of this life of the central actor (changes on restart).
        pick_share: ``Report.arm_id``'s share of the newest Thompson plan's
            picks, or ``None`` (not assessed, or contender stops are off).
    """

    accepted: int
    duplicates: int
    rejected: int
    data_version: int
    p_feasible: float | None = None
    assessed_version: int = -1
    incarnation: str = ""
    pick_share: float | None = None


@dataclass(frozen=True)
class SampleReply:
    """An arm to launch, drawn by constrained Thompson sampling.

    Attributes:
        arm_id: Its id (from the request's slot and seq).
        params: Its weights by name.
        model_version: Ledger version of the posterior it was drawn from.
        source: ``"bucket"``, ``"arm"`` or ``"proposal"``.
        launched_hour: Job hour the arm was registered at.
    """

    arm_id: str
    params: Mapping[str, float]
    model_version: int
    source: str
    launched_hour: int


@dataclass(frozen=True)
class ArmRecord:
    """The central actor's record of one arm (enough for a worker to resume it).

    Attributes:
        arm_id: Its id.
        slot: Its slot.
        seq: Its per-slot counter.
        params: Its weights.
        launched_hour: Job hour it was registered (launched) at.
        stopped_hour: Job hour it was retired at, or ``None`` while live.
        stop_reason: Why it was retired, or ``None``.
        state: Its lifecycle state on the platform
            (:mod:`hz_ray.service.arm_states`; the last one logged).
        stop_failures: Stop attempts that failed so far.
        last_error: The newest failed attempt's error, or ``None``.
        served_until: The first job hour the platform no longer served it: the hour after
            the one in which its ``stop`` returned (the ``stopped`` step's hour + 1), or
            ``None`` until then. A stop that returns hours after it was decided (retries,
            an unreachable central service) leaves the arm served, and its data due, to here.
    """

    arm_id: str
    slot: int
    seq: int
    params: Mapping[str, float]
    launched_hour: int
    stopped_hour: int | None = None
    stop_reason: str | None = None
    state: str = PROPOSED
    stop_failures: int = 0
    last_error: str | None = None
    served_until: int | None = None

    @property
    def live(self) -> bool:
        """True until the arm is retired (its stop decided): the slot's current arm."""
        return self.stop_reason is None

    @property
    def settled(self) -> bool:
        """True once the platform serves it no more for this job (stopped or handed off)."""
        return self.state in SETTLED


@dataclass(frozen=True)
class SlotState:
    """What a (re)starting worker needs to continue its slot.

    Attributes:
        slot: The slot.
        next_seq: Counter of the slot's next arm.
        arms: Every arm the slot ran, in launch order (the live one last).
        last_hour: The hour the slot's arms were last polled (its last report,
            or the newest hour of the job's previous life; -1: none), so a slot
            resumed after a pause still polls arms that were within
            ``late_data_hours`` of their stop when the job paused.
    """

    slot: int
    next_seq: int
    arms: tuple[ArmRecord, ...] = ()
    last_hour: int = -1

    @property
    def live(self) -> ArmRecord | None:
        """The slot's live arm, if any."""
        live = [a for a in self.arms if a.live]
        return live[-1] if live else None

    @property
    def unsettled(self) -> tuple[ArmRecord, ...]:
        """The slot's arms that may still be served (not stopped nor handed off)."""
        return tuple(a for a in self.arms if not a.settled)


@dataclass(frozen=True)
class HourProgress:
    """One job hour as seen by the posterior service (every driver's progress record).

    Attributes:
        hour: The job hour.
        live_arms: Arms live now.
        accepted: Deltas accepted while the hour was current.
        rejected: Records rejected while the hour was current.
        launched: Arms launched in the hour.
        stopped: ``(arm_id, reason)`` of arms stopped in the hour.
        recommendation: The newest launch readout.
        data_version: Ledger version now.
        posterior_version: Data version of the newest posterior snapshot.
        stuck_stops: Arms whose stop was decided but has not succeeded yet.
        alarm: Why the job launches no more arms (e.g. a metric no arm ever
            reported), or ``None``.
    """

    hour: int
    live_arms: int
    accepted: int
    rejected: int
    launched: tuple[str, ...]
    stopped: tuple[tuple[str, str], ...]
    recommendation: Recommendation
    data_version: int
    posterior_version: int
    stuck_stops: int = 0
    alarm: str | None = None


@dataclass(frozen=True)
class ServiceStatus:
    """A snapshot of the central actor for tools and tests.

    Attributes:
        job: The job's id.
        incarnation: Id of this life of the actor (changes on restart).
        pid: Its process id.
        restored: Whether this life rebuilt state from a checkpoint and the log.
        data_version: Ledger version.
        posterior_version: Data version of the newest posterior snapshot.
        num_records: Accepted hourly deltas.
        arms: Registered arms.
        live_arms: Arms live now.
        rejected: Records rejected so far (all lives).
        refreshes: Posterior rebuilds in this life.
        refits: Hyperparameter refits in this life.
        last_refresh_s: Wall seconds of the newest rebuild (refresh + plan).
        refresh_errors: Background rebuilds that failed in this life.
        log_seq: Last event sequence number in the log.
        metrics_url: Where Prometheus metrics are served, or ``None``.
        extra: Free-form counters.
    """

    job: str
    incarnation: str
    pid: int
    restored: bool
    data_version: int
    posterior_version: int
    num_records: int
    arms: int
    live_arms: int
    rejected: int
    refreshes: int
    refits: int
    last_refresh_s: float | None
    refresh_errors: int
    log_seq: int
    metrics_url: str | None = None
    extra: Mapping[str, float] = field(default_factory=dict)
