"""Ray options of the two actors, in one place (the only module that names Ray options).

Frozen dataclasses validated on construction; :meth:`ray_options` turns one
into the keyword arguments of ``ray.remote`` / ``.options``. Imports no Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hz_ray.errors import ConfigError, field_error

#: Resource Ray gives the head node only; a tiny demand pins an actor there (Ray Serve's trick).
HEAD_NODE_RESOURCE = "node:__internal_head__"
NAMESPACE_PREFIX = "hz-ray-"
POSTERIOR_ACTOR_NAME = "posterior"


def job_namespace(job_id: str) -> str:
    """The Ray namespace of a tuning job by its id, e.g. ``"hz-ray-feed-vm-7f3a"``.

    Tools find the job's central actor with
    ``ray.get_actor("posterior", namespace=job_namespace(job_id))``.
    """
    return f"{NAMESPACE_PREFIX}{job_id}"


def _count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise field_error(ConfigError, name, value, f"an integer >= {minimum}")


def _cpus(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise field_error(ConfigError, name, value, "a number of CPUs >= 0")


@dataclass(frozen=True)
class PosteriorActorOptions:
    """How the central posterior actor runs.

    Attributes:
        num_cpus: CPUs reserved for refits (the request path is light).
        max_restarts: Restarts after a process crash; -1 is unlimited.
        max_task_retries: Ray-level retries of an in-flight call after a
            restart; safe because every call is idempotent. -1 is unlimited.
        ingest_concurrency: Threads serving ``report`` (they wait for the
            group commit of the log, so one per concurrent worker is cheap).
        sample_concurrency: Threads serving ``sample``/``retire``/``slot_state``.
        control_concurrency: Threads serving status, readouts and ``finish``.
        pin_to_head: Place the actor on the head node (where ``run_dir`` lives).
        resources: Extra custom resources to demand.
        runtime_env: Ray runtime environment, e.g. ``{"py_modules": [...]}``.
    """

    num_cpus: float = 1.0
    max_restarts: int = -1
    max_task_retries: int = 3
    ingest_concurrency: int = 64
    sample_concurrency: int = 8
    control_concurrency: int = 4
    pin_to_head: bool = True
    resources: Mapping[str, float] = field(default_factory=dict)
    runtime_env: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        _cpus("posterior.num_cpus", self.num_cpus)
        _count("posterior.max_restarts", self.max_restarts, -1)
        _count("posterior.max_task_retries", self.max_task_retries, -1)
        for name in ("ingest_concurrency", "sample_concurrency", "control_concurrency"):
            _count(f"posterior.{name}", getattr(self, name), 1)

    def concurrency_groups(self) -> dict[str, int]:
        """Thread pools of the threaded actor, by group name."""
        return {"ingest": self.ingest_concurrency, "sample": self.sample_concurrency,
                "control": self.control_concurrency}

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments for ``ray.remote``."""
        resources = dict(self.resources)
        if self.pin_to_head:
            resources[HEAD_NODE_RESOURCE] = 0.001
        opts: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            "max_restarts": self.max_restarts,
            "max_task_retries": self.max_task_retries,
            "concurrency_groups": self.concurrency_groups(),
            "max_concurrency": self.control_concurrency,
        }
        if resources:
            opts["resources"] = resources
        if self.runtime_env is not None:
            opts["runtime_env"] = dict(self.runtime_env)
        return opts


@dataclass(frozen=True)
class ArmWorkerOptions:
    """How each arm worker runs.

    Attributes:
        num_cpus: CPUs reserved per worker; 0, since workers mostly wait.
        max_restarts: Restarts after a process crash; -1 is unlimited.
        max_task_retries: Ray-level retries of the in-flight ``run`` call after
            a restart (the rerun resumes the slot from the central actor).
        scheduling_strategy: ``"SPREAD"`` places workers across nodes.
        resources: Custom resources to demand (e.g. to pin to worker nodes).
        runtime_env: Ray runtime environment.
    """

    num_cpus: float = 0.0
    max_restarts: int = -1
    max_task_retries: int = -1
    scheduling_strategy: str = "SPREAD"
    resources: Mapping[str, float] = field(default_factory=dict)
    runtime_env: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        _cpus("worker.num_cpus", self.num_cpus)
        _count("worker.max_restarts", self.max_restarts, -1)
        _count("worker.max_task_retries", self.max_task_retries, -1)
        if self.scheduling_strategy not in ("SPREAD", "DEFAULT"):
            raise field_error(ConfigError, "worker.scheduling_strategy",
                              self.scheduling_strategy, "'SPREAD' or 'DEFAULT'")

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments for ``ray.remote``."""
        opts: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            "max_restarts": self.max_restarts,
            "max_task_retries": self.max_task_retries,
            "max_concurrency": 2,  # run() plus stats()/stop() beside it
            "scheduling_strategy": self.scheduling_strategy,
        }
        if self.resources:
            opts["resources"] = dict(self.resources)
        if self.runtime_env is not None:
            opts["runtime_env"] = dict(self.runtime_env)
        return opts
