"""``run_on_ray``: start or attach to a Ray cluster and supervise one tuning job.

The driver creates the job's central :class:`~actors.posterior.PosteriorActor`
(named ``"posterior"`` in the namespace :func:`~actors.options.job_namespace`),
one :class:`~actors.arm_worker.ArmWorker` per arm slot, starts the job clock
once every actor is up, and then only watches: once per job hour it asks the
central actor for the hour's summary and the current readout (the progress
line and ``RunResult.recommendations``). Workers run on their own cadence; a
slow arm never blocks another. At the end it asks the central actor for a
final rebuild on all data and returns the same :class:`~hz_ray.result.RunResult`
as :func:`hz_ray.local.run_local`.
"""

from __future__ import annotations

import dataclasses
import json
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
from actors.messages import HourSummary, ServiceStatus
from actors.options import ArmWorkerOptions, PosteriorActorOptions, job_namespace
from actors.posterior import CHECKPOINT_NAME, LOG_DIR_NAME, start_posterior_actor
from hz_ray.clock import AcceleratedClock, Clock
from hz_ray.config import BackendSpec, TuningConfig
from hz_ray.errors import ConfigError, HzRayError, StateError, field_error
from hz_ray.records import Recommendation
from hz_ray.result import RunResult

logger = logging.getLogger(__name__)

DRIVER_STATE_NAME = "driver.json"
_CLOCK_LEAD_S = 0.25
_PENDING_EPOCH_S = 10**7
_WATCH_STEP_S = 0.05


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
        summaries: Per job hour, the central actor's :class:`HourSummary`.
        wall_s: Wall seconds of the job (clock start to final readout).
    """

    result: RunResult
    workers: tuple[WorkerStats, ...]
    status: ServiceStatus
    summaries: tuple[HourSummary, ...]
    wall_s: float


class RayDriver:
    """Supervises one tuning job on Ray (what :func:`run_on_ray` runs).

    Args:
        config: The tuning job.
        backend_factory: ``factory(clock) -> ArmBackend``, called inside each worker.
        run_dir: Folder of the log and checkpoint, reachable from the central
            actor's node (the head node by default).
        seconds_per_hour: Wall seconds per job hour of the job clock.
        resume: Continue the job in ``run_dir`` (the central actor restores).
        metrics_port: Serve Prometheus metrics from the central actor on this
            port of its node's loopback (``None``: not served).
        posterior_options: Central actor options.
        worker_options: Worker options.
        runner_settings: Worker loop knobs.
        startup_timeout_s: Longest wait for the actors to come up.
    """

    def __init__(self, config: TuningConfig, backend_factory: BackendFactory, run_dir: Path,
                 *, seconds_per_hour: float = 0.5, resume: bool = False,
                 metrics_port: int | None = None,
                 posterior_options: PosteriorActorOptions | None = None,
                 worker_options: ArmWorkerOptions | None = None,
                 runner_settings: RunnerSettings | None = None,
                 startup_timeout_s: float = 300.0) -> None:
        self.config = config
        self.backend_factory = backend_factory
        self.run_dir = run_dir
        self.seconds_per_hour = seconds_per_hour
        self.resume = resume
        self.metrics_port = metrics_port
        self.posterior_options = posterior_options
        self.worker_options = worker_options
        self.runner_settings = runner_settings
        self.startup_timeout_s = startup_timeout_s
        self.posterior: Any = None
        self.workers: list[Any] = []
        self.clock: AcceleratedClock | None = None

    # ------------------------------------------------------------- startup
    def start(self) -> None:
        """Create the central actor and the workers and wait until all are up."""
        kwargs: dict[str, Any] = {}
        if self.metrics_port is not None:
            kwargs["metrics_port"] = self.metrics_port
        self.posterior = start_posterior_actor(self.config, self.run_dir, resume=self.resume,
                                               options=self.posterior_options, **kwargs)
        ray.get(self.posterior.ready.remote(), timeout=self.startup_timeout_s)
        worker_cls = arm_worker_class(self.worker_options)
        self.workers = [
            worker_cls.options(name=f"arm-worker-{slot:02d}",
                               namespace=job_namespace(self.config.name)).remote(
                slot, self.config, job_namespace(self.config.name), self.backend_factory,
                self.runner_settings)
            for slot in range(self.config.arms.slots)
        ]
        # Build every backend on a clock that has not started yet (epoch far ahead); run()
        # then fixes the real epoch, so slow backend construction delays no first hour.
        pending = AcceleratedClock(self.seconds_per_hour, time.time() + _PENDING_EPOCH_S)
        ray.get([w.prepare.remote(pending) for w in self.workers],
                timeout=self.startup_timeout_s)

    def _job_clock(self) -> AcceleratedClock:
        path = self.run_dir / DRIVER_STATE_NAME
        if self.resume and path.exists():
            saved = json.loads(path.read_text())
            return AcceleratedClock(float(saved["seconds_per_hour"]), float(saved["epoch_s"]))
        clock = AcceleratedClock(self.seconds_per_hour, time.time() + _CLOCK_LEAD_S)
        from hz_ray.storage import save_checkpoint

        save_checkpoint(path, {"epoch_s": clock.epoch_s,
                               "seconds_per_hour": clock.seconds_per_hour,
                               "job": self.config.name})
        return clock

    # ----------------------------------------------------------------- run
    def run(self, hours: int,
            progress: Callable[[HourSummary], None] | None = None) -> RayRun:
        """Start the clock, watch the job hour by hour, collect the result.

        Args:
            hours: Job length in job hours.
            progress: Called after every job hour with the :class:`HourSummary`
                (it has the fields of :class:`hz_ray.local.HourProgress`).

        Returns:
            The :class:`RayRun`.

        Raises:
            HzRayError: A worker failed with an error that retries cannot fix.
        """
        self.clock = clock = self._job_clock()
        started = time.time()
        refs = [w.run.remote(clock, hours) for w in self.workers]
        by_ref = {ref: slot for slot, ref in enumerate(refs)}
        recommendations: list[tuple[int, Recommendation]] = []
        summaries: list[HourSummary] = []
        first = max(0, math.floor(clock.now_hours()))
        for hour in range(first, hours):
            self._wait_until(clock, hour + 1, refs, by_ref)
            summary = self._summary(hour)
            if summary is None:
                continue
            summaries.append(summary)
            recommendations.append((hour, summary.recommendation))
            if progress is not None:
                progress(summary)
        grace_s = 2 * clock.seconds_per_hour + 120.0
        stats = tuple(self._get(refs, grace_s))
        final = self._get(self.posterior.finish.remote(), self.startup_timeout_s)
        arms = self._get(self.posterior.arm_summaries.remote(), 120.0)
        status: ServiceStatus = self._get(self.posterior.status.remote(), 60.0)
        result = RunResult(
            recommendation=final, recommendations=recommendations,
            arms={a.arm_id: a for a in arms}, log_path=self.run_dir / LOG_DIR_NAME,
            checkpoint_path=self.run_dir / CHECKPOINT_NAME, rejected=status.rejected)
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

    def _summary(self, hour: int) -> HourSummary | None:
        """The central actor's summary of ``hour``; ``None`` while it is restarting."""
        try:
            return ray.get(self.posterior.hour_summary.remote(hour), timeout=30.0)
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
    def shutdown(self) -> None:
        """Stop the workers and the central actor (by handle)."""
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


def _check_hours(hours: object) -> int:
    if isinstance(hours, bool) or not isinstance(hours, int) or hours < 1:
        raise field_error(ConfigError, "hours", hours, "an integer >= 1")
    return hours


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
    seconds_per_hour: float = 0.5,
    progress: Callable[[HourSummary], None] | None = None,
    metrics_port: int | None = None,
    resume: bool = False,
    posterior_options: PosteriorActorOptions | None = None,
    worker_options: ArmWorkerOptions | None = None,
    runner_settings: RunnerSettings | None = None,
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
        run_dir: Folder of the Parquet log and the checkpoint, on the head
            node (default: a new temporary folder).
        seconds_per_hour: Wall seconds per job hour of the job clock (an
            :class:`~hz_ray.clock.AcceleratedClock`; 3600 for a live platform).
        progress: Called after every job hour with the hour's summary.
        metrics_port: Serve Prometheus metrics from the central actor on
            ``127.0.0.1:<port>`` of its node (outside Ray's 10002-19999 range).
        resume: Continue the job in ``run_dir`` from its checkpoint and log.
        posterior_options: Central actor options (CPUs, restarts, placement).
        worker_options: Arm worker options.
        runner_settings: Worker loop knobs (poll cadence, retries).

    Returns:
        The same :class:`RunResult` as :func:`hz_ray.local.run_local`; its
        ``recommendation`` is the readout after a final rebuild on all data.

    Raises:
        ConfigError: Bad ``hours`` or ``seconds_per_hour``.
        StateError: ``run_dir`` holds another job's log and ``resume`` is false.
    """
    hours = _check_hours(hours)
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
    folder.mkdir(parents=True, exist_ok=True)
    if not resume and (folder / LOG_DIR_NAME).exists() and any((folder / LOG_DIR_NAME).iterdir()):
        raise field_error(StateError, "run_dir", str(folder), "a folder without an event log",
                          "Pass resume=True to continue that job, or pick a new run_dir.")
    owned = connect(address)
    driver = RayDriver(config, factory, folder, seconds_per_hour=float(seconds_per_hour),
                       resume=resume, metrics_port=metrics_port,
                       posterior_options=posterior_options, worker_options=worker_options,
                       runner_settings=runner_settings)
    try:
        driver.start()
        return driver.run(hours, progress).result
    finally:
        driver.shutdown()
        if owned:
            ray.shutdown()
