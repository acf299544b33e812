"""The port through which hz-ray drives an experiment platform.

Optional metric declaration: a backend may say which metrics it publishes with
an attribute (or property) ``metrics: tuple[str, ...]``; ``None`` or no such
attribute means "not declared". A declared list lets a job reject a misspelled
objective, guardrail or extra metric before it launches any arm
(:func:`hz_ray.backends.factory.check_backend_metrics`) instead of waiting for
the metric-silence alarm. Read it with :func:`declared_metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Mapping, Protocol, Sequence, runtime_checkable

from hz_ray.clock import Clock
from hz_ray.errors import ConfigError, field_error
from hz_ray.records import HourlyReading


@runtime_checkable
class ArmBackend(Protocol):
    """How hz-ray launches, reads and stops test arms on an experiment platform.

    The platform runs a fixed control arm (the production weights) all the
    time; every reading of a test arm comes with the control group's statistics
    of the same hour.
    """

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Start serving ``params`` to a fresh test group named ``arm_id``.

        Must be a no-op for an arm the platform already serves with these
        params, and must raise :class:`~hz_ray.errors.ArmStoppedError` for an
        id the platform has stopped (ids are single-use). A restarted slot
        launches again the arm its log calls live; the refusal is how it learns
        that a stop it could not record reached the platform, so the arm is
        retired instead of being served again.
        """
        ...

    def fetch(self, arm_id: str, since_hour: int) -> Sequence[HourlyReading]:
        """Return every published reading of ``arm_id`` with ``hour >= since_hour``.

        Hours may arrive late, out of order, or twice. Readings of a stopped
        arm stay fetchable.
        """
        ...

    def stop(self, arm_id: str) -> None:
        """Stop serving the arm (its published readings stay fetchable).

        Must be idempotent, and a no-op for an arm the platform does not serve
        (never launched, or stopped already): hz-ray repeats a stop whose
        outcome it could not record, and stops every arm it may have launched
        when a job ends.
        """
        ...


@runtime_checkable
class GroundTruth(Protocol):
    """Optional extra of simulated worlds: true deltas, for benchmarks only.

    The tuner never calls this; benchmarks and tests use it to score results.
    """

    def true_deltas(self, params: Mapping[str, float]) -> Mapping[str, float]:
        """Return the noise-free relative delta of every metric at ``params``."""
        ...


#: Builds a backend on the job clock, in the process that will use it (each Ray
#: arm worker calls it; it must pickle, the backend need not).
BackendFactory = Callable[[Clock], ArmBackend]


def declared_metrics(backend: object) -> tuple[str, ...] | None:
    """The metrics a backend declares it publishes, or ``None`` when it declares none.

    Args:
        backend: Any backend object (or class); its optional ``metrics``
            attribute is read.

    Returns:
        The declared metric names, in the backend's order; ``None`` when the
        backend has no ``metrics`` attribute or it is ``None``.

    Raises:
        ConfigError: When ``metrics`` is set but is not a list or tuple of
            non-empty strings.
    """
    metrics = getattr(backend, "metrics", None)
    if metrics is None:
        return None
    if not isinstance(metrics, (list, tuple)) or not all(isinstance(m, str) and m
                                                          for m in metrics):
        name = backend.__name__ if isinstance(backend, type) else type(backend).__name__
        raise field_error(ConfigError, f"{name}.metrics", metrics,
                          "a tuple of metric names or None",
                          "Declare e.g. metrics = ('views', 'likes') on the backend class.")
    return tuple(metrics)
