"""What one arm slot is made of: its port to the central service, knobs, stats and arms.

The plain data of :mod:`hz_ray.service.slot` (which holds the loop itself).
This module imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Protocol

from hz_ray.arm_feed import ArmFeed
from hz_ray.errors import ConfigError, field_error
from hz_ray.service.messages import Report, ReportAck, SampleReply, SlotState


class PosteriorPort(Protocol):
    """What an arm slot needs from the central actor (all calls idempotent)."""

    def slot_state(self, slot: int) -> SlotState:
        """Return the slot's arms and next seq."""
        ...

    def sample(self, slot: int, seq: int, hour: int) -> SampleReply | None:
        """Return the slot's ``seq``-th arm (a Thompson sample); ``None``: wait."""
        ...

    def report(self, report: Report) -> ReportAck:
        """Ingest a batch; return once it is durable."""
        ...

    def retire(self, slot: int, arm_id: str, reason: str, hour: int) -> bool:
        """Record that the arm's stop was decided (it is ``stopping``)."""
        ...

    def transition(self, slot: int, arm_id: str, state: str, hour: int,
                   detail: str | None = None) -> bool:
        """Log a step of the arm's lifecycle on the platform."""
        ...


@dataclass(frozen=True)
class RunnerSettings:
    """Knobs of the slot loop.

    Attributes:
        poll_interval_hours: Job hours between polls of the backend; 1 must
            be a multiple of it so that hour boundaries are polls.
        max_batch: Most deltas per report call.
        backend_attempts: Tries of one ``launch``/``stop`` call.
        fetch_failures_to_give_up: Consecutive failed polls of an arm after
            which it is stopped and the slot moves on.
        initial_backoff_s: First wait between retries (wall seconds); doubles.
        max_backoff_s: Longest wait between retries.
        spread_polls: Offset each slot's poll grid by a slot-dependent phase in
            ``[0, poll_interval_hours)``, so that many workers do not all wake
            (and report) at the same instant; each slot still decides once per
            job hour, at its first poll of the hour.
        port_timeout_s: Longest wait for one answer of the central actor (Ray
            port); a call that times out is retried at the next poll.
        call_timeout_s: Longest wait for one backend call (wall seconds);
            ``None`` takes the config's ``backend.call_timeout_s``.
        max_stop_retry_polls: Longest gap, in polls, between retries of a stop
            that keeps failing (the gap doubles from one poll up to this).
    """

    poll_interval_hours: float = 0.25
    max_batch: int = 4096
    backend_attempts: int = 4
    fetch_failures_to_give_up: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    spread_polls: bool = True
    port_timeout_s: float = 10.0
    call_timeout_s: float | None = None
    max_stop_retry_polls: int = 4

    def __post_init__(self) -> None:
        p = self.poll_interval_hours
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 < p <= 1 \
                or abs(round(1 / p) - 1 / p) > 1e-9:
            raise field_error(ConfigError, "poll_interval_hours", p,
                              "a number in (0, 1] that divides 1 (e.g. 0.25)")
        if self.call_timeout_s is not None and (
                isinstance(self.call_timeout_s, bool)
                or not isinstance(self.call_timeout_s, (int, float))
                or not 0 < self.call_timeout_s < math.inf):
            raise field_error(ConfigError, "call_timeout_s", self.call_timeout_s,
                              "a finite number of seconds > 0, or None")
        for name in ("max_batch", "backend_attempts", "fetch_failures_to_give_up",
                     "max_stop_retry_polls"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise field_error(ConfigError, name, value, "an integer >= 1")
        for name in ("initial_backoff_s", "max_backoff_s", "port_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise field_error(ConfigError, name, value, "a finite number of seconds >= 0")


@dataclass
class WorkerStats:
    """What one slot did (returned by ``run``; readable while it runs).

    Attributes:
        slot: The slot.
        pid: Worker process id.
        node_id: Ray node id (empty outside Ray).
        resumed: The run continued a slot that already had arms.
        torch_imported: Whether ``torch`` was imported in this process.
        arms: ``(arm_id, launched_hour, stopped_hour, stop_reason)`` per arm.
        cycle_s: Wall seconds of each hourly cycle (poll, report, decide and,
            when the arm ended, stop, retire, sample, launch).
        relaunch_s: Wall seconds from a stop decision to the next launch.
        sample_s: Wall seconds of each sample request.
        report_s: Wall seconds of each report call (until acknowledged).
        tick_lag_s: Wall seconds by which each hourly cycle started after its
            scheduled poll (the hour boundary plus the slot's poll phase).
        reports: Report calls acknowledged.
        deltas_reported: Deltas acknowledged as accepted.
        port_retries: Calls to the central actor that had to be retried.
        backend_errors: Failed backend calls (every failed or timed-out try).
        stop_failures: Stop calls that failed on every try (retried later).
        final_fetch_failures: Arms whose fetch still failed when the job ended
            (after the end's retries): readings they published may be unfetched.
        found_stopped: Arms live in the log that the platform, on resume,
            refused to launch again because it had stopped them (retired then).
    """

    slot: int
    pid: int = 0
    node_id: str = ""
    resumed: bool = False
    torch_imported: bool = False
    arms: list[tuple[str, int, int | None, str | None]] = field(default_factory=list)
    cycle_s: list[float] = field(default_factory=list)
    relaunch_s: list[float] = field(default_factory=list)
    sample_s: list[float] = field(default_factory=list)
    report_s: list[float] = field(default_factory=list)
    tick_lag_s: list[float] = field(default_factory=list)
    reports: int = 0
    deltas_reported: int = 0
    port_retries: int = 0
    backend_errors: int = 0
    stop_failures: int = 0
    final_fetch_failures: int = 0
    found_stopped: int = 0

    def copy(self) -> WorkerStats:
        """A copy safe to hand to another thread."""
        return replace(self, arms=list(self.arms), cycle_s=list(self.cycle_s),
                       relaunch_s=list(self.relaunch_s), sample_s=list(self.sample_s),
                       report_s=list(self.report_s), tick_lag_s=list(self.tick_lag_s))


@dataclass
class TrackedArm:
    """One arm of the slot as the worker tracks it."""

    arm_id: str
    params: dict[str, float]
    launched_hour: int
    feed: ArmFeed
    stopped_hour: int | None = None
    data_end: int | None = None  # hours < this may hold data (the stop hour, if partly served)
    stop_reason: str | None = None
    fetch_failures: int = 0
    stop_failures: int = 0
    next_stop_poll: int = 0  # the poll at which a failed stop is tried again
    launched: bool = True  # False: launch failed, nothing to drain afterwards
    # Polled once more even past late_data_hours: resumed after a pause, or its last poll failed.
    catch_up: bool = False
    acked: dict[tuple[str, str, int], tuple[float, float | None, int]] = field(
        default_factory=dict)
