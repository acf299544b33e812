"""Human-readable progress lines and the end-of-run readout of a :class:`RunResult`.

The readout of a run folder (text, PNGs, HTML) is :mod:`hz_ray.readout`.
"""

from __future__ import annotations

from collections.abc import Mapping

from hz_ray.records import Recommendation
from hz_ray.result import RunResult


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def progress_line(hour: int, live_arms: int, accepted: int, rejected: int,
                  launched: int, stopped: int, rec: Recommendation,
                  stuck_stops: int = 0) -> str:
    """One line per job hour: traffic, arms and the current recommendation.

    ``stuck_stops`` (arms whose stop keeps failing on the platform) is shown
    only when non-zero, in capitals: those arms are still served.
    """
    pick = "control" if rec.is_control else rec.arm_id
    stuck = f" | STUCK STOPS {stuck_stops}" if stuck_stops else ""
    return (f"hour {hour:3d} | live {live_arms:2d} | +{launched} launched, {stopped} stopped | "
            f"{accepted:4d} deltas in, {rejected} rejected | best {pick:>9s} "
            f"gain {_pct(rec.objective_mean)} (LCB {_pct(rec.objective_lcb)}, "
            f"P(feasible) {rec.p_feasible:.2f}){stuck}")


def readout(result: RunResult, truth: Mapping[str, float] | None = None) -> str:
    """The launch readout as text.

    Args:
        result: A finished run.
        truth: Optional true deltas of the recommended weights (simulations
            only), printed beside the posterior.
    """
    rec = result.recommendation
    lines = ["", "=== hz-ray readout ==="]
    if rec.is_control:
        lines.append("No arm beats control with P(feasible) >= threshold: "
                     "keep the production weights.")
    else:
        lines.append(f"Recommended arm: {rec.arm_id}")
    lines.append("Weights: " + ", ".join(f"{k}={v:.4g}" for k, v in rec.params.items()))
    lines.append(f"Objective gain: {_pct(rec.objective_mean)}  (95% LCB {_pct(rec.objective_lcb)})"
                 f"   P(feasible) = {rec.p_feasible:.3f}")
    lines.append(f"{'metric':<14}{'posterior':>12}{'sd':>10}{'arm data':>12}{'hours':>7}"
                 + (f"{'truth':>10}" if truth else ""))
    for metric, post in rec.metrics.items():
        obs = rec.observed.get(metric)
        row = f"{metric:<14}{_pct(post.mean):>12}{100 * post.sd:>9.2f}%"
        row += f"{_pct(obs.mean):>12}{obs.hours:>7d}" if obs else f"{'-':>12}{'-':>7}"
        if truth:
            row += f"{_pct(truth.get(metric, float('nan'))):>10}"
        lines.append(row)
    lines.append(f"Arms run: {len(result.arms)}; records rejected (kept in the log): "
                 f"{result.rejected}; event log: {result.log_path}")
    if result.handed_off:
        lines.append("Handed off, still LIVE on the platform (confirmation test): "
                     + ", ".join(result.handed_off))
    if result.unstopped:
        lines.append("NOT STOPPED (stop kept failing; run `hz-ray stop RUN_DIR`): "
                     + ", ".join(result.unstopped))
    return "\n".join(lines)

