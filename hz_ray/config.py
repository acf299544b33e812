"""Tuning-job configuration: YAML or a mapping -> frozen, validated dataclasses.

This is the only module that parses user files. Every field is checked once,
here, and a bad value raises :class:`~hz_ray.errors.ConfigError` whose message
names the field (dotted path), the value and the fix.

A minimal YAML file::

    name: feed-vm
    parameters:
      - {name: w_click, low: 0.33, high: 3.0, scale: log, base: 1.0}
      - {name: w_like,  low: 0.33, high: 3.0, scale: log, base: 1.0}
    objective: {metric: views}                # or {weights: {views: 1, watch_time: 0.5}}
                                              # or {pareto: [views, watch_time],
                                              #     preference: {views: 0.7, watch_time: 0.3}}
    constraints:
      - {metric: likes, min_delta: -0.005}    # likes may drop by at most 0.5% vs control
    arms: {slots: 8, min_hours: 2, max_hours: 24}
    optimizer: {seed: 0}

Reading files and mappings lives in :mod:`hz_ray.config_loading`; its
``load_config`` and ``config_from_mapping`` are importable from here too.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hz_ray.config_runtime import ClockSpec, TelemetrySpec
from hz_ray.errors import ConfigError, field_error
from hz_ray.lazy import lazy_exports

SCALES = ("linear", "log")
DIRECTIONS = ("maximize", "minimize")
MAX_HOURS = 100_000  # about 11 years: an upper bound on every hour count
MAX_SEED = 2**63 - 1  # torch generators take seeds up to 2**64 - 1


class _ClippedRepr(reprlib.Repr):
    """``repr`` bounded in length, depth and digits (values shown in error messages)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 80
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 8
        self.maxdict = 6
        self.maxlevel = 3

    def repr_int(self, x: int, level: int) -> str:  # noqa: D102 - reprlib's hook
        if x.bit_length() > 128:  # repr() of a 4301-digit int raises
            return f"<an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(x, level)


class _Shown:
    """A value as an error message shows it (its clipped repr)."""

    __slots__ = ("text",)

    def __init__(self, value: object) -> None:
        self.text = _CLIPPED.repr(value)

    def __repr__(self) -> str:
        return self.text


_CLIPPED = _ClippedRepr()


def _require(ok: bool, where: str, value: object, constraint: str, hint: str = "") -> None:
    if not ok:
        raise field_error(ConfigError, where, _Shown(value), constraint, hint)


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ParameterSpec:
    """One value-model weight to tune.

    Attributes:
        name: Parameter name, e.g. ``"w_like"``.
        low: Lower bound of the search range.
        high: Upper bound of the search range (> low).
        scale: ``"linear"`` or ``"log"`` (log needs low > 0); weights usually
            want ``"log"``, so ``x0.5`` and ``x2`` are equally far from the base.
        base: The control arm's (production) value, within ``[low, high]``.
    """

    name: str
    low: float
    high: float
    base: float
    scale: str = "log"

    def validate(self, where: str) -> None:
        """Raise ConfigError unless the spec is well-formed."""
        _require(isinstance(self.name, str) and self.name.isidentifier(), f"{where}.name",
                 self.name, "a Python-identifier-like name", "Use letters, digits and '_'.")
        for attr in ("low", "high", "base"):
            _require(_is_number(getattr(self, attr)), f"{where}.{attr}", getattr(self, attr),
                     "a finite number")
        _require(self.scale in SCALES, f"{where}.scale", self.scale, f"one of {SCALES}")
        _require(self.high > self.low, f"{where}.high", self.high,
                 f"greater than low ({self.low})")
        if self.scale == "log":
            _require(self.low > 0, f"{where}.low", self.low, "> 0 for scale 'log'",
                     "Use scale: linear for ranges that include 0.")
        _require(self.low <= self.base <= self.high, f"{where}.base", self.base,
                 f"within [low, high] = [{self.low}, {self.high}]",
                 "The base is the production weight; widen the range to include it.")


def preference_shares(pareto: tuple[str, ...] | list[str] | Mapping[str, float],
                      preference: Mapping[str, float] | None) -> dict[str, float]:
    """Pareto metric -> its share of ``preference``, summing to 1 (equal when None; {} if none)."""
    names = list(pareto)
    if not names:
        return {}
    raw = preference or {m: 1.0 for m in names}
    total = float(sum(raw[m] for m in names))
    return {m: float(raw[m]) / total for m in names}


@dataclass(frozen=True)
class ObjectiveSpec:
    """What to optimise: a weighted sum of relative deltas, or a Pareto trade-off.

    Exactly one form is given:

    - ``weights``: the objective is ``sign * sum_m weight_m * delta_m`` (one
      metric with weight 1 for a plain objective), ``direction`` a string.
    - ``pareto``: two or more metrics traded against each other. The search
      spreads over their feasible Pareto front and the readout recommends the
      arm that the ``preference`` picks from it by the weighted Chebyshev
      scalarisation around the control (:mod:`hz_ray.outcomes`).
      ``direction`` is one string for all of them or a mapping per metric.

    Attributes:
        weights: Metric -> weight (the weighted-sum form); empty for ``pareto``.
        direction: ``"maximize"`` or ``"minimize"``; with ``pareto`` also a
            mapping metric -> direction (every Pareto metric named).
        pareto: The traded metrics, in order (the Pareto form); empty otherwise.
        preference: Optional metric -> positive share of the improvement wanted
            along each Pareto metric (normalised to sum 1); ``None`` means an
            equal split for the readout and the whole simplex for the search.
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    direction: str | Mapping[str, str] = "maximize"
    pareto: tuple[str, ...] = ()
    preference: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.pareto, list):
            object.__setattr__(self, "pareto", tuple(self.pareto))

    def validate(self, where: str) -> None:
        """Raise ConfigError unless the spec is well-formed."""
        _require(isinstance(self.weights, Mapping), f"{where}.weights", self.weights,
                 "a mapping metric -> weight")
        _require(isinstance(self.pareto, tuple), f"{where}.pareto", self.pareto,
                 "a list of metric names", "Write objective: {pareto: [views, watch_time]}.")
        _require(bool(self.weights) != bool(self.pareto), where,
                 {"weights": dict(self.weights), "pareto": list(self.pareto)},
                 "exactly one of 'weights' (or 'metric') and 'pareto'",
                 "Write objective: {metric: views}, {weights: {views: 1.0}} or "
                 "{pareto: [views, watch_time]}.")
        if self.pareto:
            self._validate_pareto(where)
            return
        for metric, weight in self.weights.items():
            _require(isinstance(metric, str) and bool(metric), f"{where}.weights", metric,
                     "keyed by metric names")
            _require(_is_number(weight) and weight != 0, f"{where}.weights.{metric}", weight,
                     "a finite non-zero number")
        _require(self.direction in DIRECTIONS, f"{where}.direction", self.direction,
                 f"one of {DIRECTIONS}", "A per-metric direction needs the pareto form.")
        _require(self.preference is None, f"{where}.preference", self.preference,
                 "unset with 'weights'", "A preference steers a pareto objective; "
                 "write objective: {pareto: [...], preference: {...}}.")

    def _validate_pareto(self, where: str) -> None:
        names = self.pareto
        _require(len(names) >= 2, f"{where}.pareto", list(names), "two or more metric names",
                 "Write objective: {metric: views} for one objective.")
        for metric in names:
            _require(isinstance(metric, str) and bool(metric), f"{where}.pareto", metric,
                     "metric names")
        dupes = sorted({m for m in names if names.count(m) > 1})
        _require(not dupes, f"{where}.pareto", dupes, "unique metric names")
        if isinstance(self.direction, Mapping):
            _require(set(self.direction) == set(names), f"{where}.direction",
                     dict(self.direction), f"a direction for each of {list(names)}",
                     "Or write one direction for all: direction: maximize.")
            for metric, direction in self.direction.items():
                _require(direction in DIRECTIONS, f"{where}.direction.{metric}", direction,
                         f"one of {DIRECTIONS}")
        else:
            _require(self.direction in DIRECTIONS, f"{where}.direction", self.direction,
                     f"one of {DIRECTIONS} or a mapping metric -> direction")
        if self.preference is None:
            return
        _require(isinstance(self.preference, Mapping), f"{where}.preference", self.preference,
                 "a mapping metric -> share", "Write preference: {views: 0.7, watch_time: 0.3}.")
        _require(set(self.preference) == set(names), f"{where}.preference",
                 dict(self.preference), f"a share for each of {list(names)}",
                 "Leave preference out to explore the whole front.")
        for metric, share in self.preference.items():
            _require(_is_number(share) and share > 0, f"{where}.preference.{metric}", share,
                     "a finite number > 0",
                     "Shares are relative: {a: 0.7, b: 0.3} or {a: 7, b: 3}.")

    @property
    def is_pareto(self) -> bool:
        """True for the Pareto form."""
        return bool(self.pareto)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The objective's metrics, in order."""
        return self.pareto if self.pareto else tuple(self.weights)

    def direction_of(self, metric: str) -> str:
        """``"maximize"`` or ``"minimize"`` for one objective metric."""
        if isinstance(self.direction, Mapping):
            return str(self.direction[metric])
        return str(self.direction)

    @property
    def signs(self) -> dict[str, float]:
        """Objective metric -> +1 to maximise, -1 to minimise."""
        return {m: 1.0 if self.direction_of(m) == "maximize" else -1.0
                for m in self.metric_names}

    @property
    def preference_shares(self) -> dict[str, float]:
        """Pareto metric -> its share of the preference, summing to 1 (equal when unset)."""
        return preference_shares(self.pareto, self.preference)

    @property
    def sign(self) -> float:
        """+1 to maximise, -1 to minimise (the weighted-sum form's one direction)."""
        _require(isinstance(self.direction, str), "objective.direction", self.direction,
                 "one direction", "Use signs for a per-metric direction.")
        return 1.0 if self.direction == "maximize" else -1.0

    def to_mapping(self) -> dict[str, Any]:
        """The ``objective`` section that :func:`config_from_mapping` reads back."""
        direction = (dict(self.direction) if isinstance(self.direction, Mapping)
                     else self.direction)
        if not self.pareto:
            return {"weights": dict(self.weights), "direction": direction}
        out: dict[str, Any] = {"pareto": list(self.pareto), "direction": direction}
        if self.preference is not None:
            out["preference"] = dict(self.preference)
        return out


@dataclass(frozen=True)
class ConstraintSpec:
    """A guardrail on one metric's relative delta against control.

    Exactly one of ``min_delta`` / ``max_delta`` is set: ``min_delta: -0.005``
    means the metric may fall by at most 0.5%; ``max_delta: 0.01`` means it may
    rise by at most 1% (for cost-like metrics).
    """

    metric: str
    min_delta: float | None = None
    max_delta: float | None = None

    def validate(self, where: str) -> None:
        """Raise ConfigError unless the spec is well-formed."""
        _require(isinstance(self.metric, str) and bool(self.metric), f"{where}.metric",
                 self.metric, "a metric name")
        _require((self.min_delta is None) != (self.max_delta is None), where,
                 {"min_delta": self.min_delta, "max_delta": self.max_delta},
                 "exactly one of min_delta / max_delta",
                 "Write two constraints to bound a metric on both sides.")
        bound = self.bound
        _require(_is_number(bound) and -1.0 < bound < 10.0,
                 f"{where}.{'min_delta' if self.min_delta is not None else 'max_delta'}",
                 bound, "a relative delta in (-1, 10)", "Use fractions: -0.005 means -0.5%.")

    @property
    def bound(self) -> float:
        """The threshold, whichever side it is on."""
        return self.min_delta if self.min_delta is not None else self.max_delta  # type: ignore[return-value]

    @property
    def sense(self) -> float:
        """+1 for a lower bound (delta >= bound), -1 for an upper bound."""
        return 1.0 if self.min_delta is not None else -1.0


@dataclass(frozen=True)
class ArmsSpec:
    """How test arms are run.

    Attributes:
        slots: Test arms live at the same time (experiment slots), >= 1.
        min_hours: Hours of data an arm collects before it may be stopped early.
            The stop rules below act on the posterior, which already carries
            the noise of few hours, so a short minimum stops harmful arms
            sooner (2 instead of 6 h, value-model world, 72 h, 10 paired
            seeds: +0.14 points of gain, s.e. 0.06, and traffic-weighted
            guardrail violation of the arms run 1.32 -> 0.47 pp;
            benchmarks/RESULTS.md). Contender stops still wait for the hours
            a recommendation needs.
        max_hours: Hours an arm stays live at most (its lifecycle).
        guardrail_stop_probability: Stop an arm after ``min_hours`` when its
            posterior probability of meeting every constraint falls below
            this (it is probably harming users). 0 disables early stops.
        contender_stop_share: Stop an arm after ``min_hours``, once it has the
            hours a recommendation needs (``optimizer.recommend_min_hours``),
            when its share of the latest Thompson plan's picks (its posterior
            probability of being the best feasible candidate) is below this:
            the slot then tries a fresh sample instead of collecting more data
            on an arm that cannot win (value-model world, 72 h: +0.40 points
            of gain, s.e. 0.17, over 10 paired seeds; benchmarks/RESULTS.md).
            0 disables.
        late_data_hours: Hours a stopped arm is still polled for late
            publications of the hours it was live.
        synchronous: Launch arms in batches and wait until every arm of a
            batch has stopped before the next (the paper's synchronous
            ablation). False (asynchronous slots) is the method.
        handoff_recommended: At the job's end, keep the recommended arm live
            on the platform (for a confirmation test) instead of stopping it;
            it is logged as ``handed_off`` and named in the readout. Every
            other arm is stopped whatever this says.
        metric_silence_hours: A modelled metric that no arm has reported for
            this many job hours after the first launch raises an alarm: the
            job launches no more arms and says which metric is missing (a
            misspelled guardrail, say). 0 disables the alarm.
    """

    slots: int = 8
    min_hours: int = 2
    max_hours: int = 24
    guardrail_stop_probability: float = 0.05
    contender_stop_share: float = 0.03
    late_data_hours: int = 24
    synchronous: bool = False
    handoff_recommended: bool = False
    metric_silence_hours: int = 12

    def validate(self, where: str) -> None:
        """Raise ConfigError unless the spec is well-formed."""
        _require(_is_int(self.slots) and 1 <= self.slots <= 10_000, f"{where}.slots",
                 self.slots, "an integer in [1, 10000]")
        _require(_is_int(self.min_hours) and 1 <= self.min_hours <= MAX_HOURS,
                 f"{where}.min_hours", self.min_hours, f"an integer in [1, {MAX_HOURS}]")
        _require(_is_int(self.max_hours) and self.max_hours >= self.min_hours,
                 f"{where}.max_hours", self.max_hours,
                 f"an integer >= min_hours ({self.min_hours})")
        _require(self.max_hours <= MAX_HOURS, f"{where}.max_hours", self.max_hours,
                 f"an integer <= {MAX_HOURS}")
        _require(_is_number(self.guardrail_stop_probability)
                 and 0 <= self.guardrail_stop_probability < 0.5,
                 f"{where}.guardrail_stop_probability", self.guardrail_stop_probability,
                 "a probability in [0, 0.5)", "0 disables early guardrail stops.")
        _require(_is_number(self.contender_stop_share) and 0 <= self.contender_stop_share < 1,
                 f"{where}.contender_stop_share", self.contender_stop_share,
                 "a share in [0, 1)", "0 disables stops of arms that cannot win.")
        _require(_is_int(self.late_data_hours) and 0 <= self.late_data_hours <= MAX_HOURS,
                 f"{where}.late_data_hours", self.late_data_hours,
                 f"an integer in [0, {MAX_HOURS}]")
        _require(isinstance(self.synchronous, bool), f"{where}.synchronous", self.synchronous,
                 "true or false")
        _require(isinstance(self.handoff_recommended, bool), f"{where}.handoff_recommended",
                 self.handoff_recommended, "true or false")
        _require(_is_int(self.metric_silence_hours)
                 and 0 <= self.metric_silence_hours <= MAX_HOURS,
                 f"{where}.metric_silence_hours", self.metric_silence_hours,
                 f"an integer in [0, {MAX_HOURS}]", "0 disables the missing-metric alarm.")


@dataclass(frozen=True)
class OptimizerSpec:
    """Knobs of the HyperZero optimiser.

    Attributes:
        seed: Seed of every random choice; same seed and inputs, same result.
        bucket_size: Initial candidate bucket (scrambled Sobol points), ~100.
        thompson_draws: Joint posterior draws K per selection (Algorithm 1).
        proposal_probability: Probability p of adding GP-scored proposals to
            the candidates of a selection (Algorithm 3); 0 disables.
        proposals: Points N sampled per proposal round.
        proposal_draws: Posterior draws used to score proposals.
        proposal_features: Random Fourier features of the pathwise draws that
            score and refine proposals (``refine_proposals``); their cost is
            linear in it, their prior covariance error shrinks like
            ``1/sqrt(features)``.
        max_proposals_added: Proposals added to the candidates per round.
        local_scale: Std of the perturbations around the incumbent, in
            unit-cube units.
        refine_proposals: Improve each proposal draw's winner by a local
            search on that same Thompson sample (pathwise draws; three rounds
            of 64 perturbations, sd 0.5, 0.2 and 0.08 x ``local_scale``), so
            proposals reach the sample's optimum on a guardrail boundary
            instead of the nearest random point. False: Algorithm 3 as
            written (the best of the ``proposals`` random points).
        hold_fixed: Name of a weight held at its base (value-model scale
            invariance: ranking by ``sum w_k p_k`` ignores a common scale, so
            one weight can be fixed without loss). ``None`` tunes all.
        var_floor: Smallest variance of one hour's delta, (relative delta)^2;
            keeps a one-hour arm from being over-trusted.
        refit_min_new_points: Refit GP hyperparameters after at least this
            many new arms with data ...
        refit_growth: ... or this relative growth of the training set.
        feasibility_threshold: P(feasible) an arm needs to be recommended.
        recommend_min_hours: Hours of data an arm needs to be recommended.
        picks_beat_control: A candidate wins a Thompson draw only if, in that
            draw, it is feasible and its gain beats the control's (zero):
            draws the control wins give no pick, so no slot re-runs a safe arm
            that is believed worse than the control. If the control wins
            every draw, the plain Algorithm 1 counts are used. False is the
            paper's plain Algorithm 1.
        shared_control_noise: Model the control group's sampling error as
            shared by every arm of the same hour (the GP gets a noise
            covariance, not independent noise). Arms that ran side by side are
            then compared without the control's error, and pooling many arms
            no longer shrinks the control's error away, which keeps
            P(feasible) honest. False treats the arms' errors as independent.
        certify_share: Share of the launches reserved for the certifiable
            optimum: the point with the best posterior gain among those with
            P(feasible) >= ``feasibility_threshold``. Thompson picks sit on the
            guardrail boundary, where no arm can be certified; running this
            point gives the readout an arm it can recommend. 0 disables.
        ramp_hours: Hours at the start of each arm, from its launch hour, left
            out of its estimates (they stay in the log): a platform that ramps an
            arm's exposure, or a treatment whose effect builds up, shows a diluted
            delta in those hours, which biases the arm's estimate, and the
            readout's interval, toward zero. 0 keeps every hour. An arm with no
            hour past its ramp yet is estimated from the hours it has.
        pooled_noise: Give the GP each arm's variance from the per-unit
            variance pooled over all arms (``mean_i(sem_i**2 N_i) / N_i``, at
            least ``var_floor / hours``), not the arm's own. An arm's own
            variance is estimated from the same counts as its mean, and for a
            sparse metric a low count comes with a low variance, so weighting
            arms by their own precision pulls the pooled posterior low (its
            interval then misses the truth on the low side). The arms' own
            means are unchanged; only the weights are decoupled from them.
    """

    seed: int = 0
    bucket_size: int = 100
    thompson_draws: int = 1000
    proposal_probability: float = 1.0
    proposals: int = 1024
    proposal_draws: int = 16
    proposal_features: int = 512
    max_proposals_added: int = 10
    local_scale: float = 0.1
    refine_proposals: bool = True
    hold_fixed: str | None = None
    var_floor: float = 1e-6
    refit_min_new_points: int = 4
    refit_growth: float = 0.25
    feasibility_threshold: float = 0.95
    recommend_min_hours: int = 6
    picks_beat_control: bool = True
    shared_control_noise: bool = True
    certify_share: float = 0.25
    ramp_hours: int = 0
    pooled_noise: bool = False

    def validate(self, where: str) -> None:
        """Raise ConfigError unless the spec is well-formed."""
        _require(_is_int(self.seed) and 0 <= self.seed <= MAX_SEED, f"{where}.seed", self.seed,
                 "an integer in [0, 2**63 - 1]")
        for attr, lo, hi in (("bucket_size", 1, 100_000), ("thompson_draws", 1, 1_000_000),
                             ("proposals", 1, 1_000_000), ("proposal_draws", 1, 10_000),
                             ("proposal_features", 2, 100_000),
                             ("max_proposals_added", 1, 1000), ("refit_min_new_points", 1, 10**6),
                             ("recommend_min_hours", 1, MAX_HOURS),
                             ("ramp_hours", 0, MAX_HOURS)):
            value = getattr(self, attr)
            _require(_is_int(value) and lo <= value <= hi, f"{where}.{attr}", value,
                     f"an integer in [{lo}, {hi}]")
        _require(_is_number(self.proposal_probability) and 0 <= self.proposal_probability <= 1,
                 f"{where}.proposal_probability", self.proposal_probability, "in [0, 1]")
        for flag in ("picks_beat_control", "refine_proposals", "shared_control_noise",
                     "pooled_noise"):
            _require(isinstance(getattr(self, flag), bool), f"{where}.{flag}",
                     getattr(self, flag), "true or false")
        _require(_is_number(self.certify_share) and 0 <= self.certify_share < 1,
                 f"{where}.certify_share", self.certify_share, "a share in [0, 1)",
                 "0.25 reserves a quarter of the launches for the certifiable optimum.")
        _require(_is_number(self.local_scale) and 0 < self.local_scale <= 1,
                 f"{where}.local_scale", self.local_scale, "in (0, 1]")
        _require(_is_number(self.var_floor) and self.var_floor > 0, f"{where}.var_floor",
                 self.var_floor, "a variance > 0", "1e-4 means an hourly delta sd of 1%.")
        _require(_is_number(self.refit_growth) and self.refit_growth >= 0,
                 f"{where}.refit_growth", self.refit_growth, "a number >= 0")
        _require(_is_number(self.feasibility_threshold) and 0.5 <= self.feasibility_threshold < 1,
                 f"{where}.feasibility_threshold", self.feasibility_threshold, "in [0.5, 1)")


def _check_json_numbers(where: str, value: object, depth: int = 0) -> None:
    """Raise ConfigError for a non-finite number anywhere in ``value``.

    The run folder records the config as strict JSON, which has no NaN or infinity.
    """
    if depth > 50:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise field_error(ConfigError, where, value, "a finite number",
                          "The run folder records the config as JSON, which has no NaN or "
                          "infinity; use a large number or the option's own word for it "
                          "(e.g. 'forever').")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_json_numbers(f"{where}.{key}", item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_numbers(f"{where}[{i}]", item, depth + 1)


def is_backend_target(target: object) -> bool:
    """Whether ``target`` reads ``simulated:<world>`` or ``dotted.module:ClassName``."""
    if not isinstance(target, str) or ":" not in target:
        return False
    module, _, name = target.partition(":")
    if module == "simulated":
        return bool(name)
    return all(part.isidentifier() for part in module.split(".")) and name.isidentifier()


@dataclass(frozen=True)
class BackendSpec:
    """Which backend to drive: a built-in world name or ``module:Class``.

    Attributes:
        target: ``"simulated:<world>"`` (e.g. ``"simulated:value_model"``) or
            an import path ``"package.module:ClassName"`` of an ArmBackend.
        kwargs: Keyword arguments for the backend's constructor.
        call_timeout_s: Longest wait, in wall seconds, for one ``launch``,
            ``fetch`` or ``stop`` call; a call that takes longer counts as
            failed and is retried (the job never hangs on one platform call).
    """

    target: str = "simulated:value_model"
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    call_timeout_s: float = 30.0

    def validate(self, where: str) -> None:
        """Raise ConfigError unless the spec is well-formed."""
        _require(is_backend_target(self.target), f"{where}.target", self.target,
                 "'simulated:<world>' or 'package.module:ClassName'",
                 "The module part is a dotted Python name, the class part an identifier.")
        _require(isinstance(self.kwargs, Mapping) and all(isinstance(k, str) for k in self.kwargs),
                 f"{where}.kwargs", self.kwargs, "a mapping keyed by argument names")
        _check_json_numbers(f"{where}.kwargs", self.kwargs)
        _require(_is_number(self.call_timeout_s) and 0 < self.call_timeout_s <= 86_400,
                 f"{where}.call_timeout_s", self.call_timeout_s,
                 "a number of seconds in (0, 86400]", "30 suits most platforms.")


@dataclass(frozen=True)
class TuningConfig:
    """A whole tuning job.

    Attributes:
        parameters: The weights to tune, in a fixed order.
        objective: What to optimise.
        constraints: Guardrails, relative to control.
        arms: How arms are run.
        optimizer: Optimiser knobs.
        backend: Which platform or world to drive (used by the CLI).
        extra_metrics: Metrics tracked and modelled beyond those the objective
            and constraints name.
        name: Job name (used for the run folder and the Ray namespace).
        clock: The job clock (:mod:`hz_ray.config_runtime`); not part of the
            job's fingerprint.
        telemetry: Where Prometheus metrics are served; not part of the job's
            fingerprint.
    """

    parameters: tuple[ParameterSpec, ...]
    objective: ObjectiveSpec
    constraints: tuple[ConstraintSpec, ...] = ()
    arms: ArmsSpec = field(default_factory=ArmsSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    backend: BackendSpec = field(default_factory=BackendSpec)
    extra_metrics: tuple[str, ...] = ()
    name: str = "hz-ray-job"
    clock: ClockSpec = field(default_factory=ClockSpec)
    telemetry: TelemetrySpec = field(default_factory=TelemetrySpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", tuple(self.parameters))
        object.__setattr__(self, "constraints", tuple(self.constraints))
        object.__setattr__(self, "extra_metrics", tuple(self.extra_metrics))
        self.validate()

    def validate(self) -> None:
        """Validate every field and the relations between them."""
        _require(isinstance(self.name, str) and bool(self.name.strip()), "name", self.name,
                 "a non-empty string")
        _require(len(self.parameters) >= 1, "parameters", self.parameters,
                 "a non-empty list", "List at least one weight to tune.")
        for i, spec in enumerate(self.parameters):
            _require(isinstance(spec, ParameterSpec), f"parameters[{i}]", spec, "a ParameterSpec")
            spec.validate(f"parameters[{i}]")
        names = [p.name for p in self.parameters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        _require(not dupes, "parameters", dupes, "unique names")
        self.objective.validate("objective")
        for i, spec in enumerate(self.constraints):
            spec.validate(f"constraints[{i}]")
        self.arms.validate("arms")
        self.optimizer.validate("optimizer")
        self.backend.validate("backend")
        _require(isinstance(self.clock, ClockSpec), "clock", self.clock, "a ClockSpec")
        self.clock.validate("clock")
        _require(isinstance(self.telemetry, TelemetrySpec), "telemetry", self.telemetry,
                 "a TelemetrySpec")
        self.telemetry.validate("telemetry")
        fixed = self.optimizer.hold_fixed
        if fixed is not None:
            _require(fixed in names, "optimizer.hold_fixed", fixed, f"one of {names}")
            _require(len(names) >= 2, "optimizer.hold_fixed", fixed,
                     "unset when only one parameter is tuned")
        from hz_ray.config_memory import check_memory  # it imports this module

        check_memory(self)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every modelled metric: objective's, then constraints', then extras; unique."""
        ordered = list(self.objective.metric_names)
        ordered += [c.metric for c in self.constraints]
        ordered += list(self.extra_metrics)
        return tuple(dict.fromkeys(ordered))

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of all parameters, in order."""
        return tuple(p.name for p in self.parameters)

    @property
    def base_params(self) -> dict[str, float]:
        """The control arm's weights."""
        return {p.name: float(p.base) for p in self.parameters}

    def to_mapping(self) -> dict[str, Any]:
        """Return a plain mapping that :func:`config_from_mapping` reads back."""
        out = asdict(self)
        out["objective"] = self.objective.to_mapping()
        out["constraints"] = [
            {k: v for k, v in asdict(c).items() if v is not None} for c in self.constraints
        ]
        out["backend"] = {"target": self.backend.target, "kwargs": dict(self.backend.kwargs),
                          "call_timeout_s": self.backend.call_timeout_s}
        out["parameters"] = [asdict(p) for p in self.parameters]
        out["extra_metrics"] = list(self.extra_metrics)
        out["clock"] = self.clock.to_mapping()
        out["telemetry"] = asdict(self.telemetry)
        return out

    def clock_mode(self) -> str:
        """The clock mode this job runs on (``clock.mode``, else by its backend)."""
        return self.clock.resolved_mode(self.backend.target)


#: ``load_config`` and ``config_from_mapping`` live in hz_ray.config_loading, which
#: imports this module; they are re-exported here on first use (PEP 562).
__getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "load_config": "hz_ray.config_loading", "config_from_mapping": "hz_ray.config_loading",
    **{name: "hz_ray.config_memory" for name in (
        "MEMORY_CAP_BYTES", "ESTIMATE_ARMS", "EXACT_SAMPLE_LIMIT", "PATHWISE_NUM_FEATURES",
        "REFINE_POINTS", "CERTIFY_POINTS", "SIZE_KNOBS", "estimate_plan_bytes")}})
