"""The soak's audit and tables (issue 13): from the run folder, the journal and the platform.

Readings are counted by key ``(arm_id, metric, hour)``: *published* are the keys
the platform returned in any fetch (valid or not, bad readings included);
*accepted* the keys with a ``delta_accepted`` record in the run's Parquet log;
*quarantined* the published keys never accepted that have a ``delta_rejected``
record. ``published = accepted + quarantined`` exactly when nothing is lost
(``lost``) and nothing accepted came from nowhere (``phantom``); ``ingested``
counts accepted records whose values are not the platform's valid reading of
their key (a bad reading that got in). Arms: the journal's audit (launches and
stops that took effect on the platform, from every process) and the platform's
own live set.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hz_ray.backends import make_world
from hz_ray.backends.journal import audit_journal
from hz_ray.storage import EventLog

#: Samples in one monitor hour from which the hour counts as a burst (slots launching at once).
BURST_SAMPLES = 16
Key = tuple[str, str, int]


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(t) for t in path.read_text().splitlines() if t.strip()]


def _rejected_key(row: Mapping[str, Any]) -> Key | None:
    if row.get("payload_json"):
        try:
            p = json.loads(row["payload_json"])
        except ValueError:
            return None
        if isinstance(p, dict) and {"arm_id", "metric", "hour"} <= set(p):
            try:
                return str(p["arm_id"]), str(p["metric"]), int(p["hour"])
            except (TypeError, ValueError):
                return None
    if row.get("arm_id") is None or row.get("metric") is None or row.get("hour") is None:
        return None
    return str(row["arm_id"]), str(row["metric"]), int(row["hour"])


def _day(hour: float, days: int) -> int:
    return min(max(0, int(hour // 24)), days - 1)


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


@functools.cache
def soak_world() -> Any:
    """The soak's value-model world (built once: its true deltas are a pure function)."""
    return make_world("value_model")


def gain(params: Mapping[str, float] | None) -> float:
    """True objective gain (%) of weights on the value-model world (0 for the control)."""
    if not params:
        return 0.0
    world = soak_world()
    return 100.0 * world.default_problem.objective_value(world.true_deltas(dict(params)))


def analyse(folder: Path, report: Mapping[str, Any], schedule: Sequence[Any], *, seed: int,
            faulty: bool, hours: int, slots: int, codes: Sequence[int], wall_s: float,
            lives: int, startup_s: float | None = None,
            seconds_per_hour: float | None = None) -> dict[str, Any]:
    """Every figure of one soak run (JSON-able), with ``ok`` when every invariant holds."""
    days = max(1, math.ceil(hours / 24))
    events = EventLog(folder / "run" / "log").read().to_pylist()
    accepted: Counter[Key] = Counter()
    values: dict[Key, tuple[Any, ...]] = {}
    rejected: set[Key] = set()
    rejected_records = 0
    for e in events:
        if e["kind"] == "delta_accepted":
            key = (e["arm_id"], e["metric"], int(e["hour"]))
            accepted[key] += 1
            values[key] = (e["mean"], e["var"], e["n"])
        elif e["kind"] == "delta_rejected":
            rejected_records += 1
            key = _rejected_key(e)
            if key is not None:
                rejected.add(key)
    published = {(a, m, int(h)) for a, m, h in report["published"]}
    truth = {(a, m, int(h)): (mean, var, n) for a, m, h, mean, var, n in report["returned"]}
    quarantined = (published - set(accepted)) & rejected
    lost = published - set(accepted) - quarantined
    phantom = set(accepted) - published
    ingested = [k for k, v in values.items() if truth.get(k) != v]
    twice = [k for k, c in accepted.items() if c > 1]

    per_day: list[dict[str, Any]] = [defaultdict(int) for _ in range(days)]
    for name, keys in (("published", published), ("accepted", set(accepted)),
                       ("quarantined", quarantined), ("lost", lost)):
        for k in keys:
            per_day[_day(k[2], days)][name] += 1

    audit = audit_journal(folder / "calls.jsonl")
    journal = _lines(folder / "calls.jsonl")
    first_launch: dict[str, float] = {}
    for r in journal:
        if r["call"] == "launch" and r["outcome"] in ("ok", "hang") and r["job_hour"] is not None:
            first_launch.setdefault(r["arm_id"], r["job_hour"])
    for hour in first_launch.values():
        per_day[_day(hour, days)]["launches"] += 1
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("result-*.json"))]
    final = results[-1] if results else {}
    completed = bool(final.get("completed"))

    faults = _faults(folder, report, journal, audit.orphans, final, completed, values, truth)
    for f in faults["items"]:
        d = per_day[_day(f["hour"], days)]
        d["faults"] += 1
        d["survived"] += int(f["survived"])

    fired = {f["fid"] for f in _lines(folder / "faults.jsonl")} \
        | {f["fid"] for f in report["fired"]}
    # scheduled, never injected: a kill due while no driver ran, a call that never came
    skipped = Counter(f.kind for f in schedule if f.fid not in fired)

    samples = _lines(folder / "samples.jsonl")
    rss = {"central": [(s["hour"], s["central_rss"]) for s in samples if s["central_rss"]],
           "worker": [(s["hour"], s["worker_rss"]) for s in samples if s["worker_rss"]]}
    for who, series in rss.items():
        for hour, value in series:
            per_day[_day(hour, days)][f"{who}_rss_mb"] = round(value / 2**20, 1)
    growth = {who: _growth(series) for who, series in rss.items()}
    monitor = _monitor_figures(folder, events)
    run = {
        "seed": seed, "faulty": faulty, "hours": hours, "slots": slots, "days": days,
        "lives": lives, "exit_codes": list(codes), "completed": completed,
        "wall_s": round(wall_s, 1), "s_per_day": round(wall_s / (hours / 24), 1),
        "startup_s": None if startup_s is None else round(startup_s, 1),
        "clock_s_per_day": None if seconds_per_hour is None else 24 * seconds_per_hour,
        "tick_lag_max_s": max((round(w["tick_lag_max_s"], 2) for w in final.get("workers", [])
                               if w.get("tick_lag_max_s") is not None), default=None),
        "published": len(published), "accepted": len(accepted),
        "quarantined": len(quarantined), "lost": len(lost), "phantom": len(phantom),
        "ingested": len(ingested), "accepted_twice": len(twice),
        "rejected_records": rejected_records, "lost_sample": sorted(lost)[:5],
        "launched": len(audit.launched), "stopped": len(audit.stopped),
        "orphans": len(audit.orphans), "platform_live_at_end": len(report["live"]),
        "max_live_journal": audit.max_live, "max_live_platform": report["max_live"],
        "calls_after_stop": len(audit.calls_after_stop),
        "faults": faults["summary"], "faults_injected": len(faults["items"]),
        "faults_survived": sum(f["survived"] for f in faults["items"]),
        "pending_bad_readings": len(report["pending"]),
        "faults_skipped": dict(sorted(skipped.items())),
        "rss_growth_after_day1": growth,
        "rss_mb_last": {w: round(s[-1][1] / 2**20, 1) if s else None for w, s in rss.items()},
        "sample_p50_ms": monitor["sample_ms"]["p50"],
        "sample_p99_ms": monitor["sample_ms"]["p99"],
        "samples": monitor["sample_ms"]["n"],
        "sample_ms_in_bursts": monitor["sample_ms_in_bursts"],
        "sample_ms_calm": monitor["sample_ms_calm"], "central_lives": monitor["central_lives"],
        "recommended": final.get("recommended"), "gain_pct": gain(final.get("params")),
        "arms": final.get("arms"), "per_day": [dict(d) for d in per_day],
    }
    run["ok"] = bool(completed and not lost and not phantom and not ingested and not twice
                     and run["orphans"] == 0 and run["platform_live_at_end"] == 0
                     and run["max_live_platform"] <= slots
                     and run["faults_survived"] == run["faults_injected"]
                     and run["published"] == run["accepted"] + run["quarantined"])
    return run


def _latency_ms(values: Sequence[float]) -> dict[str, Any]:
    """Count, p50 and p99 (ms) of sample latencies (s)."""
    return {"n": len(values),
            "p50": None if not values else round(1000 * _pct(values, 0.5), 1),
            "p99": None if not values else round(1000 * _pct(values, 0.99), 1)}


def central_lives(samples: Sequence[Mapping[str, Any]],
                  registered: Sequence[int]) -> list[dict[str, Any]]:
    """The central actor's lives as the hourly monitor saw them (one per process id).

    Each life: the job hour of its first sample, the job hours before it with no
    central actor (it was restarting), the arms registered by then, and its RSS
    (MB) at its first sample, at its first sample two or more hours in, its
    largest, and at its last. A leak shows as RSS growing within a life beyond what a fresh
    life restored with the same arms starts at; RSS that follows the arms does not.

    Args:
        samples: The monitor's rows (``hour``, ``central_pid``, ``central_rss`` in bytes).
        registered: The registration hour of every arm in the log, sorted.
    """
    lives: list[dict[str, Any]] = []
    down_since: float | None = None
    for s in samples:
        pid, rss = s.get("central_pid"), s.get("central_rss")
        if pid is None or not rss:
            down_since = s["hour"] if down_since is None else down_since
            continue
        mb = round(rss / 1e6, 1)
        if not lives or lives[-1]["pid"] != pid:
            lives.append({"pid": pid, "from_hour": round(s["hour"], 1),
                          "down_hours": None if down_since is None
                          else round(s["hour"] - down_since, 1),
                          "arms": sum(1 for h in registered if h <= s["hour"]),
                          "rss_first_mb": mb, "rss_2h_mb": None, "rss_max_mb": mb,
                          "rss_last_mb": mb, "last_hour": round(s["hour"], 1)})
        life = lives[-1]
        if life["rss_2h_mb"] is None and s["hour"] >= life["from_hour"] + 2:
            life["rss_2h_mb"] = mb
        life["rss_last_mb"], life["last_hour"] = mb, round(s["hour"], 1)
        life["rss_max_mb"] = max(life["rss_max_mb"], mb)
        down_since = None
    return lives


def _growth(series: Sequence[tuple[float, int]]) -> float | None:
    """Growth of the RSS after the first day: max later / the last of day 1, minus 1."""
    first = [v for h, v in series if h < 24]
    later = [v for h, v in series if h >= 24]
    if not first or not later:
        return None
    return round(max(later) / first[-1] - 1, 4)


def _faults(folder: Path, report: Mapping[str, Any], journal: Sequence[Mapping[str, Any]],
            orphans: Sequence[str], final: Mapping[str, Any], completed: bool,
            values: Mapping[Key, Any], truth: Mapping[Key, Any]) -> dict[str, Any]:
    """Each injected fault with whether the job survived it (its own test per kind)."""
    items = []
    ok_after: dict[tuple[str, str], float] = {}
    for r in journal:
        if r["outcome"] in ("ok", "hang"):
            ok_after[(r["call"], r["arm_id"])] = r["time_s"]
    final_pids = {w["slot"]: w["pid"] for w in final.get("workers", [])}
    for f in _lines(folder / "faults.jsonl"):
        kind = f["kind"]
        if kind == "backend":
            label = f"{f['call']} {f['how']}"
            later = ok_after.get((f["call"], f["arm_id"]), 0) >= f["time_s"] - 1e-3
            # a fetch or launch need not succeed again if the slot moved on (the arm ended)
            survived = completed and f["arm_id"] not in orphans and (
                later or f["call"] in ("fetch", "launch"))
        elif kind == "worker_kill":
            label = "arm-worker kill"
            survived = completed and f["outcome"] == "killed" \
                and final_pids.get(f["slot"]) not in (None, f["pid"])
        elif kind == "central_kill":
            label = "central-actor kill"
            survived = completed and f["outcome"] == "killed" \
                and final.get("central_pid") != f["pid"]
        else:
            label = {"node_kill": "worker-node kill", "driver_kill": "driver kill + resume"}[kind]
            survived = completed and f["outcome"] == "killed"
        items.append({"label": label, "hour": f["hour"], "survived": bool(survived)})
    for f in report["fired"]:
        # its key: not accepted, or accepted with the platform's valid values only
        key = tuple(f["key"][:2]) + (int(f["key"][2]),) if f.get("key") else None
        clean = key is not None and (key not in values or truth.get(key) == values[key])
        items.append({"label": f"bad reading: {f['how']}", "hour": f["hour"],
                      "survived": completed and clean})
    summary: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for it in items:
        summary[it["label"]][0] += 1
        summary[it["label"]][1] += int(it["survived"])
    return {"items": items, "summary": dict(sorted(summary.items()))}


# ------------------------------------------------------------------ tables
def _md(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def render(runs: Sequence[Mapping[str, Any]], args: argparse.Namespace, argv: str) -> str:
    """The Markdown tables of a soak: per run, per day and in total; the paired gains."""
    parts = [f"## Soak: {args.hours} job hours, {args.slots} slots, "
             f"{args.seconds_per_hour} s/hour",
             f"`benchmarks/soak.py {argv}` on {time.strftime('%Y-%m-%d')}, "
             f"{platform.machine()}, Python {platform.python_version()}."]
    for r in runs:
        parts.append(f"### Seed {r['seed']}, {'with faults' if r['faulty'] else 'fault-free'}: "
                     f"{'OK' if r['ok'] else 'FAILED'}; "
                     f"{r['wall_s']} s wall in all ({r['s_per_day']} s per simulated day, "
                     f"of which the job clock's {r['clock_s_per_day']} s per day; cluster and "
                     f"actors up in {r['startup_s']} s), {r['lives']} driver lives, exit codes "
                     f"{r['exit_codes']}, latest worker tick {r['tick_lag_max_s']} s")
        rows = []
        for day, d in enumerate(r["per_day"]):
            rows.append([day + 1, d.get("published", 0), d.get("accepted", 0),
                         d.get("quarantined", 0), d.get("lost", 0), d.get("launches", 0),
                         f"{d.get('faults', 0)} / {d.get('survived', 0)}",
                         d.get("central_rss_mb"), d.get("worker_rss_mb")])
        rows.append(["**total**", r["published"], r["accepted"], r["quarantined"], r["lost"],
                     r["launched"], f"{r['faults_injected']} / {r['faults_survived']}",
                     r["rss_mb_last"]["central"], r["rss_mb_last"]["worker"]])
        parts.append(_md(["day", "published", "accepted", "quarantined", "lost",
                          "arms launched", "faults injected / survived",
                          "central RSS MB (end of day)", "worker RSS MB (slot 0)"], rows))
        parts.append(_md(
            ["accepted twice", "phantom", "bad ingested", "rejected records", "launched",
             "stopped", "orphans", "live at end", "max live (platform / journal)", "slots",
             "RSS growth after day 1 (central / worker)", "sample p50 / p99 ms",
             "recommended", "true gain %"],
            [[r["accepted_twice"], r["phantom"], r["ingested"], r["rejected_records"],
              r["launched"], r["stopped"], r["orphans"], r["platform_live_at_end"],
              f"{r['max_live_platform']} / {r['max_live_journal']}", r["slots"],
              f"{r['rss_growth_after_day1']['central']} / {r['rss_growth_after_day1']['worker']}",
              f"{r['sample_p50_ms']} / {r['sample_p99_ms']}", r["recommended"],
              round(r["gain_pct"], 3)]]))
        lives = r.get("central_lives") or []
        if lives:
            parts.append("Central actor, life by life (a new process after each kill; RSS in "
                         "MB, 10^6 bytes):")
            parts.append(_md(["life", "from hour", "hours down before", "arms registered",
                              "RSS first", "RSS 2 h in", "RSS max", "RSS last (hour)"],
                             [[i + 1, x["from_hour"], x["down_hours"], x["arms"],
                               x["rss_first_mb"], x["rss_2h_mb"], x["rss_max_mb"],
                               f"{x['rss_last_mb']} ({x['last_hour']})"]
                              for i, x in enumerate(lives)]))
        b, c = r.get("sample_ms_in_bursts"), r.get("sample_ms_calm")
        split = [f"{label}: n {x['n']}, p50 {x['p50']} ms, p99 {x['p99']} ms"
                 for label, x in ((f"in hours when {BURST_SAMPLES} or more slots sampled", b),
                                  ("in the other hours", c)) if x and x.get("n")]
        if split:
            parts.append("Sample latency " + "; ".join(split) + ".")
        if r["faults"]:
            parts.append(_md(["fault", "injected", "survived"],
                             [[k, v[0], v[1]] for k, v in r["faults"].items()]))
        if r["faults_skipped"]:
            parts.append("Scheduled but never injected (due while no driver ran, or no "
                         f"matching call came): {r['faults_skipped']}.")
    parts.extend(_paired_gains(runs))
    return "\n\n".join(parts) + "\n"


def _paired_gains(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The paired-gains table (faulty vs fault-free run of each seed) and its summary line.

    The cost of faults in all is ``1 - mean(gain with faults) / mean(gain fault-free)`` over
    the pairs (shown only when the fault-free mean is positive), beside the mean paired
    difference and its standard error (percentage points of true gain).
    """
    clean = {r["seed"]: r for r in runs if not r["faulty"]}
    paired = [(r, clean[r["seed"]]) for r in runs if r["faulty"] and r["seed"] in clean]
    if not paired:
        return []
    rows = [[a["seed"], round(a["gain_pct"], 3), round(b["gain_pct"], 3),
             round(a["gain_pct"] - b["gain_pct"], 3),
             "" if b["gain_pct"] <= 0 else f"{100 * (1 - a['gain_pct'] / b['gain_pct']):.1f}%"]
            for a, b in paired]
    diffs = [a["gain_pct"] - b["gain_pct"] for a, b in paired]
    mean_faulty = sum(a["gain_pct"] for a, _ in paired) / len(paired)
    mean_clean = sum(b["gain_pct"] for _, b in paired) / len(paired)
    mean_diff = sum(diffs) / len(diffs)
    se = (math.sqrt(sum((d - mean_diff) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
          if len(diffs) > 1 else float("nan"))
    cost = (f"{100 * (1 - mean_faulty / mean_clean):.1f}%" if mean_clean > 0
            else "undefined (fault-free mean gain <= 0)")
    return ["### Paired gains (faults vs fault-free, same seed)",
            _md(["seed", "gain % with faults", "gain % fault-free", "difference (points)",
                 "cost of faults"], rows),
            f"{len(paired)} pairs: mean gain {mean_faulty:.3f}% with faults, {mean_clean:.3f}% "
            f"fault-free; mean paired difference {mean_diff:+.3f} points (s.e. {se:.3f}); "
            f"cost of faults in all: {cost}."]


def _monitor_figures(folder: Path, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The central actor's lives and the sample latency, all and split by bursts.

    Args:
        folder: A run folder (its ``samples.jsonl`` and ``latency.jsonl``).
        events: The job's log events (at least ``kind`` and ``hour``).
    """
    registered = sorted(int(e["hour"]) for e in events if e["kind"] == "arm_registered")
    hours = _lines(folder / "latency.jsonl")
    return {
        "central_lives": central_lives(_lines(folder / "samples.jsonl"), registered),
        "sample_ms": _latency_ms([x for s in hours for x in s["sample_s"]]),
        "sample_ms_in_bursts": _latency_ms([x for s in hours
                                            if len(s["sample_s"]) >= BURST_SAMPLES
                                            for x in s["sample_s"]]),
        "sample_ms_calm": _latency_ms([x for s in hours if len(s["sample_s"]) < BURST_SAMPLES
                                       for x in s["sample_s"]]),
    }


def folder_summary(folder: Path) -> dict[str, Any]:
    """The central actor's lives, the sample latency split and every hourly readout (with its
    true gain) of one run folder, no platform report needed:
    ``python benchmarks/soak_report.py FOLDER...``."""
    events = EventLog(folder / "run" / "log").read().select(
        ["kind", "hour", "arm_id", "params_json"]).to_pylist()
    readouts = [{"hour": e["hour"], "arm_id": e["arm_id"],
                 "true_gain_pct": round(gain(json.loads(e["params_json"] or "{}")), 3)}
                for e in events if e["kind"] == "recommendation"]
    return {"folder": folder.name, **_monitor_figures(folder, events), "readouts": readouts}


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        print(json.dumps(folder_summary(Path(name))))
