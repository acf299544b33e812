"""Build a backend from a config's ``backend`` section, and check a config against it.

``target`` is either ``"simulated:<world>"`` (a built-in world behind
:class:`SimulatedBackend`) or an import path ``"package.module:ClassName"``
of any :class:`ArmBackend`, the way Ray names user classes. Keyword arguments
come from ``backend.kwargs``; a custom class whose constructor takes a
``clock`` argument gets the driver's clock.

Security: importing the module runs its top-level code, as any Python import
does, so only run configs you trust. Nothing else of the target runs before it
has been checked: it must be a class that defines callable ``launch``,
``fetch`` and ``stop`` (so ``os:system`` or ``subprocess:Popen`` are refused
before they are called).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from hz_ray.backends.base import ArmBackend, GroundTruth, declared_metrics
from hz_ray.clock import Clock
from hz_ray.config import BackendSpec, TuningConfig
from hz_ray.errors import ConfigError, field_error

if TYPE_CHECKING:
    from hz_ray.sim.world_base import World

SIMULATED_PREFIX = "simulated:"
SIMULATED_KWARGS = ("world_seed", "world_kwargs", "realism", "traffic_per_arm",
                    "control_traffic", "reporting_delay_hours")
PROTOCOL_METHODS = ("launch", "fetch", "stop")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


def _clipped(names: tuple[str, ...] | list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")


def resolve_backend_class(target: str) -> type:
    """Import ``package.module:ClassName`` and check it is an ArmBackend class.

    Imports the module (its top-level code runs) and reads the attribute;
    calls nothing else.

    Args:
        target: The config's ``backend.target``.

    Returns:
        The class; it defines callable ``launch``, ``fetch`` and ``stop``.

    Raises:
        ConfigError: Naming ``backend.target``, when the target is malformed,
            cannot be imported, is not a class or lacks a protocol method.
    """
    BackendSpec(target=target).validate("backend")
    if target.startswith(SIMULATED_PREFIX):
        raise field_error(ConfigError, "backend.target", target, "'package.module:ClassName'",
                          "Simulated worlds are built by build_backend.")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's import is a config error
        raise field_error(ConfigError, "backend.target", target,
                          "an importable 'package.module:ClassName'",
                          f"Import failed: {type(exc).__name__}: {_one_line(exc)}. "
                          "Is the package installed?") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise field_error(ConfigError, "backend.target", target,
                          "an importable 'package.module:ClassName'",
                          f"Module {module_name!r} has no {class_name!r}.")
    if not inspect.isclass(cls):
        raise field_error(ConfigError, "backend.target", target,
                          "a class implementing hz_ray.backends.ArmBackend",
                          f"It names a {type(cls).__name__}, not a class; nothing was called.")
    missing = [name for name in PROTOCOL_METHODS if not _defines(cls, name)]
    if missing:
        raise field_error(ConfigError, "backend.target", target,
                          "a class with launch, fetch and stop methods (ArmBackend)",
                          f"{cls.__name__} does not define {', '.join(missing)}; "
                          "nothing was built.")
    return cls


def _defines(cls: type, name: str) -> bool:
    """Whether the class itself (not only its instances) has a callable ``name``."""
    attr = inspect.getattr_static(cls, name, None)
    if isinstance(attr, (staticmethod, classmethod)):
        attr = attr.__func__
    return callable(attr)


def build_backend(spec: BackendSpec, clock: Clock, seed: int = 0) -> ArmBackend:
    """Build the backend a config names.

    Args:
        spec: The config's backend section.
        clock: The driver's clock (simulated worlds publish by it).
        seed: Seed of a simulated world's hourly noise.

    Returns:
        An object implementing :class:`ArmBackend`.

    Raises:
        ConfigError: A malformed target, an unknown world or class, a target
            that is not an ArmBackend class (checked before anything of it is
            called), or bad keyword arguments.
    """
    spec.validate("backend")
    if spec.target.startswith(SIMULATED_PREFIX):
        return _simulated(spec.target[len(SIMULATED_PREFIX):], dict(spec.kwargs), clock, seed)
    cls = resolve_backend_class(spec.target)
    kwargs = dict(spec.kwargs)
    try:
        takes_clock = "clock" in inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no introspectable signature
        takes_clock = False
    if takes_clock:
        kwargs["clock"] = clock
    try:
        backend = cls(**kwargs)
    except TypeError as exc:
        raise field_error(ConfigError, "backend.kwargs", dict(spec.kwargs),
                          f"arguments accepted by {spec.target}", _one_line(exc)) from exc
    if not isinstance(backend, ArmBackend):
        raise field_error(ConfigError, "backend.target", spec.target,
                          "a class with launch/fetch/stop (hz_ray.backends.ArmBackend)")
    return backend


def _world(world_name: str, kwargs: Mapping[str, Any]) -> World:
    """The simulated world a target and its kwargs name (no clock, no backend)."""
    from hz_ray.sim import WORLD_NAMES, make_world

    unknown = sorted((k for k in kwargs if k not in SIMULATED_KWARGS), key=repr)
    if unknown:
        raise field_error(ConfigError, "backend.kwargs", unknown,
                          f"made of keys {list(SIMULATED_KWARGS)} for a simulated world")
    if world_name not in WORLD_NAMES:
        raise field_error(ConfigError, "backend.target", SIMULATED_PREFIX + world_name,
                          f"'simulated:<world>' with a world in {WORLD_NAMES}")
    seed = kwargs.get("world_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise field_error(ConfigError, "backend.kwargs.world_seed", seed, "an integer >= 0")
    world_kwargs = kwargs.get("world_kwargs") or {}
    if not isinstance(world_kwargs, Mapping) or not all(isinstance(k, str) for k in world_kwargs):
        raise field_error(ConfigError, "backend.kwargs.world_kwargs", world_kwargs,
                          "a mapping of the world's keyword arguments")
    try:
        return make_world(world_name, seed=seed, **world_kwargs)
    except (ConfigError, TypeError, ValueError) as exc:
        raise field_error(ConfigError, "backend.kwargs.world_kwargs", dict(world_kwargs),
                          f"keyword arguments of world {world_name!r}",
                          _one_line(exc)) from exc


def _simulated(world_name: str, kwargs: dict[str, Any], clock: Clock, seed: int) -> ArmBackend:
    from hz_ray.sim import RealismConfig, SimulatedBackend

    world = _world(world_name, kwargs)
    for key in ("world_seed", "world_kwargs"):
        kwargs.pop(key, None)
    realism = kwargs.pop("realism", None)
    presets = {"ideal": RealismConfig.ideal, "paper": RealismConfig.paper,
               "harsh": RealismConfig.harsh}
    if isinstance(realism, str):
        if realism not in presets:
            raise field_error(ConfigError, "backend.kwargs.realism", realism,
                              f"one of {sorted(presets)} or a mapping of RealismConfig fields")
        realism = presets[realism]()
    elif isinstance(realism, Mapping):
        try:
            realism = RealismConfig(**realism)
        except (ConfigError, TypeError, ValueError) as exc:
            raise field_error(ConfigError, "backend.kwargs.realism", dict(realism),
                              "a mapping of RealismConfig fields", _one_line(exc)) from exc
    elif realism is not None:
        raise field_error(ConfigError, "backend.kwargs.realism", realism,
                          f"one of {sorted(presets)} or a mapping of RealismConfig fields")
    return SimulatedBackend(world, clock, seed=seed, realism=realism, **kwargs)


def _config_metrics(config: TuningConfig) -> Iterator[tuple[str, str]]:
    """``(field, metric)`` of every metric the config names, in the order of ``metrics``."""
    part = "objective.pareto" if config.objective.is_pareto else "objective"
    for metric in config.objective.metric_names:
        yield part, metric
    for i, constraint in enumerate(config.constraints):
        yield f"constraints[{i}].metric", constraint.metric
    for i, metric in enumerate(config.extra_metrics):
        yield f"extra_metrics[{i}]", metric


def _check_names(field: str, name: str, known: tuple[str, ...], what: str) -> None:
    if name in known:
        return
    guesses = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = (f"Did you mean {guesses[0]!r}?" if guesses
            else "Check the spelling: the names must match exactly.")
    raise field_error(ConfigError, field, name, f"{what} (one of {_clipped(known)})", hint)


def check_backend_metrics(config: TuningConfig, backend: object) -> None:
    """Raise ConfigError when the config names a metric the backend does not publish.

    Backends that declare no metrics (see
    :func:`~hz_ray.backends.base.declared_metrics`) pass unchecked.

    Args:
        config: The job.
        backend: The backend it drives.

    Raises:
        ConfigError: Naming the field (``objective``, ``constraints[i].metric``
            or ``extra_metrics[i]``), the metric and a close match when there
            is one.
    """
    published = declared_metrics(backend)
    if published is None:
        return
    for field, metric in _config_metrics(config):
        _check_names(field, metric, published, "a metric the backend publishes")


def check_config_against_backend_target(config: TuningConfig) -> None:
    """Check a config against the backend its target names, without running a job.

    A simulated target builds the world only (no clock, no backend) and checks
    the config's metrics and parameters against the world's. An import target
    is resolved (the module is imported; nothing of it is called) and checked
    as an ArmBackend class; metrics declared on the class are checked.

    Args:
        config: The job.

    Raises:
        ConfigError: A malformed or unusable target, a metric the backend does
            not publish, or (simulated) a parameter the world does not have or
            a world parameter the config lacks.
    """
    target = config.backend.target
    if not target.startswith(SIMULATED_PREFIX):
        cls = resolve_backend_class(target)
        # Only a plain class attribute declares metrics here; a property needs an instance.
        if isinstance(inspect.getattr_static(cls, "metrics", None), (list, tuple)):
            check_backend_metrics(config, cls)
        return
    world_name = target[len(SIMULATED_PREFIX):]
    world = _world(world_name, config.backend.kwargs)
    check_backend_metrics(config, world)  # a World's ``metrics`` are what its backend publishes
    known = tuple(world.parameter_names)
    for i, name in enumerate(config.parameter_names):
        _check_names(f"parameters[{i}].name", name, known, f"a parameter of world {world_name!r}")
    missing = [p for p in known if p not in config.parameter_names]
    if missing:
        raise field_error(ConfigError, "parameters", list(config.parameter_names),
                          f"every parameter of world {world_name!r} ({_clipped(known)})",
                          f"Add {', '.join(missing)} (its base is the world's control value).")


def ground_truth_of(backend: object) -> Callable[[Mapping[str, float]], Mapping[str, float]] | None:
    """The backend's ``true_deltas`` when it is a simulated world, else ``None``."""
    return backend.true_deltas if isinstance(backend, GroundTruth) else None
