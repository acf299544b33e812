"""The Ray shell of one arm slot: an actor around :class:`~hz_ray.service.slot.ArmSlotRunner`.

:class:`ArmWorker` builds the backend inside the worker process with
``backend_factory(clock)`` and runs the slot loop against the central actor
through :class:`ActorPosteriorPort`, which turns Ray failures into
:class:`~hz_ray.errors.TransientError` (retried by the loop).

This module imports no torch (nor anything that does): a worker process
stays small, and 64 of them fit on a laptop.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import ray
from ray.exceptions import RayError

from actors.options import POSTERIOR_ACTOR_NAME, ArmWorkerOptions
from hz_ray.backends.base import ArmBackend, BackendFactory
from hz_ray.clock import Clock
from hz_ray.config import TuningConfig
from hz_ray.errors import HzRayError, TransientError
from hz_ray.service.messages import Report, ReportAck, SampleReply, SlotState
from hz_ray.service.slot import ArmSlotRunner, RunnerSettings, WorkerStats

__all__ = ["ActorPosteriorPort", "ArmWorker", "BackendFactory", "RunnerSettings",
           "WorkerStats", "arm_worker_class"]


class ActorPosteriorPort:
    """A :class:`PosteriorPort` over a Ray actor handle.

    Ray-level failures (the actor restarting, a timeout) become
    :class:`~hz_ray.errors.TransientError`; errors raised by the service
    itself keep their hz-ray type (Ray re-raises them as subclasses).

    Args:
        handle: The posterior actor.
        timeout_s: Longest wait for one answer.
    """

    def __init__(self, handle: Any, timeout_s: float = 120.0) -> None:
        self.handle = handle
        self.timeout_s = timeout_s

    def _get(self, ref: Any) -> Any:
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except HzRayError:
            raise
        except (RayError, TimeoutError) as exc:
            raise TransientError(f"central actor call failed: {type(exc).__name__}: {exc}",
                                 "Retried with backoff until the actor is back.") from exc

    def slot_state(self, slot: int) -> SlotState:
        """See :class:`PosteriorPort`."""
        return self._get(self.handle.slot_state.remote(slot))

    def sample(self, slot: int, seq: int, hour: int) -> SampleReply | None:
        """See :class:`PosteriorPort`."""
        return self._get(self.handle.sample.remote(slot, seq, hour))

    def report(self, report: Report) -> ReportAck:
        """See :class:`PosteriorPort`."""
        return self._get(self.handle.report.remote(report))

    def retire(self, slot: int, arm_id: str, reason: str, hour: int) -> bool:
        """See :class:`PosteriorPort`."""
        return self._get(self.handle.retire.remote(slot, arm_id, reason, hour))

    def transition(self, slot: int, arm_id: str, state: str, hour: int,
                   detail: str | None = None) -> bool:
        """See :class:`PosteriorPort`."""
        return self._get(self.handle.transition.remote(slot, arm_id, state, hour, detail))


class ArmWorker:
    """The Ray actor shell of one slot: builds the backend here, then runs the slot loop.

    Args:
        slot: The slot index.
        config: The tuning job (only its arm settings and metrics are used).
        posterior: The central actor's handle, or the job's Ray namespace to look
            the actor up by name (survives restarts without pinning the handle
            in the object store).
        backend_factory: ``factory(clock) -> ArmBackend``, called in this
            process (backends need not be picklable; the factory must be).
        settings: Loop knobs.
    """

    def __init__(self, slot: int, config: TuningConfig, posterior: Any,
                 backend_factory: BackendFactory,
                 settings: RunnerSettings | None = None) -> None:
        self.slot = slot
        self.config = config
        self.posterior = posterior
        self.backend_factory = backend_factory
        self.settings = settings
        self._runner: ArmSlotRunner | None = None
        self._clock: Clock | None = None
        self._backend: ArmBackend | None = None

    def ready(self) -> Mapping[str, Any]:
        """Where the worker runs: pid, node id, whether torch was imported."""
        return {"slot": self.slot, "pid": os.getpid(), "node_id": _node_id(),
                "torch_imported": "torch" in sys.modules}

    def prepare(self, clock: Clock) -> Mapping[str, Any]:
        """Build the backend on ``clock`` before the job starts (it may take a while).

        The driver passes a clock whose epoch lies far ahead, prepares every
        worker, and only then fixes the real epoch in :meth:`run`, so that no
        worker starts its first hour late because its backend was slow to build.
        """
        self._clock = clock
        self._backend = self.backend_factory(clock)
        return self.ready()

    def run(self, clock: Clock, hours: int) -> WorkerStats:
        """Run the slot until job hour ``hours``; rerun by Ray after a crash, it resumes.

        Args:
            clock: The job clock (its epoch is the job's start).
            hours: Job length in job hours.
        """
        if self._backend is None or self._clock is None:  # not prepared (e.g. restarted)
            self._clock, self._backend = clock, self.backend_factory(clock)
        elif self._clock is not clock and hasattr(self._clock, "epoch_s"):
            # Start the clock the backend already holds (same object, real epoch).
            self._clock.epoch_s = clock.epoch_s  # type: ignore[attr-defined]
            self._clock.seconds_per_hour = clock.seconds_per_hour  # type: ignore[attr-defined]
        else:
            self._clock = clock
        handle = self.posterior
        if isinstance(handle, str):
            handle = ray.get_actor(POSTERIOR_ACTOR_NAME, namespace=handle)
        settings = self.settings if self.settings is not None else RunnerSettings()
        runner = ArmSlotRunner(self.slot, ActorPosteriorPort(handle, settings.port_timeout_s),
                               self._backend,
                               self._clock, self.config.arms, self.config.metrics, settings,
                               call_timeout_s=self.config.backend.call_timeout_s)
        runner.stats.node_id = _node_id()
        self._runner = runner
        return runner.run(hours)

    def stats(self) -> WorkerStats | None:
        """The slot's stats so far (``None`` before ``run``)."""
        return None if self._runner is None else self._runner.stats.copy()

    def request_stop(self) -> None:
        """Make ``run`` return at its next wait."""
        if self._runner is not None:
            self._runner.request_stop()

    def get_pid(self) -> int:
        """The worker's process id (tests kill it to check recovery)."""
        return os.getpid()


def _node_id() -> str:
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray
        return ""


def arm_worker_class(options: ArmWorkerOptions | None = None) -> Any:
    """``ray.remote(**options)(ArmWorker)``: the one place worker options are applied."""
    opts = options if options is not None else ArmWorkerOptions()
    return ray.remote(**opts.ray_options())(ArmWorker)
