"""The soak report's reading of the hourly monitor: central-actor lives and latency bursts."""

from __future__ import annotations

import pytest

from benchmarks.soak_report import _latency_ms, central_lives


def _row(hour, pid, mb):
    return {"hour": hour, "central_pid": pid, "central_rss": None if mb is None else mb * 1e6}


def test_each_central_process_is_one_life_with_the_hours_down_before_it():
    samples = [_row(0.0, 11, 400), _row(1.0, 11, 410), _row(2.0, 11, 460), _row(3.0, 11, 450),
               _row(4.0, None, None), _row(5.0, None, None),        # killed, restarting
               _row(6.0, 22, 470), _row(7.0, 22, 480), _row(8.5, 22, 520)]
    registered = [0, 0, 2, 5, 6, 7]
    lives = central_lives(samples, registered)
    assert [(x["pid"], x["from_hour"], x["down_hours"]) for x in lives] == [
        (11, 0.0, None), (22, 6.0, 2.0)]
    assert [x["arms"] for x in lives] == [2, 5]          # registered by each life's start
    assert [(x["rss_first_mb"], x["rss_2h_mb"], x["rss_max_mb"], x["rss_last_mb"])
            for x in lives] == [(400.0, 460.0, 460.0, 450.0), (470.0, 520.0, 520.0, 520.0)]
    assert [x["last_hour"] for x in lives] == [3.0, 8.5]


def test_a_life_shorter_than_two_hours_has_no_two_hour_reading():
    lives = central_lives([_row(0.0, 1, 100), _row(1.0, 1, 120)], [])
    assert lives[0]["rss_2h_mb"] is None and lives[0]["rss_last_mb"] == 120.0


def test_latency_summary_is_nearest_rank_in_ms():
    values = [k / 1000 for k in range(100, 0, -1)]  # 1..100 ms, shuffled order
    got = _latency_ms(values)
    assert got["n"] == 100 and got["p50"] == pytest.approx(50.0)
    assert got["p99"] == pytest.approx(99.0)
    assert _latency_ms([]) == {"n": 0, "p50": None, "p99": None}
