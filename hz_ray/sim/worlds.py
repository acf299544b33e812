"""Every simulated world, and :func:`make_world` to build one by name.

========================  ==========================================================
name                      world
========================  ==========================================================
``smooth``                :class:`SmoothWorld`: 4 log-weights, 4 metrics, quadratics
``value_model``           :class:`ValueModelWorld`: lifts emerge from top-k ranking
``test_function:<fn>``    :class:`TestFunctionWorld` shaped by ``hartmann6``,
                          ``branin``, ``ackley`` or ``gramacy``
``paper``                 :func:`paper_world`: the paper-style random smooth world
========================  ==========================================================
"""

from __future__ import annotations

from typing import Any

from hz_ray.errors import ConfigError, field_error
from hz_ray.sim.smooth_world import SmoothWorld
from hz_ray.sim.test_function_worlds import TEST_FUNCTIONS, TestFunctionWorld, paper_world
from hz_ray.sim.value_model_world import ValueModelWorld
from hz_ray.sim.world_base import BenchmarkProblem, World

__all__ = [
    "BenchmarkProblem",
    "SmoothWorld",
    "TestFunctionWorld",
    "ValueModelWorld",
    "World",
    "WORLD_NAMES",
    "make_world",
    "paper_world",
]

#: Every name :func:`make_world` accepts.
WORLD_NAMES: tuple[str, ...] = (
    "smooth", "value_model", *(f"test_function:{n}" for n in TEST_FUNCTIONS), "paper")


def make_world(name: str, seed: int = 0, **kwargs: Any) -> World:
    """Build a world by name.

    Args:
        name: One of ``WORLD_NAMES``: ``"smooth"``, ``"value_model"``,
            ``"test_function:<fn>"`` (``hartmann6``, ``branin``, ``ackley``,
            ``gramacy``) or ``"paper"``.
        seed: Seed of the world's random structure (the value model's request
            pool, the paper world's functions). ``smooth`` and the
            ``test_function`` worlds are fixed functions and ignore it; the
            backend's ``seed`` drives the hourly noise of every world.
        **kwargs: Passed to the world's constructor.

    Returns:
        The world.

    Raises:
        ConfigError: On an unknown name or a bad keyword argument.
    """
    if not isinstance(name, str):
        raise field_error(ConfigError, "world", name, f"one of {WORLD_NAMES}")
    try:
        if name == "smooth":
            return SmoothWorld(**kwargs)
        if name == "value_model":
            return ValueModelWorld(seed, **kwargs)
        if name == "paper":
            return paper_world(seed, **kwargs)
        if name.startswith("test_function:") and name.split(":", 1)[1] in TEST_FUNCTIONS:
            return TEST_FUNCTIONS[name.split(":", 1)[1]](**kwargs)
    except TypeError as exc:
        raise field_error(ConfigError, f"world {name!r} kwargs", sorted(kwargs),
                          "keyword arguments of the world's constructor", str(exc)) from exc
    raise field_error(ConfigError, "world", name, f"one of {WORLD_NAMES}",
                      "Register new worlds in hz_ray/sim/worlds.py.")
