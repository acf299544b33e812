"""The "raw means" ablation: no same-hour control, a fixed reference level instead.

:class:`RawMeansBackend` wraps a :class:`~hz_ray.backends.SimulatedBackend` and
replaces the control group of every reading by a constant: the world's
long-run control level of the metric (``world.base_levels``, the control's
mean over the daily and weekly cycles and the shocks), with zero variance. The
tuner then sees ``X_t(w) / X_ref - 1``: the arm's lift *plus* the hour's
time-of-day swing and shock, which the same-hour control would have cancelled.
Everything else (arms, delays, noise of the test group) is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

from hz_ray.records import GroupStats, HourlyReading


class RawMeansBackend:
    """ArmBackend + GroundTruth: a simulated platform read without its control group."""

    def __init__(self, inner) -> None:
        self.inner = inner
        levels = inner.world.base_levels
        self._reference = {m: float(levels[m]) for m in inner.world.metrics}

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        self.inner.launch(arm_id, params)

    def stop(self, arm_id: str) -> None:
        self.inner.stop(arm_id)

    def fetch(self, arm_id: str, since_hour: int) -> list:
        out = []
        for r in self.inner.fetch(arm_id, since_hour):
            if isinstance(r, HourlyReading):
                ref = GroupStats(mean=self._reference[r.metric], var=0.0, n=r.control.n)
                r = HourlyReading(arm_id=r.arm_id, hour=r.hour, metric=r.metric,
                                  test=r.test, control=ref)
            out.append(r)
        return out

    def true_deltas(self, params: Mapping[str, float]) -> dict[str, float]:
        return self.inner.true_deltas(params)

    @property
    def world(self):
        return self.inner.world
