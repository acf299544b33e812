"""One arm slot: sample -> launch -> poll -> report -> decide -> stop -> next.

:class:`ArmSlotRunner` is the slot's whole logic as a plain class (no Ray):
give it any :class:`PosteriorPort` (the :class:`~hz_ray.service.posterior.PosteriorService`
itself in process, or the Ray shell's port over an actor handle). Two drivers
run it:

- :func:`hz_ray.local.run_local` steps every slot through each job hour in a
  fixed order (:meth:`~ArmSlotRunner.poll`, :meth:`~ArmSlotRunner.send_reports`,
  :meth:`~ArmSlotRunner.decide`, :meth:`~ArmSlotRunner.try_launch`), so a seed
  gives the same job bit for bit;
- :class:`actors.arm_worker.ArmWorker` calls :meth:`~ArmSlotRunner.run`, the
  same steps on the job clock, one worker process per slot.

This module imports no torch (nor anything that does): a worker process
stays small, and 64 of them fit on a laptop.

The loop of :meth:`~ArmSlotRunner.run`, on the job clock (an
:class:`~hz_ray.clock.AcceleratedClock` for simulated worlds, a
:class:`~hz_ray.clock.WallClock` for a live platform):

1. At each poll (every ``poll_interval_hours``, on a grid offset by a per-slot
   phase so that many workers do not wake at once) fetch every arm of the slot
   that may still publish (the live one and stopped ones within
   ``late_data_hours``) from its cursor, turn readings into deltas with
   :class:`~hz_ray.arm_feed.ArmFeed`, buffer the ones not yet acknowledged and
   report them. What is not acknowledged stays buffered and is sent again at
   the next poll: the loop never blocks on the central service.
2. At the first poll of each job hour, decide the live arm's lifecycle with
   :func:`~hz_ray.lifecycle.stop_reason` (its age, its complete hours, and the
   posterior P(feasible) carried by the ack); if it ends, stop it on the
   backend at once, retire it centrally, ask for the next sample and launch it
   (a step the central service cannot answer now is retried at the next poll).

Every backend call has a timeout (``backend.call_timeout_s``) and is retried
with jittered exponential backoff (:mod:`hz_ray.service.backend_calls`); the
slot never waits on the platform longer than that. The arm's lifecycle on the
platform is told to the central service as it happens
(:mod:`hz_ray.service.arm_states`): ``launching`` (durably, before ``launch``
is called), ``live``, ``launch_failed``, ``stopping`` (the retirement),
``stop_failed`` per failed attempt, and ``stopped`` only once ``stop``
returned. A stop that fails is retried at later polls, with backoff, until it
succeeds; until then the slot launches nothing, so it never has two arms on the
platform. An arm whose fetches keep failing is stopped with reason
``"backend_error"``; one whose launch keeps failing, with ``"launch_failed"``.

At the job's end (and at any other ending) the slot leaves its live arm as it
is: the driver stops every arm of the job from the run folder
(:func:`hz_ray.service.reconcile.reconcile_folder`), the one end-of-job path.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hz_ray.arm_feed import ArmFeed
from hz_ray.backends.base import ArmBackend
from hz_ray.clock import AcceleratedClock, Clock
from hz_ray.config import ArmsSpec
from hz_ray.errors import ArmStoppedError, HzRayError, TransientError
from hz_ray.kill_points import kill_point
from hz_ray.lifecycle import stop_reason
from hz_ray.records import HourlyDelta
from hz_ray.service.arm_states import (
    LAUNCH_FAILED,
    LAUNCHING,
    LIVE,
    PROPOSED,
    STOP_FAILED,
    STOPPED,
)
from hz_ray.service.backend_calls import BackendCaller, BackendCallError, CallPolicy
from hz_ray.service.messages import (
    STOP_BACKEND_ERROR,
    STOP_FOUND_STOPPED,
    STOP_INTERRUPTED,
    STOP_LAUNCH_FAILED,
    ArmRecord,
    FeedRejectionRecord,
    Report,
    ReportAck,
    SlotState,
)
from hz_ray.service.slot_parts import PosteriorPort, RunnerSettings, TrackedArm, WorkerStats

__all__ = ["ArmSlotRunner", "PosteriorPort", "RunnerSettings", "WorkerStats"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
_EPS_HOURS = 1e-9
_GOLDEN = 0.6180339887498949  # slot phases k * golden mod 1 are evenly spread


def _data_end_of(record: ArmRecord) -> int:
    """The first hour a stopped arm of the log did not serve.

    The hour after the one its platform stop returned in, when the log has it; else the
    hour after its retirement (when in that hour it stopped is unknown).
    """
    assert record.stopped_hour is not None
    return max(record.stopped_hour + 1, record.served_until or 0)


class _StopRequestedError(Exception):
    """The runner was asked to stop while waiting."""


class ArmSlotRunner:
    """The loop of one arm slot (plain class; the Ray actor just calls :meth:`run`).

    The loop never blocks on the central actor: a report, lifecycle step or
    sample request that fails (the actor is restarting, a timeout) is kept and
    tried again at the next poll, while the slot keeps polling its platform,
    buffering deltas and stopping arms whose hours are up on time. Nothing is
    dropped: deltas leave the buffer only when acknowledged.

    Args:
        slot: The slot index.
        port: The central actor (or a :class:`PosteriorService` in tests).
        backend: The platform; shares ``clock`` when simulated.
        clock: The job clock (an :class:`AcceleratedClock` or a
            :class:`~hz_ray.clock.WallClock`).
        arms: The job's arm lifecycle settings.
        metrics: The job's metrics (an hour is complete when all arrived).
        settings: Loop knobs.
        sleep: Waits this many wall seconds (injectable for tests).
        call_timeout_s: Longest wait for one backend call when
            ``settings.call_timeout_s`` is unset (the config's
            ``backend.call_timeout_s``).
    """

    def __init__(self, slot: int, port: PosteriorPort, backend: ArmBackend, clock: Clock,
                 arms: ArmsSpec, metrics: tuple[str, ...],
                 settings: RunnerSettings | None = None,
                 sleep: Callable[[float], Any] | None = None,
                 call_timeout_s: float = 30.0) -> None:
        self.slot = slot
        self.port = port
        self.backend = backend
        self.clock = clock
        self.arms_spec = arms
        self.metrics = tuple(metrics)
        self.settings = settings if settings is not None else RunnerSettings()
        self._stop_event = threading.Event()
        self._sleep = sleep if sleep is not None else self._interruptible_sleep
        self.stats = WorkerStats(slot, pid=os.getpid())
        s = self.settings
        self.calls = BackendCaller(
            CallPolicy(timeout_s=s.call_timeout_s or call_timeout_s, attempts=s.backend_attempts,
                       initial_backoff_s=s.initial_backoff_s, max_backoff_s=s.max_backoff_s,
                       jitter_s=min(s.initial_backoff_s, 0.05)),
            self._sleep, self._count_error, name=f"slot-{slot:02d}")
        self.current: TrackedArm | None = None
        self.stopping: list[TrackedArm] = []
        self.draining: list[TrackedArm] = []
        self.next_seq = 0
        self._unacked: dict[tuple[str, str, int], HourlyDelta] = {}
        self._unacked_rejections: list[FeedRejectionRecord] = []
        # Lifecycle steps for the central service, in order: ("retire", arm, reason, hour)
        # or ("state", arm, state, hour, detail).
        self._outbox: list[tuple[Any, ...]] = []
        self._stop_started: float | None = None
        self._no_launch_before_hour = -1
        self._polls = 0
        interval = self.settings.poll_interval_hours
        self.phase_hours = (slot * _GOLDEN) % 1.0 * interval if self.settings.spread_polls \
            else 0.0

    # ------------------------------------------------------------ control
    def request_stop(self) -> None:
        """Ask :meth:`run` to return at its next wait."""
        self._stop_event.set()

    def _interruptible_sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stop_event.wait(seconds):
            raise _StopRequestedError

    def _seconds_until(self, hours: float) -> float:
        if isinstance(self.clock, AcceleratedClock):
            return self.clock.seconds_until(hours)
        return 0.0

    def _seconds_per_hour(self) -> float:
        return getattr(self.clock, "seconds_per_hour", 0.0)

    def _count_error(self, what: str, arm_id: str, attempt: int, exc: BaseException) -> None:
        self.stats.backend_errors += 1
        logger.warning("Slot %d: backend %s of %s failed (try %d): %s: %s", self.slot, what,
                       arm_id, attempt, type(exc).__name__, exc)

    # ---------------------------------------------------------------- run
    def run(self, hours: int) -> WorkerStats:
        """Run the slot until job hour ``hours`` (exclusive), then return its stats.

        Args:
            hours: The job's length in job hours.

        Returns:
            The slot's :class:`WorkerStats`.
        """
        self.stats.torch_imported = "torch" in sys.modules
        try:
            self.start()
            decided: int | None = None
            interval, phase = self.settings.poll_interval_hours, self.phase_hours
            while not self._stop_event.is_set():
                now = self.clock.now_hours()
                if now < 0:  # the job has not started: wake at this slot's first poll
                    self._sleep(self._seconds_until(phase))
                    continue
                hour = math.floor(now + _EPS_HOURS)
                if hour >= hours:
                    self._finish(hours - 1)
                    break
                new_hour = decided != hour
                started = time.perf_counter()
                self.poll(hour)
                self.retry_stops(hour)
                self.send_lifecycle(hour)
                ack = self.send_reports(hour, heartbeat=new_hour)
                if new_hour:
                    late_hours = max(0.0, now - hour - phase)
                    self.stats.tick_lag_s.append(late_hours * self._seconds_per_hour())
                    self._hourly(hour, ack)
                    decided = hour
                    self.stats.cycle_s.append(time.perf_counter() - started)
                elif self.current is None:
                    self.try_launch(hour)
                self.drop_drained(hour)
                next_poll = (math.floor((now - phase) / interval + _EPS_HOURS) + 1) * interval \
                    + phase
                self._sleep(self._seconds_until(next_poll))
        except _StopRequestedError:
            pass
        self.stats.torch_imported = "torch" in sys.modules
        return self.stats.copy()

    def _finish(self, hour: int) -> None:
        """The job's end: a last poll, then deliver everything still unacknowledged.

        The live arm stays live: the driver stops every arm of the job from the
        run folder once the central service is closed (or hands one off).
        """
        self.poll(hour)
        self._final_fetch_retries(hour)
        attempt = 0
        while self.pending_delivery:
            self.send_lifecycle(hour)
            self.send_reports(hour, heartbeat=False)
            if self.pending_delivery:
                self._sleep(self._backoff(attempt))
                attempt += 1

    def _final_fetch_retries(self, hour: int) -> None:
        """Fetch again the arms whose last fetch failed, before the job ends.

        During the job a failed or timed-out fetch is simply retried at the next
        poll; at the end there is no next poll, and what the platform published
        would be left behind. So each such arm is fetched again, up to
        ``backend_attempts`` times, each after its abandoned call returned (or
        ``call_timeout_s`` passed) and a backoff. An arm still failing after
        that is counted (``stats.final_fetch_failures``) and logged.
        """
        timeout_s = self.calls.policy.timeout_s
        failed: list[TrackedArm] = []
        for attempt in range(self.settings.backend_attempts):
            failed = [a for a in (self.current, *self.stopping, *self.draining)
                      if a is not None and a.launched and a.fetch_failures > 0]
            if not failed:
                return
            for arm in failed:
                self.calls.settle("fetch", arm.arm_id, timeout_s)
            self._sleep(self._backoff(attempt))
            self.poll(hour, only=failed)
        failed = [a for a in failed if a.fetch_failures > 0]
        self.stats.final_fetch_failures += len(failed)
        for arm in failed:
            logger.warning("slot %d: the final fetch of arm %s failed %d time(s); readings "
                           "it did not fetch are not in the job's log", self.slot, arm.arm_id,
                           arm.fetch_failures)

    @property
    def pending_delivery(self) -> bool:
        """True while deltas, rejections or lifecycle steps wait for the central service."""
        return bool(self._outbox or self._unacked or self._unacked_rejections)

    # ------------------------------------------------------------- resume
    def start(self) -> None:
        """Pick up the slot's arms from the central service (a restart or a resumed job).

        The live arm (``live`` on the platform, its stop not decided) is
        launched again on the platform (a no-op for a backend that already
        serves it). An arm caught between two steps of its lifecycle is
        finished: one only ``proposed`` never reached the platform and is
        marked stopped; one ``launching``, ``launch_failed`` or ``stopping`` is
        stopped (retried until it succeeds). Stopped arms that were still
        within ``late_data_hours`` when the job last ran are polled for late
        data (at least once, however long the job was down).
        """
        state: SlotState = self._port_call("slot_state", lambda: self.port.slot_state(self.slot))
        self.next_seq = state.next_seq
        hour = max(0, math.floor(self.clock.now_hours() + _EPS_HOURS))
        paused_at = min(hour, state.last_hour) if state.last_hour >= 0 else hour
        for record in state.arms:
            arm = TrackedArm(record.arm_id, dict(record.params), record.launched_hour,
                       self._feed(record.arm_id, record.launched_hour),
                       record.stopped_hour, stop_reason=record.stop_reason)
            if not record.settled:
                self.stats.resumed = True
                self._resume_unsettled(arm, record.live, record.state, hour)
            elif record.stopped_hour is not None \
                    and paused_at <= _data_end_of(record) - 1 + self.arms_spec.late_data_hours:
                # Late data may have come while the job was down: poll at least once.
                self.stats.resumed = True
                arm.catch_up = True
                arm.data_end = _data_end_of(record)
                arm.feed.data_end = arm.data_end
                self.draining.append(arm)

    def _resume_unsettled(self, arm: TrackedArm, live: bool, state: str, hour: int) -> None:
        if live and state == LIVE:
            try:  # backends treat a repeated launch of a live arm as a no-op
                self.calls.call("launch", arm.arm_id,
                                lambda: self.backend.launch(arm.arm_id, arm.params))
            except ArmStoppedError:
                # Its stop reached the platform, its retirement never reached the
                # central service: retire it now, and keep polling it for late data.
                logger.warning("Slot %d: arm %s, live in the log, was already stopped on the "
                               "platform; retiring it", self.slot, arm.arm_id)
                self.stats.found_stopped += 1
                self.current = arm
                self.stats.arms.append((arm.arm_id, arm.launched_hour, None, None))
                self._begin_stop(arm, hour, STOP_FOUND_STOPPED)
                return
            except BackendCallError as exc:
                logger.warning("Slot %d: relaunch of %s on resume failed: %s", self.slot,
                               arm.arm_id, exc)
            self.current = arm
            self.stats.arms.append((arm.arm_id, arm.launched_hour, None, None))
            return
        if state == PROPOSED:  # handed out, never sent to the platform
            if live:
                self._outbox.append(("retire", arm, "never_launched", hour))
            self._outbox.append(("state", arm, STOPPED, hour, "never launched"))
            return
        arm.launched = state != LAUNCH_FAILED
        if live:
            self._begin_stop(arm, hour, STOP_INTERRUPTED)
        else:
            arm.stopped_hour = arm.stopped_hour if arm.stopped_hour is not None else hour
            arm.data_end = arm.stopped_hour + 1
            arm.feed.data_end = arm.data_end
            self.stopping.append(arm)
            self.retry_stops(hour)

    def _feed(self, arm_id: str, first_hour: int) -> ArmFeed:
        return ArmFeed(arm_id, self.metrics, first_hour,
                       late_data_hours=self.arms_spec.late_data_hours)

    # --------------------------------------------------------------- poll
    def poll(self, hour: int, only: Sequence[TrackedArm] | None = None) -> None:
        """Fetch every arm that may still publish; buffer the deltas not yet acknowledged.

        Args:
            hour: The job hour.
            only: Fetch only these of the slot's arms (default: all).
        """
        self._polls += 1
        late = self.arms_spec.late_data_hours
        arms = [a for a in (self.current, *self.stopping, *self.draining) if a is not None]
        for arm in arms if only is None else [a for a in arms if a in only]:
            if not arm.launched:
                continue
            if arm.stopped_hour is not None and hour > arm.stopped_hour + late \
                    and not arm.catch_up:
                continue
            arm.catch_up = False
            try:
                readings = self.calls.call(
                    "fetch", arm.arm_id,
                    lambda a=arm: self.backend.fetch(a.arm_id, a.feed.since_hour), attempts=1)
            except BackendCallError:
                arm.fetch_failures += 1
                # The answer is lost with the failed call: poll again even if the arm's
                # late-data window closes meanwhile (its last poll must not be the failed one).
                arm.catch_up = True
                if arm.fetch_failures >= self.settings.fetch_failures_to_give_up:
                    self._give_up(arm, hour)
                continue
            arm.fetch_failures = 0
            deltas, bad = arm.feed.absorb(readings, now_hour=hour)
            for delta in deltas:
                if arm.acked.get(delta.key) != (delta.mean, delta.var, delta.n) \
                        and delta.key not in self._unacked:  # the first value stands
                    self._unacked[delta.key] = delta
            self._unacked_rejections.extend(FeedRejectionRecord(r.payload, r.reason)
                                            for r in bad)

    def send_reports(self, hour: int, heartbeat: bool) -> ReportAck | None:
        """Report buffered deltas (one try); returns the last ack, ``None`` if none came."""
        if not (self._unacked or self._unacked_rejections or heartbeat):
            return None
        live_id = self.current.arm_id if self.current is not None else None
        pending = list(self._unacked.values())
        step = self.settings.max_batch
        ack: ReportAck | None = None
        for start in range(0, max(len(pending), 1), step):
            chunk = tuple(pending[start:start + step])
            rejections = tuple(self._unacked_rejections) if start == 0 else ()
            report = Report(self.slot, hour, live_id, chunk, rejections)
            began = time.perf_counter()
            got = self._port_try("report", lambda r=report: self.port.report(r))
            if got is None:
                return None
            ack = got
            self.stats.report_s.append(time.perf_counter() - began)
            self.stats.reports += 1
            self.stats.deltas_reported += ack.accepted
            if start == 0:
                self._unacked_rejections = self._unacked_rejections[len(rejections):]
            by_arm = {a.arm_id: a for a in (self.current, *self.stopping, *self.draining)
                      if a is not None}
            for delta in chunk:
                self._unacked.pop(delta.key, None)
                owner = by_arm.get(delta.arm_id)
                if owner is not None:
                    owner.acked[delta.key] = (delta.mean, delta.var, delta.n)
        return ack

    def drop_drained(self, hour: int) -> None:
        """Stop polling stopped arms that are complete or past ``late_data_hours``."""
        keep = []
        for arm in self.draining:
            assert arm.stopped_hour is not None
            end = arm.data_end if arm.data_end is not None else arm.stopped_hour
            last_served = max(arm.stopped_hour, end - 1)
            done = arm.feed.complete_before(end) \
                or (hour > last_served + self.arms_spec.late_data_hours
                    and not arm.catch_up)  # a failed last poll is tried again first
            if not done:
                keep.append(arm)
        self.draining = keep

    # ------------------------------------------------------------- hourly
    def _hourly(self, hour: int, ack: ReportAck | None) -> None:
        """Once per job hour: end the live arm if its lifecycle is over, fill the slot."""
        self.decide(hour, ack)
        if self.current is None:
            self.try_launch(hour)

    def decide(self, hour: int, ack: ReportAck | None) -> str | None:
        """End the live arm if its lifecycle is over: stop it, retire it centrally.

        Args:
            hour: The job hour.
            ack: The newest ack (its P(feasible) and pick share of the live arm).

        Returns:
            The stop reason, or ``None`` when the arm goes on (or none is live).
        """
        arm = self.current
        if arm is None:
            return None
        p_feasible = ack.p_feasible if ack is not None else None
        pick_share = ack.pick_share if ack is not None else None
        reason = stop_reason(self.arms_spec, hour - arm.launched_hour,
                             arm.feed.hours_complete, p_feasible, pick_share)
        if reason is not None:
            self._begin_stop(arm, hour, reason)
        return reason

    def try_launch(self, hour: int) -> None:
        """Ask for the next sample (one try) and launch it; retried at later polls.

        Nothing is launched while an earlier arm of the slot is still on the
        platform (its stop has not succeeded) or a lifecycle step of it has not
        reached the central service.
        """
        # The caller's hour was read before its own calls, which can take hours (the central
        # service unreachable after a node loss): decide, register and launch in the hour it
        # is now, or the arm's data window would begin before the platform serves it.
        hour = max(hour, math.floor(self.clock.now_hours() + _EPS_HOURS))
        if self.current is not None or self.stopping or self._outbox \
                or hour < self._no_launch_before_hour:
            return
        seq = self.next_seq
        began = time.perf_counter()
        reply = self._port_try("sample", lambda: self.port.sample(self.slot, seq, hour))
        if reply is None:  # not now (a synchronous batch still runs, or a retry): next poll
            return
        # Durably "launching" before the platform hears of the arm (a retried sample
        # of the same seq returns the same arm, so a failure here is retried later).
        if self._port_try("transition", lambda: self.port.transition(
                self.slot, reply.arm_id, LAUNCHING, hour)) is None:
            return
        self.stats.sample_s.append(time.perf_counter() - began)
        self.next_seq = seq + 1
        arm = TrackedArm(reply.arm_id, dict(reply.params), reply.launched_hour,
                   self._feed(reply.arm_id, reply.launched_hour))
        self.current = arm
        self.stats.arms.append((arm.arm_id, arm.launched_hour, None, None))
        kill_point("slot.after_launching")
        try:
            self.calls.call("launch", arm.arm_id,
                            lambda: self.backend.launch(arm.arm_id, arm.params))
        except (BackendCallError, ArmStoppedError) as exc:
            arm.launched = False
            self._outbox.append(("state", arm, LAUNCH_FAILED, hour, str(exc)[:500]))
            self._begin_stop(arm, hour, STOP_LAUNCH_FAILED)  # it may be half-launched
            self._no_launch_before_hour = hour + 1  # try the platform again next hour
            return
        kill_point("slot.after_launch")
        self._outbox.append(("state", arm, LIVE, hour, None))
        self.send_lifecycle(hour)
        if self._stop_started is not None:
            self.stats.relaunch_s.append(time.perf_counter() - self._stop_started)
            self._stop_started = None

    def _begin_stop(self, arm: TrackedArm, hour: int, reason: str) -> None:
        """Decide the arm's stop: retire it centrally and stop it on the platform now.

        A stop issued inside job hour ``h`` (not at its very start) leaves the
        arm served for part of ``h``, so the platform may publish ``h`` too: the
        arm is polled until that hour is in as well (or ``late_data_hours`` pass).
        """
        self._stop_started = time.perf_counter()
        arm.stopped_hour, arm.stop_reason = hour, reason
        arm.data_end = max(hour, math.ceil(self.clock.now_hours() - _EPS_HOURS))
        arm.feed.data_end = arm.data_end
        if arm is self.current:
            self.current = None
        self._outbox.append(("retire", arm, reason, hour))
        self.stopping.append(arm)
        self.stats.arms = [(a, launched, hour, reason) if a == arm.arm_id else (a, launched, s, r)
                           for a, launched, s, r in self.stats.arms]
        # The retirement ('stopping') is made durable before the platform stop, so a kill
        # in between never leaves a stopped arm 'live' in the log (a resume would launch it
        # again). When the central service cannot be reached, the arm is stopped anyway:
        # a harmful arm must not wait for it.
        self.send_lifecycle(hour)
        self.retry_stops(hour, force=True)
        self.send_lifecycle(hour)

    def retry_stops(self, hour: int, force: bool = False) -> None:
        """Try the platform stop of every arm being stopped that is due (backoff in polls).

        An arm counts as stopped only once ``stop`` returned; until then it stays
        in :attr:`stopping`, each failed try is logged (``stop_failed``), and
        the next try waits 1, 2, 4, ... polls (at most ``max_stop_retry_polls``).
        """
        left: list[TrackedArm] = []
        for arm in self.stopping:
            if not force and self._polls < arm.next_stop_poll:
                left.append(arm)
                continue
            try:
                self.calls.call("stop", arm.arm_id, lambda a=arm: self.backend.stop(a.arm_id))
            except BackendCallError as exc:
                arm.stop_failures += 1
                self.stats.stop_failures += 1
                gap = min(2 ** (arm.stop_failures - 1), self.settings.max_stop_retry_polls)
                arm.next_stop_poll = self._polls + gap
                self._outbox.append(("state", arm, STOP_FAILED, hour, str(exc)[:500]))
                left.append(arm)
                continue
            kill_point("slot.after_stop")
            # The platform served the arm until its stop returned, which may be hours after
            # the stop was decided (failed tries, an unreachable central service): its data
            # are due up to that hour, and the log says when it stopped.
            now = self.clock.now_hours()
            arm.data_end = max(arm.data_end or 0, math.ceil(now - _EPS_HOURS))
            arm.feed.data_end = arm.data_end
            self._outbox.append(("state", arm, STOPPED, max(hour, math.floor(now + _EPS_HOURS)),
                                 None))
            if arm.launched:
                self.draining.append(arm)
        self.stopping = left

    def send_lifecycle(self, hour: int) -> None:
        """Tell the central service the slot's lifecycle steps, in order (kept on failure)."""
        while self._outbox:
            step = self._outbox[0]
            if step[0] == "retire":
                _, arm, reason, at = step
                done = self._port_try("retire", lambda a=arm, r=reason, h=at: self.port.retire(
                    self.slot, a.arm_id, r or STOP_BACKEND_ERROR, h))
            else:
                _, arm, state, at, detail = step
                done = self._port_try("transition", lambda a=arm, st=state, h=at, d=detail:
                                      self.port.transition(self.slot, a.arm_id, st, h, d))
            if done is None:
                return
            self._outbox.pop(0)

    def _give_up(self, arm: TrackedArm, hour: int) -> None:
        """Repeated fetch failures: stop the arm (if live) and stop polling it."""
        if arm is self.current:
            self._begin_stop(arm, hour, STOP_BACKEND_ERROR)
        else:
            self.draining = [a for a in self.draining if a is not arm]

    # ------------------------------------------------------------ retries
    def _backoff(self, attempt: int) -> float:
        s = self.settings
        return min(s.max_backoff_s, s.initial_backoff_s * (2 ** attempt))

    def _port_try(self, what: str, call: Callable[[], T]) -> T | None:
        """One call to the central actor; ``None`` on a retryable failure."""
        try:
            return call()
        except HzRayError as exc:
            if not isinstance(exc, TransientError):
                raise
            error: Exception = exc
        except (TimeoutError, ConnectionError) as exc:
            error = exc
        self.stats.port_retries += 1
        logger.info("Slot %d: %s to the central actor failed (%s); will retry.", self.slot,
                    what, type(error).__name__)
        return None

    def _port_call(self, what: str, call: Callable[[], T]) -> T:
        """Call the central actor until it answers; permanent errors propagate."""
        attempt = 0
        while True:
            result = self._port_try(what, call)
            if result is not None:
                return result
            self._sleep(self._backoff(attempt))
            attempt += 1
