"""The :class:`World` interface: the noise-free truth behind a simulated A/B platform.

A world knows, for every candidate weight vector, the long-run relative lift of
each metric against the control weights (``true_deltas``), and how a metric
looks in the control group at an average hour (``base_levels``, ``unit_cv``).
The simulated backend turns that truth into noisy hourly readings; the tuner
never sees the truth.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from hz_ray.errors import ConfigError, InputDataError, field_error

#: Decimals kept when canonicalising parameters (cache key and scale invariance).
CANONICAL_DECIMALS = 10

_CACHE_SIZE = 4096


@dataclass(frozen=True)
class BenchmarkProblem:
    """An objective and guardrails over true deltas, for scoring benchmark results.

    Two forms share this class:

    - Weighted sum (``pareto`` empty): the objective is ``sum_m weight_m *
      delta_m``, maximised.
    - Pareto (``pareto`` set): two or more metrics traded against each other,
      each maximised (sign +1) or minimised (sign -1); ``preference`` picks a
      point of the front by the weighted Chebyshev value around the control
      (:func:`hz_ray.sim.pareto.chebyshev_value`). ``objective`` must still be
      given so that weighted-sum code paths (e.g.
      :func:`~hz_ray.sim.optimum.find_optimum`) keep working: by convention it
      is the equal-weight sum of the signed Pareto metrics, ``{m: sign_m}``,
      which :meth:`from_pareto` builds.

    Attributes:
        objective: Metric -> weight; the objective is ``sum_m weight_m * delta_m``
            and is maximised (use negative weights to minimise a metric).
        min_deltas: Metric -> lower bound ``c``: feasible when ``delta_m >= c``
            (e.g. ``{"likes": -0.005}``).
        max_deltas: Metric -> upper bound ``c``: feasible when ``delta_m <= c``.
        pareto: Pareto metric -> sign (+1 maximise, -1 minimise), in order;
            empty for the weighted-sum form.
        preference: Pareto metric -> positive share of the wanted improvement
            (any positive scale; normalised by :attr:`preference_shares`), or
            ``None`` for equal shares.
    """

    objective: Mapping[str, float]
    min_deltas: Mapping[str, float] = field(default_factory=dict)
    max_deltas: Mapping[str, float] = field(default_factory=dict)
    pareto: Mapping[str, float] = field(default_factory=dict)
    preference: Mapping[str, float] | None = None

    @classmethod
    def from_pareto(cls, pareto: Mapping[str, float], min_deltas: Mapping[str, float] | None = None,
                    max_deltas: Mapping[str, float] | None = None,
                    preference: Mapping[str, float] | None = None) -> BenchmarkProblem:
        """Build a Pareto problem whose ``objective`` is the signed equal-weight sum.

        Args:
            pareto: Metric -> sign (+1 maximise, -1 minimise), two or more.
            min_deltas: Lower bounds, as for the weighted-sum form.
            max_deltas: Upper bounds.
            preference: Optional metric -> positive share over exactly the
                Pareto metrics.

        Returns:
            The problem; ``objective`` is ``{m: float(sign_m)}``.
        """
        return cls({m: float(s) for m, s in pareto.items()}, dict(min_deltas or {}),
                   dict(max_deltas or {}), dict(pareto),
                   None if preference is None else dict(preference))

    @property
    def is_pareto(self) -> bool:
        """True for the Pareto form."""
        return bool(self.pareto)

    @property
    def preference_shares(self) -> dict[str, float]:
        """Pareto metric -> share of the preference, summing to 1 (equal when unset)."""
        from hz_ray.config import preference_shares

        return preference_shares(self.pareto, self.preference)

    def check(self, metrics: Sequence[str]) -> None:
        """Raise ConfigError unless every named metric exists and weights are finite.

        In the Pareto form also: two or more Pareto metrics, signs exactly
        +1 or -1, and a preference (when given) positive over exactly the
        Pareto metrics.

        Args:
            metrics: The world's metric names.
        """
        if not self.objective:
            raise field_error(ConfigError, "problem.objective", dict(self.objective),
                              "a non-empty mapping metric -> weight",
                              "Write e.g. {'views': 1.0}.")
        for part, mapping in (("objective", self.objective), ("min_deltas", self.min_deltas),
                              ("max_deltas", self.max_deltas), ("pareto", self.pareto),
                              ("preference", self.preference or {})):
            for metric, value in mapping.items():
                if metric not in metrics:
                    raise field_error(ConfigError, f"problem.{part}", metric,
                                      f"one of the world's metrics {tuple(metrics)}")
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise field_error(ConfigError, f"problem.{part}.{metric}", value,
                                      "a finite number")
        if self.pareto:
            self._check_pareto()
        elif self.preference is not None:
            raise field_error(ConfigError, "problem.preference", dict(self.preference),
                              "unset without pareto", "A preference steers a Pareto problem.")

    def _check_pareto(self) -> None:
        if len(self.pareto) < 2:
            raise field_error(ConfigError, "problem.pareto", dict(self.pareto),
                              "two or more metrics", "Use objective for a single metric.")
        for metric, sign in self.pareto.items():
            if isinstance(sign, bool) or sign not in (1, -1):
                raise field_error(ConfigError, f"problem.pareto.{metric}", sign,
                                  "+1 (maximise) or -1 (minimise)")
        if self.preference is None:
            return
        if set(self.preference) != set(self.pareto):
            raise field_error(ConfigError, "problem.preference", dict(self.preference),
                              f"a share for each of {list(self.pareto)}",
                              "Leave preference None for equal shares.")
        for metric, share in self.preference.items():
            if isinstance(share, bool) or not share > 0:
                raise field_error(ConfigError, f"problem.preference.{metric}", share,
                                  "a number > 0")

    def objective_value(self, deltas: Mapping[str, float]) -> float:
        """Return ``sum_m weight_m * delta_m`` (relative lift; 0.01 is +1%)."""
        return float(sum(w * deltas[m] for m, w in self.objective.items()))

    def violation(self, deltas: Mapping[str, float]) -> float:
        """Return the summed constraint violation ``sum_i max(0, breach_i)`` (>= 0)."""
        total = sum(max(0.0, c - deltas[m]) for m, c in self.min_deltas.items())
        total += sum(max(0.0, deltas[m] - c) for m, c in self.max_deltas.items())
        return float(total)

    def to_config_mapping(self) -> dict[str, Any]:
        """Return the ``objective`` and ``constraints`` entries of a tuning config mapping.

        The weighted-sum form gives ``objective: {weights: {...}}``; the Pareto
        form gives ``objective: {pareto: [...], direction: {m: maximize |
        minimize}, preference: {...}}`` (no ``preference`` when it is None).
        """
        constraints: list[dict[str, Any]] = [
            {"metric": m, "min_delta": float(c)} for m, c in self.min_deltas.items()
        ]
        constraints += [{"metric": m, "max_delta": float(c)} for m, c in self.max_deltas.items()]
        if not self.pareto:
            return {"objective": {"weights": {m: float(w) for m, w in self.objective.items()}},
                    "constraints": constraints}
        objective: dict[str, Any] = {
            "pareto": list(self.pareto),
            "direction": {m: "maximize" if s > 0 else "minimize" for m, s in self.pareto.items()},
        }
        if self.preference is not None:
            objective["preference"] = {m: float(v) for m, v in self.preference.items()}
        return {"objective": objective, "constraints": constraints}


class World(ABC):
    """Noise-free truth of a simulated recommender A/B test bed.

    Subclasses set the attributes in ``__init__`` and implement
    :meth:`_deltas_canonical`. Parameters are in natural units (the weights the
    ranker uses), in the order of ``parameter_names``.

    Attributes:
        name: Short name, e.g. ``"smooth"``.
        metrics: Metric names, ``J`` of them.
        parameter_names: Parameter names, ``d`` of them.
        base_params: The control (production) weights.
        bounds: Search box per parameter, ``(low, high)`` in natural units.
        log_scale: Whether a parameter is searched on a log scale.
        base_levels: Per-unit mean of each metric in the control at an average
            hour (e.g. views per user per hour).
        unit_cv: Per-unit coefficient of variation of each metric (sd / mean
            across users in one hour).
        scale_invariant: True when ``true_deltas(c * w) == true_deltas(w)`` for
            every ``c > 0`` (a ranker that only uses the order of its scores).
        default_problem: The objective and guardrails this world is meant for.
        piecewise_constant: True when deltas move in tiny steps (a ranking of a
            finite pool), so derivative-based search does not apply.
    """

    name: str
    metrics: tuple[str, ...]
    parameter_names: tuple[str, ...]
    base_params: Mapping[str, float]
    bounds: Mapping[str, tuple[float, float]]
    log_scale: Mapping[str, bool]
    base_levels: Mapping[str, float]
    unit_cv: Mapping[str, float]
    scale_invariant: bool = False
    piecewise_constant: bool = False
    default_problem: BenchmarkProblem

    def __init__(self) -> None:
        self._cache: dict[tuple[float, ...], tuple[float, ...]] = {}
        self._base_key: tuple[float, ...] | None = None

    # ----------------------------------------------------------------- public API

    def validate_params(self, params: Mapping[str, float], where: str = "params") -> np.ndarray:
        """Check a parameter mapping and return it as a vector.

        Args:
            params: Parameter name -> value, exactly the names in
                ``parameter_names``.
            where: Field name used in error messages.

        Returns:
            A ``(d,)`` float64 array in the order of ``parameter_names``.

        Raises:
            InputDataError: On a missing or unknown name, a non-finite value, a
                non-positive value of a log-scale parameter, or a value outside
                the domain of a linear parameter.
        """
        if not isinstance(params, Mapping):
            raise field_error(InputDataError, where, params, "a mapping name -> value")
        unknown = sorted(set(params) - set(self.parameter_names))
        if unknown:
            raise field_error(InputDataError, f"{where}.{unknown[0]}", params[unknown[0]],
                              f"a parameter of world {self.name!r}",
                              f"Use only {self.parameter_names}.")
        missing = [p for p in self.parameter_names if p not in params]
        if missing:
            raise field_error(InputDataError, f"{where}.{missing[0]}", None, "given",
                              f"Pass every parameter of world {self.name!r}: "
                              f"{self.parameter_names}.")
        values = np.empty(len(self.parameter_names), dtype=np.float64)
        for i, p in enumerate(self.parameter_names):
            v = params[p]
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(float(v)):
                raise field_error(InputDataError, f"{where}.{p}", v, "a finite number")
            v = float(v)
            if self.log_scale[p]:
                if v <= 0:
                    raise field_error(InputDataError, f"{where}.{p}", v, "a weight > 0",
                                      "Log-scale weights must be positive.")
            else:
                lo, hi = self.bounds[p]
                if not lo - 1e-9 <= v <= hi + 1e-9:
                    raise field_error(InputDataError, f"{where}.{p}", v,
                                      f"within the world's domain [{lo}, {hi}]")
            values[i] = v
        return values

    def true_deltas(self, params: Mapping[str, float]) -> dict[str, float]:
        """Return the noise-free long-run relative lift of every metric vs control.

        Args:
            params: Parameter name -> value (natural units).

        Returns:
            Metric -> relative delta ``X(w)/X(w0) - 1`` (0.01 is +1%). Exactly 0
            for every metric at the base parameters (and, in scale-invariant
            worlds, at any positive multiple of them).
        """
        x = self.validate_params(params)
        key = tuple(self._canonical(x[None, :])[0].tolist())
        if key not in self._cache:
            if key == self._get_base_key():
                values = (0.0,) * len(self.metrics)
            else:
                values = tuple(float(v) for v in self._deltas_canonical(np.array([key]))[0])
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = values
        return dict(zip(self.metrics, self._cache[key], strict=True))

    def true_deltas_batch(self, X: np.ndarray) -> np.ndarray:
        """Return true deltas for many parameter vectors at once (no validation, no cache).

        Args:
            X: ``(n, d)`` parameter vectors in natural units, columns in the order
                of ``parameter_names``, inside the domain.

        Returns:
            ``(n, J)`` relative deltas, columns in the order of ``metrics``.
        """
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        canon = self._canonical(X)
        out = self._deltas_canonical(canon)
        is_base = np.all(canon == np.array(self._get_base_key()), axis=1)
        out[is_base] = 0.0
        return out

    def is_base(self, params: Mapping[str, float]) -> bool:
        """Whether ``params`` rank exactly like the base (or a multiple, if scale-invariant)."""
        x = self.validate_params(params)
        return tuple(self._canonical(x[None, :])[0].tolist()) == self._get_base_key()

    def base_vector(self) -> np.ndarray:
        """Return the base parameters as a ``(d,)`` vector."""
        return np.array([self.base_params[p] for p in self.parameter_names], dtype=np.float64)

    def parameter_specs(self) -> list[dict[str, Any]]:
        """Return the ``parameters`` entry of a tuning config mapping for this world."""
        return [{"name": p, "low": float(self.bounds[p][0]), "high": float(self.bounds[p][1]),
                 "scale": "log" if self.log_scale[p] else "linear",
                 "base": float(self.base_params[p])} for p in self.parameter_names]

    def config_mapping(self) -> dict[str, Any]:
        """Return ``parameters``, ``objective`` and ``constraints`` of a tuning config mapping."""
        return {"parameters": self.parameter_specs(), **self.default_problem.to_config_mapping()}

    # ------------------------------------------------------------ for subclasses

    def _canonical(self, X: np.ndarray) -> np.ndarray:
        """Map natural parameters to the rounded coordinates the deltas depend on.

        Scale-invariant worlds use centred log-weights ``log w - mean(log w)``,
        so that ``c * w`` and ``w`` land on the same (rounded) point exactly;
        other worlds round the parameters themselves.

        Args:
            X: ``(n, d)`` natural parameters.

        Returns:
            ``(n, d)`` canonical coordinates, rounded to ``CANONICAL_DECIMALS``.
        """
        if self.scale_invariant:
            logs = np.log(X)
            return np.round(logs - logs.mean(axis=1, keepdims=True), CANONICAL_DECIMALS) + 0.0
        return np.round(X, CANONICAL_DECIMALS) + 0.0

    @abstractmethod
    def _deltas_canonical(self, Z: np.ndarray) -> np.ndarray:
        """Return ``(n, J)`` true deltas at ``(n, d)`` canonical coordinates."""

    def _get_base_key(self) -> tuple[float, ...]:
        if self._base_key is None:
            self._base_key = tuple(self._canonical(self.base_vector()[None, :])[0].tolist())
        return self._base_key

    def _finish_init(self) -> None:
        """Check the attributes a subclass set; call at the end of ``__init__``."""
        d = len(self.parameter_names)
        if d == 0 or len(set(self.parameter_names)) != d:
            raise field_error(ConfigError, "parameter_names", self.parameter_names,
                              "a non-empty tuple of distinct names")
        if not self.metrics or len(set(self.metrics)) != len(self.metrics):
            raise field_error(ConfigError, "metrics", self.metrics,
                              "a non-empty tuple of distinct names")
        for m in self.metrics:
            level, cv = self.base_levels.get(m), self.unit_cv.get(m)
            if level is None or not math.isfinite(level) or level <= 0:
                raise field_error(ConfigError, f"base_levels.{m}", level, "a finite number > 0")
            if cv is None or not math.isfinite(cv) or cv < 0:
                raise field_error(ConfigError, f"unit_cv.{m}", cv, "a finite number >= 0")
        self.validate_params(self.base_params, where="base_params")
        self.default_problem.check(self.metrics)
