"""The Ray layer of hz-ray: thin actor shells around plain classes.

- :func:`run_on_ray` (``actors.driver``): run a job on an embedded or a running
  Ray cluster; returns the same ``RunResult`` as ``run_local``.
- ``PosteriorActor`` (``actors.posterior``): the central actor, a shell around
  :class:`hz_ray.service.posterior.PosteriorService`.
- ``ArmWorker`` (``actors.arm_worker``): one live arm slot per worker, a shell
  around :class:`hz_ray.service.slot.ArmSlotRunner`; imports no torch.

Names are imported lazily (PEP 562) so that ``import actors.arm_worker`` in a
worker process never imports the central actor's modules (and torch).
"""

from __future__ import annotations

from hz_ray.lazy import lazy_exports

_EXPORTS = {
    "run_on_ray": "actors.driver",
    "RayDriver": "actors.driver",
    "RayRun": "actors.driver",
    "DefaultBackendFactory": "actors.driver",
    "PosteriorActor": "actors.posterior",
    "posterior_actor_class": "actors.posterior",
    "start_posterior_actor": "actors.posterior",
    "ArmWorker": "actors.arm_worker",
    "RunnerSettings": "actors.arm_worker",
    "WorkerStats": "actors.arm_worker",
    "arm_worker_class": "actors.arm_worker",
    "PosteriorActorOptions": "actors.options",
    "ArmWorkerOptions": "actors.options",
    "job_namespace": "actors.options",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
