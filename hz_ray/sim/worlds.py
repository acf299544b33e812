"""Every simulated world, and :func:`make_world` to build one by name.

========================  ==========================================================
name                      world
========================  ==========================================================
``smooth``                :class:`SmoothWorld`: 4 log-weights, 4 metrics, quadratics
``value_model``           :class:`ValueModelWorld`: lifts emerge from top-k ranking
``value_model_pareto``    :class:`ValueModelParetoWorld`: the same world, its problem
                          the Pareto front of views and watch time
``test_function:<fn>``    :class:`TestFunctionWorld` shaped by ``hartmann6``,
                          ``branin``, ``ackley``, ``gramacy`` or (Pareto)
                          ``branin_currin``
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
    "ValueModelParetoWorld",
    "ValueModelWorld",
    "World",
    "WORLD_NAMES",
    "make_world",
    "paper_world",
]



class ValueModelParetoWorld(ValueModelWorld):
    """:class:`ValueModelWorld` whose problem trades views against watch time.

    Same constructor, same seed meaning, same truth as ``value_model``; only
    ``default_problem`` differs: the Pareto front of views and watch time
    (both maximised, no preference) under the value model's guardrails on the
    other metrics (likes ``>= -0.5%``, shares and follows ``>= -1%``). Watch
    time's own ``-0.5%`` guardrail is dropped: it is now traded, not guarded.
    Along the feasible front views and watch time are strongly anticorrelated
    (weighting watch seconds up buys watch time and costs views).
    """

    name = "value_model_pareto"

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        guards = {m: c for m, c in self.default_problem.min_deltas.items() if m != "watch_time"}
        self.default_problem = BenchmarkProblem.from_pareto(
            {"views": 1.0, "watch_time": 1.0}, guards)
        self.default_problem.check(self.metrics)


#: Every name :func:`make_world` accepts.
WORLD_NAMES: tuple[str, ...] = (
    "smooth", "value_model", "value_model_pareto",
    *(f"test_function:{n}" for n in TEST_FUNCTIONS), "paper")


def make_world(name: str, seed: int = 0, **kwargs: Any) -> World:
    """Build a world by name.

    Args:
        name: One of ``WORLD_NAMES``: ``"smooth"``, ``"value_model"``,
            ``"value_model_pareto"``, ``"test_function:<fn>"`` (``hartmann6``,
            ``branin``, ``ackley``, ``gramacy``, ``branin_currin``) or ``"paper"``.
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
        if name == "value_model_pareto":
            return ValueModelParetoWorld(seed, **kwargs)
        if name == "paper":
            return paper_world(seed, **kwargs)
        if name.startswith("test_function:") and name.split(":", 1)[1] in TEST_FUNCTIONS:
            return TEST_FUNCTIONS[name.split(":", 1)[1]](**kwargs)
    except TypeError as exc:
        raise field_error(ConfigError, f"world {name!r} kwargs", sorted(kwargs),
                          "keyword arguments of the world's constructor", str(exc)) from exc
    raise field_error(ConfigError, "world", name, f"one of {WORLD_NAMES}",
                      "Register new worlds in hz_ray/sim/worlds.py.")
