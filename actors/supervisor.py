"""The job's supervisor: a detached actor that stops the job's arms if the driver dies.

The central actor and the arm workers belong to the driver: Ray ends them when
the driver process dies, so a driver killed by SIGKILL (or its machine lost)
could leave arms live on the platform. The :class:`JobSupervisor` is created
*detached* (it outlives its creator), on the node of the run folder. The
driver holds the folder's lock (``job.lock``, an OS file lock) for the job's
life, and the kernel releases it when the driver's process dies, however it
dies. The supervisor tries the lock every ``poll_s`` seconds; once it gets it
without the driver having said goodbye, the driver is gone: it runs the same
final stops every ending runs (:func:`hz_ray.service.endings.end_job`) under
that lock, and exits. A driver that ends the job itself (any ending it can
run code for) calls :meth:`JobSupervisor.release` after its own final stops
and before it lets go of the lock. The driver's heartbeats only tell the
supervisor the job hour. When the whole cluster goes down with the driver (an
embedded local Ray), nothing survives: ``hz-ray stop RUN_DIR`` or a resume
does the stops then.

This module imports no torch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

import ray

from actors.options import HEAD_NODE_RESOURCE
from hz_ray.backends.base import BackendFactory
from hz_ray.config import TuningConfig

logger = logging.getLogger(__name__)

SUPERVISOR_ACTOR_NAME = "supervisor"
DEFAULT_POLL_S = 2.0


class JobSupervisor:
    """Stops the job's arms when its driver stops sending heartbeats (detached actor).

    Args:
        run_dir: The job's run folder (on this actor's node).
        job_id: The job's id.
        config: The job's config.
        backend_factory: Builds the platform backend here.
        seconds_per_hour: Pace of the job clock (used when the folder recorded none).
        poll_s: Seconds between tries of the folder's lock.
    """

    def __init__(self, run_dir: str, job_id: str, config: TuningConfig,
                 backend_factory: BackendFactory, seconds_per_hour: float,
                 poll_s: float = DEFAULT_POLL_S) -> None:
        self.run_dir = Path(run_dir)
        self.job_id = job_id
        self.config = config
        self.backend_factory = backend_factory
        self.seconds_per_hour = seconds_per_hour
        self.poll_s = poll_s
        self._hour = 0
        self._released = threading.Event()
        self.outcome: str = "watching"

    def heartbeat(self, hour: int) -> None:
        """The driver is at job ``hour``."""
        self._hour = max(self._hour, int(hour))

    def release(self) -> str:
        """The driver ended the job itself (its final stops ran): stop watching."""
        self._released.set()
        return self.outcome

    def watch(self) -> str:
        """Wait for the driver's goodbye, or for its lock to be free; then finish the stops.

        Returns:
            ``"released"`` or what the stops did.
        """
        from filelock import FileLock, Timeout

        from hz_ray.run_folder import LOCK_FILE, record_holder

        lock = FileLock(str(self.run_dir / LOCK_FILE))
        while not self._released.wait(self.poll_s):
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # the driver holds it: alive
            try:
                if not self._released.is_set():
                    # Recorded as the holder first: the dead driver's central actor then
                    # refuses every 'launching' still asked of it (see is_held_by).
                    record_holder(self.run_dir, self.job_id)
                    self.outcome = self._finish_job()
            finally:
                lock.release()
            break
        else:
            self.outcome = "released"
        logger.info("Job %s supervisor: %s", self.job_id, self.outcome)
        ray.actor.exit_actor()  # a detached actor would outlive everything otherwise
        return self.outcome  # pragma: no cover

    def _finish_job(self) -> str:
        from hz_ray.run_folder import RunFolder
        from hz_ray.service.endings import end_job, folder_clock, hour_of_stops

        logger.error("Job %s: its driver is gone (the run folder's lock is free); stopping "
                     "the job's arms from %s.", self.job_id, self.run_dir)
        try:
            identity = RunFolder.read(self.run_dir)
            clock = folder_clock(self.run_dir, self._hour, self.seconds_per_hour)
            # The job clock's hour, not the last heartbeat's: the platform served the
            # arms until now (a heartbeat lags while the central actor restarts).
            report = end_job(self.run_dir, identity.job_id, self.config,
                             self.backend_factory(clock), hour=hour_of_stops(self._hour, clock),
                             completed=False, settle_s=3.0, clock=clock)
        except Exception as exc:  # noqa: BLE001 - say why, then leave it to `hz-ray stop`
            logger.exception("Job %s: the supervisor could not stop the arms.", self.job_id)
            return f"failed: {type(exc).__name__}: {exc}"
        return f"stopped after the driver died: {report.summary()}"


def start_supervisor(run_dir: Path, job_id: str, config: TuningConfig,
                     backend_factory: BackendFactory, seconds_per_hour: float, namespace: str,
                     poll_s: float = DEFAULT_POLL_S,
                     pin_to_head: bool = True, runtime_env: Any = None) -> Any:
    """Create the job's detached supervisor and start its watch; returns its handle.

    The caller must hold the run folder's lock already (the supervisor acts
    as soon as it can take it).
    """
    options: dict[str, Any] = {"name": SUPERVISOR_ACTOR_NAME, "namespace": namespace,
                               "lifetime": "detached", "num_cpus": 0, "max_concurrency": 4,
                               "max_restarts": 0}
    if pin_to_head:
        options["resources"] = {HEAD_NODE_RESOURCE: 0.001}
    if runtime_env is not None:
        options["runtime_env"] = dict(runtime_env)
    with contextlib.suppress(ValueError):  # a supervisor of an earlier life (a resume)
        ray.kill(ray.get_actor(SUPERVISOR_ACTOR_NAME, namespace=namespace))
    handle = ray.remote(JobSupervisor).options(**options).remote(
        str(run_dir), job_id, config, backend_factory, seconds_per_hour, poll_s)
    handle.watch.remote()
    return handle
