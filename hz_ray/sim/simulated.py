"""SimulatedBackend: a simulated experiment platform over a :class:`World`.

Every hour ``h`` the platform serves each live test arm and one control group
(the base weights) to fresh random users. A group's per-unit mean of metric
``m`` in hour ``h`` is drawn as::

    level = base_level_m * season_m(h) * shock_m(h) * (1 + delta_arm,m(h))
    mean ~ Normal(level, (cv_m * level)^2 / n),   n ~ Poisson(traffic * season(h) * shock(h))

so raw means swing with the hour while ``mean_test / mean_control - 1`` is
centred on the arm's delta. The noise of a group-hour is a pure function of
``(seed, group, hour)``: readings never depend on when or how often ``fetch``
is called, and every arm of an hour shares the same control reading.

Timing: an arm launched at job hour ``t`` has hours ``h >= ceil(t)`` until it
is stopped (the hour in progress at ``stop`` is dropped); hour ``h`` is
complete at ``h + 1`` and published at ``h + 1 + reporting_delay_hours`` plus
any extra lag from :class:`~hz_ray.sim.realism.RealismConfig`.
"""

from __future__ import annotations

import math
import numbers
import threading
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from hz_ray.backends.recorded import Publication, check_arm_id, check_since_hour
from hz_ray.clock import Clock
from hz_ray.errors import ArmStoppedError, ConfigError, InputDataError, StateError, field_error
from hz_ray.records import CONTROL_ARM_ID, GroupStats, HourlyReading, arm_key_in_job
from hz_ray.sim.realism import (
    TAG_ARM,
    TAG_GROUP,
    TAG_PUBLISH,
    HourlyEnvironment,
    RealismConfig,
    check_novelty_metrics,
    equicorrelated_cholesky,
    rng_for,
    stable_id,
)
from hz_ray.sim.world_base import World

_EPS = 1e-9


@dataclass
class _Arm:
    """A launched test arm and its fixed traits."""

    arm_id: str
    params: dict[str, float]
    words: tuple[int, int]
    deltas: np.ndarray          # (J,) long-run true deltas
    changed: bool               # params differ from the base (novelty applies)
    launch_time: float
    first_hour: int
    extra_lag: int              # straggler lag, hours
    stop_time: float | None = None

    def last_hour(self) -> float:
        """Last complete live hour (inf while live)."""
        if self.stop_time is None:
            return math.inf
        return math.floor(self.stop_time + _EPS) - 1


class SimulatedBackend:
    """A simulated A/B platform: implements ArmBackend and GroundTruth.

    Args:
        world: The noise-free truth (deltas, levels, per-unit cv).
        clock: The clock shared with the driver; ``fetch`` returns only what is
            published by ``clock.now_hours()``.
        seed: Seed of every random stream, >= 0.
        traffic_per_arm: Expected units (users) per hour of each test group at
            an average hour, >= 1.
        control_traffic: Expected units per hour of the control group; defaults
            to ``traffic_per_arm``.
        reporting_delay_hours: Hours between an hour's end and its publication,
            >= 0.
        realism: Which realistic effects are on; defaults to ``RealismConfig()``
            (seasonality, shocks and sampling noise).

    Raises:
        ConfigError: On an out-of-range argument, naming it.

    Example:
        >>> from hz_ray.clock import SimClock
        >>> from hz_ray.sim.smooth_world import SmoothWorld
        >>> clock = SimClock()
        >>> backend = SimulatedBackend(SmoothWorld(), clock, seed=0)
        >>> backend.launch("arm-1", {"w_click": 2.0, "w_like": 1.0, "w_share": 1.0,
        ...                          "w_watch": 1.0})
        >>> _ = clock.advance(3)
        >>> sorted({r.hour for r in backend.fetch("arm-1", 0)})
        [0, 1, 2]
    """

    def __init__(self, world: World, clock: Clock, *, seed: int, traffic_per_arm: int = 20_000,
                 control_traffic: int | None = None, reporting_delay_hours: float = 0,
                 realism: RealismConfig | None = None) -> None:
        if not isinstance(world, World):
            raise field_error(ConfigError, "world", type(world).__name__, "a World instance",
                              "Build one with hz_ray.sim.make_world(name, seed).")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise field_error(ConfigError, "seed", seed, "an integer >= 0")
        for name, value in (("traffic_per_arm", traffic_per_arm),
                            ("control_traffic", control_traffic)):
            if value is None and name == "control_traffic":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise field_error(ConfigError, name, value, "an integer unit count >= 1",
                                  "e.g. 20_000 users per hour per group.")
        if isinstance(reporting_delay_hours, bool) \
                or not isinstance(reporting_delay_hours, numbers.Real) \
                or not math.isfinite(reporting_delay_hours) or reporting_delay_hours < 0:
            raise field_error(ConfigError, "reporting_delay_hours", reporting_delay_hours,
                              "a finite number of hours >= 0")
        realism = RealismConfig() if realism is None else realism
        if not isinstance(realism, RealismConfig):
            raise field_error(ConfigError, "realism", type(realism).__name__,
                              "a RealismConfig or None")
        self.world = world
        self.clock = clock
        self.seed = int(seed)
        self.traffic_per_arm = int(traffic_per_arm)
        self.control_traffic = int(control_traffic or traffic_per_arm)
        self.reporting_delay_hours = float(reporting_delay_hours)
        self.realism = realism
        self._novelty_idx = check_novelty_metrics(realism, world.metrics)
        self._levels = np.array([world.base_levels[m] for m in world.metrics])
        self._cv = np.array([world.unit_cv[m] for m in world.metrics])
        self._chol = equicorrelated_cholesky(len(world.metrics), realism.metric_noise_correlation)
        self._env = HourlyEnvironment(realism, self.seed, len(world.metrics))
        self._control_words = stable_id(CONTROL_ARM_ID)
        self._arms: dict[str, _Arm] = {}
        self._control_cache: dict[int, tuple[GroupStats, ...]] = {}
        self._reading_cache: dict[tuple[str, int], tuple[HourlyReading, ...]] = {}
        self._schedule_cache: dict[tuple[str, int], tuple[float, ...]] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------ ArmBackend

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Start serving ``params`` to a fresh test group from the current hour.

        Launching a live arm again with the same params is a no-op (a retry).

        Args:
            arm_id: New arm id (not ``"control"``).
            params: Every parameter of the world, natural units.

        Raises:
            InputDataError: On a bad arm id or bad params (naming the field).
            ArmStoppedError: When ``arm_id`` was stopped.
            StateError: When ``arm_id`` exists with other params.
        """
        check_arm_id(arm_id)
        x = self.world.validate_params(params)
        clean = dict(zip(self.world.parameter_names, x.tolist(), strict=True))
        with self._lock:
            old = self._arms.get(arm_id)
            if old is not None:
                if old.params == clean and old.stop_time is None:
                    return
                if old.stop_time is not None:
                    raise field_error(ArmStoppedError, "arm_id", arm_id, "an arm id not stopped",
                                      "Arm ids are single-use; the platform stopped this arm.")
                raise field_error(StateError, "arm_id", arm_id, "a new arm id",
                                  "Arm ids are single-use; launch a new id for new params.")
            now = self.clock.now_hours()
            words = stable_id(arm_key_in_job(arm_id))
            straggler = rng_for(self.seed, TAG_ARM, *words).random() \
                < self.realism.straggler_fraction
            deltas = self.world.true_deltas(clean)
            changed = not self.world.is_base(clean)
            self._arms[arm_id] = _Arm(
                arm_id=arm_id, params=clean, words=words,
                deltas=np.array([deltas[m] for m in self.world.metrics]), changed=changed,
                launch_time=now, first_hour=max(0, math.ceil(now - _EPS)),
                extra_lag=self.realism.straggler_delay_hours if straggler else 0)

    def fetch(self, arm_id: str, since_hour: int) -> list[HourlyReading]:
        """Return every reading of the arm with ``hour >= since_hour`` published by now.

        Readings come in publication order; a duplicated publication appears
        twice with identical values. Calling twice at the same time returns the
        same list.

        Raises:
            InputDataError: On an unknown arm or a bad ``since_hour``.
        """
        return [p.reading for p in self.publications(arm_id, since_hour)]

    def stop(self, arm_id: str) -> None:
        """Stop serving the arm now; its complete hours stay fetchable. Idempotent.

        Stopping an arm this backend never launched is a no-op (the protocol's
        rule: a job's final stops may name an arm whose launch never reached
        the platform).
        """
        with self._lock:
            arm = self._arms.get(arm_id)
            if arm is not None and arm.stop_time is None:
                arm.stop_time = max(self.clock.now_hours(), arm.launch_time)

    def stopped_at(self, arm_id: str) -> float | None:
        """Job hour at which the arm was stopped, or ``None`` while it is served."""
        return self._arm(arm_id).stop_time

    # ----------------------------------------------------------- GroundTruth

    def true_deltas(self, params: Mapping[str, float]) -> dict[str, float]:
        """Return the world's noise-free long-run deltas at ``params`` (benchmarks only)."""
        return self.world.true_deltas(params)

    # --------------------------------------------------------------- extras

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics every reading covers, the world's (``backends.base.declared_metrics``)."""
        return tuple(self.world.metrics)

    @property
    def arm_ids(self) -> tuple[str, ...]:
        """Arms launched so far, in launch order."""
        return tuple(self._arms)

    def arm_params(self, arm_id: str) -> dict[str, float]:
        """Return the params an arm was launched with."""
        return dict(self._arm(arm_id).params)

    def is_straggler(self, arm_id: str) -> bool:
        """Whether all of the arm's data arrive ``straggler_delay_hours`` late."""
        return self._arm(arm_id).extra_lag > 0

    def expected_deltas(self, arm_id: str, hour: int) -> dict[str, float]:
        """Return the arm's noise-free delta in ``hour``, with ramp and novelty."""
        arm = self._arm(arm_id)
        return dict(zip(self.world.metrics, self._arm_deltas(arm, hour).tolist(), strict=True))

    def publications(self, arm_id: str, since_hour: int = 0,
                     until: float | None = None) -> list[Publication]:
        """Return the arm's publications with ``hour >= since_hour`` published by ``until``.

        Args:
            arm_id: A launched arm.
            since_hour: First hour of interest, >= 0.
            until: Job hour; defaults to ``clock.now_hours()``. Pass a later hour
                to record what will be published (for a RecordedBackend).

        Returns:
            Publications sorted by (publish hour, hour, copy, metric order).

        Raises:
            InputDataError: On an unknown arm or a bad ``since_hour``.
        """
        since = check_since_hour(since_hour)
        with self._lock:
            arm = self._arm(arm_id)
            now = (self.clock.now_hours() if until is None else float(until)) + _EPS
            newest = min(arm.last_hour(), math.floor(now - 1.0 - self.reporting_delay_hours))
            out: list[tuple[float, int, int, Publication]] = []
            h = max(since, arm.first_hour)
            while h <= newest:
                times = self._schedule(arm, h)
                for copy, t in enumerate(times):
                    if t <= now:
                        for reading in self._readings(arm, h):
                            out.append((t, h, copy, Publication(t, reading)))
                h += 1
        out.sort(key=lambda item: (item[0], item[1], item[2]))
        return [item[3] for item in out]

    def control_stats(self, hour: int) -> dict[str, GroupStats]:
        """Return the control group's statistics of every metric in ``hour``."""
        return dict(zip(self.world.metrics, self._control(hour), strict=True))

    # ------------------------------------------------------------ internals

    def _arm(self, arm_id: str) -> _Arm:
        arm = self._arms.get(arm_id) if isinstance(arm_id, str) else None
        if arm is None:
            raise field_error(InputDataError, "arm_id", arm_id, "an arm launched on this backend",
                              "Call launch(arm_id, params) first.")
        return arm

    def _schedule(self, arm: _Arm, hour: int) -> tuple[float, ...]:
        """Publish hours of ``(arm, hour)``: one, or two when duplicated."""
        key = (arm.arm_id, hour)
        times = self._schedule_cache.get(key)
        if times is None:
            r = self.realism
            rng = rng_for(self.seed, TAG_PUBLISH, *arm.words, hour)
            u_late, u_dup = rng.random(2)
            late_lag = int(rng.integers(1, r.late_max_hours + 1))
            dup_lag = int(rng.integers(1, r.duplicate_max_lag_hours + 1))
            first = hour + 1.0 + self.reporting_delay_hours + arm.extra_lag
            if u_late < r.late_fraction:
                first += late_lag
            times = (first, first + dup_lag) if u_dup < r.duplicate_fraction else (first,)
            self._schedule_cache[key] = times
        return times

    def _readings(self, arm: _Arm, hour: int) -> tuple[HourlyReading, ...]:
        key = (arm.arm_id, hour)
        readings = self._reading_cache.get(key)
        if readings is None:
            control = self._control(hour)
            test = self._group(arm.words, hour, self._arm_deltas(arm, hour), self.traffic_per_arm)
            readings = tuple(
                HourlyReading(arm_id=arm.arm_id, hour=hour, metric=m, test=t, control=c)
                for m, t, c in zip(self.world.metrics, test, control, strict=True))
            self._reading_cache[key] = readings
        return readings

    def _control(self, hour: int) -> tuple[GroupStats, ...]:
        stats = self._control_cache.get(hour)
        if stats is None:
            stats = self._group(self._control_words, hour, np.zeros(len(self.world.metrics)),
                                self.control_traffic)
            self._control_cache[hour] = stats
        return stats

    def _arm_deltas(self, arm: _Arm, hour: int) -> np.ndarray:
        """The arm's expected ``(J,)`` delta in ``hour``: activation ramp and novelty."""
        r = self.realism
        age = hour + 0.5 - arm.launch_time
        active = age - r.activation_delay_hours
        if active <= 0:
            return np.zeros_like(arm.deltas)
        factor = min(1.0, active / r.ramp_hours) if r.ramp_hours > 0 else 1.0
        deltas = arm.deltas.copy()
        if r.novelty_amplitude > 0 and arm.changed:
            deltas[list(self._novelty_idx)] += r.novelty_amplitude * math.exp(
                -active / r.novelty_decay_hours)
        return factor * deltas

    def _group(self, words: tuple[int, int], hour: int, deltas: np.ndarray,
               traffic: int) -> tuple[GroupStats, ...]:
        """Draw one group's ``(J,)`` GroupStats of ``hour``; a pure function of its inputs."""
        r = self.realism
        rng = rng_for(self.seed, TAG_GROUP, *words, hour)
        expected_n = traffic * self._env.traffic_factor(hour)
        # Draw every variate, whatever the switches, so one switch never shifts another.
        n_draw = int(rng.poisson(expected_n))
        z = rng.standard_normal(len(deltas))
        n = max(1, n_draw if r.noise else round(expected_n))
        dof = max(n - 1, 1)
        chi = rng.standard_gamma(dof / 2.0, size=len(deltas)) * (2.0 / dof)
        level = self._levels * self._env.level_factors(hour) * np.maximum(1.0 + deltas, 1e-6)
        sd = self._cv * level
        if r.noise:
            if self._chol is not None:
                z = self._chol @ z
            mean = np.maximum(level + sd / math.sqrt(n) * z, 1e-9 * level)
            var = sd ** 2 * chi
        else:
            mean, var = level, sd ** 2
        return tuple(GroupStats(mean=float(mu), var=float(v) if r.report_variance else None, n=n)
                     for mu, v in zip(mean, var, strict=True))
