"""SimulatedBackend and RecordedBackend: timing, determinism, realism, errors."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from hz_ray.backends import (
    ArmBackend,
    GroundTruth,
    RealismConfig,
    RecordedBackend,
    SimulatedBackend,
    SmoothWorld,
)
from hz_ray.clock import SimClock
from hz_ray.errors import ArmStoppedError, ConfigError, InputDataError, StateError

BASE = {"w_click": 1.0, "w_like": 1.0, "w_share": 1.0, "w_watch": 1.0}
ARM = {"w_click": 1.8, "w_like": 0.8, "w_share": 0.6, "w_watch": 1.2}


def _backend(seed=0, realism=None, delay=0, traffic=20_000, start=0.0):
    clock = SimClock(start)
    return SimulatedBackend(SmoothWorld(), clock, seed=seed, traffic_per_arm=traffic,
                            reporting_delay_hours=delay, realism=realism), clock


def _key(r):
    return (r.arm_id, r.hour, r.metric, r.test, r.control)


def _run(backend, clock, hours, arms=("a", "b"), params=ARM, poll_every=1):
    for a in arms:
        backend.launch(a, params)
    seen = {a: [] for a in arms}
    for step in range(hours):
        clock.advance(1.0)
        if poll_every and (step + 1) % poll_every == 0:
            for a in arms:
                seen[a].append(backend.fetch(a, 0))
    return seen


# ------------------------------------------------------------------ protocol


def test_backend_implements_both_protocols():
    backend, _ = _backend()
    assert isinstance(backend, ArmBackend)
    assert isinstance(backend, GroundTruth)
    assert backend.true_deltas(ARM) == SmoothWorld().true_deltas(ARM)


# -------------------------------------------------------------- determinism


@pytest.mark.parametrize("realism", [RealismConfig(), RealismConfig.harsh()],
                         ids=["default", "harsh"])
def test_readings_do_not_depend_on_fetch_pattern(realism):
    b1, c1 = _backend(seed=7, realism=realism)
    b2, c2 = _backend(seed=7, realism=realism)
    _run(b1, c1, 40, poll_every=1)          # polls every hour
    _run(b2, c2, 40, poll_every=0)          # never polls until the end
    c1.advance(30.0)
    c2.advance(30.0)
    for arm in ("a", "b"):
        r1 = [_key(r) for r in b1.fetch(arm, 0)]
        r2 = [_key(r) for r in b2.fetch(arm, 0)]
        assert r1 == r2 and len(r1) > 0
        assert r1 == [_key(r) for r in b1.fetch(arm, 0)]  # fetching twice: same list


def test_fetch_order_of_arms_and_hours_does_not_matter():
    b1, c1 = _backend(seed=3)
    b2, c2 = _backend(seed=3)
    for b in (b1, b2):
        b.launch("a", ARM)
        b.launch("b", BASE)
    c1.advance(12)
    c2.advance(12)
    late_first = b2.fetch("b", 6) + b2.fetch("a", 0)
    assert {_key(r) for r in b1.fetch("a", 0) + b1.fetch("b", 6)} == {_key(r) for r in late_first}


def test_different_seeds_give_different_noise():
    b1, c1 = _backend(seed=1)
    b2, c2 = _backend(seed=2)
    _run(b1, c1, 3, poll_every=0)
    _run(b2, c2, 3, poll_every=0)
    assert b1.fetch("a", 0)[0].test.mean != b2.fetch("a", 0)[0].test.mean


# ------------------------------------------------------------------- timing


def test_nothing_is_published_before_its_time_and_everything_on_time():
    backend, clock = _backend(delay=3, realism=RealismConfig())
    backend.launch("a", ARM)
    for _ in range(20):
        clock.advance(1.0)
        now = clock.now_hours()
        hours = [r.hour for r in backend.fetch("a", 0)]
        assert all(h + 1 + 3 <= now + 1e-9 for h in hours)
        assert sorted(set(hours)) == list(range(0, max(0, int(now) - 3)))


def test_first_hour_is_the_ceiling_of_the_launch_time():
    backend, clock = _backend(start=2.5)
    backend.launch("a", ARM)
    clock.advance(0.5)      # t = 3: hour 2 ended, but the arm was not live all of it
    assert backend.fetch("a", 0) == []
    clock.advance(1.0)      # t = 4: hour 3 complete
    assert {r.hour for r in backend.fetch("a", 0)} == {3}


def test_stopped_arm_keeps_its_readings_and_gets_no_new_hours():
    backend, clock = _backend(delay=2)
    backend.launch("a", ARM)
    clock.advance(5.5)
    backend.stop("a")       # hours 0..4 complete; hour 5 in progress is dropped
    backend.stop("a")       # idempotent
    clock.advance(10.0)
    hours = sorted({r.hour for r in backend.fetch("a", 0)})
    assert hours == [0, 1, 2, 3, 4]
    assert sorted({r.hour for r in backend.fetch("a", 3)}) == [3, 4]


def test_late_publications_arrive_out_of_order_when_enabled():
    backend, clock = _backend(realism=RealismConfig(late_fraction=0.3, late_max_hours=4), delay=1)
    backend.launch("a", ARM)
    missing_on_time = 0
    for _ in range(48):
        clock.advance(1.0)
        hours = [r.hour for r in backend.fetch("a", 0) if r.metric == "views"]
        assert len(hours) == len(set(hours))                      # no duplicates
        assert all(h + 2 <= clock.now_hours() for h in hours)     # never early
        missing_on_time += len(set(range(int(clock.now_hours()) - 1)) - set(hours))
    assert missing_on_time > 0, "expected hours published later than the reporting delay"
    assert hours != sorted(hours), "expected out-of-order hours"
    clock.advance(4.0)                                            # the latest are in by now
    assert set(range(47)) <= {r.hour for r in backend.fetch("a", 0)}


def test_duplicated_publications_carry_the_same_values():
    backend, clock = _backend(realism=RealismConfig(duplicate_fraction=0.3), delay=1)
    backend.launch("a", ARM)
    clock.advance(48.0)
    readings = [r for r in backend.fetch("a", 0) if r.metric == "views"]
    hours = [r.hour for r in readings]
    assert set(hours) == set(range(47))
    dupes = [h for h in set(hours) if hours.count(h) == 2]
    assert 5 < len(dupes) < 25
    for h in dupes:
        first, second = [r for r in readings if r.hour == h]
        assert first == second


def test_no_late_or_duplicate_publications_by_default():
    backend, clock = _backend(delay=1)
    backend.launch("a", ARM)
    clock.advance(48.0)
    hours = [r.hour for r in backend.fetch("a", 0) if r.metric == "views"]
    assert hours == sorted(hours) == list(range(47))


def test_straggler_arms_arrive_late():
    realism = RealismConfig(straggler_fraction=1.0, straggler_delay_hours=10)
    backend, clock = _backend(realism=realism)
    backend.launch("a", ARM)
    assert backend.is_straggler("a")
    clock.advance(10.0)
    assert backend.fetch("a", 0) == []
    clock.advance(1.0)
    assert {r.hour for r in backend.fetch("a", 0)} == {0}


def test_publications_until_a_later_hour_include_the_future():
    backend, clock = _backend(delay=2)
    backend.launch("a", ARM)
    clock.advance(3.0)
    now = backend.publications("a")
    later = backend.publications("a", until=10.0)
    assert {p.reading.hour for p in now} == {0}
    assert {p.reading.hour for p in later} == set(range(8))
    assert all(p.publish_hour == p.reading.hour + 3 for p in later)


# ------------------------------------------------------------ the numbers


def test_every_arm_of_an_hour_shares_the_control_reading():
    backend, clock = _backend()
    backend.launch("a", ARM)
    backend.launch("b", BASE)
    clock.advance(6.0)
    ra = {(r.hour, r.metric): r for r in backend.fetch("a", 0)}
    rb = {(r.hour, r.metric): r for r in backend.fetch("b", 0)}
    assert ra.keys() == rb.keys()
    for k in ra:
        assert ra[k].control == rb[k].control
        assert ra[k].test != rb[k].test
    assert ra[(0, "views")].control != ra[(1, "views")].control
    assert backend.control_stats(2)["views"] == ra[(2, "views")].control


def test_separate_backends_with_one_seed_agree_on_the_control():
    # Each Ray arm worker builds its own backend: the control must still be one group.
    b1, c1 = _backend(seed=4)
    b2, c2 = _backend(seed=4)
    b1.launch("a", ARM)
    b2.launch("b", BASE)
    c1.advance(5.0)
    c2.advance(5.0)
    ctrl1 = [(r.hour, r.metric, r.control) for r in b1.fetch("a", 0)]
    ctrl2 = [(r.hour, r.metric, r.control) for r in b2.fetch("b", 0)]
    assert ctrl1 == ctrl2


def _hourly(backend, arm):
    by_metric = {}
    for r in backend.fetch(arm, 0):
        by_metric.setdefault(r.metric, []).append(r)
    return by_metric


def test_seasonality_swings_raw_means_but_deltas_average_to_the_truth():
    backend, clock = _backend(seed=11)
    backend.launch("a", ARM)
    clock.advance(401.0)
    truth = backend.true_deltas(ARM)
    assert min(abs(v) for v in truth.values()) > 0.005       # the arm really moves things
    for metric, readings in _hourly(backend, "a").items():
        assert len(readings) == 401
        control = np.array([r.control.mean for r in readings])
        assert control.max() / control.min() > 1.4, "raw means should swing with the hour"
        deltas = np.array([r.test.mean / r.control.mean - 1 for r in readings])
        se = deltas.std(ddof=1) / math.sqrt(len(deltas))
        assert abs(deltas.mean() - truth[metric]) < 4 * se, metric
        # ... and the hourly delta is far steadier than the raw mean.
        assert deltas.std() < 0.5 * (control / control.mean()).std()


def test_without_seasonality_and_shocks_raw_means_are_steady():
    realism = replace(RealismConfig(), seasonality=False, shocks=False)
    backend, clock = _backend(realism=realism)
    backend.launch("a", ARM)
    clock.advance(100.0)
    control = np.array([r.control.mean for r in _hourly(backend, "a")["views"]])
    assert control.max() / control.min() < 1.1


def test_ideal_realism_reports_exact_deltas_and_expected_variance():
    backend, clock = _backend(realism=RealismConfig.ideal())
    backend.launch("a", ARM)
    clock.advance(3.0)
    truth = backend.true_deltas(ARM)
    world = backend.world
    for r in backend.fetch("a", 0):
        assert r.test.mean / r.control.mean - 1 == pytest.approx(truth[r.metric], abs=1e-12)
        assert r.control.mean == pytest.approx(world.base_levels[r.metric], rel=1e-12)
        assert r.control.var == pytest.approx((world.unit_cv[r.metric] * r.control.mean) ** 2)
        assert r.test.n == r.control.n == 20_000


def test_sampling_noise_shrinks_like_one_over_sqrt_n():
    sds = []
    for traffic in (2_000, 200_000):
        backend, clock = _backend(traffic=traffic, seed=5)
        backend.launch("a", ARM)
        clock.advance(201.0)
        deltas = [r.test.mean / r.control.mean - 1 for r in _hourly(backend, "a")["views"]]
        sds.append(np.std(deltas))
    assert sds[0] / sds[1] == pytest.approx(10.0, rel=0.25)


def test_reported_variance_is_per_unit_and_can_be_withheld():
    backend, clock = _backend()
    backend.launch("a", ARM)
    clock.advance(2.0)
    cv = backend.world.unit_cv
    for r in backend.fetch("a", 0):
        # var = (cv * level)^2 of the group's expected level; the mean is off it by noise.
        tol = 2 * 5 * cv[r.metric] / math.sqrt(r.test.n) + 0.05
        assert r.test.var == pytest.approx((cv[r.metric] * r.test.mean) ** 2, rel=tol)
        assert r.test.var != (cv[r.metric] * r.test.mean) ** 2
    hidden, clock = _backend(realism=replace(RealismConfig(), report_variance=False))
    hidden.launch("a", ARM)
    clock.advance(2.0)
    readings = hidden.fetch("a", 0)
    assert readings and all(r.test.var is None and r.control.var is None for r in readings)
    # Switching the variance off changes nothing else.
    assert [r.test.mean for r in readings] == [r.test.mean for r in backend.fetch("a", 0)]


def test_activation_delay_and_ramp():
    realism = replace(RealismConfig.ideal(), activation_delay_hours=1.0, ramp_hours=4.0)
    backend, clock = _backend(realism=realism)
    backend.launch("a", ARM)
    clock.advance(8.0)
    truth = backend.true_deltas(ARM)["views"]
    got = {r.hour: r.test.mean / r.control.mean - 1 for r in _hourly(backend, "a")["views"]}
    expected = {h: truth * min(1.0, max(0.0, h + 0.5 - 1.0) / 4.0) for h in range(8)}
    assert got == pytest.approx(expected, abs=1e-12)
    assert backend.expected_deltas("a", 2)["views"] == pytest.approx(expected[2])


def test_novelty_effect_fades_and_spares_unchanged_arms():
    realism = replace(RealismConfig.ideal(), novelty_amplitude=0.02, novelty_decay_hours=5.0,
                      novelty_metrics=("likes",))
    backend, clock = _backend(realism=realism)
    backend.launch("a", ARM)
    backend.launch("same", {k: 2.0 for k in BASE})     # the base, rescaled: no change
    clock.advance(12.0)
    truth = backend.true_deltas(ARM)
    extra = [r.test.mean / r.control.mean - 1 - truth["likes"]
             for r in _hourly(backend, "a")["likes"]]
    expected = [0.02 * math.exp(-(h + 0.5) / 5.0) for h in range(12)]
    assert extra == pytest.approx(expected, abs=1e-12)
    views = [r.test.mean / r.control.mean - 1 for r in _hourly(backend, "a")["views"]]
    assert views == pytest.approx([truth["views"]] * 12, abs=1e-12)
    same = [r.test.mean / r.control.mean - 1 for r in backend.fetch("same", 0)]
    assert same == pytest.approx([0.0] * len(same), abs=1e-12)


# ------------------------------------------------------------------ errors


def test_launch_with_unknown_or_bad_params_names_the_field():
    backend, _ = _backend()
    with pytest.raises(InputDataError, match=r"params\.w_bogus"):
        backend.launch("a", {**ARM, "w_bogus": 1.0})
    missing = dict(ARM)
    del missing["w_share"]
    with pytest.raises(InputDataError, match=r"params\.w_share"):
        backend.launch("a", missing)
    with pytest.raises(InputDataError, match=r"params\.w_like.*> 0"):
        backend.launch("a", {**ARM, "w_like": -1.0})
    with pytest.raises(InputDataError, match=r"params\.w_like"):
        backend.launch("a", {**ARM, "w_like": float("nan")})
    with pytest.raises(InputDataError, match="arm_id"):
        backend.launch("control", ARM)
    assert backend.arm_ids == ()


def test_fetch_of_an_unknown_arm_raises_and_its_stop_is_a_no_op():
    backend, _ = _backend()
    with pytest.raises(InputDataError, match="'arm_id' must be an arm launched"):
        backend.fetch("nope", 0)
    backend.stop("nope")  # the protocol: stopping an arm the platform never served is a no-op
    assert backend.arm_ids == ()
    backend.launch("a", ARM)
    with pytest.raises(InputDataError, match="since_hour"):
        backend.fetch("a", -1)


def test_relaunch_is_idempotent_but_conflicts_raise():
    backend, clock = _backend()
    backend.launch("a", ARM)
    clock.advance(2.0)
    backend.launch("a", dict(ARM))           # a retry: no-op, launch time unchanged
    assert {r.hour for r in backend.fetch("a", 0)} == {0, 1}
    with pytest.raises(StateError, match="arm_id"):
        backend.launch("a", BASE)
    backend.stop("a")
    with pytest.raises(ArmStoppedError, match="arm_id"):
        backend.launch("a", ARM)


@pytest.mark.parametrize("kwargs, field", [
    ({"traffic_per_arm": 0}, "traffic_per_arm"),
    ({"control_traffic": -5}, "control_traffic"),
    ({"reporting_delay_hours": -1}, "reporting_delay_hours"),
    ({"seed": -1}, "seed"),
    ({"realism": "harsh"}, "realism"),
])
def test_bad_backend_arguments_raise_config_errors(kwargs, field):
    args = {"seed": 0, **kwargs}
    with pytest.raises(ConfigError, match=field):
        SimulatedBackend(SmoothWorld(), SimClock(), **args)


@pytest.mark.parametrize("kwargs, field", [
    ({"late_fraction": 1.5}, "realism.late_fraction"),
    ({"shock_ar": 1.0}, "realism.shock_ar"),
    ({"daily_amplitude": -0.1}, "realism.daily_amplitude"),
    ({"late_max_hours": 0}, "realism.late_max_hours"),
    ({"novelty_decay_hours": 0.0}, "realism.novelty_decay_hours"),
    ({"noise": "yes"}, "realism.noise"),
])
def test_bad_realism_raises_config_error(kwargs, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        RealismConfig(**kwargs)


def test_unknown_novelty_metric_raises():
    with pytest.raises(ConfigError, match="novelty_metrics"):
        _backend(realism=RealismConfig(novelty_metrics=("bogus",)))


# --------------------------------------------------------- recorded replay


def test_recorded_backend_replays_what_the_simulation_published():
    realism = RealismConfig(late_fraction=0.3, duplicate_fraction=0.3)
    sim, sim_clock = _backend(realism=realism, delay=2)
    sim.launch("a", ARM)
    sim.launch("b", BASE)
    recording = sim.publications("a", until=30.0) + sim.publications("b", until=30.0)
    replay_clock = SimClock()
    replay = RecordedBackend(recording, replay_clock, params={"a": ARM})
    assert isinstance(replay, ArmBackend)
    replay.launch("a", ARM)
    replay.launch("b", BASE)
    with pytest.raises(StateError):
        replay.launch("a", BASE)
    for _ in range(30):
        sim_clock.advance(1.0)
        replay_clock.advance(1.0)
        for arm in ("a", "b"):
            assert replay.fetch(arm, 3) == sim.fetch(arm, 3)
    replay.stop("a")
    assert replay.fetch("a", 0) == sim.fetch("a", 0)      # stopped: still fetchable
    with pytest.raises(InputDataError, match="arm_id"):
        replay.fetch("zzz", 0)


def test_recorded_backend_accepts_pairs_and_rejects_garbage():
    sim, clock = _backend()
    sim.launch("a", ARM)
    clock.advance(2.0)
    pairs = [(p.publish_hour, p.reading) for p in sim.publications("a")]
    replay = RecordedBackend(pairs, SimClock(5.0))
    assert replay.fetch("a", 0) == sim.fetch("a", 0)
    with pytest.raises(InputDataError, match="publish_hour"):
        RecordedBackend([(float("nan"), pairs[0][1])], SimClock())
