"""The live view of a running job: one line per job hour and a status line (rich).

On a terminal the bottom line is redrawn in place (``rich.live.Live``): job
hour of total, live arms, deltas in so far, the current recommendation and its
95% lower bound, and the ETA on an accelerated clock. Elsewhere (a log file, a
pipe) only the per-hour lines are printed, one per hour, so logs stay readable.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text

from hz_ray.report import progress_line
from hz_ray.service.messages import HourProgress
from hz_ray.service.status_file import read_telemetry_address


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def eta_text(seconds: float) -> str:
    """``1h02m``, ``4m05s`` or ``12s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def eta_suffix(hour: int, hours: int, seconds_per_hour: float | None) -> str:
    """`` | ETA 4m05s`` after job hour ``hour`` of ``hours``; empty on a simulated clock."""
    if seconds_per_hour is None:
        return ""
    return f" | ETA {eta_text((hours - hour - 1) * seconds_per_hour)}"


def status_line(p: HourProgress, *, hours: int, deltas_in: int,
                seconds_per_hour: float | None) -> str:
    """The one-line summary of a job after hour ``p.hour``."""
    rec = p.recommendation
    pick = "keep control" if rec.is_control else rec.arm_id
    eta = eta_suffix(p.hour, hours, seconds_per_hour)
    stuck = f" | STUCK STOPS {p.stuck_stops}" if p.stuck_stops else ""
    return (f"hour {p.hour + 1}/{hours} | live {p.live_arms} | {deltas_in} deltas in | "
            f"best {pick} {_pct(rec.objective_mean)} (LCB {_pct(rec.objective_lcb)}, "
            f"P(feasible) {rec.p_feasible:.2f}){eta}{stuck}")


class ProgressView:
    """Prints a job's progress; pass :meth:`update` as the driver's ``progress``.

    Args:
        run_dir: The job's folder (its ``telemetry.json`` gives the metrics URL).
        hours: The hour the job ends at.
        seconds_per_hour: Wall seconds per job hour, for the ETA; ``None`` on a
            simulated clock.
        quiet: Print nothing per hour.
        started_wall_s: Unix time the job started (an older ``telemetry.json``
            is from an earlier run of the folder).
        console: Where to print (default: standard output).
    """

    def __init__(self, run_dir: Path, *, hours: int, seconds_per_hour: float | None,
                 quiet: bool = False, started_wall_s: float | None = None,
                 console: Console | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.hours = hours
        self.seconds_per_hour = seconds_per_hour
        self.quiet = quiet
        self.started_wall_s = time.time() if started_wall_s is None else started_wall_s
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.deltas_in = 0
        self._told_metrics = False
        self._live: Live | None = None

    def _tell_metrics(self) -> None:
        if self._told_metrics:
            return
        address = read_telemetry_address(self.run_dir)
        if address is not None and address.written_s >= self.started_wall_s - 1.0:
            self.console.print(f"job {address.job_id}: Prometheus metrics at {address.url} "
                               f"(also in {self.run_dir / 'telemetry.json'})")
            self._told_metrics = True

    def update(self, p: HourProgress) -> None:
        """Show job hour ``p.hour``."""
        self.deltas_in += p.accepted
        self._tell_metrics()
        if self.quiet:
            return
        line = progress_line(p.hour, p.live_arms, p.accepted, p.rejected, len(p.launched),
                             len(p.stopped), p.recommendation, p.stuck_stops)
        if not self.console.is_terminal:
            self.console.print(line + eta_suffix(p.hour, self.hours, self.seconds_per_hour),
                               markup=False)
            return
        summary = status_line(p, hours=self.hours, deltas_in=self.deltas_in,
                              seconds_per_hour=self.seconds_per_hour)
        if self._live is None:
            self._live = Live(Text(summary), console=self.console, auto_refresh=False,
                              transient=True)
            self._live.start()
        self._live.console.print(line, markup=False)
        self._live.update(Text(summary), refresh=True)

    def close(self) -> None:
        """Remove the status line (the per-hour lines stay)."""
        if self._live is not None:
            self._live.stop()
            self._live = None
