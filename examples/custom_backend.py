"""Drive hz-ray with your own experiment platform: implement three methods.

Run: python examples/custom_backend.py
This toy platform answers from a formula; a real one would call the
platform's API in launch/stop and read its hourly exports in fetch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from hz_ray import GroupStats, HourlyReading, SimClock, load_config, run_local
from hz_ray.clock import current_hour
from hz_ray.report import readout


class ToyPlatform:
    """An ArmBackend: views rise as w_like falls, likes fall with it."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.arms: dict[str, tuple[Mapping[str, float], int]] = {}

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        self.arms[arm_id] = (dict(params), current_hour(self.clock))

    def stop(self, arm_id: str) -> None:
        pass  # readings of stopped arms stay fetchable

    def fetch(self, arm_id: str, since_hour: int) -> list[HourlyReading]:
        params, start = self.arms[arm_id]
        ratio = math.log(params["w_like"] / params["w_click"])
        lifts = {"views": -0.02 * ratio - 0.01 * ratio**2, "likes": 0.03 * ratio}
        out = []
        for hour in range(max(since_hour, start), current_hour(self.clock)):  # complete hours
            for metric, lift in lifts.items():
                out.append(HourlyReading(arm_id, hour, metric,
                                         test=GroupStats(2.0 * (1 + lift), 4.0, 50_000),
                                         control=GroupStats(2.0, 4.0, 50_000)))
        return out


if __name__ == "__main__":
    config = load_config({
        "parameters": [{"name": "w_click", "low": 0.5, "high": 2.0, "base": 1.0},
                       {"name": "w_like", "low": 0.5, "high": 2.0, "base": 1.0}],
        "objective": {"metric": "views"},
        "constraints": [{"metric": "likes", "min_delta": -0.01}],
        "arms": {"slots": 4, "min_hours": 3, "max_hours": 8},
        "optimizer": {"seed": 0, "hold_fixed": "w_click"},
    })
    clock = SimClock()
    result = run_local(config, ToyPlatform(clock), clock=clock, hours=24)
    print(readout(result))
