"""Shared builders of the service and Ray-layer tests (plain functions, no fixtures)."""

from __future__ import annotations

import math
import random

from hz_ray.backends.recorded import Publication
from hz_ray.config import TuningConfig, config_from_mapping
from hz_ray.records import GroupStats, HourlyReading

CONTROL_LEVELS = {"views": (10.0, 25.0), "likes": (2.0, 4.0)}  # per-unit mean, variance
TRUE_DELTAS = {"views": 0.02, "likes": 0.004}
UNITS = 20_000


def two_metric_config(name: str, slots: int, max_hours: int, **optimizer) -> TuningConfig:
    """A small job: 2 log-scale weights, objective views, guardrail on likes."""
    opt = {"seed": 0, "bucket_size": 32, "thompson_draws": 200, "proposals": 256}
    opt.update(optimizer)
    return config_from_mapping({
        "name": name,
        "parameters": [
            {"name": "w_click", "low": 1 / 3, "high": 3.0, "scale": "log", "base": 1.0},
            {"name": "w_like", "low": 1 / 3, "high": 3.0, "scale": "log", "base": 1.0},
        ],
        "objective": {"metric": "views"},
        "constraints": [{"metric": "likes", "min_delta": -0.01}],
        "arms": {"slots": slots, "min_hours": 2, "max_hours": max_hours,
                 "guardrail_stop_probability": 0.0, "late_data_hours": 3},
        "optimizer": opt,
    })


def parity_config() -> TuningConfig:
    """Every candidate is the same point (one bucket point, no proposals, no certifiable
    optimum), and the GP hyperparameters are fitted once (on the control alone), so the
    posterior is a function of the ledger only: two drivers with the same ledger agree
    exactly."""
    return two_metric_config(
        "parity", slots=2, max_hours=4, bucket_size=1, thompson_draws=64,
        proposal_probability=0.0, proposals=16, refit_min_new_points=10**6,
        refit_growth=1000.0, recommend_min_hours=2, certify_share=0.0)


def reading(arm_id: str, hour: int, metric: str, rng: random.Random) -> HourlyReading:
    level, var = CONTROL_LEVELS[metric]
    season = 1.0 + 0.3 * math.sin(2 * math.pi * hour / 24)
    control = level * season * (1 + 0.01 * rng.gauss(0, 1))
    test = control * (1 + TRUE_DELTAS[metric] + 0.01 * rng.gauss(0, 1))
    return HourlyReading(arm_id, hour, metric, GroupStats(test, var, UNITS),
                         GroupStats(control, var, UNITS))


def canonical_publications(slots: int, max_hours: int, hours: int
                           ) -> list[tuple[int, int, Publication]]:
    """``(slot, seq, publication)`` for arms run back to back in each slot.

    Readings come 0, 0.5 or 2 hours late, some twice, one has an unknown
    metric; only what is published by hour ``hours - 1`` is kept, so a driver
    that polls until then sees all of it.
    """
    out = []
    for slot in range(slots):
        for seq in range(math.ceil(hours / max_hours)):
            for hour in range(seq * max_hours, min((seq + 1) * max_hours, hours)):
                rng = random.Random(f"{slot}-{seq}-{hour}")
                delay = rng.choice([0.0, 0.5, 2.0])
                for metric in ("views", "likes"):
                    pub = Publication(hour + 1 + delay, reading("placeholder", hour, metric, rng))
                    out.append((slot, seq, pub))
                    if rng.random() < 0.3:
                        out.append((slot, seq, Publication(pub.publish_hour + 1, pub.reading)))
                if slot == 0 and seq == 0 and hour == 1:
                    bad = HourlyReading("placeholder", hour, "clicks", GroupStats(1.0, 1.0, UNITS),
                                        GroupStats(1.0, 1.0, UNITS))
                    out.append((slot, seq, Publication(hour + 1, bad)))
    return [(s, q, p) for s, q, p in out if p.publish_hour <= hours - 1]


def with_arm_ids(items: list[tuple[int, int, Publication]], name) -> tuple[Publication, ...]:
    """The publications keyed by arm id: each arm named ``name(slot, seq)``."""
    out = []
    for slot, seq, pub in items:
        r = pub.reading
        out.append(Publication(pub.publish_hour, HourlyReading(
            name(slot, seq), r.hour, r.metric, r.test, r.control)))
    return tuple(out)


def world_config(name: str, slots: int, max_hours: int, world: str = "smooth",
                 **optimizer) -> TuningConfig:
    """A small job on a simulated world: its parameters, problem and every metric."""
    from hz_ray.backends import make_world

    w = make_world(world)
    raw = w.config_mapping()
    opt = {"seed": 0, "bucket_size": 32, "thompson_draws": 200, "proposals": 256}
    opt.update(optimizer)
    raw.update(name=name, extra_metrics=list(w.metrics), optimizer=opt,
               arms={"slots": slots, "min_hours": 2, "max_hours": max_hours,
                     "guardrail_stop_probability": 0.0, "late_data_hours": 4})
    return config_from_mapping(raw)
