"""Ax itself as a peer: ``ax.api.Client`` with outcome constraints and asynchronous trials.

Optional (the ``benchmark`` extra): ``ax-platform`` is imported lazily, and
:func:`ax_available` says whether it is installed, so the benchmark can skip Ax
with a clear message.

Mapping onto the driver: one driver arm is one Ax trial. Ax sees the same
inputs as every other method, the per-arm delta aggregates ``(mean, sem)`` of
every metric (``attach_data`` while the arm runs, ``complete_trial`` once it
has stopped), and the control as the baseline trial with delta 0. The search
space is the tuned weights (the one held fixed for scale invariance is left
out, as for every method), on the configured log or linear scale. Constraints
are absolute bounds on the deltas (``likes >= -0.005``). Running trials are
Ax's pending points. A Pareto objective becomes Ax's multi-objective goal
(``"views, watch_time"``) with objective thresholds at the control (delta 0). Generation
strategy: Ax's default ``"fast"`` (Sobol
initialisation, then BoTorch qLogNEI via Ax's modular BO), with an
initialisation budget of one batch (``slots`` trials) and never an idle slot
(``allow_exceeding_initialization_budget``).

Readout every hour: the same rule as :class:`~benchmarks.baselines.botorch_bo.ConstrainedBO`
(best posterior mean gain with P(feasible) >= 0.95 under the shared per-metric
GP), because Ax's own best-point search refits and cross-validates its model
(seconds per call). Ax's own choice, ``Client.get_best_parameterization()``, is
computed once at the end (:meth:`AxOptimizer.native_best`) and reported beside it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings

import torch

from benchmarks.baselines.common import DTYPE, BatchedOptimizer
from hz_ray.config import TuningConfig
from hz_ray.records import Recommendation

AX_MISSING = ("ax-platform is not installed; skipping the Ax peer. Install the benchmark extra: "
              ".venv/bin/pip install -c constraints.txt ax-platform==1.3.1")


def ax_available() -> bool:
    """Whether ``ax-platform`` can be imported."""
    return importlib.util.find_spec("ax") is not None


def _quiet_ax() -> None:
    from ax.utils.common.logger import set_ax_logger_levels, set_stderr_log_level

    set_stderr_log_level(logging.ERROR)
    set_ax_logger_levels(logging.ERROR)


class AxOptimizer(BatchedOptimizer):
    """Ax's ``Client`` behind the Optimizer facade (see the module docstring)."""

    readout_rule = "best posterior mean gain with P(feasible) >= 0.95 (Ax's own pick at the end)"

    def __init__(self, config: TuningConfig) -> None:
        super().__init__(config)
        if not ax_available():
            raise ImportError(AX_MISSING)
        _quiet_ax()
        from ax.api.client import Client
        from ax.api.configs import RangeParameterConfig

        self._free = [p for p in self.space.free]
        self.client = Client(random_seed=config.optimizer.seed)
        self.client.configure_experiment(parameters=[
            RangeParameterConfig(name=p.name, bounds=(float(p.low), float(p.high)),
                                 parameter_type="float", scaling=p.scale)
            for p in self._free])
        constraints = [f"{c.metric} >= {c.bound!r}" if c.sense > 0 else f"{c.metric} <= {c.bound!r}"
                       for c in config.constraints]
        if config.objective.is_pareto:
            # Multi-objective: Ax's default generator for it (qLogNEHVI), objective thresholds
            # at the control (Ax turns constraints on objective metrics into thresholds).
            signs = config.objective.signs
            objective = ", ".join(m if signs[m] > 0 else f"-{m}" for m in config.objective.pareto)
            constraints += [f"{m} >= 0.0" if signs[m] > 0 else f"{m} <= 0.0"
                            for m in config.objective.pareto]
        else:
            terms = []
            for metric, weight in config.objective.weights.items():
                w = config.objective.sign * float(weight)
                terms.append(metric if w == 1.0 else f"{w!r} * {metric}")
            objective = " + ".join(terms)
        self.client.configure_optimization(objective=objective,
                                           outcome_constraints=constraints or None)
        self.client.configure_generation_strategy(
            method="fast", initialization_budget=config.arms.slots,
            initialization_random_seed=config.optimizer.seed,
            allow_exceeding_initialization_budget=True)
        control_var = config.optimizer.var_floor * 1e-3
        base = self.space.base_params
        baseline = self.client.attach_baseline({p.name: float(base[p.name]) for p in self._free})
        self.client.complete_trial(baseline, raw_data={m: (0.0, math.sqrt(control_var))
                                                       for m in self.metrics})
        self._trial_of: dict[str, int] = {}
        self._unassigned: dict[int, torch.Tensor] = {}
        self._completed: set[int] = set()

    # ------------------------------------------------------------------ data
    def _raw(self, arm_id: str) -> dict[str, tuple[float, float]] | None:
        est = self.ledger.estimates(arm_id)
        if len(est) != len(self.metrics):
            return None
        return {m: (float(est[m].mean), float(est[m].sem)) for m in self.metrics}

    def _sync(self) -> None:
        """Attach the latest aggregates; complete the trials of stopped arms."""
        for arm_id, trial in self._trial_of.items():
            if trial in self._completed:
                continue
            raw = self._raw(arm_id)
            retired = self.ledger.arms[arm_id].retired
            if retired:
                self.client.complete_trial(trial, raw_data=raw)
                self._completed.add(trial)
            elif raw is not None:
                self.client.attach_data(trial, raw_data=raw)

    def _generate(self, k: int, live_arms: list[str], seed: int) -> torch.Tensor:
        for trial in list(self._unassigned):  # generated, never launched
            self.client.mark_trial_abandoned(trial)
            del self._unassigned[trial]
        self._sync()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trials = self.client.get_next_trials(max_trials=k)
        points = []
        for trial, params in trials.items():
            full = dict(self.space.base_params)
            full.update({name: float(v) for name, v in params.items()})
            x = self.space.encode(full)
            self._unassigned[trial] = x
            points.append(x)
        if not points:
            return torch.zeros(0, self.space.dim, dtype=DTYPE)
        return torch.stack(points)

    def register_arm(self, arm_id, params, hour=None) -> None:
        """Register the arm and bind it to the Ax trial it came from."""
        super().register_arm(arm_id, params, hour)
        if not self._unassigned:
            return
        x = self.space.encode(params)
        trial = min(self._unassigned, key=lambda t: float((self._unassigned[t] - x).abs().max()))
        if float((self._unassigned[trial] - x).abs().max()) < 1e-6:
            self._trial_of[arm_id] = trial
            del self._unassigned[trial]

    # --------------------------------------------------------------- readout
    def recommend(self) -> Recommendation:
        """Best posterior mean gain with P(feasible) >= the threshold (shared GP)."""
        return self.recommend_posterior(constrained="probability")

    def native_best(self) -> dict[str, float] | None:
        """Ax's own ``get_best_parameterization()`` on all data so far (full params)."""
        if self.config.objective.is_pareto:
            return None  # Ax's answer to several objectives is a frontier, not one point
        self._sync()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, _, _, _ = self.client.get_best_parameterization(use_model_predictions=True)
        except Exception:  # noqa: BLE001 - Ax found no best point
            return None
        full = dict(self.space.base_params)
        full.update({name: float(v) for name, v in params.items()})
        return full
