"""``run_local``: the in-process, deterministic driver of the job's control plane.

It runs exactly the classes the Ray actors wrap, a
:class:`~hz_ray.service.posterior.PosteriorService` and one
:class:`~hz_ray.service.slot.ArmSlotRunner` per arm slot, in one process, and
steps them through every job hour in a fixed order:

1. every slot polls its platform and reports the deltas (accepted and rejected
   records go to the Parquet log);
2. the service rebuilds the posterior, the live arms' assessments and the
   readout;
3. every slot decides its live arm's lifecycle on that posterior (and stops it
   on the platform, then retires it);
4. every free slot asks for a Thompson sample and launches it (each sample is
   drawn from a plan that knows the arms launched before it);
5. the hour's readout is logged, the log committed and a checkpoint written;
   then the clock advances.

On a :class:`~hz_ray.clock.SimClock` the same seed gives the same job, bit for
bit. The run folder is the one :func:`actors.run_on_ray` uses: a job started
here resumes there, and the reverse.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hz_ray.backends.base import ArmBackend
from hz_ray.backends.factory import check_backend_metrics
from hz_ray.clock import AcceleratedClock, Clock, SimClock, current_hour
from hz_ray.config import TuningConfig
from hz_ray.config_runtime import served_port
from hz_ray.kill_points import kill_point
from hz_ray.result import RunResult
from hz_ray.run_folder import RunFolder, check_hours
from hz_ray.service.endings import (
    end_job,
    interrupts_raise,
    next_hour_in_log,
    raise_alarm,
    reconcile_on_resume,
)
from hz_ray.service.messages import HourProgress
from hz_ray.service.posterior import OptimizerFactory, PosteriorService
from hz_ray.service.slot import ArmSlotRunner, RunnerSettings
from hz_ray.torch_threads import torch_threads

__all__ = ["HourProgress", "LocalScheduler", "run_local"]


class LocalScheduler:
    """Steps one service and its slot runners through job hours (what :func:`run_local` runs).

    Args:
        service: The job's posterior service (``background=False``,
            ``plan_on_demand=True``).
        runners: One slot runner per slot, in slot order, on ``service``.
    """

    def __init__(self, service: PosteriorService, runners: list[ArmSlotRunner]) -> None:
        self.service = service
        self.runners = runners

    def start(self) -> None:
        """Let every slot pick up its arms (a resumed job) before the first hour."""
        for runner in self.runners:
            runner.start()

    def step(self, hour: int) -> HourProgress:
        """Run job ``hour`` on every slot; returns the hour's progress record."""
        for runner in self.runners:
            runner.poll(hour)
            runner.retry_stops(hour)
            runner.send_lifecycle(hour)
            runner.send_reports(hour, heartbeat=False)
        kill_point("hour.after_polls")
        self.service.refresh_now()
        kill_point("hour.after_refresh")
        for runner in self.runners:
            runner.decide(hour, runner.send_reports(hour, heartbeat=True))
        kill_point("hour.after_decide")
        for runner in self.runners:
            runner.send_lifecycle(hour)
            if runner.current is None:
                runner.try_launch(hour)
            runner.drop_drained(hour)
        kill_point("hour.after_launches")
        progress = self.service.hour_progress(hour)
        kill_point("hour.after_progress")
        self.service.commit()
        kill_point("hour.after_commit")
        self.service.checkpoint_now()
        kill_point("hour.after_checkpoint")
        return progress


def run_local(
    config: TuningConfig,
    backend: ArmBackend,
    clock: Clock | None = None,
    hours: int = 72,
    seed: int | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: Callable[[HourProgress], None] | None = None,
    optimizer_factory: OptimizerFactory | None = None,
    *,
    job_id: str | None = None,
    runner_settings: RunnerSettings | None = None,
) -> RunResult:
    """Run a tuning job in this process, one job hour per step.

    Args:
        config: The tuning job.
        backend: The platform or simulated world; a simulated one must share
            ``clock``.
        clock: A :class:`SimClock` advanced one hour per step (default: a new
            one at hour 0, or on resume the run folder's clock). Other clocks
            are read, not advanced: the driver sleeps until each next hour, and
            a step that ends late goes on with the hour it ends in.
        hours: Run until this job hour (exclusive).
        seed: Overrides ``config.optimizer.seed`` when given.
        run_dir: The job's run folder (default: a new temporary folder).
        resume: Continue the job in ``run_dir`` (started by either driver).
        progress: Called after every hour with its :class:`HourProgress`.
        optimizer_factory: Builds the optimiser (default
            :class:`~hz_ray.optimizer.Optimizer`); benchmarks use it to drive
            baselines through the same loop.
        job_id: Pin a new job's id (default: its name plus a random suffix).
        runner_settings: Slot loop knobs (backend retries).

    Returns:
        The :class:`RunResult`, with the readout after every hour.

    Every ending (the last hour, an exception anywhere, SIGINT, SIGTERM) stops
    every arm the job launched, from the run folder
    (:func:`~hz_ray.service.endings.end_job`), except the recommended arm when
    ``arms.handoff_recommended`` asks to keep it live. On ``resume``, arms of
    the folder that cannot go on are stopped before the job continues.

    Raises:
        ConfigError: Bad ``hours``; a modelled metric the backend does not
            publish; the job's alarm fired (a metric no arm reported).
        StateError: ``run_dir`` holds a job and ``resume`` is false, holds a
            job with another config, or another process runs it.
        JobInterrupted: SIGINT or SIGTERM (after the arms were stopped).
    """
    hours = check_hours(hours)
    if seed is not None:
        config = dataclasses.replace(
            config, optimizer=dataclasses.replace(config.optimizer, seed=seed))
    folder = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="hz-ray-"))
    check_backend_metrics(config, backend)
    with RunFolder.open(folder, config, resume=resume, job_id=job_id) as run_folder, \
            torch_threads(1), interrupts_raise():
        job = run_folder.job_id
        next_hour = next_hour_in_log(folder, job) if resume else 0
        clock = _job_clock(run_folder, clock, next_hour)
        if resume:
            reconcile_on_resume(folder, job, config, backend,
                                max(next_hour, current_hour(clock)))
        service: PosteriorService | None = None
        result: RunResult | None = None
        hour = next_hour
        try:
            service = PosteriorService(
                config, folder, job_id=job, restore=resume, background=False,
                plan_on_demand=True, durable_reports=False, optimizer_factory=optimizer_factory,
                driver="local", metrics_port=served_port(config.telemetry),
                metrics_address=config.telemetry.host)
            runners = [ArmSlotRunner(slot, service, backend, clock, config.arms, config.metrics,
                                     runner_settings, call_timeout_s=config.backend.call_timeout_s)
                       for slot in range(config.arms.slots)]
            scheduler = LocalScheduler(service, runners)
            scheduler.start()
            hour = max(next_hour, current_hour(clock))
            while hour < hours:
                record = scheduler.step(hour)
                if progress is not None:
                    progress(record)
                if record.alarm is not None:
                    raise_alarm(record.alarm)
                _advance(clock, hour + 1)
                hour = max(hour + 1, current_hour(clock))  # on wall time, a late step skips
            service.finish()
            result = service.result()
        finally:
            recommended = _recommended(service)
            if service is not None:
                service.close()
            report = end_job(folder, job, config, backend, hour=min(hour, hours - 1),
                             completed=result is not None, recommended=recommended,
                             clock=clock)
        return dataclasses.replace(result, handed_off=report.handed_off,
                                   unstopped=tuple(a for a, _ in report.stuck))


def _recommended(service: PosteriorService | None) -> str | None:
    """The newest readout's arm, if the service got that far."""
    try:
        return service.recommend().arm_id if service is not None else None
    except Exception:  # noqa: BLE001 - an ending must not fail on the readout
        return None


def _job_clock(folder: RunFolder, clock: Clock | None, next_hour: int) -> Clock:
    """The clock to run on: the caller's, else the folder's (on resume), else a new SimClock."""
    if clock is None:
        clock = folder.saved_clock(next_hour) or SimClock()
    if isinstance(clock, SimClock) and current_hour(clock) < next_hour:
        clock.advance(next_hour - clock.now_hours())
    folder.save_clock(clock)
    return clock


def _advance(clock: Clock, to_hour: int) -> None:
    """Move a simulated clock to ``to_hour``, or wait for a wall-time clock to get there."""
    if isinstance(clock, SimClock):
        clock.advance(to_hour - clock.now_hours())
    elif isinstance(clock, AcceleratedClock):
        time.sleep(clock.seconds_until(to_hour))
