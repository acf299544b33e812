"""The readout's PNGs: the objective by hour, each guardrail by hour, and the arms over time.

Drawn with matplotlib (the optional ``plots`` extra, imported on first use)
through its Agg canvas on :class:`matplotlib.figure.Figure` objects, so no
pyplot state or global backend is touched. Every value is a relative delta vs
control in percent; bands are two-sided 95% posterior intervals.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from hz_ray.errors import ConfigError
from hz_ray.readout.folder import RunRecord
from hz_ray.readout.text import Z95, arm_label, constraint_text, objective_interval, objective_text
from hz_ray.records import ParetoReadout

__all__ = ["ARMS_PNG", "GUARDRAILS_PNG", "OBJECTIVE_PNG", "PARETO_PNG", "REASON_COLORS",
           "write_pngs"]

OBJECTIVE_PNG = "objective.png"
GUARDRAILS_PNG = "guardrails.png"
PARETO_PNG = "pareto.png"
ARMS_PNG = "arms.png"
DPI = 110
#: Bar colours of the arms chart by why the arm stopped (others get the tab10 cycle).
REASON_COLORS = {"live": "#f28e2b", "max_hours": "#4e79a7", "guardrail": "#e15759",
                 "not_contender": "#9c9c9c", "job_end": "#59a14f",
                 "launch_failed": "#b07aa1", "backend_error": "#b07aa1",
                 "interrupted": "#edc948", "reconciled": "#76b7b2"}
_OTHER_COLORS = ("#ff9da7", "#9c755f", "#bab0ac", "#86bcb6", "#d37295", "#a0cbe8")
_MAX_CHANGE_LABELS = 12


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas; ConfigError without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError("The readout's PNGs need matplotlib, which is not installed.",
                          "Install the plots extra: pip install 'hz-ray[plots]'.") from exc
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    return path


def plot_objective(record: RunRecord, path: Path) -> Path:
    """The recommendation's objective delta by job hour with its 95% band.

    Each hour's point is the readout logged after that hour (its arm may change
    from hour to hour); a change of pick is marked with the new arm's label.

    Args:
        record: The run folder.
        path: The PNG to write.

    Returns:
        ``path``.
    """
    hours = [h for h, _ in record.recommendations]
    recs = [r for _, r in record.recommendations]
    mean = [100 * r.objective_mean for r in recs]
    bands = [objective_interval(r) for r in recs]
    fig = _figure(8.0, 3.8)
    ax = fig.add_subplot()
    ax.fill_between(hours, [100 * lo for lo, _ in bands], [100 * hi for _, hi in bands],
                    step=None, alpha=0.25, color="#4e79a7", label="95% interval")
    ax.plot(hours, mean, color="#4e79a7", marker="o", ms=3, lw=1.6,
            label="posterior mean of the recommended weights")
    ax.axhline(0.0, color="gray", lw=0.8, ls="-")
    changes = [i for i in range(len(recs)) if i == 0 or recs[i].arm_id != recs[i - 1].arm_id]
    for i in changes[-_MAX_CHANGE_LABELS:]:
        label = "control" if recs[i].is_control else arm_label(recs[i].arm_id, record.job_id)
        ax.axvline(hours[i], color="#555555", lw=0.6, ls=":")
        ax.annotate(label, (hours[i], mean[i]), xytext=(3, 8), textcoords="offset points",
                    fontsize=7, rotation=30, color="#333333")
    ax.set_title(f"Objective ({objective_text(record.config)}) of the recommendation, by hour")
    ax.set_xlabel("job hour")
    ax.set_ylabel("objective delta vs control (%)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_guardrails(record: RunRecord, path: Path) -> Path | None:
    """Each guardrail metric's posterior at the recommendation by hour, against its threshold.

    One panel per constrained metric: the posterior mean with its 95% band and
    the bound (dashed red; the infeasible side shaded).

    Args:
        record: The run folder.
        path: The PNG to write.

    Returns:
        ``path``, or ``None`` when the job has no guardrails (nothing written).
    """
    config = record.config
    metrics = list(dict.fromkeys(c.metric for c in config.constraints))
    if not metrics:
        return None
    fig = _figure(8.0, 1.0 + 2.6 * len(metrics))
    hours = [h for h, _ in record.recommendations]
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(len(metrics), 1, k + 1)
        posts = [r.metrics.get(metric) for _, r in record.recommendations]
        pts = [(h, p.mean, p.sd) for h, p in zip(hours, posts, strict=True) if p is not None]
        xs = [h for h, _, _ in pts]
        ax.fill_between(xs, [100 * (m - Z95 * s) for _, m, s in pts],
                        [100 * (m + Z95 * s) for _, m, s in pts], alpha=0.25, color="#59a14f",
                        label="95% interval")
        ax.plot(xs, [100 * m for _, m, _ in pts], color="#59a14f", marker="o", ms=3, lw=1.6,
                label=f"posterior mean of {metric} at the recommendation")
        specs = [c for c in config.constraints if c.metric == metric]
        for spec in specs:
            side = "min_delta" if spec.min_delta is not None else "max_delta"
            ax.axhline(100 * spec.bound, color="#e15759", ls="--", lw=1.2,
                       label=f"guardrail {side} {100 * spec.bound:+.2f}%")
        ax.axhline(0.0, color="gray", lw=0.8)
        lo, hi = ax.get_ylim()
        pad = 0.15 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        for spec in specs:  # shade the infeasible side
            bound = 100 * spec.bound
            low, high = (lo, bound) if spec.min_delta is not None else (bound, hi)
            ax.axhspan(low, high, color="#e15759", alpha=0.08)
        ax.set_ylim(lo, hi)
        ax.set_title(f"Guardrail {metric} {constraint_text(specs)} at the recommendation, "
                     "by hour", fontsize=10)
        ax.set_xlabel("job hour")
        ax.set_ylabel(f"{metric} delta vs control (%)")
        ax.legend(loc="best", fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def reason_colors(reasons: list[str]) -> dict[str, str]:
    """A colour for every stop reason (``"live"`` for a live arm)."""
    out: dict[str, str] = {}
    others = iter(_OTHER_COLORS * (1 + len(reasons) // len(_OTHER_COLORS)))
    for reason in reasons:
        out[reason] = REASON_COLORS.get(reason) or next(others)
    return out


def plot_arms(record: RunRecord, path: Path) -> Path | None:
    """Every arm as a bar from its launch to its stop, coloured by why it stopped.

    A live arm's bar runs to the newest hour. The recommended arm is outlined
    and starred.

    Args:
        record: The run folder.
        path: The PNG to write.

    Returns:
        ``path``, or ``None`` when no arm was launched (nothing written).
    """
    arms = record.arms
    if not arms:
        return None
    rec = record.recommendation
    last = max([record.totals.last_hour or 0] + [a.launched_hour for a in arms]) + 1
    reasons = [a.stop_reason or "live" for a in arms]
    counts = Counter(reasons)
    colors = reason_colors(list(counts))
    height = min(max(2.8, 0.26 * len(arms) + 1.6), 40.0)
    fig = _figure(9.5, height)
    ax = fig.add_subplot()
    for i, (arm, reason) in enumerate(zip(arms, reasons, strict=True)):
        end = arm.stopped_hour if arm.stopped_hour is not None else last
        width = max(end - arm.launched_hour, 0.3)
        picked = rec is not None and arm.arm_id == rec.arm_id
        ax.barh(i, width, left=arm.launched_hour, height=0.7, color=colors[reason],
                edgecolor="black" if picked else "none", linewidth=1.8 if picked else 0)
        if picked:
            ax.annotate("\u2605 recommended", (arm.launched_hour + width, i), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=8, weight="bold")
    from matplotlib.patches import Patch

    handles = [Patch(color=colors[reason], label=f"{reason} ({n})")
               for reason, n in counts.most_common()]
    ax.set_yticks(range(len(arms)))
    ax.set_yticklabels([arm_label(a.arm_id, record.job_id) for a in arms],
                       fontsize=7 if len(arms) <= 60 else 4)
    ax.invert_yaxis()
    ax.set_xlim(0, last + max(2.0, 0.15 * last))
    ax.set_xlabel("job hour")
    ax.set_ylabel("arm (launch order)")
    ax.set_title(f"Arms over time: {len(arms)} arms, coloured by why each stopped")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              title="why it stopped", title_fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def write_pngs(record: RunRecord, out_dir: str | Path, *,
               pareto: ParetoReadout | None = None) -> list[Path]:
    """Draw the readout's PNGs into ``out_dir`` (created if missing).

    Args:
        record: The run folder, from :func:`~hz_ray.readout.folder.load_run`.
        out_dir: Where to write them.
        pareto: The Pareto readout of a Pareto objective, drawn into
            ``pareto.png`` (:func:`~hz_ray.readout.pareto_plot.plot_pareto`);
            ``None`` draws no such PNG.

    Returns:
        The PNGs written, in order: ``objective.png`` (when a readout was
        logged), ``guardrails.png`` (when the job has guardrails and a readout),
        ``pareto.png`` (when ``pareto`` is given) and ``arms.png`` (when an arm
        was launched).

    Raises:
        ConfigError: matplotlib is not installed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path | None] = []
    if record.recommendations:
        written.append(plot_objective(record, out / OBJECTIVE_PNG))
        written.append(plot_guardrails(record, out / GUARDRAILS_PNG))
    if pareto is not None:
        from hz_ray.readout.pareto_plot import plot_pareto  # imports this module

        written.append(plot_pareto(pareto, out / PARETO_PNG, record.job_id))
    written.append(plot_arms(record, out / ARMS_PNG))
    return [p for p in written if p is not None]
