"""Property tests: random mixes of valid and invalid readings through ArmFeed and the Ledger.

:func:`reading_mixes` is the reusable part: a Hypothesis strategy of whole fetch
histories of one arm (valid readings, every kind of invalid one, duplicates,
restatements, out-of-order hours, random fetch batches), each reading labelled
valid or invalid by construction, and :func:`expected_outcome` is the oracle
that says what must come out of them. Driver-level tests can serve
``mix.batches`` from a fake backend and compare with the same oracle.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hz_ray.arm_feed import ArmFeed
from hz_ray.delta import reading_to_delta
from hz_ray.ledger import Ledger
from hz_ray.reading_checks import (
    check_delta,
    check_reading,
    reading_payload,
    to_payload,
)
from hz_ray.records import GroupStats, HourlyDelta, HourlyReading, InvalidReading

ARM = "mix-arm.s00-0000"
METRICS = ("views", "likes")
FIRST_HOUR = 2
LAST_VALID_HOUR = 8      # valid readings have hours in [FIRST_HOUR, LAST_VALID_HOUR]
FIRST_POLL = LAST_VALID_HOUR
LAST_POLL = LAST_VALID_HOUR + 5


@dataclass(frozen=True)
class Labelled:
    """One fetched item and what it is by construction.

    Attributes:
        item: The object the platform returns (any type).
        valid: Whether it is a valid reading of the arm (it may still be a
            restatement of a key whose first valid value came earlier).
        kind: ``"valid"`` or the kind of defect, e.g. ``"negative_control"``.
    """

    item: object
    valid: bool
    kind: str


@dataclass(frozen=True)
class ReadingMix:
    """A fetch history of one arm.

    Attributes:
        arm_id: The arm (register it in the ledger first).
        metrics: The job's metrics.
        first_hour: The arm's launch hour.
        data_end: The first hour the arm did not serve, or ``None`` (live).
        items: The distinct items, labelled.
        batches: ``(now_hour, indices into items)`` per fetch, in fetch order;
            ``now_hour`` never decreases, and an index may repeat (a re-fetch).
    """

    arm_id: str
    metrics: tuple[str, ...]
    first_hour: int
    data_end: int | None
    items: tuple[Labelled, ...]
    batches: tuple[tuple[int, tuple[int, ...]], ...]

    def fetches(self) -> list[tuple[int, list[object]]]:
        """``(now_hour, items)`` per fetch, in order."""
        return [(now, [self.items[i].item for i in idx]) for now, idx in self.batches]


# ------------------------------------------------------------------ building blocks


def unvalidated(arm_id, hour, metric, test, control):
    """A reading built as unpickling builds it: no ``__post_init__`` runs."""

    def stats(values):
        if not isinstance(values, tuple):
            return values
        out = object.__new__(GroupStats)
        for name, value in zip(("mean", "var", "n"), values, strict=True):
            object.__setattr__(out, name, value)
        return out

    reading = object.__new__(HourlyReading)
    for name, value in (("arm_id", arm_id), ("hour", hour), ("metric", metric),
                        ("test", stats(test)), ("control", stats(control))):
        object.__setattr__(reading, name, value)
    return reading


class Exploding:
    """Every way of looking at it raises."""

    def __getattr__(self, name):
        raise RuntimeError(name)

    def __repr__(self):
        raise RuntimeError("repr")

    def __eq__(self, other):
        raise RuntimeError("eq")

    __hash__ = None  # type: ignore[assignment]


_hours = st.integers(FIRST_HOUR, LAST_VALID_HOUR)
_metrics = st.sampled_from(METRICS)
_test_means = st.sampled_from([0.0, 0.5, 1.0, 1.25])
_control_means = st.sampled_from([0.5, 1.0, 2.0])
_vars = st.sampled_from([None, 0.25, 2.0])
_ns = st.sampled_from([1, 50, 10_000])


@st.composite
def _group_values(draw, *, test: bool):
    mean = draw(_test_means if test else _control_means)
    var = 0.0 if mean == 0.0 and draw(st.booleans()) else (None if mean == 0.0 else draw(_vars))
    return mean, var, draw(_ns)


@st.composite
def _valid(draw):
    hour, metric = draw(_hours), draw(_metrics)
    test, control = draw(_group_values(test=True)), draw(_group_values(test=False))
    how = draw(st.sampled_from(["built", "unpickled", "numpy"]))
    if how == "built":
        item = HourlyReading(ARM, hour, metric, GroupStats(*test), GroupStats(*control))
    elif how == "unpickled":
        item = unvalidated(ARM, hour, metric, test, control)
    else:
        item = unvalidated(ARM, hour, metric, (np.float64(test[0]), test[1], test[2]), control)
    return Labelled(item, True, "valid")


_UNSET = object()


def _bad_reading(kind, hour=_UNSET, metric=_UNSET, test=_UNSET, control=_UNSET, arm=ARM):
    """An unvalidated reading labelled invalid; the fields given replace random valid ones."""
    return st.builds(
        lambda h, m, t, c: Labelled(unvalidated(arm, h, m, t, c), False, kind),
        _hours if hour is _UNSET else st.just(hour),
        _metrics if metric is _UNSET else st.just(metric),
        _group_values(test=True) if test is _UNSET else test,
        _group_values(test=False) if control is _UNSET else control,
    )


def _with(values, **changes):
    """A strategy of ``(mean, var, n)`` with some of them replaced."""
    index = {"mean": 0, "var": 1, "n": 2}

    def change(triple):
        out = list(triple)
        for name, value in changes.items():
            out[index[name]] = value
        return tuple(out)

    return values.map(change)


_test_values = _group_values(test=True)
_control_values = _group_values(test=False)
_odd_values = st.sampled_from([math.nan, math.inf, -math.inf, "1.0", None, True, 10**400, [1.0]])


def _invalid():
    """One invalid item of every kind the checks know."""
    return st.one_of(
        st.sampled_from([None, "views", 3, {"hour": 3, "metric": "views"}, 2.5]).map(
            lambda x: Labelled(x, False, "not_a_reading")),
        st.just(Labelled(Exploding(), False, "not_a_reading")),
        _bad_reading("wrong_arm", arm="other-arm"),
        _bad_reading("wrong_arm", arm=None),
        _bad_reading("unknown_metric", metric="clicks"),
        _bad_reading("bad_hour", hour=-1),
        st.sampled_from([True, 3.0, "4", None]).flatmap(
            lambda h: _bad_reading("bad_hour", hour=h)),
        _bad_reading("before_launch", hour=FIRST_HOUR - 1),
        st.sampled_from([LAST_POLL + 1, LAST_POLL + 7, 10**6, 10**30]).flatmap(
            lambda h: _bad_reading("future", hour=h)),
        _odd_values.flatmap(lambda v: _bad_reading("bad_test_mean",
                                                   test=_with(_test_values, mean=v))),
        _odd_values.flatmap(lambda v: _bad_reading("bad_control_mean",
                                                   control=_with(_control_values, mean=v))),
        _odd_values.filter(lambda v: v is not None).flatmap(
            lambda v: _bad_reading("bad_var", test=_with(_test_values, var=v))),
        st.sampled_from([0, -5, True, 2.0, "10", None, 2**60]).flatmap(
            lambda n: _bad_reading("bad_n", control=_with(_control_values, n=n))),
        _bad_reading("negative_var", control=_with(_control_values, var=-0.5)),
        st.sampled_from([-1.0, -0.98, -0.485, 0.0]).flatmap(
            lambda m: _bad_reading("negative_control", control=_with(_control_values, mean=m))),
        st.sampled_from([-1.0, -1e-9]).flatmap(
            lambda m: _bad_reading("negative_test", test=_with(_test_values, mean=m))),
        _bad_reading("zero_test_with_variance", test=st.just((0.0, 0.3, 20))),
        _bad_reading("overflowing_delta", test=st.just((1e308, 1.0, 10)),
                     control=st.just((1e-10, 1.0, 10))),
        _bad_reading("missing_group", test=st.just(None)),
        st.builds(lambda h, m: Labelled(InvalidReading(ARM, {"hour": h, "metric": m,
                                                             "test_mean": math.nan},
                                                       "'test_mean' must be finite"),
                                        False, "invalid_row"), _hours, _metrics),
    )


@st.composite
def _mix(draw, with_data_end: bool):
    data_end = LAST_VALID_HOUR + 1 if with_data_end else None
    # two thirds valid (flatmap keeps one_of from weighting each invalid kind like a valid one)
    item = st.integers(0, 2).flatmap(lambda k: _invalid() if k == 0 else _valid())
    pool = draw(st.lists(item, min_size=1, max_size=24))
    if data_end is not None:
        pool += draw(st.lists(_bad_reading("after_stop", hour=data_end + draw(
            st.integers(0, 3))), max_size=2))
    batches = []
    now = FIRST_POLL
    for _ in range(draw(st.integers(1, 5))):
        now = draw(st.integers(now, LAST_POLL))
        idx = draw(st.lists(st.integers(0, len(pool) - 1), min_size=0, max_size=2 * len(pool)))
        batches.append((now, tuple(idx)))
    # every item is fetched at least once, in some batch
    seen = {i for _, idx in batches for i in idx}
    missing = [i for i in range(len(pool)) if i not in seen]
    if missing:
        now_last, idx_last = batches[-1]
        batches[-1] = (now_last, idx_last + tuple(draw(st.permutations(missing))))
    return ReadingMix(ARM, METRICS, FIRST_HOUR, data_end, tuple(pool), tuple(batches))


def reading_mixes() -> st.SearchStrategy[ReadingMix]:
    """Fetch histories of one arm: the reusable Hypothesis strategy.

    Each :class:`ReadingMix` has up to 24 distinct items (about two thirds valid
    readings, some built normally, some as unpickling builds them, some with
    ``numpy.float64`` means; the rest invalid of every kind: not a reading at
    all or an object whose every method raises, wrong arm label, unknown
    metric, bad or negative hour, before launch, in the future, after the arm
    stopped (when ``data_end`` is set), NaN/inf/str/None/bool/huge means and
    variances, bad unit counts, negative variance, control mean <= 0, test
    mean < 0, a test mean of 0 with a variance, an overflowing ratio, a
    missing group, and :class:`~hz_ray.records.InvalidReading` rows). Valid
    readings share few keys and values, so duplicates and restatements of the
    same ``(metric, hour)`` are common; the items are fetched in 1-5 batches
    of random subsets in random order (re-fetches included), at polls
    ``now_hour`` in ``[8, 13]`` that never decrease. No rule depends on the
    poll time for these items (future hours lie beyond the last poll), so the
    labels are exact whatever the batching.

    Returns:
        The strategy; pair it with :func:`expected_outcome`.
    """
    return st.booleans().flatmap(_mix)


def expected_outcome(mix: ReadingMix) -> tuple[dict[tuple[str, int], HourlyReading], Counter]:
    """The oracle: what the feed and the ledger must make of a mix.

    Returns:
        ``(kept, rejected)``: ``kept`` maps each key ``(metric, hour)`` to the
        first valid reading of it in fetch order (its value is what the ledger
        must hold); ``rejected`` counts the distinct rejections due, by
        ``(payload as JSON, what)``: every distinct invalid item, and every
        distinct valid reading that restates a kept key with other values, once.
    """
    kept: dict[tuple[str, int], tuple] = {}
    first: dict[tuple[str, int], HourlyReading] = {}
    due: set[tuple[str, str]] = set()
    for _, idx in mix.batches:
        for i in idx:
            labelled = mix.items[i]
            item = labelled.item
            if isinstance(item, InvalidReading):
                due.add((json.dumps(to_payload(item.payload), sort_keys=True), item.reason))
                continue
            if not labelled.valid:
                due.add((json.dumps(reading_payload(item), sort_keys=True), "reading"))
                continue
            key = (item.metric, item.hour)
            values = _values(item)
            if key not in kept:
                kept[key], first[key] = values, item
            elif kept[key] != values:
                due.add((json.dumps(reading_payload(item), sort_keys=True), "reading"))
    return first, Counter(due)


def _values(reading):
    return tuple(float(getattr(g, f)) if f == "mean" else getattr(g, f)
                 for g in (reading.test, reading.control) for f in ("mean", "var", "n"))


# --------------------------------------------------------------------- properties


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reading_mixes())
def test_feed_then_ledger_keeps_every_first_valid_value_and_reports_every_bad_one(mix):
    feed = ArmFeed(mix.arm_id, mix.metrics, mix.first_hour, late_data_hours=24)
    feed.data_end = mix.data_end
    ledger = Ledger(mix.metrics, var_floor=1e-6)
    ledger.register_arm(mix.arm_id, {"w": 1.0})
    rejections = []
    for now, items in mix.fetches():
        deltas, bad = feed.absorb(items, now_hour=now)
        rejections += bad
        result = ledger.ingest(deltas)
        assert result.rejected == ()  # the feed let nothing through that the ledger refuses
    kept, due = expected_outcome(mix)
    # no valid reading is lost, no invalid value is ingested: exactly the first valid values
    got = {(d.metric, d.hour): d for m in mix.metrics for d in ledger.deltas(mix.arm_id, m)}
    assert got == {key: reading_to_delta(r) for key, r in kept.items()}
    # the cursor counts only valid hours
    complete = {h for h in {k[1] for k in kept} if all((m, h) in kept for m in mix.metrics)}
    assert feed.hours_complete == len(complete)
    # every bad item is reported, each distinct one exactly once, in strict JSON
    reported = Counter()
    for rejection in rejections:
        assert isinstance(rejection.reason, str) and rejection.reason
        text = json.dumps(rejection.payload, sort_keys=True, allow_nan=False)
        is_row = any(isinstance(x.item, InvalidReading) and rejection.reason == x.item.reason
                     and text == json.dumps(to_payload(x.item.payload), sort_keys=True)
                     for x in mix.items)
        reported[(text, rejection.reason if is_row else "reading")] += 1
    assert reported == due


odd_objects = st.one_of(
    st.none(), st.booleans(), st.integers(), st.just(10**400), st.floats(), st.text(max_size=8),
    st.binary(max_size=4), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.floats(), max_size=3),
    st.just(Exploding()), st.from_type(type),
)


@st.composite
def odd_readings(draw):
    """An HourlyReading-typed object whose fields may be anything."""
    field = st.one_of(odd_objects, _hours, _metrics, st.just(ARM))
    group = st.one_of(odd_objects, st.tuples(st.one_of(odd_objects, _test_means),
                                             st.one_of(odd_objects, _vars),
                                             st.one_of(odd_objects, _ns)))
    return unvalidated(draw(field), draw(field), draw(field), draw(group), draw(group))


@settings(max_examples=300, deadline=None)
@given(st.one_of(odd_objects, odd_readings(), _valid().map(lambda x: x.item),
                 _invalid().map(lambda x: x.item)))
def test_check_reading_and_check_delta_never_raise(item):
    reason = check_reading(item, arm_id=ARM, metrics=METRICS, first_hour=FIRST_HOUR,
                           now_hour=LAST_POLL, data_end=None, oldest_hour=None)
    assert reason is None or (isinstance(reason, str) and reason)
    if reason is None:
        delta = reading_to_delta(item)
        assert math.isfinite(delta.mean) and check_delta(
            delta, known_arms={ARM}, metrics=METRICS) is None
    json.dumps(reading_payload(item), allow_nan=False)
    assert check_delta(item, known_arms={ARM}, metrics=METRICS) is not None


@st.composite
def odd_deltas(draw):
    """An HourlyDelta-typed object whose fields may be anything."""
    out = object.__new__(HourlyDelta)
    for name, good in (("arm_id", st.just(ARM)), ("metric", _metrics), ("hour", _hours),
                       ("mean", st.floats(-1, 1)), ("var", _vars), ("n", _ns),
                       ("control_var", st.none())):
        if draw(st.integers(0, 9)) == 0:
            continue  # the attribute is missing
        object.__setattr__(out, name, draw(st.one_of(good, odd_objects)))
    return out


@settings(max_examples=300, deadline=None)
@given(odd_deltas())
def test_check_delta_never_raises_and_agrees_with_the_ledger(item):
    reason = check_delta(item, known_arms={ARM}, metrics=METRICS)
    assert reason is None or (isinstance(reason, str) and reason)
    ledger = Ledger(METRICS, var_floor=1e-6)
    ledger.register_arm(ARM, {"w": 1.0})
    result = ledger.ingest([item])
    assert (len(result.accepted) == 1) == (reason is None)
    if result.rejected:
        json.dumps(result.rejected[0].raw, allow_nan=False)
