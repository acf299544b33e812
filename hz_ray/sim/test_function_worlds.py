"""Test-function worlds: metric lifts of a few percent shaped by standard test functions.

Parameters are the function's inputs as linear weights ``x1..xd`` in
``[0, 1]`` (mapped affinely onto the function's own box). Every metric's delta
is an affine (or monotone) rescaling of a test function or a constraint slack,
shifted so the base (control) point has delta 0:

- ``hartmann6``: views from Hartmann-6; likes from the slack of ``||x|| <= r``
  (ConstrainedHartmann-style), ``-0.5%`` exactly on the constraint boundary.
- ``branin``: views from log-Branin; likes fall with the distance from the base.
- ``ackley``: views from Ackley-4 on ``[-3, 3]^4`` (multimodal); likes fall
  linearly in ``x1``.
- ``gramacy``: views from ConstrainedGramacy's objective; likes and shares from
  its two constraint slacks (``-0.5%`` exactly on each constraint boundary).
- ``branin_currin``: ConstrainedBraninCurrin, a Pareto problem: views from
  -log Branin, watch time from -Currin, likes from the disk constraint's slack.
- :func:`paper_world`: random smooth functions mimicking the paper's synthetic
  study.

BoTorch is imported only when a BoTorch-shaped world is built.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

from hz_ray.errors import ConfigError, field_error
from hz_ray.sim.realism import rng_for
from hz_ray.sim.world_base import BenchmarkProblem, World

MetricFn = Callable[[np.ndarray], np.ndarray]

#: Per-unit control level and coefficient of variation of familiar metric names.
DEFAULT_LEVELS: dict[str, tuple[float, float]] = {
    "views": (4.0, 1.2), "likes": (0.25, 2.5), "shares": (0.05, 4.0),
    "follows": (0.02, 6.0), "watch_time": (90.0, 1.5),
}
_TAG_PAPER = 201


class TestFunctionWorld(World):
    """A world whose metric deltas are given functions of ``x`` in the unit cube.

    Args:
        name: World name, e.g. ``"test_function:hartmann6"``.
        metric_fns: Metric -> function mapping ``(n, d)`` points in ``[0, 1]^d``
            to ``(n,)`` values; the delta is ``fn(x) - fn(base_point)``.
        base_point: ``(d,)`` control point in ``[0, 1]^d``.
        problem: The objective and guardrails the world is meant for.
        base_levels: Per-unit control level of each metric; defaults from
            ``DEFAULT_LEVELS`` (1.0 for unfamiliar names).
        unit_cv: Per-unit coefficient of variation; defaults likewise (2.0).
        description: One line on what shapes each metric.

    Raises:
        ConfigError: On a malformed argument.
    """

    __test__ = False  # not a pytest test class
    scale_invariant = False

    def __init__(self, name: str, metric_fns: Mapping[str, MetricFn], base_point: Sequence[float],
                 problem: BenchmarkProblem, *, base_levels: Mapping[str, float] | None = None,
                 unit_cv: Mapping[str, float] | None = None, description: str = "") -> None:
        super().__init__()
        base = np.asarray(base_point, dtype=np.float64)
        if base.ndim != 1 or base.size == 0 or np.any((base < 0) | (base > 1)):
            raise field_error(ConfigError, "base_point", list(base_point),
                              "a non-empty vector in [0, 1]^d")
        if not metric_fns:
            raise field_error(ConfigError, "metric_fns", metric_fns, "a non-empty mapping")
        self.name = name
        self.description = description
        self.metrics = tuple(metric_fns)
        self.parameter_names = tuple(f"x{i + 1}" for i in range(base.size))
        self.base_params = dict(zip(self.parameter_names, base.tolist(), strict=True))
        self.bounds = {p: (0.0, 1.0) for p in self.parameter_names}
        self.log_scale = {p: False for p in self.parameter_names}
        self.base_levels = {m: float((base_levels or {}).get(m, DEFAULT_LEVELS.get(m, (1.0,))[0]))
                            for m in self.metrics}
        self.unit_cv = {m: float((unit_cv or {}).get(m, DEFAULT_LEVELS.get(m, (0, 2.0))[1]))
                        for m in self.metrics}
        self.default_problem = problem
        self._fns = tuple(metric_fns.values())
        self._base_values = np.array([float(np.asarray(fn(base[None, :]))[0]) for fn in self._fns])
        self._finish_init()

    def _deltas_canonical(self, Z: np.ndarray) -> np.ndarray:
        """Deltas at ``(n, d)`` points of the unit cube; returns ``(n, J)``."""
        cols = [np.asarray(fn(Z), dtype=np.float64).reshape(-1) for fn in self._fns]
        return np.stack(cols, axis=1) - self._base_values


# ------------------------------------------------------------- BoTorch-shaped


def _botorch(problem: object, lows: Sequence[float], highs: Sequence[float],
             slack: int | None = None, column: int | None = None) -> MetricFn:
    """Wrap a BoTorch test problem as ``(n, d)`` unit-cube points -> ``(n,)`` numpy values.

    Args:
        problem: A ``botorch.test_functions`` instance.
        lows: ``(d,)`` lower corner of the box the unit cube maps onto.
        highs: ``(d,)`` upper corner.
        slack: Index of a constraint slack to return (>= 0 feasible) instead of
            the objective.
        column: Index of the objective to return, for a multi-objective problem.
    """
    import torch

    lo, span = np.asarray(lows, dtype=np.float64), np.asarray(highs) - np.asarray(lows)

    def fn(U: np.ndarray) -> np.ndarray:
        X = torch.from_numpy(np.ascontiguousarray(lo + U * span, dtype=np.float64))
        with torch.no_grad():
            if slack is None:
                out = problem.evaluate_true(X)  # type: ignore[attr-defined]
                if column is not None:
                    out = out[..., column]
            else:
                out = problem.evaluate_slack_true(X)[..., slack]  # type: ignore[attr-defined]
        return out.numpy().astype(np.float64)

    return fn


def _slack_guardrail(slack_fn: MetricFn, base: np.ndarray, threshold: float = -0.005) -> MetricFn:
    """Delta ``threshold * (1 - s(x) / s(base))``: 0 at base, ``threshold`` where ``s = 0``."""
    s0 = float(slack_fn(base[None, :])[0])
    if not s0 > 0:
        raise field_error(ConfigError, "base_point", base.tolist(),
                          "strictly feasible for the constraint (slack > 0)")
    return lambda U: threshold * (1.0 - slack_fn(U) / s0)


def _gain(raw: MetricFn, base: np.ndarray, best: float, gain: float, log: bool = False) -> MetricFn:
    """Delta ``gain * (f(base) - f(x)) / (f(base) - best)`` of a minimised ``f`` (or of log f)."""
    t = np.log if log else (lambda v: v)
    f0, fb = float(t(raw(base[None, :]))[0]), float(t(np.array([best]))[0])
    return lambda U: gain * (f0 - t(raw(U))) / (f0 - fb)


def hartmann6_world(gain: float = 0.05, radius: float = 0.8) -> TestFunctionWorld:
    """Views from Hartmann-6, likes from ``||x||_2 <= radius`` (binding at the optimum).

    Args:
        gain: Views lift at Hartmann's global minimum (0.05 is +5%).
        radius: Constraint radius; Hartmann's minimiser has norm 0.946.
    """
    from botorch.test_functions.synthetic import Hartmann

    base = np.full(6, 0.25)
    h = Hartmann(dim=6)
    views = _gain(_botorch(h, [0.0] * 6, [1.0] * 6), base, h.optimal_value, gain)
    likes = _slack_guardrail(lambda U: radius - np.linalg.norm(U, axis=1), base)
    return TestFunctionWorld(
        "test_function:hartmann6", {"views": views, "likes": likes}, base,
        BenchmarkProblem({"views": 1.0}, {"likes": -0.005}),
        description=f"views: Hartmann-6; likes: -0.5% at ||x||_2 = {radius}")


def branin_world(gain: float = 0.05, radius: float = 0.3) -> TestFunctionWorld:
    """Views from log-Branin on its box; likes fall with squared distance from the base.

    Args:
        gain: Views lift at Branin's global minima.
        radius: Unit-cube distance from the base at which likes reach -0.5%;
            0.3 excludes all three minima, so the guardrail binds.
    """
    from botorch.test_functions.synthetic import Branin

    base = np.array([0.5, 0.5])
    b = Branin()
    views = _gain(_botorch(b, [-5.0, 0.0], [10.0, 15.0]), base, b.optimal_value, gain, log=True)

    def likes(U: np.ndarray) -> np.ndarray:
        return -0.005 * np.sum((U - base) ** 2, axis=1) / radius ** 2

    return TestFunctionWorld(
        "test_function:branin", {"views": views, "likes": likes}, base,
        BenchmarkProblem({"views": 1.0}, {"likes": -0.005}),
        description=f"views: log-Branin; likes: -0.5% at distance {radius} from base")


def ackley_world(gain: float = 0.05, dim: int = 4, half_width: float = 3.0,
                 x1_limit: float = 0.45) -> TestFunctionWorld:
    """Views from Ackley on ``[-w, w]^dim`` (multimodal); likes fall linearly in ``x1``.

    Args:
        gain: Views lift at Ackley's global minimum (the cube's centre).
        dim: Input dimension, >= 2.
        half_width: The unit cube maps onto ``[-half_width, half_width]^dim``.
        x1_limit: Value of ``x1`` at which likes reach -0.5% (0.45 cuts off the
            global minimum at 0.5).
    """
    from botorch.test_functions.synthetic import Ackley

    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise field_error(ConfigError, "dim", dim, "an integer >= 2")
    base = np.where(np.arange(dim) % 2 == 0, 0.3, 0.7)
    a = Ackley(dim=dim)
    views = _gain(_botorch(a, [-half_width] * dim, [half_width] * dim), base, 0.0, gain)

    def likes(U: np.ndarray) -> np.ndarray:
        return -0.005 * (U[:, 0] - base[0]) / (x1_limit - base[0])

    return TestFunctionWorld(
        "test_function:ackley", {"views": views, "likes": likes}, base,
        BenchmarkProblem({"views": 1.0}, {"likes": -0.005}),
        description=f"views: Ackley-{dim} on [-{half_width}, {half_width}]; likes: -0.5% at "
                    f"x1 = {x1_limit}")


def gramacy_world(gain: float = 0.05) -> TestFunctionWorld:
    """ConstrainedGramacy: views from ``-(x1 + x2)``, likes and shares from its two slacks.

    Args:
        gain: Views lift at the constrained optimum (0.1954, 0.4044).
    """
    from botorch.test_functions.synthetic import ConstrainedGramacy

    base = np.array([0.8, 0.8])
    g = ConstrainedGramacy()
    views = _gain(_botorch(g, [0.0, 0.0], [1.0, 1.0]), base, g.optimal_value, gain)
    likes = _slack_guardrail(_botorch(g, [0.0, 0.0], [1.0, 1.0], slack=0), base)
    shares = _slack_guardrail(_botorch(g, [0.0, 0.0], [1.0, 1.0], slack=1), base)
    return TestFunctionWorld(
        "test_function:gramacy", {"views": views, "likes": likes, "shares": shares}, base,
        BenchmarkProblem({"views": 1.0}, {"likes": -0.005, "shares": -0.005}),
        description="views: -(x1 + x2); likes, shares: -0.5% on Gramacy's constraint boundaries")


def branin_currin_world(gain: float = 0.05,
                        base_point: Sequence[float] = (0.5, 0.5)) -> TestFunctionWorld:
    """ConstrainedBraninCurrin: a two-objective trade-off with one disk guardrail.

    BoTorch's ``ConstrainedBraninCurrin`` minimises Branin (rescaled onto the
    unit square) and Currin subject to a disk of radius ``sqrt(50) / 15``
    (0.471) around the square's centre. Here views rises with ``-log Branin``
    (``gain`` at Branin's minimum value), watch time with ``-Currin`` (``gain``
    at Currin's minimum on the square, 1.18 at ``(0, 1)``; the disk keeps it
    out of reach) and likes carries the disk's slack (``-0.5%`` exactly on its
    boundary). The default problem is the Pareto front of views and watch
    time, both maximised, with likes ``>= -0.5%``. The centre base point is
    strictly feasible and dominated by a stretch of the front.

    Args:
        gain: Lift of each objective at its function's minimum (0.05 is +5%).
        base_point: The control point in the unit square, inside the disk.
    """
    from botorch.test_functions.multi_objective import ConstrainedBraninCurrin
    from botorch.test_functions.synthetic import Branin

    base = np.asarray(base_point, dtype=np.float64)
    bc = ConstrainedBraninCurrin()
    unit = ([0.0, 0.0], [1.0, 1.0])
    views = _gain(_botorch(bc, *unit, column=0), base, Branin().optimal_value, gain,
                  log=True)
    currin_min = float(_botorch(bc, *unit, column=1)(np.array([[0.0, 1.0]]))[0])
    watch_time = _gain(_botorch(bc, *unit, column=1), base, currin_min, gain)
    likes = _slack_guardrail(_botorch(bc, *unit, slack=0), base)
    return TestFunctionWorld(
        "test_function:branin_currin",
        {"views": views, "watch_time": watch_time, "likes": likes}, base,
        BenchmarkProblem.from_pareto({"views": 1.0, "watch_time": 1.0}, {"likes": -0.005}),
        description="views: -log Branin; watch_time: -Currin; likes: -0.5% on the disk "
                    "of ConstrainedBraninCurrin; Pareto front of views and watch_time")


TEST_FUNCTIONS: dict[str, Callable[..., TestFunctionWorld]] = {
    "hartmann6": hartmann6_world,
    "branin": branin_world,
    "ackley": ackley_world,
    "gramacy": gramacy_world,
    "branin_currin": branin_currin_world,
}


# ----------------------------------------------------------------- paper world


def _smooth_function(rng: np.random.Generator, dim: int, *, peak: np.ndarray | None = None,
                     slope: np.ndarray | None = None, base: np.ndarray | None = None,
                     curvature: float = 1.0, lengthscale: float = 0.35, wiggle: float = 0.1,
                     n_features: int = 64) -> MetricFn:
    """A concave quadratic plus a small random-Fourier-feature GP draw.

    Either ``peak`` (a quadratic peaking there) or ``slope`` and ``base`` (a
    mostly linear function falling along ``slope`` from ``base``) is given.

    Args:
        rng: Source of the random draw.
        dim: Input dimension ``d``.
        peak: ``(d,)`` location of the quadratic's peak.
        slope: ``(d,)`` direction in which the function falls from ``base``.
        base: ``(d,)`` centre of the quadratic when ``slope`` is given.
        curvature: Overall curvature of the quadratic.
        lengthscale: Lengthscale of the RBF GP draw, in unit-cube units.
        wiggle: Standard deviation of the GP draw.
        n_features: Random features of the GP draw.
    """
    diag = curvature * rng.uniform(0.6, 1.4, size=dim)
    omega = rng.standard_normal((n_features, dim)) / lengthscale
    phase = rng.uniform(0, 2 * math.pi, size=n_features)
    weight = rng.standard_normal(n_features) * math.sqrt(2.0 / n_features) * wiggle
    centre = peak if peak is not None else base
    lin = np.zeros(dim) if slope is None else -slope

    def fn(U: np.ndarray) -> np.ndarray:
        diff = U - centre
        return diff @ lin - 0.5 * np.sum(diag * diff ** 2, axis=1) \
            + np.cos(U @ omega.T + phase) @ weight

    return fn


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def paper_world(seed: int = 0, *, dim: int = 6, n_metrics: int = 4, n_constraints: int = 2,
                target_gain: float = 0.05, peak_violation: float = 0.02,
                threshold: float = -0.005) -> TestFunctionWorld:
    """A random smooth world mimicking the paper's synthetic study.

    ``dim`` linear weights in ``[0, 1]``; metrics ``views`` (the objective, a
    concave quadratic peaking at a random point), then ``n_constraints``
    guardrails (``likes``, ``watch_time``, ...) that fall, mostly linearly,
    along directions close to the one from the base toward the views peak, then
    free extras. Each carries a small smooth GP draw (random Fourier features).
    Guardrails are scaled to read ``-peak_violation`` at the views peak, so they
    bind; views is scaled so that the true feasible optimum (found with
    :func:`~hz_ray.sim.optimum.find_optimum` at construction, about 0.5 s) is
    ``target_gain``. Use it with :meth:`RealismConfig.paper` (24-h sinusoid,
    AR(1) shocks, noise ∝ 1/sqrt(N)).

    Args:
        seed: Seed of the random functions, >= 0.
        dim: Parameters ``d``, in 2..12 (the paper's study: 4-8).
        n_metrics: Metrics ``J``, in 2..6 (views + guardrails + extras).
        n_constraints: Guardrails, in 1..n_metrics - 1.
        target_gain: Views lift at the feasible optimum (0.05 is +5%).
        peak_violation: Guardrail drop at the views peak (> -threshold).
        threshold: Guardrail lower bound, e.g. -0.005.

    Raises:
        ConfigError: On an out-of-range argument.
    """
    from hz_ray.sim.optimum import find_optimum

    for name, value, lo, hi in (("seed", seed, 0, 2 ** 63), ("dim", dim, 2, 12),
                                ("n_metrics", n_metrics, 2, 6),
                                ("n_constraints", n_constraints, 1, n_metrics - 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise field_error(ConfigError, name, value, f"an integer in [{lo}, {hi}]")
    if not 0 < target_gain < 0.5:
        raise field_error(ConfigError, "target_gain", target_gain, "in (0, 0.5)")
    if not peak_violation > -threshold >= 0:
        raise field_error(ConfigError, "peak_violation", peak_violation,
                          f"> -threshold ({-threshold})")
    rng = rng_for(seed, _TAG_PAPER, dim, n_metrics)
    names = ("views", "likes", "watch_time", "shares", "follows", "dwell")[:n_metrics]
    base = rng.uniform(0.35, 0.65, size=dim)
    obj_peak = rng.uniform(0.1, 0.9, size=dim)
    toward = _unit(obj_peak - base)
    raw: list[MetricFn] = [_smooth_function(rng, dim, peak=obj_peak, wiggle=0.05)]
    for j in range(1, n_metrics):
        if j <= n_constraints:
            slope = _unit(toward + 0.6 * rng.standard_normal(dim) / math.sqrt(dim))
            raw.append(_smooth_function(rng, dim, slope=slope, base=base, curvature=0.3,
                                        wiggle=0.02))
        else:
            raw.append(_smooth_function(rng, dim, peak=rng.uniform(0.1, 0.9, size=dim)))
    peak_row = obj_peak[None, :]
    scales = [1.0]
    for fn in raw[1:n_constraints + 1]:
        drop = float(fn(peak_row)[0] - fn(base[None, :])[0])
        scales.append(peak_violation / max(-drop, 1e-6))
    for fn in raw[n_constraints + 1:]:  # extras: about +-2% over the box
        drop = float(fn(peak_row)[0] - fn(base[None, :])[0])
        scales.append(0.02 / max(abs(drop), 0.05))

    def scaled(fn: MetricFn, s: float) -> MetricFn:
        return lambda X: s * fn(X)

    problem = BenchmarkProblem({"views": 1.0}, {m: threshold for m in names[1:n_constraints + 1]})

    def build(objective_scale: float) -> TestFunctionWorld:
        s = [objective_scale, *scales[1:]]
        fns = {m: scaled(fn, float(si)) for m, fn, si in zip(names, raw, s, strict=True)}
        return TestFunctionWorld(
            "paper", fns, base, problem,
            description=f"paper-style: d={dim}, {n_metrics} metrics, {n_constraints} guardrails "
                        f">= {threshold:+.1%}, seed {seed}")

    best = find_optimum(build(1.0), n_samples=2048, n_polish=4, seed=seed,
                        method="SLSQP").objective
    if not best > 0:  # pragma: no cover - the base is always feasible and never optimal
        raise field_error(ConfigError, "seed", seed, "a seed whose world has a feasible gain")
    return build(target_gain / best)
