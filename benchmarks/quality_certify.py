"""What the quality benchmark scores beyond the gain: the yardstick and the calibration.

Two scores of issue 15 live here, apart from the run driver in ``quality.py``:

- The *yardstick*: the gain the job's traffic could certify at all
  (:func:`benchmarks.quality.information_limit`), computed for each (world, seed,
  hours, slots, traffic) a run used and cached in ``<out>/yardsticks.json``, so
  every row reads as "% of optimum" and "% of yardstick".
- The *calibration* of the readout at the arm it picks: at hours 24, 48 and 72,
  ``z = (truth - posterior mean) / posterior sd`` of the objective and of each
  guardrail metric, and whether the central 95% interval (``|z| <= 1.96``)
  covers the truth. A calibrated readout covers it in 95% of (run, hour) picks,
  with z of mean ~0 and sd ~1. The control (no uncertainty) is not a pick.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from hz_ray.outcomes import Z95_ONE_SIDED  # the quantile of the readout's objective_lcb

#: Job hours (elapsed) at which the readout's pick is scored for calibration.
CALIBRATION_HOURS = (24, 48, 72)
#: Two-sided 95% normal quantile: the interval ``mean +- Z95 * sd``.
Z95_TWO_SIDED = 1.959963984540054


def pick_posterior(hours: int, rec: Any, truth: Mapping[str, float], problem: Any) -> dict:
    """One calibration record: the readout's posterior at its pick and the truth there.

    Args:
        hours: Elapsed job hours of the readout.
        rec: The :class:`hz_ray.records.Recommendation` (not the control).
        truth: True relative delta of every metric at the pick.
        problem: The world's ``BenchmarkProblem`` (objective and guardrails).

    Returns:
        ``{"hours", "arm_id", "objective": [mean, sd, truth], "metrics": {m: [mean, sd,
        truth]}}`` for the guardrail metrics; relative deltas (0.01 = +1%).
    """
    sd = (rec.objective_mean - rec.objective_lcb) / Z95_ONE_SIDED
    guard = [*problem.min_deltas, *problem.max_deltas]
    return {"hours": int(hours), "arm_id": rec.arm_id,
            "objective": [float(rec.objective_mean), float(sd),
                          float(problem.objective_value(truth))],
            "metrics": {m: [float(rec.metrics[m].mean), float(rec.metrics[m].sd),
                            float(truth[m])] for m in guard if m in rec.metrics}}


def z_score(mean: float, sd: float, truth: float) -> float | None:
    """``(truth - mean) / sd``; ``None`` for a degenerate sd."""
    return (truth - mean) / sd if sd > 0 and math.isfinite(sd) else None


def coverage(zs: Iterable[float]) -> dict:
    """Coverage of the central 95% interval and the z moments.

    Args:
        zs: z-scores of the truth.

    Returns:
        ``{"n", "covered" (fraction with |z| <= 1.96), "above" (z > 1.96), "below",
        "z_mean", "z_sd"}``; fractions ``None`` when ``n == 0``.
    """
    z = [v for v in zs if v is not None and math.isfinite(v)]
    n = len(z)
    if not n:
        return {"n": 0, "covered": None, "above": None, "below": None,
                "z_mean": None, "z_sd": None}
    return {"n": n, "covered": sum(abs(v) <= Z95_TWO_SIDED for v in z) / n,
            "above": sum(v > Z95_TWO_SIDED for v in z) / n,
            "below": sum(v < -Z95_TWO_SIDED for v in z) / n,
            "z_mean": statistics.fmean(z), "z_sd": statistics.stdev(z) if n > 1 else 0.0}


def calibration_rows(runs: list[dict]) -> list[dict]:
    """Coverage per (world, setting, method, hours): the objective and the guardrails pooled.

    Args:
        runs: Scored runs carrying ``calibration`` records (older runs without are skipped).

    Returns:
        Rows with ``objective`` and ``guardrails`` coverage dicts (see :func:`coverage`)
        ``runs`` (runs with a non-control pick at that hour), and ``shortfall``: the
        median of ``(truth - mean) / truth`` of the objective (> 0: the readout
        understates the gain), ``None`` without a pick whose truth is not ~0.
    """
    objective: dict[tuple, list] = defaultdict(list)
    guard: dict[tuple, list] = defaultdict(list)
    shortfall: dict[tuple, list] = defaultdict(list)
    for r in runs:
        if "error" in r or "readout_of" in r:
            continue
        for rec in r.get("calibration") or ():
            key = (r["world"], r.get("setting", "default"), r["method"], rec["hours"])
            objective[key].append(z_score(*rec["objective"]))
            mean, _sd, truth = rec["objective"]
            if abs(truth) >= 1e-4:  # a relative error of a near-zero truth says nothing
                shortfall[key].append((truth - mean) / truth)
            guard[key] += [z_score(*v) for v in rec["metrics"].values()]
    return [{"world": k[0], "setting": k[1], "method": k[2], "hours": k[3],
             "runs": len(objective[k]), "objective": coverage(objective[k]),
             "guardrails": coverage(guard[k]),
             "shortfall": statistics.median(shortfall[k]) if shortfall[k] else None}
            for k in sorted(objective)]


def calibration_table(rows: list[dict]) -> str:
    """Markdown: coverage of the 95% interval at the pick, z mean and sd, by hour."""
    def cell(c: dict) -> str:
        if not c["n"]:
            return "- | - | -"
        return f"{100 * c['covered']:.0f}% ({100 * c['above']:.0f}% above) | " \
               f"{c['z_mean']:+.2f} | {c['z_sd']:.2f}"

    lines = ["\n### Calibration of the readout at its pick (95% interval)\n",
             "| world | setting | method | hour | picks | objective covered | z mean | z sd "
             "| objective (truth - mean) / truth, median "
             "| guardrails covered | z mean | z sd |", "|" + "---|" * 12]
    for r in rows:
        short = r.get("shortfall")
        lines.append(f"| {r['world']} | {r['setting']} | {r['method']} | {r['hours']} "
                     f"| {r['runs']} | {cell(r['objective'])} "
                     f"| {'-' if short is None else f'{100 * short:+.1f}%'} "
                     f"| {cell(r['guardrails'])} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------- yardstick
def yardstick_key(world: str, seed: int, hours: int, slots: int, traffic: int) -> str:
    """Cache key of one yardstick."""
    return f"{world}:{seed}:{hours}h:{slots}s:{traffic}u"


def load_yardsticks(path: Path) -> dict:
    """The cache, ``{}`` when absent."""
    return json.loads(path.read_text()) if path.exists() else {}


def fill_yardsticks(runs: list[dict], optima: Mapping[str, dict], path: Path,
                    compute: Callable[..., dict], submit: Callable | None = None) -> dict:
    """Compute (and cache in ``path``) the yardstick of every run's scenario not cached.

    Args:
        runs: Runs with ``world``, ``seed``, ``hours``, ``slots``, ``traffic``.
        optima: ``"world:seed"`` -> the true optimum (``params``, ``objective``).
        path: The JSON cache.
        compute: ``information_limit(world, seed, hours, slots, optimum, traffic)``.
        submit: ``pool.submit``-like, to compute in parallel; serial when ``None``.

    Returns:
        The whole cache, key -> ``information_limit``'s answer.
    """
    cache = load_yardsticks(path)
    todo = {}
    for r in runs:
        if "error" in r:
            continue
        key = yardstick_key(r["world"], r["seed"], r["hours"], r["slots"], r["traffic"])
        opt = optima.get(f"{r['world']}:{r['seed']}")
        if key not in cache and key not in todo and opt is not None:
            todo[key] = (r["world"], r["seed"], r["hours"], r["slots"], opt, r["traffic"])
    if submit is None:
        done = {k: compute(*a) for k, a in todo.items()}
    else:
        futures = {k: submit(compute, *a) for k, a in todo.items()}
        done = {k: f.result() for k, f in futures.items()}
    if done:
        cache.update(done)
        path.write_text(json.dumps(cache, indent=1, sort_keys=True))
    return cache


def attach_yardsticks(runs: list[dict], cache: Mapping[str, dict]) -> None:
    """Add ``yardstick_pct``, ``frac_yardstick`` (gain / yardstick) and
    ``best_ran_frac_yardstick`` (best feasible arm that ran / yardstick) to every run."""
    for r in runs:
        if "error" in r:
            continue
        y = cache.get(yardstick_key(r["world"], r["seed"], r["hours"], r["slots"],
                                    r["traffic"]))
        if y is None:
            continue
        r["yardstick_pct"] = y["certifiable_gain_pct"]
        r["frac_yardstick"] = r["gain_pct"] / y["certifiable_gain_pct"] \
            if y["certifiable_gain_pct"] > 0 else None
        # The best truly feasible arm the run served long enough to recommend: how much
        # of the gap is in finding good arms and how much in certifying and picking them.
        r["best_ran_frac_yardstick"] = r["best_ran_pct"] / y["certifiable_gain_pct"] \
            if y["certifiable_gain_pct"] > 0 and "best_ran_pct" in r else None
