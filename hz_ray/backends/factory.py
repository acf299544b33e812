"""Build a backend from a config's ``backend`` section.

``target`` is either ``"simulated:<world>"`` (a built-in world behind
:class:`SimulatedBackend`) or an import path ``"package.module:ClassName"``
of any :class:`ArmBackend`, the way Ray names user classes. Keyword arguments
come from ``backend.kwargs``; a custom class whose constructor takes a
``clock`` argument gets the driver's clock.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from hz_ray.backends.base import ArmBackend, GroundTruth
from hz_ray.clock import Clock
from hz_ray.config import BackendSpec
from hz_ray.errors import ConfigError, field_error

SIMULATED_PREFIX = "simulated:"
SIMULATED_KWARGS = ("world_seed", "world_kwargs", "realism", "traffic_per_arm",
                    "control_traffic", "reporting_delay_hours")


def build_backend(spec: BackendSpec, clock: Clock, seed: int = 0) -> ArmBackend:
    """Build the backend a config names.

    Args:
        spec: The config's backend section.
        clock: The driver's clock (simulated worlds publish by it).
        seed: Seed of a simulated world's hourly noise.

    Returns:
        An object implementing :class:`ArmBackend`.

    Raises:
        ConfigError: Unknown world or class, or bad keyword arguments.
    """
    if spec.target.startswith(SIMULATED_PREFIX):
        return _simulated(spec.target[len(SIMULATED_PREFIX):], dict(spec.kwargs), clock, seed)
    module_name, _, class_name = spec.target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise field_error(ConfigError, "backend.target", spec.target,
                          "an importable 'package.module:ClassName'",
                          f"Import failed: {exc}. Is the package installed?") from exc
    kwargs = dict(spec.kwargs)
    if "clock" in inspect.signature(cls).parameters:
        kwargs["clock"] = clock
    try:
        backend = cls(**kwargs)
    except TypeError as exc:
        raise field_error(ConfigError, "backend.kwargs", dict(spec.kwargs),
                          f"arguments accepted by {spec.target}", str(exc)) from exc
    if not isinstance(backend, ArmBackend):
        raise field_error(ConfigError, "backend.target", spec.target,
                          "a class with launch/fetch/stop (hz_ray.backends.ArmBackend)")
    return backend


def _simulated(world_name: str, kwargs: dict[str, Any], clock: Clock, seed: int) -> ArmBackend:
    from hz_ray.sim import RealismConfig, SimulatedBackend, make_world

    unknown = sorted(set(kwargs) - set(SIMULATED_KWARGS))
    if unknown:
        raise field_error(ConfigError, "backend.kwargs", unknown,
                          f"made of keys {list(SIMULATED_KWARGS)} for a simulated world")
    world = make_world(world_name, seed=int(kwargs.pop("world_seed", 0)),
                       **dict(kwargs.pop("world_kwargs", {}) or {}))
    realism = kwargs.pop("realism", None)
    if isinstance(realism, str):
        presets = {"ideal": RealismConfig.ideal, "paper": RealismConfig.paper,
                   "harsh": RealismConfig.harsh}
        if realism not in presets:
            raise field_error(ConfigError, "backend.kwargs.realism", realism,
                              f"one of {sorted(presets)} or a mapping of RealismConfig fields")
        realism = presets[realism]()
    elif isinstance(realism, Mapping):
        realism = RealismConfig(**realism)
    return SimulatedBackend(world, clock, seed=seed, realism=realism, **kwargs)


def ground_truth_of(backend: object) -> Callable[[Mapping[str, float]], Mapping[str, float]] | None:
    """The backend's ``true_deltas`` when it is a simulated world, else ``None``."""
    return backend.true_deltas if isinstance(backend, GroundTruth) else None
