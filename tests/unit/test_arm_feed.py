"""Tests of hz_ray.arm_feed and hz_ray.reading_checks: readings are checked before a key."""

from __future__ import annotations

import json
import math
import os

import pytest

from hz_ray.arm_feed import ArmFeed, FeedRejection
from hz_ray.backends.file_drop import READING_COLUMNS, FileDropBackend
from hz_ray.delta import reading_to_delta
from hz_ray.errors import ConfigError
from hz_ray.ledger import Ledger
from hz_ray.reading_checks import check_delta, check_reading, reading_payload, to_payload
from hz_ray.records import GroupStats, HourlyDelta, HourlyReading, InvalidReading

ARM = "arm-1"
METRICS = ("views", "likes")


def reading(hour, metric="views", test_mean=1.1, control_mean=1.0, var=0.5, n=1000, arm=ARM):
    return HourlyReading(arm, hour, metric, GroupStats(test_mean, var, n),
                         GroupStats(control_mean, var, n))


def unvalidated(hour=0, metric="views", test=(1.1, 0.5, 1000), control=(1.0, 0.5, 1000),
                arm=ARM, drop=()):
    """A reading as unpickling builds it: ``__post_init__`` never runs."""

    def stats(values):
        out = object.__new__(GroupStats)
        for name, value in zip(("mean", "var", "n"), values, strict=True):
            object.__setattr__(out, name, value)
        return out

    out = object.__new__(HourlyReading)
    for name, value in (("arm_id", arm), ("hour", hour), ("metric", metric),
                        ("test", stats(test)), ("control", stats(control))):
        if name not in drop:
            object.__setattr__(out, name, value)
    return out


def feed(first_hour=0, **kwargs):
    return ArmFeed(ARM, METRICS, first_hour, **kwargs)


class Exploding:
    """Every way of looking at it raises."""

    def __getattr__(self, name):
        raise RuntimeError(name)

    def __repr__(self):
        raise RuntimeError("repr")

    def __eq__(self, other):
        raise RuntimeError("eq")

    __hash__ = None  # type: ignore[assignment]


# ------------------------------------------------------------ the defects


def test_a_negative_control_mean_is_rejected_not_turned_into_a_delta():
    deltas, bad = feed().absorb([reading(0, test_mean=1.0, control_mean=-0.98)], now_hour=3)
    assert deltas == []
    (rejection,) = bad
    assert "'control.mean' must be > 0" in rejection.reason and "-0.98" in rejection.reason
    assert rejection.payload["control"]["mean"] == -0.98


def test_a_negative_control_mean_from_a_file_drop_csv_is_rejected(tmp_path):
    backend = FileDropBackend(tmp_path)
    rows = [dict(zip(READING_COLUMNS, values, strict=True)) for values in (
        (ARM, 0, "views", 1.0, 4.0, 5000, -0.98, 4.0, 5000),
        (ARM, 0, "likes", 1.0, 4.0, 5000, 1.0, 4.0, 5000),
    )]
    text = ",".join(READING_COLUMNS) + "\n" + "".join(
        ",".join(str(r[c]) for c in READING_COLUMNS) + "\n" for r in rows)
    tmp = backend.readings / "export.tmp"
    tmp.write_text(text)
    os.replace(tmp, backend.readings / "export.csv")
    fetched = backend.fetch(ARM, 0)
    assert len(fetched) == 2 and all(isinstance(r, HourlyReading) for r in fetched)
    deltas, bad = feed().absorb(fetched, now_hour=1)
    assert [d.metric for d in deltas] == ["likes"]
    assert len(bad) == 1 and "'control.mean'" in bad[0].reason


@pytest.mark.parametrize(("hour", "now", "data_end", "words"), [
    (10**6, 5, None, "in the future"),
    (6, 5, None, "in the future"),
    (3, 5, 3, "stopped serving at hour 3"),     # at data_end
    (4, 5, 3, "stopped serving at hour 3"),     # after it
])
def test_hours_in_the_future_or_after_the_arm_stopped_are_rejected(hour, now, data_end, words):
    arm = feed(data_end=data_end)
    deltas, bad = arm.absorb([reading(hour)], now_hour=now)
    assert deltas == [] and len(bad) == 1
    assert words in bad[0].reason and str(hour) in bad[0].reason
    assert arm.hours_complete == 0


def test_the_current_hour_and_the_last_served_hour_are_accepted():
    deltas, bad = feed().absorb([reading(5)], now_hour=5)
    assert len(deltas) == 1 and not bad
    deltas, bad = feed(data_end=3).absorb([reading(2)], now_hour=5)
    assert len(deltas) == 1 and not bad


def test_a_bad_row_of_a_future_hour_is_reported_once_for_its_values():
    arm = feed()
    row = reading(4, control_mean=-1.0)
    _, first = arm.absorb([row], now_hour=2)     # in the future and bad
    _, later = arm.absorb([row], now_hour=6)     # no longer in the future, still bad
    assert len(first) == 1 and "'control.mean'" in first[0].reason and later == []


def test_a_valid_reading_of_a_future_hour_is_accepted_once_its_hour_comes():
    arm = feed()
    early, bad = arm.absorb([reading(4)], now_hour=2)
    assert early == [] and "in the future" in bad[0].reason
    later, bad = arm.absorb([reading(4)], now_hour=4)
    assert len(later) == 1 and bad == []


def test_hours_before_the_launch_hour_are_rejected():
    deltas, bad = feed(first_hour=4).absorb([reading(3), reading(4)], now_hour=6)
    assert [d.hour for d in deltas] == [4]
    assert "launch hour" in bad[0].reason


def test_a_bad_reading_that_comes_first_does_not_take_the_key():
    good = reading(0, test_mean=1.05)
    arm = feed()
    deltas, bad = arm.absorb([reading(0, control_mean=-1.0), good], now_hour=2)
    assert deltas == [reading_to_delta(good)] and len(bad) == 1
    # ... nor across polls, and the ledger gets the valid value
    arm2 = feed()
    first, _ = arm2.absorb([unvalidated(0, test=(1.1, 0.5, 0))], now_hour=1)
    second, _ = arm2.absorb([good], now_hour=2)
    assert first == [] and second == [reading_to_delta(good)]
    ledger = Ledger(METRICS, var_floor=1e-6)
    ledger.register_arm(ARM, {"w": 1.0})
    result = ledger.ingest(first + second)
    assert result.accepted == (reading_to_delta(good),) and not result.rejected


def test_every_distinct_bad_reading_is_reported_once():
    bads = [reading(0, control_mean=-1.0), reading(0, control_mean=-2.0),
            unvalidated(0, test=(1.1, 0.5, 0)), unvalidated(0, test=(float("nan"), 0.5, 1)),
            reading(0, metric="clicks"), reading(0, arm="arm-2")]
    arm = feed()
    _, bad = arm.absorb(bads, now_hour=1)
    assert len(bad) == len(bads)  # one key, six different rows: six reports
    _, again = arm.absorb(bads + [unvalidated(0, test=(1.1, 0.5, 0))], now_hour=2)
    assert again == []  # re-fetches of the same raw rows: not again


def test_a_reading_that_skipped_validation_is_rejected_never_raised():
    arm = feed()
    items = [unvalidated(0, test=(1.1, 0.5, 0)), unvalidated(0, control=("x", 0.5, 10)),
             unvalidated(0, test=(None, 0.5, 10)), unvalidated(0, drop=("test",)),
             unvalidated(0, test=(1.1, 0.5, 10**400)), unvalidated(1)]
    deltas, bad = arm.absorb(items, now_hour=3)
    assert [d.hour for d in deltas] == [1]
    assert [("'test.n'" in bad[0].reason), ("'control.mean'" in bad[1].reason),
            ("'test.mean'" in bad[2].reason), ("'test'" in bad[3].reason),
            ("'test.n'" in bad[4].reason)] == [True] * 5


def test_the_first_valid_value_stands_and_a_restatement_is_rejected_once():
    first, restated = reading(2, test_mean=1.1), reading(2, test_mean=1.3)
    arm = feed()
    deltas, bad = arm.absorb([first, restated], now_hour=3)
    assert deltas == [reading_to_delta(first)]
    (conflict,) = bad
    assert "conflicts with the first valid value" in conflict.reason
    assert "(kept)" in conflict.reason and "1.1" in conflict.reason and "1.3" in conflict.reason
    # identical re-fetch: the same delta again; the restatement is not reported again
    deltas, bad = arm.absorb([restated, first], now_hour=4)
    assert deltas == [reading_to_delta(first)] and bad == []


def test_invalid_readings_never_count_toward_the_cursor():
    arm = feed()
    arm.absorb([reading(0, control_mean=-1.0), reading(0, metric="likes", test_mean=-1.0),
                reading(1), reading(1, metric="likes")], now_hour=2)
    assert arm.since_hour == 0 and arm.hours_complete == 1
    arm.absorb([reading(0), reading(0, metric="likes")], now_hour=3)
    assert arm.since_hour == 2 and arm.hours_complete == 2


def test_a_test_hour_without_activity_is_accepted():
    deltas, bad = feed().absorb([reading(0, test_mean=0.0, var=0.0)], now_hour=1)
    assert not bad and deltas[0].mean == -1.0


# --------------------------------------------------------- late-data window


def test_a_live_arm_has_no_age_limit():
    deltas, bad = feed(late_data_hours=2).absorb([reading(0)], now_hour=10_000)
    assert len(deltas) == 1 and not bad


def test_a_stopped_arm_accepts_every_served_hour_within_its_window():
    arm = feed(late_data_hours=24, data_end=24)
    assert arm.oldest_hour(48) is None
    deltas, bad = arm.absorb([reading(0), reading(23)], now_hour=48)  # 48 = data_end + late
    assert len(deltas) == 2 and not bad


def test_the_first_poll_past_the_window_is_honoured_later_ones_are_not():
    arm = feed(late_data_hours=24, data_end=24)
    arm.absorb([], now_hour=30)
    # the job was down from hour 30 to 100: what this poll sees may be from inside the window
    deltas, bad = arm.absorb([reading(0)], now_hour=100)
    assert len(deltas) == 1 and not bad
    deltas, bad = arm.absorb([reading(1)], now_hour=101)
    assert deltas == [] and "late-data window" in bad[0].reason
    assert arm.oldest_hour(101) == 24


def test_past_the_window_a_kept_value_is_still_recognised_not_rejected():
    arm = feed(late_data_hours=1, data_end=3)
    kept, _ = arm.absorb([reading(0)], now_hour=3)
    arm.absorb([], now_hour=5)  # the first poll past the window (hour 4)
    deltas, bad = arm.absorb([reading(0), reading(1)], now_hour=6)
    assert deltas == kept and len(bad) == 1 and "'hour' must be >= 3" in bad[0].reason


def test_a_fresh_feed_of_a_resumed_arm_reads_its_catch_up_poll():
    arm = feed(late_data_hours=0, data_end=5)
    deltas, bad = arm.absorb([reading(4)], now_hour=500)
    assert len(deltas) == 1 and not bad


# ---------------------------------------------------------- payloads, odd fetches


def test_rejection_payloads_are_strict_json_with_non_finite_values_as_text():
    arm = feed()
    items = [unvalidated(0, test=(float("nan"), float("inf"), 10)),
             unvalidated(1, control=(float("-inf"), None, 10)),
             unvalidated(2, drop=("arm_id", "control")), Exploding(), None, "text"]
    deltas, bad = arm.absorb(items, now_hour=5)
    assert deltas == [] and len(bad) == len(items)
    for rejection in bad:
        json.dumps(rejection.payload, allow_nan=False)
        assert isinstance(rejection.reason, str) and rejection.reason
    assert bad[0].payload["test"] == {"mean": "nan", "var": "inf", "n": 10}
    assert bad[1].payload["control"]["mean"] == "-inf"
    assert bad[2].payload["missing"] == ["arm_id", "control"]
    assert bad[3].payload["type"] == "Exploding" and "failing repr" in bad[3].payload["repr"]
    assert bad[4].payload == {"type": "NoneType", "repr": "None"}


def test_to_payload_never_raises_and_is_strict_json():
    class BadMapping(dict):
        def items(self):
            raise RuntimeError("items")

    values = [10**400, -(2**80), float("nan"), {1: {2: [3, {4}]}}, BadMapping(a=1), Exploding(),
              "x" * 5000, [[[[[[[[1]]]]]]]], (1.5, None, True), b"\x00"]
    for value in values:
        json.dumps(to_payload(value), allow_nan=False)
        json.dumps(reading_payload(value), allow_nan=False)
    assert to_payload(2**80) == str(2**80) and to_payload(3) == 3


def test_a_fetch_result_that_is_not_iterable_or_fails_becomes_a_rejection():
    arm = feed()
    deltas, bad = arm.absorb(None, now_hour=1)  # type: ignore[arg-type]
    assert deltas == [] and "not an iterable" in bad[0].reason

    def broken():
        yield reading(0)
        raise TimeoutError("platform hung up")

    deltas, bad = arm.absorb(broken(), now_hour=1)
    assert [d.hour for d in deltas] == [0]
    assert "after 1 items" in bad[0].reason and "TimeoutError" in bad[0].reason


def test_invalid_reading_rows_are_reported_once_per_payload_and_reason():
    row = InvalidReading(ARM, {"hour": 1, "test_mean": float("nan")}, "'mean' must be finite")
    arm = feed()
    _, bad = arm.absorb([row, row], now_hour=2)
    assert bad == [FeedRejection({"hour": 1, "test_mean": "nan"}, "'mean' must be finite")]
    assert arm.absorb([row], now_hour=3) == ([], [])


def test_now_hour_is_a_required_keyword_and_settings_are_checked():
    arm = feed()
    with pytest.raises(TypeError):
        arm.absorb([reading(0)])  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="'now_hour'"):
        arm.absorb([reading(0)], now_hour="5")  # type: ignore[arg-type]
    arm.data_end = 2.5  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="'data_end'"):
        arm.absorb([], now_hour=5)
    for kwargs, field in (({"late_data_hours": -1}, "late_data_hours"),
                          ({"late_data_hours": True}, "late_data_hours")):
        with pytest.raises(ConfigError, match=field):
            ArmFeed(ARM, METRICS, 0, **kwargs)
    with pytest.raises(ConfigError, match="'metrics'"):
        ArmFeed(ARM, ("views", "views"), 0)
    with pytest.raises(ConfigError, match="'first_hour'"):
        ArmFeed(ARM, METRICS, -1)
    with pytest.raises(TypeError):
        ArmFeed(ARM, METRICS, 0, 24)  # type: ignore[misc]  # late_data_hours is keyword-only


# ------------------------------------------------------------- check_reading


def check(item, **overrides):
    kwargs = {"arm_id": ARM, "metrics": METRICS, "first_hour": 2, "now_hour": 10,
              "data_end": None, "oldest_hour": None, **overrides}
    return check_reading(item, **kwargs)


@pytest.mark.parametrize(("item", "overrides", "words"), [
    ({"hour": 3}, {}, "Not an HourlyReading: got a dict"),
    (reading(3, arm="arm-2"), {}, "'arm_id' must be 'arm-1'"),
    (reading(3, metric="clicks"), {}, "'metric' must be one of ['views', 'likes']"),
    (unvalidated(hour=-1), {}, "'hour' must be an integer hour index >= 0; got -1"),
    (unvalidated(hour=True), {}, "'hour' must be an integer"),
    (unvalidated(hour=3.0), {}, "'hour' must be an integer"),
    (reading(1), {}, "'hour' must be >= 2 (the arm's launch hour); got 1"),
    (reading(11), {}, "'hour' must be <= 10 (the current job hour); got 11"),
    (reading(5), {"data_end": 5}, "'hour' must be < 5"),
    (reading(3), {"oldest_hour": 4}, "'hour' must be >= 4 (older data is past"),
    (unvalidated(3, test=(float("inf"), 0.5, 10)), {}, "'test.mean' must be a finite number"),
    (unvalidated(3, control=(1.0, float("nan"), 10)), {}, "'control.var' must be a finite"),
    (unvalidated(3, test=("1.1", 0.5, 10)), {}, "'test.mean' must be a finite number"),
    (unvalidated(3, test=(1.1, 0.5, 0)), {}, "'test.n' must be an integer unit count"),
    (unvalidated(3, test=(1.1, 0.5, True)), {}, "'test.n' must be an integer unit count"),
    (unvalidated(3, control=(1.0, -0.1, 10)), {}, "'control.var' must be a variance >= 0"),
    (reading(3, control_mean=-0.5), {}, "'control.mean' must be > 0; got -0.5"),
    (reading(3, test_mean=-0.5), {}, "'test.mean' must be >= 0; got -0.5"),
    (reading(3, test_mean=0.0, var=0.2), {}, "'test.var' must be 0 (or None)"),
    (reading(3, test_mean=1e308, control_mean=1e-10), {}, "must be finite"),
])
def test_check_reading_names_the_field_the_value_and_the_rule(item, overrides, words):
    reason = check(item, **overrides)
    assert reason is not None and words in reason


def test_check_reading_accepts_a_valid_reading_and_numpy_numbers():
    np = pytest.importorskip("numpy")
    assert check(reading(3)) is None
    assert check(reading(10, test_mean=0.0, var=0.0)) is None
    assert check(unvalidated(3, test=(np.float64(1.1), np.float64(0.5), 10))) is None
    assert check(reading(3), data_end=4, oldest_hour=3) is None


def test_check_reading_never_raises_for_objects_whose_methods_raise():
    class LoudStr(str):
        def __eq__(self, other):
            raise RuntimeError("eq")

        def __hash__(self):
            raise RuntimeError("hash")

    class LoudInt(int):
        def __lt__(self, other):
            raise RuntimeError("lt")

        def __gt__(self, other):
            raise RuntimeError("gt")

    assert check(unvalidated(3, arm=LoudStr(ARM), metric=LoudStr("views"))) is None
    assert check(unvalidated(LoudInt(3))) is None
    assert "Not an HourlyReading" in check(Exploding())
    assert check(unvalidated(3, test=(Exploding(), 0.5, 10))) is not None


def test_check_reading_raises_only_for_bad_settings():
    with pytest.raises(ConfigError, match="'now_hour'"):
        check(reading(3), now_hour=None)
    with pytest.raises(ConfigError, match="'metrics'"):
        check(reading(3), metrics=["views"])


# --------------------------------------------------------------- check_delta


def raw_delta(**fields):
    values = {"arm_id": ARM, "metric": "views", "hour": 0, "mean": 0.01, "var": 1e-4, "n": 10,
              "control_var": None, **fields}
    out = object.__new__(HourlyDelta)
    for name, value in values.items():
        object.__setattr__(out, name, value)
    return out


@pytest.mark.parametrize(("item", "words"), [
    ("delta", "Not an HourlyDelta: got a str"),
    (raw_delta(arm_id="arm-9"), "arm_id 'arm-9' is not registered"),
    (raw_delta(metric="clicks"), "metric 'clicks' is not modelled"),
    (raw_delta(mean=math.nan), "'mean' must be a finite number"),
    (raw_delta(mean="0.1"), "'mean' must be a finite number"),
    (raw_delta(var=-1.0), "'var' must be a variance >= 0"),
    (raw_delta(control_var=math.inf), "'control_var' must be a finite number"),
    (raw_delta(n=0), "'n' must be an integer unit count"),
    (raw_delta(n=False), "'n' must be an integer unit count"),
    (raw_delta(hour=-3), "'hour' must be an integer hour index"),
    (object.__new__(HourlyDelta), "'arm_id' is missing"),
])
def test_check_delta_names_the_field_and_the_rule(item, words):
    reason = check_delta(item, known_arms={ARM}, metrics=METRICS)
    assert reason is not None and words in reason


def test_check_delta_accepts_a_valid_delta():
    assert check_delta(raw_delta(), known_arms={ARM: None}, metrics=METRICS) is None
    assert check_delta(HourlyDelta(ARM, "likes", 3, -0.2, None, 5), known_arms=[ARM],
                       metrics=METRICS) is None
