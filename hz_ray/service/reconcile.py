"""Stop every arm a job left on the platform, from its run folder: the one end-of-job path.

Every ending of a job runs :func:`reconcile_folder` once the posterior service
is closed (no other writer of the log is left): the normal end and every
exception, SIGINT or SIGTERM on both drivers, and after a SIGKILL the next
start of the same folder (resume) or ``hz-ray stop RUN_DIR``. It reads the
arms' lifecycle from the event log (:mod:`hz_ray.service.arm_states`), and for
each arm that may still be served:

- an arm only ``proposed`` (the platform was never asked to launch it) is
  marked ``stopped`` without a platform call;
- an arm the caller re-adopts (a resumed job whose live arm still has hours to
  run) is left as it is;
- the recommended arm is kept live and marked ``handed_off`` when the job asks
  for it (``arms.handoff_recommended``);
- every other arm is retired (if it was not), marked ``stopping``, and stopped
  on the platform with timeouts and jittered retries until the stop returns
  (``stopped``) or the deadline passes; each failed attempt is logged as
  ``stop_failed`` and the arm stays ``stopping``, for the next reconcile.

A ``stopped`` step is logged at the hour the platform's stop returned in, as
the job clock tells it when the caller passes one: the platform served the arm
until then, so its readings up to that hour are the job's data, however far
behind the caller's own ``hour`` (a dead driver's last heartbeat, the newest
readout) lags.

When the job's actors may still be dying (``settle_s``), an arm found
``launching`` may have its launch call still on its way to the platform, where
it could land after the stop (a stop of an arm the platform does not know is a
no-op). Such arms are stopped once more after the settle wait.

Each arm's events are committed (one Parquet part) as soon as its outcome is
known, so a kill in the middle loses nothing and a rerun carries on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from hz_ray.backends.base import ArmBackend
from hz_ray.clock import Clock, current_hour
from hz_ray.run_folder import LOG_DIR_NAME
from hz_ray.service.arm_states import (
    HANDED_OFF,
    LAUNCHING,
    PROPOSED,
    STOP_FAILED,
    STOPPED,
    STOPPING,
    effective_state,
)
from hz_ray.service.backend_calls import BackendCaller, BackendCallError, CallPolicy
from hz_ray.service.job_state import JobState
from hz_ray.service.messages import ArmRecord
from hz_ray.storage import EventLog

logger = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 300.0


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconcile did.

    Attributes:
        stopped: Arms stopped on the platform now.
        never_launched: Arms marked stopped without a call (only ever proposed).
        handed_off: Arms kept live on request (the recommended arm).
        readopted: Arms left live for a resumed job to continue.
        stuck: ``(arm_id, last error)`` of arms whose stop kept failing until the
            deadline: still ``stopping`` in the log; run the reconcile again.
        already_settled: Arms that were stopped (or handed off) before.
        stopped_again: Arms found ``launching`` and stopped once more after the
            settle wait (their launch may have been in flight at the first stop).
    """

    stopped: tuple[str, ...] = ()
    never_launched: tuple[str, ...] = ()
    handed_off: tuple[str, ...] = ()
    readopted: tuple[str, ...] = ()
    stuck: tuple[tuple[str, str], ...] = ()
    already_settled: int = 0
    stopped_again: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no arm is left stuck."""
        return not self.stuck

    def summary(self) -> str:
        """One line for people."""
        parts = [f"{len(self.stopped)} arm(s) stopped"]
        if self.never_launched:
            parts.append(f"{len(self.never_launched)} never launched")
        if self.handed_off:
            parts.append(f"handed off (still live): {', '.join(self.handed_off)}")
        if self.readopted:
            parts.append(f"{len(self.readopted)} re-adopted")
        if self.stopped_again:
            parts.append(f"{len(self.stopped_again)} stopped again (launch maybe in flight)")
        if self.stuck:
            parts.append(f"STUCK (stop keeps failing): {', '.join(a for a, _ in self.stuck)}")
        return "; ".join(parts)


@dataclass
class _Outcome:
    stopped: list[str] = field(default_factory=list)
    never: list[str] = field(default_factory=list)
    handed: list[str] = field(default_factory=list)
    readopted: list[str] = field(default_factory=list)
    stuck: list[tuple[str, str]] = field(default_factory=list)


def unsettled_arms(run_dir: str | Path, job_id: str) -> list[ArmRecord]:
    """The job's arms the platform may still serve, from the folder's log."""
    state = JobState(job_id)
    state.replay(EventLog(Path(run_dir) / LOG_DIR_NAME).read())
    return state.unsettled()


def reconcile_folder(
    run_dir: str | Path,
    job_id: str,
    backend: ArmBackend,
    *,
    hour: int,
    reason: str,
    policy: CallPolicy | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
    handoff: Iterable[str] = (),
    readopt: Callable[[ArmRecord], bool] | None = None,
    sleep: Callable[[float], object] = time.sleep,
    settle_s: float = 0.0,
    clock: Clock | None = None,
) -> ReconcileReport:
    """Stop (or hand off, or leave for a resume) every arm of the job that may be served.

    The caller must hold the run folder's lock. When the job's actors may
    still be dying (a driver killed on Ray), pass ``settle_s``: after each
    pass the log is read again ``settle_s`` later, and arms that appeared
    meanwhile are stopped too, until a pass finds none; a log part written
    at the same moment by a dying actor makes the pass start over.

    Args:
        run_dir: The job's run folder.
        job_id: The job's id (arms of other jobs in the log are left alone).
        backend: The platform.
        hour: The job hour to log the steps at.
        reason: The retirement reason of arms not yet retired (``"job_end"``,
            ``"interrupted"``, ``"reconciled"``).
        policy: Timeouts and retries of each stop call.
        deadline_s: Give up on stops still failing after this many wall seconds.
        handoff: Arms to keep live (they must be live); logged ``handed_off``.
        readopt: Returns True for an arm a resumed job continues (left as is).
        sleep: Waits between rounds of retries.
        settle_s: Seconds to wait before reading the log again (0: one pass).
        clock: The job clock. A confirmed stop is logged at ``max(hour, the
            clock's hour when the stop returned)``, so readings of the hours
            the platform served after ``hour`` are accepted later; ``None``:
            at ``hour``.

    Returns:
        The :class:`ReconcileReport` (of every pass together).
    """
    from hz_ray.errors import StateError

    end = time.monotonic() + deadline_s
    total: ReconcileReport | None = None
    launching: list[str] = []
    while True:
        try:
            report = _reconcile_once(run_dir, job_id, backend, hour=hour, reason=reason,
                                     policy=policy, deadline_s=max(1.0, end - time.monotonic()),
                                     handoff=handoff, readopt=readopt, sleep=sleep,
                                     found_launching=launching, clock=clock)
        except StateError as exc:  # another writer's part took our name: read again
            if settle_s <= 0 or time.monotonic() > end:
                raise
            logger.warning("Job %s: %s; reading the log again.", job_id, exc)
            sleep(settle_s)
            continue
        total = report if total is None else _merge(total, report)
        if settle_s <= 0 or report.stuck or time.monotonic() > end:
            return total
        sleep(settle_s)
        left = [a for a in unsettled_arms(run_dir, job_id)
                if a.slot >= 0 and a.arm_id not in total.readopted
                and a.arm_id not in total.handed_off]
        if not left:
            return _stop_again(total, launching, backend, policy, sleep)


def _stop_again(report: ReconcileReport, arm_ids: list[str], backend: ArmBackend,
                policy: CallPolicy | None, sleep: Callable[[float], object]) -> ReconcileReport:
    """Stop once more the arms found ``launching`` (now a settle wait later).

    A failure is reported as stuck: the arm may be served, and the log already
    says ``stopped``, so a person must look (the error is logged too).
    """
    if not arm_ids:
        return report
    caller = BackendCaller(policy if policy is not None else CallPolicy(), sleep,
                           name="reconcile")
    again: list[str] = []
    stuck = list(report.stuck)
    for arm_id in dict.fromkeys(arm_ids):
        try:
            caller.call("stop", arm_id, lambda a=arm_id: backend.stop(a))
        except BackendCallError as exc:
            logger.error("Arm %s was launching when the job ended and its second stop "
                         "failed: it may be served. Stop it on the platform: %s", arm_id, exc)
            stuck.append((arm_id, str(exc)))
            continue
        again.append(arm_id)
    return replace(report, stopped_again=tuple(again), stuck=tuple(stuck))


def _merge(a: ReconcileReport, b: ReconcileReport) -> ReconcileReport:
    return ReconcileReport(a.stopped + b.stopped, a.never_launched + b.never_launched,
                           a.handed_off + tuple(x for x in b.handed_off if x not in a.handed_off),
                           a.readopted + tuple(x for x in b.readopted if x not in a.readopted),
                           b.stuck, a.already_settled)


def _reconcile_once(
    run_dir: str | Path,
    job_id: str,
    backend: ArmBackend,
    *,
    hour: int,
    reason: str,
    policy: CallPolicy | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
    handoff: Iterable[str] = (),
    readopt: Callable[[ArmRecord], bool] | None = None,
    sleep: Callable[[float], object] = time.sleep,
    found_launching: list[str] | None = None,
    clock: Clock | None = None,
) -> ReconcileReport:
    """One pass of :func:`reconcile_folder` over the log as it is now (same arguments).

    The ids of the arms it found ``launching`` are appended to ``found_launching``.

    The caller must hold the run folder's lock with no posterior service open
    on it (this function appends to the event log).

    Returns:
        The pass's :class:`ReconcileReport`.
    """
    log = EventLog(Path(run_dir) / LOG_DIR_NAME)
    state = JobState(job_id)
    state.replay(log.read())
    policy = policy if policy is not None else CallPolicy()
    caller = BackendCaller(policy, sleep, name="reconcile")
    keep = set(handoff)
    out = _Outcome()
    settled_before = sum(1 for a in state.arms.values() if a.settled and a.slot >= 0)
    todo: list[ArmRecord] = []
    for arm in state.unsettled():
        if arm.slot < 0:  # another job's arm in this log: not ours to stop
            continue
        if readopt is not None and arm.live and readopt(arm):
            out.readopted.append(arm.arm_id)
            continue
        if arm.state == PROPOSED:
            _retire_if_live(log, arm, "never_launched", hour)
            log.append_arm_state(arm.arm_id, STOPPED, hour, "never launched")
            log.flush()
            out.never.append(arm.arm_id)
            continue
        if arm.arm_id in keep and arm.live and effective_state(arm.state) != STOPPING:
            log.append_arm_state(arm.arm_id, HANDED_OFF, hour,
                                 "recommended arm kept live on request (handoff_recommended)")
            log.flush()
            out.handed.append(arm.arm_id)
            continue
        if found_launching is not None and arm.state == LAUNCHING:
            found_launching.append(arm.arm_id)
        _retire_if_live(log, arm, reason, hour)
        if effective_state(arm.state) != STOPPING:
            log.append_arm_state(arm.arm_id, STOPPING, hour, reason)
        log.flush()
        todo.append(arm)
    def served_to() -> int:
        return hour if clock is None else max(hour, current_hour(clock))

    _stop_all(log, caller, backend, todo, hour, served_to, deadline_s, sleep, out)
    report = ReconcileReport(tuple(out.stopped), tuple(out.never), tuple(out.handed),
                             tuple(out.readopted), tuple(out.stuck), settled_before)
    if todo or out.never or out.handed:
        logger.info("Job %s: %s.", job_id, report.summary())
    return report


def _retire_if_live(log: EventLog, arm: ArmRecord, reason: str, hour: int) -> None:
    if arm.live:
        log.append_retired(arm.arm_id, reason, hour)


def _stop_all(log: EventLog, caller: BackendCaller, backend: ArmBackend, todo: list[ArmRecord],
              hour: int, served_to: Callable[[], int], deadline_s: float,
              sleep: Callable[[float], object], out: _Outcome) -> None:
    """Stop every arm of ``todo``, round after round, until all stopped or the deadline.

    Failed attempts are logged at ``hour``; a confirmed stop at ``served_to()``,
    the job hour it returned in.
    """
    deadline = time.monotonic() + deadline_s
    errors: dict[str, str] = {}
    pause = caller.policy.initial_backoff_s or 0.05
    while todo:
        left: list[ArmRecord] = []
        for arm in todo:
            try:
                caller.call("stop", arm.arm_id, lambda a=arm: backend.stop(a.arm_id))
            except BackendCallError as exc:
                errors[arm.arm_id] = str(exc)
                log.append_arm_state(arm.arm_id, STOP_FAILED, hour, str(exc)[:500])
                log.flush()
                left.append(arm)
                continue
            log.append_arm_state(arm.arm_id, STOPPED, served_to(), None)
            log.flush()
            out.stopped.append(arm.arm_id)
        todo = left
        if todo and time.monotonic() + pause > deadline:
            out.stuck.extend((a.arm_id, errors.get(a.arm_id, "")) for a in todo)
            return
        if todo:
            sleep(pause)
            pause = min(pause * 2, max(caller.policy.max_backoff_s, 1.0) * 8)
