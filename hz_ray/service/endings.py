"""How every job ends, the same on both drivers: signals, the final stops, resume.

- :func:`interrupts_raise` turns SIGTERM into :class:`JobInterrupted` (a
  :class:`KeyboardInterrupt`, as SIGINT already is), so every ``finally`` of
  the driver runs on either signal.
- :func:`shielded` holds further SIGINT/SIGTERM off while the final stops run
  (a second Ctrl-C must not leave arms live); SIGKILL still ends the process,
  and the next start of the run folder or ``hz-ray stop RUN_DIR`` finishes.
- :func:`end_job` is what each driver runs last, once its posterior service is
  closed: :func:`~hz_ray.service.reconcile.reconcile_folder` on the run folder.
- :func:`reconcile_on_resume` runs before a resumed job's service starts: arms
  still live with hours left are re-adopted by their slots, the rest stopped.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hz_ray.backends.base import ArmBackend
from hz_ray.clock import AcceleratedClock, Clock, current_hour
from hz_ray.config import TuningConfig
from hz_ray.errors import ConfigError
from hz_ray.run_folder import LOG_DIR_NAME, read_saved_clock
from hz_ray.service.arm_states import LIVE
from hz_ray.service.backend_calls import CallPolicy
from hz_ray.service.job_state import JobState
from hz_ray.service.messages import STOP_INTERRUPTED, STOP_JOB_END, STOP_RECONCILED, ArmRecord
from hz_ray.service.reconcile import DEFAULT_DEADLINE_S, ReconcileReport, reconcile_folder
from hz_ray.storage import EventLog

logger = logging.getLogger(__name__)


class JobInterrupted(KeyboardInterrupt):
    """The job was asked to end by a signal (SIGINT or SIGTERM).

    Attributes:
        signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
    """

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


_last_signal: list[str] = []  # the newest signal our handler got (Ray may re-raise it bare)


def _raise_interrupt(signum: int, _frame: object) -> None:
    name = signal.Signals(signum).name
    _last_signal[:] = [name]
    raise JobInterrupted(name)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """Within the block, SIGTERM (and SIGINT) raise :class:`JobInterrupted`.

    Outside the main thread (where Python delivers no signals) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _raise_interrupt)
    _last_signal.clear()
    try:
        yield
    except KeyboardInterrupt as exc:
        if isinstance(exc, JobInterrupted):
            raise
        # Ray's blocking calls re-raise a signal's exception as a bare KeyboardInterrupt.
        raise JobInterrupted(_last_signal[0] if _last_signal else "SIGINT") from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are logged and ignored (the final stops run)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum: int, _frame: object) -> None:
        logger.warning("%s received while stopping the job's arms; still stopping them "
                       "(SIGKILL abandons the stops: then run `hz-ray stop RUN_DIR`).",
                       signal.Signals(signum).name)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, note)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def raise_alarm(alarm: str) -> None:
    """End a job whose alarm fired (e.g. a metric no arm ever reported): a ConfigError."""
    raise ConfigError(f"The job stopped launching arms: {alarm}",
                      "Every arm it launched is stopped; fix the config and start a new job.")


def call_policy(config: TuningConfig) -> CallPolicy:
    """The platform call policy of a job's final stops."""
    return CallPolicy(timeout_s=config.backend.call_timeout_s, attempts=3,
                      initial_backoff_s=0.2, max_backoff_s=5.0, jitter_s=0.2)


def end_job(run_dir: str | Path, job_id: str, config: TuningConfig, backend: ArmBackend, *,
            hour: int, completed: bool, recommended: str | None = None,
            deadline_s: float = DEFAULT_DEADLINE_S, settle_s: float = 0.0,
            clock: Clock | None = None) -> ReconcileReport:
    """Stop every arm the job may have live (the driver's last step, service closed).

    Args:
        run_dir: The job's run folder (its lock held by the caller).
        job_id: The job's id.
        config: The job's config (``arms.handoff_recommended``, call timeouts).
        backend: The platform, built in the calling process.
        hour: The job hour to log the stops at.
        completed: True at the job's normal end (stop reason ``job_end``; the
            recommended arm may be handed off), False on any other ending
            (``interrupted``).
        recommended: The final readout's arm (handed off when asked for).
        deadline_s: Give up on stops still failing after this long.
        settle_s: Read the log again this long after the stops, for arms that
            dying actors of the job may have launched meanwhile (Ray; 0: no).
        clock: The job clock: each confirmed stop is logged at the hour it
            returned in, when that is after ``hour`` (the platform served the
            arm until then; see :func:`reconcile_folder`).

    Returns:
        The :class:`ReconcileReport`; arms in ``stuck`` are still ``stopping``.
    """
    handoff = (recommended,) if completed and recommended and \
        config.arms.handoff_recommended else ()
    with shielded():
        report = reconcile_folder(run_dir, job_id, backend, hour=max(0, hour),
                                  reason=STOP_JOB_END if completed else STOP_INTERRUPTED,
                                  policy=call_policy(config), deadline_s=deadline_s,
                                  handoff=handoff, settle_s=settle_s, clock=clock)
    if report.stuck:
        logger.error("Job %s: %d arm(s) could not be stopped: %s. They stay 'stopping' in the "
                     "log; run `hz-ray stop %s` to retry.", job_id, len(report.stuck),
                     ", ".join(a for a, _ in report.stuck), run_dir)
    return report


def next_hour_in_log(run_dir: str | Path, job_id: str) -> int:
    """The first job hour a resumed job runs (after the newest logged readout)."""
    state = JobState(job_id)
    state.replay(EventLog(Path(run_dir) / LOG_DIR_NAME).read())
    return max(state.recommendations, default=-1) + 1


def folder_clock(run_dir: str | Path, known_hour: int, seconds_per_hour: float) -> Clock:
    """The job clock of a run folder, for a process that ends the job from outside its driver.

    Args:
        run_dir: The run folder (read without its lock).
        known_hour: The newest job hour the caller knows the job reached.
        seconds_per_hour: The job's pace, used only when the folder recorded no clock.

    Returns:
        The folder's recorded clock; without one, an
        :class:`~hz_ray.clock.AcceleratedClock` standing at ``known_hour + 1`` now.
    """
    saved = read_saved_clock(run_dir, known_hour + 1)
    if saved is not None:
        return saved
    return AcceleratedClock(seconds_per_hour, time.time() - (known_hour + 1) * seconds_per_hour)


def hour_of_stops(known_hour: int, clock: Clock | None) -> int:
    """The job hour to log stops at when the job is ended from outside its driver.

    A dead driver's last heartbeat and the newest logged readout lag the job
    (a central actor restarting writes no readout for hours), while the
    platform went on serving the arms by the job clock: the stops happen at the
    clock's hour.

    Args:
        known_hour: The newest hour the caller knows the job reached.
        clock: The job clock (the run folder's), or ``None`` if none was saved.

    Returns:
        ``max(known_hour, the clock's current hour)``, at least 0.
    """
    now = current_hour(clock) if clock is not None else 0
    return max(0, int(known_hour), now)


def reconcile_on_resume(run_dir: str | Path, job_id: str, config: TuningConfig,
                        backend: ArmBackend, now_hour: int) -> ReconcileReport:
    """Before a resumed job starts: keep arms that can go on, stop the others.

    A slot's arm is re-adopted when it was ``live`` (its launch confirmed, its
    stop not decided) and has hours left (``now_hour - launched_hour <
    arms.max_hours``); every other arm that may be served is stopped.

    Args:
        run_dir: The job's run folder (its lock held by the caller).
        job_id: The job's id.
        config: The job's config.
        backend: The platform.
        now_hour: The job hour the resumed job starts at.

    Returns:
        The :class:`ReconcileReport`.
    """
    def readopt(arm: ArmRecord) -> bool:
        return arm.state == LIVE and now_hour - arm.launched_hour < config.arms.max_hours

    with shielded():
        return reconcile_folder(run_dir, job_id, backend, hour=max(0, now_hour),
                                reason=STOP_RECONCILED, policy=call_policy(config),
                                readopt=readopt)
