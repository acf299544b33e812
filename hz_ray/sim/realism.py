"""What makes simulated hourly readings realistic, and the shared hourly environment.

:class:`RealismConfig` switches each effect on or off. :class:`HourlyEnvironment`
computes the part of every hour that all groups share: the seasonal and shocked
traffic and metric levels. It is a pure function of ``(seed, hour)``: it never
depends on which hours were asked for first.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from hz_ray.errors import ConfigError, field_error

# Stream tags: each purpose draws from its own seed stream, so switching one
# effect on or off never changes the numbers of another.
TAG_GROUP = 1       # a group's sampling noise in one hour
TAG_PUBLISH = 2     # when an (arm, hour) is published
TAG_ARM = 3         # per-arm traits (straggler)
TAG_SHOCK = 4       # AR(1) hourly shocks, drawn in chunks of hours
TAG_PHASE = 5       # per-metric seasonal phases

_SHOCK_CHUNK = 256


def stable_id(text: str) -> tuple[int, int]:
    """Hash a string to two 32-bit words, the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value & 0xFFFFFFFF, value >> 32


def rng_for(seed: int, *words: int) -> np.random.Generator:
    """Return a Generator seeded by ``(seed, *words)`` through a SeedSequence."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *words])))


@dataclass(frozen=True)
class RealismConfig:
    """Switches and sizes of every realistic effect of the simulated platform.

    Defaults: seasonality, hourly shocks and sampling noise on; ramp, late,
    duplicated and straggling publications and novelty off.

    Attributes:
        seasonality: Multiply traffic and metric levels by daily and weekly cycles.
        daily_amplitude: Relative amplitude of the 24-h cycle of metric levels.
        weekly_amplitude: Relative amplitude of the 168-h cycle of metric levels.
        traffic_daily_amplitude: Relative amplitude of the 24-h cycle of traffic.
        traffic_weekly_amplitude: Relative amplitude of the 168-h cycle of traffic.
        phase_jitter_hours: Per-metric shift of the daily peak, uniform in +-this.
        shocks: Multiply levels and traffic by hourly log-AR(1) shocks, shared
            by every group of the hour.
        shock_sd: Stationary standard deviation of the log-shock.
        shock_ar: AR(1) coefficient of the log-shock, in [0, 1).
        noise: Sample each group's mean from ``Normal(level, var / n)`` and its
            unit count from ``Poisson``; off: exact expected values.
        report_variance: Report the per-unit variance; off: ``var=None``.
        metric_noise_correlation: Correlation of the sampling noise of the
            metrics of one group (same users), in [0, 1).
        activation_delay_hours: Hours after launch before the arm's effect starts.
        ramp_hours: Hours over which the effect then grows linearly to full.
        late_fraction: Fraction of (arm, hour)s published with an extra lag.
        late_max_hours: The extra lag is uniform in ``1..late_max_hours``.
        duplicate_fraction: Fraction of (arm, hour)s published a second time,
            with the same values.
        duplicate_max_lag_hours: The copy comes ``1..this`` hours later.
        straggler_fraction: Fraction of arms whose data all arrive late.
        straggler_delay_hours: Extra lag of every hour of a straggler arm.
        novelty_amplitude: Extra relative lift of a changed arm at launch.
        novelty_decay_hours: e-folding time of the novelty lift, in arm age.
        novelty_metrics: Metrics with a novelty effect; empty means the first.
    """

    seasonality: bool = True
    daily_amplitude: float = 0.25
    weekly_amplitude: float = 0.08
    traffic_daily_amplitude: float = 0.35
    traffic_weekly_amplitude: float = 0.10
    phase_jitter_hours: float = 2.0
    shocks: bool = True
    shock_sd: float = 0.06
    shock_ar: float = 0.7
    noise: bool = True
    report_variance: bool = True
    metric_noise_correlation: float = 0.0
    activation_delay_hours: float = 0.0
    ramp_hours: float = 0.0
    late_fraction: float = 0.0
    late_max_hours: int = 6
    duplicate_fraction: float = 0.0
    duplicate_max_lag_hours: int = 3
    straggler_fraction: float = 0.0
    straggler_delay_hours: int = 12
    novelty_amplitude: float = 0.0
    novelty_decay_hours: float = 12.0
    novelty_metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.novelty_metrics, list):  # from YAML / JSON
            object.__setattr__(self, "novelty_metrics", tuple(self.novelty_metrics))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool",) and not isinstance(value, bool):
                raise field_error(ConfigError, f"realism.{f.name}", value, "true or false")
        unit = ("daily_amplitude", "weekly_amplitude", "traffic_daily_amplitude",
                "traffic_weekly_amplitude")
        for name in unit:
            self._check(name, 0.0 <= getattr(self, name) < 1.0, "in [0, 1)")
        for name in ("late_fraction", "duplicate_fraction", "straggler_fraction"):
            self._check(name, 0.0 <= getattr(self, name) <= 1.0, "a fraction in [0, 1]")
        self._check("shock_ar", 0.0 <= self.shock_ar < 1.0, "in [0, 1)")
        self._check("metric_noise_correlation", 0.0 <= self.metric_noise_correlation < 1.0,
                    "in [0, 1)")
        for name in ("shock_sd", "phase_jitter_hours", "activation_delay_hours", "ramp_hours",
                     "novelty_amplitude"):
            self._check(name, getattr(self, name) >= 0.0, "a number >= 0")
        self._check("novelty_decay_hours", self.novelty_decay_hours > 0.0, "a number > 0")
        for name in ("late_max_hours", "duplicate_max_lag_hours", "straggler_delay_hours"):
            value = getattr(self, name)
            self._check(name, isinstance(value, int) and not isinstance(value, bool)
                        and value >= 1, "an integer >= 1")
        self._check("novelty_metrics", isinstance(self.novelty_metrics, tuple)
                    and all(isinstance(m, str) for m in self.novelty_metrics),
                    "a tuple of metric names")

    def _check(self, name: str, ok: bool, constraint: str) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) and constraint != "true or false":
            ok = False
        if not isinstance(value, (tuple, bool)) and isinstance(value, (int, float)):
            ok = ok and math.isfinite(value)
        if not ok:
            raise field_error(ConfigError, f"realism.{name}", value, constraint)

    @classmethod
    def ideal(cls) -> RealismConfig:
        """Every effect off: readings equal their expected values (for exact tests)."""
        return cls(seasonality=False, shocks=False, noise=False)

    @classmethod
    def paper(cls) -> RealismConfig:
        """The paper's synthetic study: a 24-h sinusoid, AR(1) shocks, noise ∝ 1/sqrt(N)."""
        return cls(weekly_amplitude=0.0, traffic_weekly_amplitude=0.0)

    @classmethod
    def realistic(cls, base: RealismConfig | None = None) -> RealismConfig:
        """A live platform as issue 15 measured it, on top of ``base`` (default: defaults).

        Daily and weekly cycles, shocks and noise (as ``base`` has them), a
        2-hour activation ramp, 5% of hours published 1-2 h late (out of
        order), 3% published twice, and 15% straggler arms whose every hour
        comes 12 h late. With a 3-hour reporting delay of the backend, hours
        arrive 3-5 h after they end.
        """
        from dataclasses import replace

        return replace(base or cls(), ramp_hours=2.0, late_fraction=0.05, late_max_hours=2,
                       duplicate_fraction=0.03, straggler_fraction=0.15,
                       straggler_delay_hours=12)

    @classmethod
    def harsh(cls) -> RealismConfig:
        """Every effect on: ramp, late, duplicated, straggling data and novelty."""
        return cls(metric_noise_correlation=0.3, activation_delay_hours=1.0, ramp_hours=3.0,
                   late_fraction=0.2, duplicate_fraction=0.1, straggler_fraction=0.15,
                   novelty_amplitude=0.01)


class HourlyEnvironment:
    """The part of every hour that all groups share: seasonal, shocked levels and traffic.

    Args:
        realism: Which effects are on.
        seed: Seed of the shock and phase streams, >= 0.
        n_metrics: Number of metrics ``J``.
    """

    def __init__(self, realism: RealismConfig, seed: int, n_metrics: int) -> None:
        self.realism = realism
        self.seed = seed
        self.n_metrics = n_metrics
        jitter = realism.phase_jitter_hours
        self._phases = rng_for(seed, TAG_PHASE).uniform(-jitter, jitter, size=n_metrics) \
            if jitter > 0 else np.zeros(n_metrics)
        # Log-shock columns: 0 = traffic, 1..J = metrics.
        self._shocks = np.empty((0, n_metrics + 1))

    def level_factors(self, hour: int) -> np.ndarray:
        """Return the ``(J,)`` multiplicative factors on every metric level in ``hour``."""
        r = self.realism
        factor = np.ones(self.n_metrics)
        if r.seasonality:
            t = hour + 0.5
            factor *= 1.0 + r.daily_amplitude * np.sin(2 * math.pi * (t - self._phases) / 24.0)
            factor *= 1.0 + r.weekly_amplitude * math.sin(2 * math.pi * t / 168.0)
        if r.shocks and r.shock_sd > 0:
            factor *= np.exp(self._shock_row(hour)[1:] - 0.5 * r.shock_sd ** 2)
        return factor

    def traffic_factor(self, hour: int) -> float:
        """Return the multiplicative factor on every group's traffic in ``hour``."""
        r = self.realism
        factor = 1.0
        if r.seasonality:
            t = hour + 0.5
            factor *= 1.0 + r.traffic_daily_amplitude * math.sin(2 * math.pi * (t - 6.0) / 24.0)
            factor *= 1.0 + r.traffic_weekly_amplitude * math.sin(2 * math.pi * t / 168.0)
        if r.shocks and r.shock_sd > 0:
            factor *= math.exp(float(self._shock_row(hour)[0]) - 0.5 * r.shock_sd ** 2)
        return factor

    def _shock_row(self, hour: int) -> np.ndarray:
        """Return the ``(J + 1,)`` log-shocks of ``hour``, extending the AR(1) path as needed."""
        if hour >= len(self._shocks):
            self._extend((hour // _SHOCK_CHUNK + 1) * _SHOCK_CHUNK)
        return self._shocks[hour]

    def _extend(self, length: int) -> None:
        """Grow the AR(1) path to ``length`` hours; hour h's innovation is fixed by (seed, h)."""
        r = self.realism
        scale = math.sqrt(1.0 - r.shock_ar ** 2) * r.shock_sd
        start = len(self._shocks)
        path = np.empty((length - start, self.n_metrics + 1))
        prev = self._shocks[-1] if start else None
        chunk_id, chunk = -1, None
        for h in range(start, length):
            if h // _SHOCK_CHUNK != chunk_id:
                chunk_id = h // _SHOCK_CHUNK
                chunk = rng_for(self.seed, TAG_SHOCK, chunk_id).standard_normal(
                    (_SHOCK_CHUNK, self.n_metrics + 1))
            eps = chunk[h % _SHOCK_CHUNK]
            prev = r.shock_sd * eps if prev is None else r.shock_ar * prev + scale * eps
            path[h - start] = prev
        self._shocks = np.concatenate([self._shocks, path])


def equicorrelated_cholesky(n: int, rho: float) -> np.ndarray | None:
    """Return the ``(n, n)`` Cholesky factor of an equicorrelation matrix, None when rho = 0."""
    if rho == 0 or n < 2:
        return None
    corr = np.full((n, n), rho) + (1.0 - rho) * np.eye(n)
    return np.linalg.cholesky(corr)


def check_novelty_metrics(realism: RealismConfig, metrics: Sequence[str]) -> tuple[int, ...]:
    """Return the indices of the novelty metrics, raising ConfigError on unknown names."""
    if not realism.novelty_metrics:
        return (0,)
    out = []
    for m in realism.novelty_metrics:
        if m not in metrics:
            raise field_error(ConfigError, "realism.novelty_metrics", m,
                              f"one of the world's metrics {tuple(metrics)}")
        out.append(list(metrics).index(m))
    return tuple(out)
