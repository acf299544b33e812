"""Arm ids are checked once, by hz_ray.records.check_arm_id, wherever they enter."""

from __future__ import annotations

import pytest

from hz_ray.errors import InputDataError
from hz_ray.records import (
    ARM_ID_MAX_CHARS,
    GroupStats,
    HourlyDelta,
    HourlyReading,
    arm_id_for,
    check_arm_id,
)

GOOD = ["arm-1", "a", "A.b_c-9", "control", arm_id_for("feed-vm-7f3a", 3, 2),
        "x" * ARM_ID_MAX_CHARS, "a..b"]
BAD = ["", ".", "..", "../x", ".hidden", "a/b", "a\\b", "a\0b", "a\nb", "a\tb", "a b",
       "arm\x7f", "caf\u00e9", "\u0661\u0662", "x" * (ARM_ID_MAX_CHARS + 1), None, 3, b"arm-1"]


@pytest.mark.parametrize("arm_id", GOOD)
def test_safe_ids_come_back_unchanged(arm_id):
    assert check_arm_id(arm_id) is arm_id


@pytest.mark.parametrize("arm_id", BAD)
def test_unsafe_ids_raise_a_typed_error_naming_field_value_and_fix(arm_id):
    with pytest.raises(InputDataError) as info:
        check_arm_id(arm_id, field="backend.arm_id")
    error = info.value
    assert error.message.startswith("'backend.arm_id' must be a non-empty string")
    assert repr(arm_id)[:40] in error.message
    assert "arm_id_for" in error.hint


def test_a_very_long_id_is_shown_cut_in_the_message():
    with pytest.raises(InputDataError) as info:
        check_arm_id("y" * 100_000)
    assert len(str(info.value)) < 600 and "yyy..." in str(info.value)


def stats():
    return GroupStats(1.0, 1.0, 10)


@pytest.mark.parametrize("arm_id", ["a\0b", "../x", "a/b", ""])
def test_readings_and_deltas_refuse_unsafe_ids(arm_id):
    # A NUL id used to be accepted here and to fail later as a bare ValueError
    # ("embedded null byte") when the file-drop backend made a file name of it.
    with pytest.raises(InputDataError, match="'arm_id' must be"):
        HourlyReading(arm_id, 0, "views", stats(), stats())
    with pytest.raises(InputDataError, match="'arm_id' must be"):
        HourlyDelta(arm_id, "views", 0, 0.01, 1e-4, 10)


def test_readings_and_deltas_keep_safe_ids():
    arm = arm_id_for("job-1", 0, 0)
    assert HourlyReading(arm, 0, "views", stats(), stats()).arm_id == arm
    assert HourlyDelta(arm, "views", 0, 0.01, 1e-4, 10).key == (arm, "views", 0)
