"""The central posterior actor: a thin Ray shell around the posterior service.

The shell only adds what Ray needs: concurrency groups (``report`` in
``ingest``; ``sample``, ``retire`` and ``slot_state`` in ``sample``; the rest
in the default pool), restart detection, and the one factory that applies the
actor options (:func:`posterior_actor_class`, Ray Serve's controller pattern).

This module itself imports no torch: the service (and with it the GP stack) is
imported inside the actor's ``__init__``. Ray imports an actor's module
wherever a handle to it is unpickled, so arm workers and the driver, which hold
handles, stay free of torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from actors.options import POSTERIOR_ACTOR_NAME, PosteriorActorOptions, job_namespace
from hz_ray.config import TuningConfig
from hz_ray.errors import StateError, field_error
from hz_ray.records import Recommendation
from hz_ray.result import ArmSummary, RunResult
from hz_ray.service.messages import (
    HourProgress,
    Report,
    ReportAck,
    SampleReply,
    ServiceStatus,
    SlotState,
)

if TYPE_CHECKING:
    from hz_ray.service.posterior import PosteriorService


class PosteriorActor:
    """The Ray actor of one tuning job's posterior; delegates to :class:`PosteriorService`.

    After a crash Ray reruns ``__init__``, which then restores the service from
    the checkpoint and the log in ``run_dir``, so nothing acknowledged is lost.

    Args:
        config: The tuning job.
        run_dir: The job's run folder (on the actor's node).
        resume: Continue a job from ``run_dir`` (restarts always restore).
        **kwargs: Passed to :class:`PosteriorService` (``job_id``, ``metrics_port``, ...).
    """

    def __init__(self, config: TuningConfig, run_dir: str | Path, *, resume: bool = False,
                 **kwargs: Any) -> None:
        from hz_ray.run_folder import LOCK_FILE
        from hz_ray.service.posterior import PosteriorService

        with warnings.catch_warnings():  # Ray 2.60 warns inside its own property
            warnings.simplefilter("ignore", DeprecationWarning)
            reconstructed = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self.service: PosteriorService = PosteriorService(
            config, run_dir, restore=resume or reconstructed, driver="ray",
            driver_lock=Path(run_dir) / LOCK_FILE, **kwargs)

    @ray.method(concurrency_group="ingest")
    def report(self, report: Report) -> ReportAck:
        """Ingest a batch of hourly deltas (see :meth:`PosteriorService.report`)."""
        return self.service.report(report)

    @ray.method(concurrency_group="sample")
    def sample(self, slot: int, seq: int, hour: int) -> SampleReply | None:
        """Hand out a Thompson sample (see :meth:`PosteriorService.sample`)."""
        return self.service.sample(slot, seq, hour)

    @ray.method(concurrency_group="sample")
    def retire(self, slot: int, arm_id: str, reason: str, hour: int) -> bool:
        """Record a stopped arm (see :meth:`PosteriorService.retire`)."""
        return self.service.retire(slot, arm_id, reason, hour)

    @ray.method(concurrency_group="sample")
    def transition(self, slot: int, arm_id: str, state: str, hour: int,
                   detail: str | None = None) -> bool:
        """See :meth:`PosteriorService.transition`."""
        return self.service.transition(slot, arm_id, state, hour, detail)

    @ray.method(concurrency_group="sample")
    def slot_state(self, slot: int) -> SlotState:
        """A slot's arms (see :meth:`PosteriorService.slot_state`)."""
        return self.service.slot_state(slot)

    def recommend(self) -> Recommendation:
        """The newest launch readout."""
        return self.service.recommend()

    def hour_progress(self, hour: int) -> HourProgress:
        """One job hour's progress record for the driver (logs the hour's readout)."""
        return self.service.hour_progress(hour)

    def result(self) -> RunResult:
        """The job's result so far."""
        return self.service.result()

    def last_hour(self) -> int:
        """The newest job hour whose readout was logged (-1 before any)."""
        return self.service.last_hour()

    def status(self) -> ServiceStatus:
        """Counters for tools and tests."""
        return self.service.status()

    def job_status(self) -> dict[str, Any]:
        """What ``hz-ray status JOB`` shows: the newest ``status.json``, its folder and host."""
        import socket

        from hz_ray.service.status_file import read_status

        return {**(read_status(self.service.run_dir) or {}), "job_id": self.service.job_id,
                "run_dir": str(self.service.run_dir), "host": socket.gethostname()}

    def arm_summaries(self) -> list[ArmSummary]:
        """Every arm with its own aggregated data."""
        return self.service.arm_summaries()

    def ledger_state(self) -> dict[str, Any]:
        """The ledger's JSON-safe state."""
        return self.service.ledger_state()

    def refresh_now(self, force_refit: bool = False) -> int:
        """Rebuild the posterior now (optionally refitting); returns its data version."""
        return self.service.refresh_now(force_refit)

    def checkpoint_now(self) -> bool:
        """Write a checkpoint now if the state advanced."""
        return self.service.checkpoint_now()

    def finish(self) -> Recommendation:
        """Final rebuild on all data and checkpoint; returns the readout."""
        return self.service.finish()

    def close(self) -> None:
        """Stop the refresh thread, flush the log, stop serving metrics."""
        self.service.close()

    def ready(self) -> str:
        """The incarnation id, once constructed."""
        return self.service.ready()

    def get_pid(self) -> int:
        """The actor's process id (tests kill it to check recovery)."""
        return self.service.pid

    def node_id(self) -> str:
        """The Ray node the actor runs on."""
        return ray.get_runtime_context().get_node_id()


def posterior_actor_class(options: PosteriorActorOptions | None = None) -> Any:
    """``ray.remote(**options)(PosteriorActor)``: the one place actor options are applied.

    Args:
        options: Actor options; defaults to :class:`PosteriorActorOptions()`.

    Returns:
        The Ray actor class; call ``.options(name=..., namespace=...).remote(...)``.
    """
    opts = options if options is not None else PosteriorActorOptions()
    return ray.remote(**opts.ray_options())(PosteriorActor)


def start_posterior_actor(
    config: TuningConfig,
    run_dir: str | Path,
    *,
    job_id: str,
    resume: bool = False,
    options: PosteriorActorOptions | None = None,
    **kwargs: Any,
) -> Any:
    """Create the job's central actor, named ``"posterior"`` in the job's namespace.

    Args:
        config: The tuning job.
        run_dir: The job's run folder.
        job_id: The job's id (its namespace is :func:`~actors.options.job_namespace`).
        resume: Continue the job in ``run_dir``.
        options: Actor options.
        **kwargs: Passed to :class:`PosteriorService` (``metrics_port``, ...).

    Returns:
        The actor handle.

    Raises:
        StateError: The job's central actor is already running.
    """
    namespace = job_namespace(job_id)
    try:
        ray.get_actor(POSTERIOR_ACTOR_NAME, namespace=namespace)
    except ValueError:
        pass
    else:
        raise field_error(StateError, "job", job_id,
                          f"not running already (namespace {namespace!r} has a posterior actor)",
                          "Wait for that job to end, or stop it first.")
    cls = posterior_actor_class(options)
    return cls.options(name=POSTERIOR_ACTOR_NAME, namespace=namespace).remote(
        config, str(run_dir), job_id=job_id, resume=resume, **kwargs)
