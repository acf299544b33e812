from __future__ import annotations

from hz_ray.config import ArmsSpec
from hz_ray.lifecycle import stop_reason


def test_arm_stops_when_hours_are_up():
    spec = ArmsSpec(slots=2, min_hours=3, max_hours=10)
    assert stop_reason(spec, 9.0, 9, 0.9) is None
    assert stop_reason(spec, 10.0, 9, 0.9) == "max_hours"


def test_guardrail_stop_needs_min_hours_and_low_probability():
    spec = ArmsSpec(slots=2, min_hours=3, max_hours=10, guardrail_stop_probability=0.05)
    assert stop_reason(spec, 5.0, 2, 0.01) is None
    assert stop_reason(spec, 5.0, 3, 0.01) == "guardrail"
    assert stop_reason(spec, 5.0, 3, 0.2) is None
    assert stop_reason(spec, 5.0, 3, None) is None
    off = ArmsSpec(slots=2, min_hours=3, max_hours=10, guardrail_stop_probability=0.0)
    assert stop_reason(off, 5.0, 3, 0.0) is None


def test_contender_stop_needs_min_hours_and_a_small_pick_share():
    spec = ArmsSpec(slots=2, min_hours=3, max_hours=10, contender_stop_share=0.02)
    assert stop_reason(spec, 5.0, 2, 0.9, 0.0) is None  # too young
    assert stop_reason(spec, 5.0, 3, 0.9, 0.01) == "not_contender"
    assert stop_reason(spec, 5.0, 3, 0.9, 0.02) is None
    assert stop_reason(spec, 5.0, 3, 0.9, None) is None  # unknown share: keep running
    # A harmful arm is reported as a guardrail stop, whatever its share.
    assert stop_reason(spec, 5.0, 3, 0.01, 0.0) == "guardrail"
    off = ArmsSpec(slots=2, min_hours=3, max_hours=10, contender_stop_share=0.0)
    assert stop_reason(off, 5.0, 3, 0.9, 0.0) is None
