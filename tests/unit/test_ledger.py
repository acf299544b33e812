"""Tests of hz_ray.ledger: idempotent ingest, order-independent estimates, state round trip."""

from __future__ import annotations

import json
import math
import pickle
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hz_ray.delta import aggregate
from hz_ray.errors import ConfigError, InputDataError, StateError
from hz_ray.ledger import ArmInfo, IngestResult, Ledger, RejectedRecord
from hz_ray.records import HourlyDelta

METRICS = ("views", "likes")
FLOOR = 1e-6


def d(arm, metric, hour, mean=0.01, var=1e-4, n=100):
    return HourlyDelta(arm, metric, hour, mean, var, n)


def make_ledger(*arms):
    ledger = Ledger(METRICS, var_floor=FLOOR)
    for i, arm in enumerate(arms):
        ledger.register_arm(arm, {"w_click": 1.0 + i, "w_like": 0.5}, hour=i)
    return ledger


def random_records(seed, arms=("a", "b", "c"), hours=20):
    rng = random.Random(seed)
    out = []
    for arm in arms:
        for metric in METRICS:
            for hour in range(hours):
                if rng.random() < 0.8:
                    var = None if rng.random() < 0.2 else rng.uniform(1e-5, 1e-3)
                    out.append(d(arm, metric, hour, rng.gauss(0, 0.03), var, rng.randint(10, 900)))
    return out


# ------------------------------------------------------------------------ arms


def test_register_is_idempotent_and_ordered():
    ledger = Ledger(METRICS, FLOOR)
    assert ledger.register_arm("z", {"w": 1}, hour=3) is True
    assert ledger.register_arm("a", {"w": 2.0}) is True
    assert ledger.register_arm("z", {"w": 1.0}, hour=9) is False  # same weights: no-op
    assert list(ledger.arms) == ["z", "a"]
    assert ledger.arms["z"] == ArmInfo("z", {"w": 1.0}, 3, None)
    assert isinstance(ledger.arms["z"].params["w"], float)


def test_register_conflicting_params_raises_and_keeps_the_first():
    ledger = make_ledger("a")
    with pytest.raises(InputDataError, match="'params'") as info:
        ledger.register_arm("a", {"w_click": 9.0, "w_like": 0.5})
    assert "new arm id" in str(info.value)
    assert ledger.arms["a"].params == {"w_click": 1.0, "w_like": 0.5}


@pytest.mark.parametrize(
    ("arm_id", "params", "hour", "field"),
    [
        ("", {"w": 1.0}, None, "'arm_id'"),
        ("a", {"w": float("nan")}, None, "params['w']"),
        ("a", {"w": True}, None, "params['w']"),
        ("a", [("w", 1.0)], None, "'params'"),
        ("a", {"w": 1.0}, -1, "'hour'"),
    ],
)
def test_register_bad_inputs(arm_id, params, hour, field):
    ledger = Ledger(METRICS, FLOOR)
    with pytest.raises(InputDataError) as info:
        ledger.register_arm(arm_id, params, hour)
    assert field in str(info.value)
    assert ledger.arms == {}


def test_arms_view_is_a_copy():
    ledger = make_ledger("a")
    ledger.arms["a"].params["w_click"] = 99.0  # type: ignore[index]
    assert ledger.arms["a"].params["w_click"] == 1.0


def test_retire():
    ledger = make_ledger("a", "b")
    assert ledger.retire_arm("a", "hours up") is True
    assert ledger.retire_arm("a", "again") is False
    assert ledger.arms["a"].retired_reason == "hours up"
    assert ledger.arms["a"].retired and not ledger.arms["b"].retired
    assert list(ledger.arms) == ["a", "b"]
    with pytest.raises(StateError, match="'arm_id'"):
        ledger.retire_arm("nope", "x")
    with pytest.raises(InputDataError, match="'reason'"):
        ledger.retire_arm("b", "")
    # Late data of a retired arm is still accepted.
    assert len(ledger.ingest([d("a", "views", 5)]).accepted) == 1


# ---------------------------------------------------------------------- ingest


def test_ingest_accepts_counts_duplicates_and_rejects_with_reasons():
    ledger = make_ledger("a")
    first = d("a", "views", 0, 0.02)
    result = ledger.ingest([
        first,
        d("ghost", "views", 0),
        d("a", "clicks", 0),
        d("a", "views", 0, 0.02),  # same key, same values, same batch
        d("a", "views", 0, 0.05),  # same key, other values
        d("a", "likes", 0),
    ])
    assert isinstance(result, IngestResult)
    assert result.accepted == (first, d("a", "likes", 0))
    assert result.duplicates == 1
    reasons = [r.reason for r in result.rejected]
    assert [r.record.arm_id for r in result.rejected] == ["ghost", "a", "a"]
    assert "'ghost' is not registered" in reasons[0]
    assert "metric 'clicks' is not modelled" in reasons[1]
    assert "conflicts with the accepted record" in reasons[2] and "0.02" in reasons[2]
    assert "mean=0.05" in reasons[2] and "the first accepted value stands" in reasons[2]
    assert ledger.num_records == 2 and ledger.version == 2
    # The first accepted value stands.
    assert ledger.estimate("a", "views").mean == 0.02


def test_replayed_batch_is_a_noop():
    ledger = make_ledger("a", "b")
    records = random_records(1, arms=("a", "b"))
    ledger.ingest(records)
    version, state = ledger.version, ledger.state_dict()
    again = ledger.ingest(records)
    assert again == IngestResult((), len(records), ())
    assert ledger.version == version and ledger.state_dict() == state


def test_version_bumps_per_accepted_record_only():
    ledger = make_ledger("a")
    assert ledger.version == 0
    ledger.ingest([d("a", "views", 0), d("a", "views", 1), d("ghost", "views", 0)])
    assert ledger.version == 2
    ledger.ingest([d("a", "views", 1)])
    ledger.register_arm("b", {"w": 1.0})
    assert ledger.version == 2


def test_non_delta_items_are_rejected_with_a_reason_and_the_rest_ingested():
    ledger = make_ledger("a")
    good = d("a", "views", 0)
    items = [{"arm_id": "a", "mean": float("nan")}, good, None, "x", 3.5, d("a", "likes", 0)]
    result = ledger.ingest(items)  # type: ignore[arg-type]
    assert result.accepted == (good, d("a", "likes", 0))
    assert len(result.rejected) == 4
    for bad in result.rejected:
        assert bad.record is None and "Not an HourlyDelta" in bad.reason
        json.dumps(bad.raw, allow_nan=False)  # strict JSON, for the event log
    assert result.rejected[0].raw == {"arm_id": "a", "mean": "nan"}
    assert result.rejected[1].raw == {"type": "NoneType", "repr": "None"}
    assert ledger.num_records == 2


def test_a_non_iterable_argument_is_a_typed_error():
    ledger = make_ledger("a")
    with pytest.raises(InputDataError, match="'deltas'"):
        ledger.ingest(d("a", "views", 0))  # type: ignore[arg-type]
    assert ledger.num_records == 0


def unvalidated(arm="a", metric="views", hour=0, mean=0.01, var=1e-4, n=100, control_var=None,
                drop=()):
    """A delta as unpickling builds it: no ``__post_init__`` runs."""
    delta = object.__new__(HourlyDelta)
    for name, value in (("arm_id", arm), ("metric", metric), ("hour", hour), ("mean", mean),
                        ("var", var), ("n", n), ("control_var", control_var)):
        if name not in drop:
            object.__setattr__(delta, name, value)
    return delta


@pytest.mark.parametrize(("item", "field"), [
    (unvalidated(mean=float("nan")), "'mean'"),
    (unvalidated(mean="0.01"), "'mean'"),
    (unvalidated(var=-1e-4), "'var'"),
    (unvalidated(var=float("inf")), "'var'"),
    (unvalidated(n=0), "'n'"),
    (unvalidated(n=True), "'n'"),
    (unvalidated(n="5"), "'n'"),
    (unvalidated(n=10**400), "'n'"),
    (unvalidated(control_var=-1.0), "'control_var'"),
    (unvalidated(hour=-1), "'hour'"),
    (unvalidated(hour=2**63), "'hour'"),
    (unvalidated(arm=3), "'arm_id'"),
    (unvalidated(metric=None), "'metric'"),
    (unvalidated(drop=("n",)), "'n'"),
])
def test_unpickled_deltas_with_invalid_fields_are_rejected(item, field):
    ledger = make_ledger("a")
    result = ledger.ingest([item, d("a", "views", 1)])
    assert [r.hour for r in result.accepted] == [1]
    (bad,) = result.rejected
    assert bad.record is None and field in bad.reason
    json.dumps(bad.raw, allow_nan=False)
    assert ledger.estimate("a", "views").hours == 1  # the estimate still works


def test_a_real_pickle_round_trip_of_a_corrupted_delta_is_rejected():
    bad = d("a", "views", 0)
    object.__setattr__(bad, "mean", float("nan"))
    copy = pickle.loads(pickle.dumps(bad))
    assert math.isnan(copy.mean)  # unpickling did not re-validate
    ledger = make_ledger("a")
    result = ledger.ingest([copy])
    assert not result.accepted and "'mean'" in result.rejected[0].reason
    assert result.rejected[0].raw["mean"] == "nan"


def test_a_huge_unit_count_is_rejected_not_left_to_overflow_the_estimate():
    ledger = make_ledger("a")
    huge = HourlyDelta("a", "views", 0, 0.01, 1e-4, 10**400)  # passes HourlyDelta's checks
    result = ledger.ingest([huge, d("a", "views", 1)])
    assert len(result.accepted) == 1 and "'n'" in result.rejected[0].reason
    assert ledger.estimate("a", "views").n == 100


def test_subclassed_fields_are_stored_as_exact_builtins():
    class Loud(float):
        def __eq__(self, other):
            raise RuntimeError("no comparisons")

        __hash__ = float.__hash__

    ledger = make_ledger("a")
    odd = unvalidated(mean=Loud(0.01), var=np.float64(1e-4))
    plain = d("a", "views", 0)
    result = ledger.ingest([odd, plain])
    assert result.accepted == (plain,) and result.duplicates == 1
    (stored,) = ledger.deltas("a", "views")
    assert type(stored.mean) is float and type(stored.var) is float


def test_well_formed_deltas_are_kept_by_identity_when_accepted_or_rejected():
    ledger = make_ledger("a")
    first, ghost = d("a", "views", 0), d("ghost", "views", 0)
    result = ledger.ingest([first, ghost])
    assert result.accepted[0] is first
    assert result.rejected[0].record is ghost and result.rejected[0].raw is None
    assert RejectedRecord(ghost, "why").raw is None  # the old two-argument form still works


class ExplodingObject:
    """Every way of looking at it raises."""

    def __getattr__(self, name):
        raise RuntimeError(name)

    def __repr__(self):
        raise RuntimeError("repr")

    def __eq__(self, other):
        raise RuntimeError("eq")

    __hash__ = None  # type: ignore[assignment]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.from_type(type), st.sampled_from([object(), ExplodingObject(), Ellipsis, b"\xff"]),
    st.none(), st.integers(), st.floats(), st.text(max_size=5),
    st.builds(unvalidated, arm=st.sampled_from(["a", "b", "", 0]),
              metric=st.sampled_from(["views", "likes", "clicks", None]),
              hour=st.one_of(st.integers(-2, 5), st.just(2**70), st.just("1")),
              mean=st.one_of(st.floats(), st.integers(), st.text(max_size=3), st.none()),
              var=st.one_of(st.none(), st.floats(), st.integers(-1, 3)),
              n=st.one_of(st.integers(-1, 10**3), st.just(10**400), st.booleans(), st.floats()),
              control_var=st.one_of(st.none(), st.floats())),
), max_size=12))
def test_ingest_never_raises_and_keeps_only_valid_deltas(items):
    ledger = make_ledger("a")
    result = ledger.ingest(items)
    assert len(result.accepted) + result.duplicates + len(result.rejected) == len(items)
    for bad in result.rejected:
        assert isinstance(bad.reason, str) and bad.reason
        json.dumps(bad.raw, allow_nan=False)
    for delta in result.accepted:
        assert delta.arm_id == "a" and delta.metric in METRICS
        assert math.isfinite(delta.mean) and 1 <= delta.n <= 2**53
        assert delta.var is None or (math.isfinite(delta.var) and delta.var >= 0)
    for metric in METRICS:
        if ledger.deltas("a", metric):
            assert ledger.estimate("a", metric).hours == len(ledger.deltas("a", metric))


def test_rejected_record_type():
    ledger = make_ledger()
    (rejected,) = ledger.ingest([d("x", "views", 0)]).rejected
    assert isinstance(rejected, RejectedRecord) and rejected.record == d("x", "views", 0)


# ------------------------------------------------------------------- estimates


def test_estimate_equals_aggregate_and_updates_with_new_data():
    ledger = make_ledger("a")
    assert ledger.estimate("a", "views") is None
    assert ledger.estimates("a") == {}
    records = [d("a", "views", h, 0.01 * h, 1e-4, 100 + h) for h in range(5)]
    ledger.ingest(records[:3])
    before = ledger.estimate("a", "views")
    assert before == aggregate(records[:3], FLOOR)
    assert ledger.estimate("a", "views") is before  # cached
    ledger.ingest(records[3:])
    after = ledger.estimate("a", "views")
    assert after == aggregate(records, FLOOR) and after != before
    assert after.hours == 5 and after.n == sum(r.n for r in records)
    assert list(ledger.estimates("a")) == ["views"]


def test_estimates_do_not_depend_on_arrival_order_bit_exactly():
    records = random_records(2)
    reference = make_ledger("a", "b", "c")
    reference.ingest(records)
    expected = {arm: reference.estimates(arm) for arm in ("a", "b", "c")}
    rng = random.Random(3)
    for _ in range(10):
        shuffled = records[:]
        rng.shuffle(shuffled)
        ledger = make_ledger("a", "b", "c")
        # Arrive in uneven batches, with estimates read (and cached) in between.
        cut = rng.randrange(len(shuffled))
        ledger.ingest(shuffled[:cut])
        ledger.estimates("a")
        ledger.ingest(shuffled[cut:])
        assert {arm: ledger.estimates(arm) for arm in ("a", "b", "c")} == expected
        assert ledger.state_dict() == reference.state_dict()


def test_hours_observed_counts_distinct_hours():
    ledger = make_ledger("a", "b")
    ledger.ingest([d("a", "views", 0), d("a", "likes", 0), d("a", "likes", 4), d("b", "views", 1)])
    assert ledger.hours_observed("a") == 2
    assert ledger.hours_observed("b") == 1
    assert [x.hour for x in ledger.deltas("a", "likes")] == [0, 4]


def test_estimate_unknown_arm_or_metric():
    ledger = make_ledger("a")
    with pytest.raises(StateError, match="'arm_id'"):
        ledger.estimate("ghost", "views")
    with pytest.raises(InputDataError, match="'metric'"):
        ledger.estimate("a", "clicks")


def test_ledger_applies_its_floor():
    ledger = Ledger(["views"], var_floor=4e-4)
    ledger.register_arm("a", {"w": 1.0})
    ledger.ingest([HourlyDelta("a", "views", 0, 0.01, 1e-9, 10_000)])
    assert ledger.estimate("a", "views").sem == pytest.approx(0.02)


# ------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("metrics", "floor", "field"),
    [
        ([], 1e-4, "'metrics'"),
        ("views", 1e-4, "'metrics'"),
        (["views", "views"], 1e-4, "'metrics'"),
        (["views", ""], 1e-4, "'metrics'"),
        (["views"], 0.0, "'var_floor'"),
        (["views"], float("nan"), "'var_floor'"),
    ],
)
def test_bad_config(metrics, floor, field):
    with pytest.raises(ConfigError) as info:
        Ledger(metrics, floor)
    assert field in str(info.value)


# ------------------------------------------------------------------------- state


def test_state_dict_round_trip_through_json():
    ledger = make_ledger("a", "b", "c")
    ledger.retire_arm("b", "guardrail: P(feasible) < 0.05")
    ledger.ingest(random_records(4))
    state = ledger.state_dict()
    assert state["schema_version"] == 1
    text = json.dumps(state, allow_nan=False)
    restored = Ledger.from_state_dict(json.loads(text))
    assert restored.state_dict() == state
    assert restored.arms == ledger.arms
    assert restored.version == ledger.version and restored.num_records == ledger.num_records
    for arm in ("a", "b", "c"):
        assert restored.estimates(arm) == ledger.estimates(arm)
    # Compact columns: one list per field, one entry per record.
    assert set(state["records"]) == {"arm_id", "metric", "hour", "mean", "var", "n",
                                     "control_var"}
    assert len(state["records"]["hour"]) == ledger.num_records
    assert None in state["records"]["var"]
    # a state written before control_var existed still loads (the column is optional)
    old = json.loads(text)
    del old["records"]["control_var"]
    assert Ledger.from_state_dict(old).num_records == ledger.num_records


def test_restored_ledger_stays_idempotent():
    ledger = make_ledger("a")
    records = [d("a", "views", h) for h in range(3)]
    ledger.ingest(records)
    restored = Ledger.from_state_dict(ledger.state_dict())
    assert restored.ingest(records).duplicates == 3
    assert restored.ingest([d("a", "views", 0, mean=0.5)]).rejected


def test_from_state_dict_rejects_other_schema_and_corruption():
    state = make_ledger("a").state_dict()
    with pytest.raises(StateError, match="'schema_version'"):
        Ledger.from_state_dict({**state, "schema_version": 2})
    with pytest.raises(StateError, match="Malformed"):
        Ledger.from_state_dict({k: v for k, v in state.items() if k != "arms"})
    bad = json.loads(json.dumps(make_ledger("a").state_dict()))
    bad["records"] = {"arm_id": ["ghost"], "metric": ["views"], "hour": [0], "mean": [0.0],
                      "var": [None], "n": [1]}
    with pytest.raises(StateError, match="not registered"):
        Ledger.from_state_dict(bad)
    bad["records"]["n"] = [1, 2]
    with pytest.raises(StateError):
        Ledger.from_state_dict(bad)


def test_restored_version_never_goes_backwards():
    ledger = make_ledger("a")
    ledger.ingest([d("a", "views", h) for h in range(3)])
    state = ledger.state_dict()
    assert Ledger.from_state_dict({**state, "version": 10}).version == 10
    with pytest.raises(StateError, match="'version'"):
        Ledger.from_state_dict({**state, "version": 2})


def test_control_loadings_hand_example():
    ledger = make_ledger("a", "b")
    ledger.ingest([HourlyDelta("a", "views", 0, 0.01, 4e-4, 100, control_var=1e-4),
                   HourlyDelta("a", "views", 1, 0.02, 4e-4, 300, control_var=4e-4),
                   HourlyDelta("b", "views", 1, 0.00, 4e-4, 100)])  # no control_var
    loads = ledger.control_loadings("a", "views")
    assert loads == pytest.approx({0: 0.25 * 1e-2, 1: 0.75 * 2e-2})
    assert ledger.control_loadings("b", "views") is None  # unknown share: no loadings
    assert ledger.control_loadings("a", "likes") is None  # no data
    # the shared variance is a part of the estimate's variance
    est = ledger.estimate("a", "views")
    assert sum(v * v for v in loads.values()) <= est.sem ** 2
    # control_var is part of the record's identity: a restatement is a conflict
    again = ledger.ingest([HourlyDelta("a", "views", 0, 0.01, 4e-4, 100, control_var=2e-4)])
    assert len(again.rejected) == 1 and "control_var" in again.rejected[0].reason
    # cached, and recomputed when a new hour arrives
    assert ledger.control_loadings("a", "views") is loads
    ledger.ingest([HourlyDelta("a", "views", 2, 0.0, 4e-4, 100, control_var=1e-4)])
    assert ledger.control_loadings("a", "views") == pytest.approx(
        {0: 0.2 * 1e-2, 1: 0.6 * 2e-2, 2: 0.2 * 1e-2})


# ------------------------------------------------------------------ ramp hours
def test_ramp_hours_leave_an_arms_first_hours_out_of_its_estimate_not_out_of_the_ledger():
    # An effect that ramps 0.25 -> 0.75 -> full over the arm's first two hours: the
    # full-data mean is diluted; leaving the ramp out recovers the full effect exactly.
    full, n = 0.02, 1000
    series = [d("a", "views", 5 + h, mean=full * f, n=n)
              for h, f in enumerate([0.25, 0.75, 1, 1, 1, 1])]
    kept = Ledger(METRICS, var_floor=FLOOR)
    ramped = Ledger(METRICS, var_floor=FLOOR, ramp_hours=2)
    for ledger in (kept, ramped):
        ledger.register_arm("a", {"w_click": 1.0}, hour=5)
        ledger.ingest(series)
    assert kept.estimate("a", "views").mean == pytest.approx(full * 5 / 6)  # (0.25+0.75+4)/6
    assert ramped.estimate("a", "views").mean == pytest.approx(full)
    # the ramp hours stay: the ledger's records, hours and loadings' hours
    assert len(ramped.deltas("a", "views")) == 6 and ramped.hours_observed("a") == 6
    assert ramped.estimate("a", "views").n == 4 * n


def test_ramp_hours_count_from_the_first_hour_of_data_without_a_registration_hour():
    ledger = Ledger(METRICS, var_floor=FLOOR, ramp_hours=1)
    ledger.register_arm("a", {"w_click": 1.0})
    ledger.ingest([d("a", "views", 9, mean=0.0)])
    # only ramp data so far: estimated from them (diluted data beat none)
    assert ledger.estimate("a", "views").hours == 1
    assert ledger.estimate("a", "views").mean == pytest.approx(0.0)
    ledger.ingest([d("a", "views", 10, mean=0.03)])
    assert ledger.estimate("a", "views").mean == pytest.approx(0.03)


def test_ramp_hours_survive_the_state_round_trip_and_reject_bad_values():
    ledger = Ledger(METRICS, var_floor=FLOOR, ramp_hours=2)
    ledger.register_arm("a", {"w_click": 1.0}, hour=0)
    ledger.ingest([d("a", "views", h, mean=0.01 * h) for h in range(4)])
    again = Ledger.from_state_dict(json.loads(json.dumps(ledger.state_dict())))
    assert again.estimate("a", "views").mean == pytest.approx(ledger.estimate("a", "views").mean)
    assert again.estimate("a", "views").mean == pytest.approx(0.025)
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="ramp_hours"):
            Ledger(METRICS, var_floor=FLOOR, ramp_hours=bad)
