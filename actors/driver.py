"""``run_on_ray``: start or attach to a Ray cluster and supervise one tuning job.

The driver opens the job's run folder (the same one :func:`hz_ray.local.run_local`
uses, so a job started by either resumes on either), creates the job's central
:class:`~actors.posterior.PosteriorActor` (named ``"posterior"`` in the namespace
:func:`~actors.options.job_namespace` of the job id), one
:class:`~actors.arm_worker.ArmWorker` per arm slot, starts the job clock (the
folder's, when resuming) once every actor is up, and then only watches: once per
job hour it asks the central actor for the hour's :class:`HourProgress`, which
also logs the hour's readout. Workers run on their own cadence; a slow arm never
blocks another. At the end it asks the central actor for a final rebuild on all
data and returns the service's :class:`~hz_ray.result.RunResult`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from actors.arm_worker import BackendFactory, RunnerSettings, WorkerStats, arm_worker_class
from actors.options import ArmWorkerOptions, PosteriorActorOptions, job_namespace
from actors.posterior import start_posterior_actor
from actors.supervisor import DEFAULT_POLL_S, start_supervisor
from hz_ray.backends.factory import check_backend_metrics
from hz_ray.clock import AcceleratedClock, Clock
from hz_ray.config import BackendSpec, TuningConfig
from hz_ray.config_runtime import ray_seconds_per_hour, served_port
from hz_ray.errors import ConfigError, HzRayError, field_error
from hz_ray.result import RunResult
from hz_ray.run_folder import RunFolder, check_hours
from hz_ray.service.endings import (
    end_job,
    hour_of_stops,
    interrupts_raise,
    next_hour_in_log,
    raise_alarm,
    reconcile_on_resume,
)
from hz_ray.service.messages import HourProgress, ServiceStatus
from hz_ray.service.reconcile import ReconcileReport

logger = logging.getLogger(__name__)

_CLOCK_LEAD_S = 0.25
_PENDING_EPOCH_S = 10**7
_WATCH_STEP_S = 0.05
_SETTLE_S = 2.0  # killed actors may act for a moment: the final stops read the log again


@dataclass(frozen=True)
class DefaultBackendFactory:
    """Builds ``config.backend`` in each worker (picklable: a spec and a seed).

    Attributes:
        spec: The job's backend spec (``"simulated:<world>"`` or ``module:Class``).
        seed: Seed of the simulated world's noise.
    """

    spec: BackendSpec
    seed: int = 0

    def __call__(self, clock: Clock) -> Any:
        """Build the backend on ``clock``."""
        from hz_ray.backends.factory import build_backend

        return build_backend(self.spec, clock, seed=self.seed)


@dataclass(frozen=True)
class RayRun:
    """Everything a Ray run produced: the result plus what the actors measured.

    Attributes:
        result: The :class:`RunResult` (what :func:`run_on_ray` returns).
        workers: Per slot, the worker's :class:`WorkerStats`.
        status: The central actor's final :class:`ServiceStatus`.
        summaries: Per job hour, the central actor's :class:`HourProgress`.
        wall_s: Wall seconds of the job (clock start to final readout).
    """

    result: RunResult
    workers: tuple[WorkerStats, ...]
    status: ServiceStatus
    summaries: tuple[HourProgress, ...]
    wall_s: float


class RayDriver:
    """Supervises one tuning job on Ray (what :func:`run_on_ray` runs).

    Args:
        config: The tuning job.
        backend_factory: ``factory(clock) -> ArmBackend``, called inside each worker.
        run_dir: The job's run folder, reachable from the central actor's node
            (the head node by default); :meth:`start` opens it (and holds its
            lock until :meth:`shutdown`).
        seconds_per_hour: Wall seconds per job hour of the job clock.
        resume: Continue the job in ``run_dir`` (the central actor restores).
        metrics_port: Serve Prometheus metrics from the central actor on this
            port (0: a free one) of ``config.telemetry.host`` on its node;
            ``None``: as ``config.telemetry`` says.
        posterior_options: Central actor options.
        worker_options: Worker options.
        runner_settings: Worker loop knobs.
        startup_timeout_s: Longest wait for the actors to come up.
        supervisor_poll_s: How often the job's detached supervisor checks that
            this driver still holds the run folder (if not, it stops the arms).
    """

    def __init__(self, config: TuningConfig, backend_factory: BackendFactory, run_dir: Path,
                 *, seconds_per_hour: float = 0.5, resume: bool = False,
                 metrics_port: int | None = None,
                 posterior_options: PosteriorActorOptions | None = None,
                 worker_options: ArmWorkerOptions | None = None,
                 runner_settings: RunnerSettings | None = None,
                 startup_timeout_s: float = 300.0,
                 supervisor_poll_s: float = DEFAULT_POLL_S) -> None:
        self.config = config
        self.backend_factory = backend_factory
        self.run_dir = run_dir
        self.seconds_per_hour = seconds_per_hour
        self.resume = resume
        self.metrics_port = served_port(config.telemetry, metrics_port)
        self.posterior_options = posterior_options
        self.worker_options = worker_options
        self.runner_settings = runner_settings
        self.startup_timeout_s = startup_timeout_s
        self.folder: RunFolder | None = None
        self.posterior: Any = None
        self.workers: list[Any] = []
        self.clock: AcceleratedClock | None = None
        self.next_hour = 0
        self.hour = 0
        self.completed = False
        self.recommended: str | None = None
        self.end_report: ReconcileReport | None = None
        self._backend: Any = None
        self.supervisor: Any = None
        self.supervisor_poll_s = supervisor_poll_s

    @property
    def job_id(self) -> str:
        """The job's id (once :meth:`start` opened the run folder)."""
        if self.folder is None:
            raise HzRayError("The job has not started.", "Call start() first.")
        return self.folder.job_id

    # ------------------------------------------------------------- startup
    def start(self) -> None:
        """Open the run folder, create the central actor and the workers, wait until all are up.

        Raises:
            StateError: The folder holds another job (and ``resume`` is false),
                or a job with another config, or another process runs it.
        """
        if self.folder is None:
            self.folder = RunFolder.open(self.run_dir, self.config, resume=self.resume)
        self.clock = self._job_clock()
        backend = self._driver_backend()
        check_backend_metrics(self.config, backend)
        if self.resume:  # stop the arms that cannot go on, before any actor writes the log
            reconcile_on_resume(self.run_dir, self.job_id, self.config, backend,
                                max(self.next_hour, math.floor(self.clock.now_hours())))
        self.supervisor = start_supervisor(
            self.run_dir, self.job_id, self.config, self.backend_factory,
            self.seconds_per_hour, job_namespace(self.job_id), poll_s=self.supervisor_poll_s,
            pin_to_head=(self.posterior_options or PosteriorActorOptions()).pin_to_head,
            runtime_env=(self.posterior_options or PosteriorActorOptions()).runtime_env)
        kwargs: dict[str, Any] = {"driver_holder": self.folder.holder}
        if self.metrics_port is not None:
            kwargs["metrics_port"] = self.metrics_port
            kwargs["metrics_address"] = self.config.telemetry.host
        namespace = job_namespace(self.job_id)
        self.posterior = start_posterior_actor(self.config, self.run_dir, job_id=self.job_id,
                                               resume=self.resume,
                                               options=self.posterior_options, **kwargs)
        ray.get(self.posterior.ready.remote(), timeout=self.startup_timeout_s)
        worker_cls = arm_worker_class(self.worker_options)
        self.workers = [
            worker_cls.options(name=f"arm-worker-{slot:02d}", namespace=namespace).remote(
                slot, self.config, namespace, self.backend_factory, self.runner_settings)
            for slot in range(self.config.arms.slots)
        ]
        # Build every backend on a clock that has not started yet (epoch far ahead); run()
        # then fixes the real epoch, so slow backend construction delays no first hour.
        pending = AcceleratedClock(self.seconds_per_hour, time.time() + _PENDING_EPOCH_S)
        ray.get([w.prepare.remote(pending) for w in self.workers],
                timeout=self.startup_timeout_s)

    def _job_clock(self) -> AcceleratedClock:
        """The job clock: the run folder's (a resumed job keeps its hours), else a new one.

        A new job's clock starts when :meth:`run` starts (its epoch is set then).
        """
        assert self.folder is not None
        self.next_hour = next_hour_in_log(self.run_dir, self.job_id) if self.resume else 0
        saved = self.folder.saved_clock(self.next_hour, seconds_per_hour=self.seconds_per_hour)
        if saved is not None:
            assert isinstance(saved, AcceleratedClock)
            return saved
        return AcceleratedClock(self.seconds_per_hour, time.time() + _PENDING_EPOCH_S)

    def _start_clock(self) -> AcceleratedClock:
        """Fix a new job's epoch now (once every actor is up) and record it in the folder."""
        assert self.folder is not None and self.clock is not None
        if not (self.run_dir / "clock.json").exists():
            self.clock = AcceleratedClock(self.seconds_per_hour, time.time() + _CLOCK_LEAD_S)
            self.folder.save_clock(self.clock)
        return self.clock

    # ----------------------------------------------------------------- run
    def run(self, hours: int,
            progress: Callable[[HourProgress], None] | None = None) -> RayRun:
        """Start the clock, watch the job hour by hour, collect the result.

        Args:
            hours: Job length in job hours.
            progress: Called after every job hour with its :class:`HourProgress`.

        Returns:
            The :class:`RayRun`.

        Raises:
            HzRayError: A worker failed with an error that retries cannot fix.
        """
        clock = self._start_clock()
        started = time.time()
        refs = [w.run.remote(clock, hours) for w in self.workers]
        by_ref = {ref: slot for slot, ref in enumerate(refs)}
        summaries: list[HourProgress] = []
        first = max(0, math.floor(clock.now_hours()))
        for hour in range(first, hours):
            self._wait_until(clock, hour + 1, refs, by_ref)
            if self.supervisor is not None:  # every hour, readout or not
                self.supervisor.heartbeat.remote(hour)
            summary = self._summary(hour)
            if summary is None:
                continue
            summaries.append(summary)
            self.hour = hour
            if progress is not None:
                progress(summary)
            if summary.alarm is not None:
                raise_alarm(summary.alarm)
        grace_s = 2 * clock.seconds_per_hour + 120.0
        stats = tuple(self._get(refs, grace_s))
        self._get(self.posterior.finish.remote(), self.startup_timeout_s)
        result: RunResult = self._get(self.posterior.result.remote(), 120.0)
        status: ServiceStatus = self._get(self.posterior.status.remote(), 60.0)
        self.recommended = result.recommendation.arm_id
        self.completed = True
        return RayRun(result, stats, status, tuple(summaries), time.time() - started)

    def _wait_until(self, clock: AcceleratedClock, hour: float, refs: list[Any],
                    by_ref: dict[Any, int]) -> None:
        """Sleep until job ``hour``, failing fast if a worker died for good."""
        while True:
            left = clock.seconds_until(hour)
            if left <= 0:
                return
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=min(left, 1.0))
            for ref in done:
                try:
                    ray.get(ref, timeout=0)
                except RayError as exc:
                    raise HzRayError(f"Arm worker of slot {by_ref[ref]} failed: {exc}",
                                     "See the worker's log above; fix the backend or its "
                                     "factory and resume with the same run_dir.") from exc
            if len(done) == len(refs):
                time.sleep(max(0.0, clock.seconds_until(hour)))
                return
            if left <= 1.0:
                time.sleep(max(0.0, clock.seconds_until(hour)))
                return

    def _summary(self, hour: int) -> HourProgress | None:
        """The central actor's progress record of ``hour``; ``None`` while it is restarting."""
        try:
            return ray.get(self.posterior.hour_progress.remote(hour), timeout=30.0)
        except (RayActorError, GetTimeoutError) as exc:
            logger.warning("Hour %d: central actor unavailable (%s); no readout this hour.",
                           hour, type(exc).__name__)
            return None

    @staticmethod
    def _get(ref: Any, timeout_s: float) -> Any:
        try:
            return ray.get(ref, timeout=timeout_s)
        except HzRayError:
            raise
        except GetTimeoutError as exc:
            raise HzRayError(f"No answer from the job's actors in {timeout_s:.0f} s.",
                             "Check `ray status` and the actors' logs.") from exc

    # -------------------------------------------------------------- cleanup
    def shutdown(self) -> ReconcileReport | None:
        """Stop the actors, then every arm of the job (from the run folder); release it.

        Returns:
            What the final stops did (``None`` when the folder was never opened).
        """
        try:
            self._stop_actors()
        finally:
            report = self._end_job()
            self._release_supervisor()
            if self.folder is not None:
                self.folder.close()
                self.folder = None
        return report

    def _release_supervisor(self) -> None:
        """Tell the supervisor the job ended here (before the folder's lock is let go)."""
        if self.supervisor is None:
            return
        try:
            ray.get(self.supervisor.release.remote(), timeout=30.0)
        except Exception:  # noqa: BLE001 - it exits by itself once released
            logger.debug("supervisor release failed", exc_info=True)
        self.supervisor = None

    def _recommended_now(self) -> str | None:
        if self.recommended is not None or self.posterior is None:
            return self.recommended
        try:
            return ray.get(self.posterior.recommend.remote(), timeout=30.0).arm_id
        except Exception:  # noqa: BLE001 - an ending must not fail on the readout
            return None

    def _driver_backend(self) -> Any:
        """The platform as this process sees it (built once, for the job's own stops)."""
        if self._backend is None:
            clock = self.clock or AcceleratedClock(self.seconds_per_hour, time.time())
            self._backend = self.backend_factory(clock)
        return self._backend

    def _end_job(self) -> ReconcileReport | None:
        """Stop every arm the job may have live, with a backend built in this process."""
        if self.folder is None:
            return None
        # An interrupted job's arms were served to the clock's hour, whatever hour the
        # central actor's readouts reached (none come while it restarts).
        hour = self.hour if self.completed else hour_of_stops(self.hour, self.clock)
        self.end_report = end_job(self.run_dir, self.job_id, self.config,
                                  self._driver_backend(), hour=hour,
                                  completed=self.completed, recommended=self.recommended,
                                  settle_s=_SETTLE_S, clock=self.clock)
        return self.end_report

    def _stop_actors(self) -> None:
        """Stop the workers and the central actor (by handle)."""
        if not self.completed:
            self.recommended = self._recommended_now()
        for worker in self.workers:
            try:
                ray.kill(worker)
            except Exception:  # noqa: BLE001 - best effort while tearing down
                logger.debug("worker already gone", exc_info=True)
        self.workers = []
        if self.posterior is not None:
            try:
                ray.get(self.posterior.close.remote(), timeout=60.0)
            except Exception:  # noqa: BLE001
                logger.debug("central actor close failed", exc_info=True)
            try:
                ray.kill(self.posterior)
            except Exception:  # noqa: BLE001
                logger.debug("central actor already gone", exc_info=True)
            self.posterior = None


def connect(address: str | None) -> bool:
    """Start or attach to Ray unless this process is connected already.

    Args:
        address: ``None`` starts an embedded local Ray (``address="local"``);
            ``"auto"`` or ``"host:port"`` / ``"ray://host:port"`` attaches to
            a running cluster.

    Returns:
        True when this call started the connection (the caller shuts it down).
    """
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(address="local", include_dashboard=False, log_to_driver=True)
    else:
        ray.init(address=address, log_to_driver=True)
    return True


def run_on_ray(
    config: TuningConfig,
    backend_factory: BackendFactory | None = None,
    hours: int = 72,
    address: str | None = None,
    *,
    seed: int | None = None,
    run_dir: str | Path | None = None,
    seconds_per_hour: float | None = None,
    progress: Callable[[HourProgress], None] | None = None,
    metrics_port: int | None = None,
    resume: bool = False,
    posterior_options: PosteriorActorOptions | None = None,
    worker_options: ArmWorkerOptions | None = None,
    runner_settings: RunnerSettings | None = None,
    job_id: str | None = None,
) -> RunResult:
    """Run a tuning job on Ray: one central posterior actor, one worker per arm slot.

    Args:
        config: The tuning job.
        backend_factory: ``factory(clock) -> ArmBackend``, called inside every
            worker on the job clock; must be picklable. Default: build
            ``config.backend`` with :func:`hz_ray.backends.factory.build_backend`.
        hours: Run until this job hour (exclusive).
        address: ``None`` starts an embedded local Ray; ``"auto"`` or an
            address attaches to a running cluster. Ignored when this process is
            already connected to Ray.
        seed: Overrides ``config.optimizer.seed`` (and seeds the default
            backend's noise).
        run_dir: The job's run folder, on the head node (default: a new
            temporary folder). A job started by either driver resumes on either.
        seconds_per_hour: Wall seconds per job hour of the job clock (an
            :class:`~hz_ray.clock.AcceleratedClock`); default from
            ``config.clock``: 3600 for ``wall``, its ``seconds_per_hour`` for
            ``accelerated``, 0.5 for ``simulated``.
        progress: Called after every job hour with its :class:`HourProgress`.
        metrics_port: Serve Prometheus metrics from the central actor on this
            port of ``config.telemetry.host`` on its node (outside Ray's
            10002-19999 range; 0 picks a free one); default as
            ``config.telemetry`` says.
        resume: Continue the job in ``run_dir`` (started by either driver).
        posterior_options: Central actor options (CPUs, restarts, placement).
        worker_options: Arm worker options.
        runner_settings: Worker loop knobs (poll cadence, retries).
        job_id: Pin a new job's id (default: its name plus a random suffix).

    Returns:
        The same :class:`RunResult` as :func:`hz_ray.local.run_local`; its
        ``recommendation`` is the readout after a final rebuild on all data.

    Raises:
        ConfigError: Bad ``hours`` or ``seconds_per_hour``.
        StateError: ``run_dir`` holds a job and ``resume`` is false, holds a
            job with another config, or another process runs it.
    """
    hours = check_hours(hours)
    if seconds_per_hour is None:
        seconds_per_hour = ray_seconds_per_hour(config.clock, config.backend.target)
    if isinstance(seconds_per_hour, bool) or not isinstance(seconds_per_hour, (int, float)) \
            or not math.isfinite(seconds_per_hour) or seconds_per_hour <= 0:
        raise field_error(ConfigError, "seconds_per_hour", seconds_per_hour,
                          "a finite number > 0", "Use e.g. 0.5 for a simulated world.")
    if seed is not None:
        config = dataclasses.replace(
            config, optimizer=dataclasses.replace(config.optimizer, seed=seed))
    factory = backend_factory if backend_factory is not None else DefaultBackendFactory(
        config.backend, seed or 0)
    folder = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="hz-ray-"))
    run_folder = RunFolder.open(folder, config, resume=resume, job_id=job_id)  # before Ray
    try:
        owned = connect(address)
    except BaseException:
        run_folder.close()
        raise
    driver = RayDriver(config, factory, folder, seconds_per_hour=float(seconds_per_hour),
                       resume=resume, metrics_port=metrics_port,
                       posterior_options=posterior_options, worker_options=worker_options,
                       runner_settings=runner_settings)
    driver.folder = run_folder
    try:
        with interrupts_raise():
            try:
                driver.start()
                result = driver.run(hours, progress).result
            finally:
                report = driver.shutdown()
        assert report is not None
        return dataclasses.replace(result, handed_off=report.handed_off,
                                   unstopped=tuple(a for a, _ in report.stuck))
    finally:
        if owned:
            ray.shutdown()
