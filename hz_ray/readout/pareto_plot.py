"""The Pareto readout's PNG: the feasible front among the arms run, and the preferred arm.

Every qualifying arm is a grey point at its posterior mean deltas vs control
(in percent, raw: a minimised metric's improvement is a negative delta); the
front's arms are coloured with their 95% posterior intervals in both
directions and joined as a staircase (the edge of the region they dominate);
the control sits at the origin; the preference ray runs from the origin along
``s_i * lam_i`` to the front, and the preferred arm is starred. Two objectives
give one panel; ``k > 2`` give the ``k (k - 1) / 2`` pairwise panels, each with
the front's staircase in that pair's projection.
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Any

from hz_ray.readout.plots import _figure, _save
from hz_ray.readout.text import Z95, arm_label
from hz_ray.records import ParetoReadout, Recommendation

__all__ = ["PARETO_COLOR", "PREFERRED_COLOR", "plot_pareto"]

#: Colour of the front's arms.
PARETO_COLOR = "#4e79a7"
#: Colour of the front's staircase.
_EDGE_COLOR = "#1f3a5f"
#: Colour of the preferred arm and the preference ray.
PREFERRED_COLOR = "#e15759"
_QUALIFIED_COLOR = "#b0b0b0"
#: Most front arms labelled by name in a panel.
_MAX_LABELS = 15


def _point(rec: Recommendation, mx: str, my: str) -> tuple[float, float, float, float] | None:
    """``(x, y, x_sd, y_sd)`` in percent, or ``None`` when the arm lacks a metric."""
    if rec.is_control and not (mx in rec.metrics and my in rec.metrics):
        return 0.0, 0.0, 0.0, 0.0
    if mx not in rec.metrics or my not in rec.metrics:
        return None
    px, py = rec.metrics[mx], rec.metrics[my]
    return 100 * px.mean, 100 * py.mean, 100 * px.sd, 100 * py.sd


def _staircase(points: list[tuple[float, float]], sx: float, sy: float
               ) -> tuple[list[float], list[float]]:
    """The edge of the region the non-dominated ``points`` dominate, as a polyline.

    Points are raw ``(x, y)``; ``sx``/``sy`` are the signs that make higher
    better. Between neighbours ``a`` and ``b`` (``b`` better in x) the edge
    turns at the corner ``(x_a, y_b)``.
    """
    signed = sorted({(sx * x, sy * y) for x, y in points})
    front: list[tuple[float, float]] = []
    for x, y in sorted(signed, key=lambda p: (-p[0], -p[1])):  # best x first
        if not front or y > front[-1][1]:
            front.append((x, y))
    front.reverse()  # ascending signed x, descending signed y
    xs: list[float] = []
    ys: list[float] = []
    for i, (x, y) in enumerate(front):
        if i:
            xs.append(front[i - 1][0] * sx)
            ys.append(y * sy)
        xs.append(x * sx)
        ys.append(y * sy)
    return xs, ys


def _better(sign: float) -> str:
    return "higher is better" if sign > 0 else "lower is better"


def _ray_length(readout: ParetoReadout, fallback: float) -> float:
    """The ray's ``t`` where ``t * s * lam`` meets the front (``k * max Chebyshev``)."""
    best = max((r.objective_mean for r in readout.front), default=0.0)
    k = len(readout.objectives)
    return k * 100 * best if best > 0 else fallback


def _panel(ax: Any, readout: ParetoReadout, mx: str, my: str, job_id: str,
           legend: bool) -> None:
    sx, sy = float(readout.signs.get(mx, 1.0)), float(readout.signs.get(my, 1.0))
    qualified = [p for p in (_point(r, mx, my) for r in readout.qualified) if p is not None]
    front = [(r, p) for r, p in ((r, _point(r, mx, my)) for r in readout.front)
             if p is not None]
    if qualified:
        ax.scatter([p[0] for p in qualified], [p[1] for p in qualified], s=14,
                   color=_QUALIFIED_COLOR, zorder=2, label="qualifying arm")
    if front:
        ax.errorbar([p[0] for _, p in front], [p[1] for _, p in front],
                    xerr=[Z95 * p[2] for _, p in front], yerr=[Z95 * p[3] for _, p in front],
                    fmt="o", ms=5, color=PARETO_COLOR, ecolor=PARETO_COLOR, elinewidth=0.8,
                    capsize=2, alpha=0.55, zorder=4, label="Pareto front (95% intervals)")
        xs, ys = _staircase([(p[0], p[1]) for _, p in front], sx, sy)
        ax.plot(xs, ys, color=_EDGE_COLOR, lw=1.6, ls="-", zorder=3,
                label="front's edge" if len(readout.objectives) == 2 else
                "front's edge in this projection")
        for rec, p in front[:_MAX_LABELS]:
            ax.annotate(arm_label(rec.arm_id, job_id), (p[0], p[1]), xytext=(4, 4),
                        textcoords="offset points", fontsize=6, color="#333333")
    ax.axhline(0.0, color="gray", lw=0.6)
    ax.axvline(0.0, color="gray", lw=0.6)
    pick = readout.preferred
    ax.scatter([0.0], [0.0], marker="X", s=70, color="black", zorder=5,
               label="control (production)")
    share = readout.preference
    dx, dy = sx * float(share.get(mx, 0.0)), sy * float(share.get(my, 0.0))
    norm = math.hypot(dx, dy)
    if norm > 0:
        span = max([math.hypot(p[0], p[1]) for p in qualified] + [1e-3])
        t = _ray_length(readout, span / norm)
        ax.plot([0.0, t * dx], [0.0, t * dy], color=PREFERRED_COLOR, lw=1.3, ls="--",
                zorder=3, label="preference ray")
    mark = _point(pick, mx, my)
    if mark is not None:
        name = "control" if pick.is_control else arm_label(pick.arm_id, job_id)
        ax.scatter([mark[0]], [mark[1]], marker="*", s=260, color=PREFERRED_COLOR,
                   edgecolor="black", linewidth=0.8, zorder=6, label=f"preferred: {name}")
    ax.set_xlabel(f"{mx} delta vs control (%), {_better(sx)}")
    ax.set_ylabel(f"{my} delta vs control (%), {_better(sy)}")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc="best", fontsize=7)


def plot_pareto(readout: ParetoReadout, path: Path, job_id: str = "") -> Path:
    """Draw the Pareto front of a readout into a PNG.

    Args:
        readout: The Pareto readout (:meth:`hz_ray.optimizer.Optimizer.pareto_readout`).
        path: The PNG to write.
        job_id: The job's id, cut from the arms' labels.

    Returns:
        ``path``.

    Raises:
        ConfigError: matplotlib is not installed.
    """
    names = list(readout.objectives)
    shares = " / ".join(f"{m} {100 * float(readout.preference.get(m, 0.0)):.0f}%"
                        for m in names)
    title = f"Pareto front of {', '.join(names)} (preference {shares})"
    if not readout.front:
        fig = _figure(7.0, 3.0)
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "No arm qualifies for the Pareto front yet:\nnone has enough hours "
                "of data and a high enough P(feasible).\nThe preference keeps the control.",
                ha="center", va="center", fontsize=10, transform=ax.transAxes)
        ax.set_title(title, fontsize=10)
        return _save(fig, path)
    pairs = list(combinations(names, 2))
    cols = 1 if len(pairs) == 1 else min(3, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    size = 6.5 if cols == 1 else 4.6
    fig = _figure(size * cols + (1.0 if cols == 1 else 0.0), size * 0.85 * rows + 0.6)
    for i, (mx, my) in enumerate(pairs):
        ax = fig.add_subplot(rows, cols, i + 1)
        _panel(ax, readout, mx, my, job_id, legend=i == 0)
        if len(pairs) > 1:
            ax.set_title(f"{mx} vs {my}", fontsize=9)
    pick = readout.preferred
    which = ("control (no front arm beats it at the preference)" if pick.is_control
             else arm_label(pick.arm_id, job_id))
    fig.suptitle(f"{title}\npreferred: {which}", fontsize=10)
    return _save(fig, path)
