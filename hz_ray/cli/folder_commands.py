"""Commands that read a run folder: ``status``, ``report`` and ``replay``.

None of them takes the folder's lock or writes its log: they work while the
job runs, after it ended, and after it was killed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from hz_ray.errors import StateError

RUN_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.2f}%"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def folder_status(run_dir: Path) -> dict[str, Any]:
    """The job in ``run_dir`` as ``hz-ray status`` shows it.

    Returns:
        The newest ``status.json`` (empty before the first job hour) plus
        ``running`` (a driver holds the folder's lock), ``age_s`` (seconds
        since it was written), ``job_id`` and ``unsettled`` (arms the log does
        not show as stopped: ``arm_id``, ``slot``, ``state``; the platform may
        still serve them).

    Raises:
        StateError: The folder holds no job.
    """
    from hz_ray.run_folder import RunFolder, job_is_running
    from hz_ray.service.reconcile import unsettled_arms
    from hz_ray.service.status_file import read_status

    folder = RunFolder.read(run_dir)
    status = read_status(run_dir) or {}
    status["job_id"] = folder.job_id
    status["running"] = job_is_running(run_dir)
    status["age_s"] = time.time() - status["updated_s"] if "updated_s" in status else None
    status["unsettled"] = [{"arm_id": a.arm_id, "slot": a.slot, "state": a.state}
                           for a in unsettled_arms(run_dir, folder.job_id)]
    return status


def render_status(status: dict[str, Any], run_dir: Path, console: Console) -> None:
    """Print :func:`folder_status` for people."""
    running = "running" if status["running"] else "NOT running"
    hour = status.get("hour")
    age = status.get("age_s")
    when = f", status {age:.0f} s old" if age is not None else ""
    console.print(f"job {status['job_id']} in {run_dir}: {running}"
                  + (f", after job hour {hour}" if hour is not None else ", no hour finished yet")
                  + when + (f" (driver {status['driver']})" if status.get("driver") else ""))
    if status.get("metrics_url") and status["running"]:
        console.print(f"metrics: {status['metrics_url']}")
    rec = status.get("recommendation")
    if rec:
        pick = "keep the production weights (control)" if rec["is_control"] else rec["arm_id"]
        console.print(f"recommendation: {pick}; gain {_pct(rec['objective_mean'])} "
                      f"(95% LCB {_pct(rec['objective_lcb'])}), P(feasible) "
                      f"{_num(rec['p_feasible'])}")
    if status.get("alarm"):
        console.print(f"ALARM: {status['alarm']}", markup=False)
    live = status.get("live_arms") or []
    if status["running"] and live:
        table = Table(title="live arms", title_justify="left")
        for name in ("arm", "slot", "state", "launched", "hours", "newest data h", "gain",
                     "sd", "P(feasible)"):
            table.add_column(name)
        for arm in live:
            table.add_row(arm["arm_id"], str(arm["slot"]), arm["state"],
                          str(arm["launched_hour"]), str(arm["hours_observed"]),
                          _num(arm["newest_data_hour"], "d"), _pct(arm["gain_mean"]),
                          _pct(arm["gain_sd"]).lstrip("+"), _num(arm["p_feasible"]))
        console.print(table)
    slots = status.get("slots") or {}
    if status["running"] and slots:
        table = Table(title="data freshness per slot", title_justify="left")
        for name in ("slot", "last report hour", "newest data hour", "age (job hours)"):
            table.add_column(name)
        for slot, info in slots.items():
            table.add_row(slot, _num(info["last_report_hour"], "d"),
                          _num(info["newest_data_hour"], "d"), _num(info["data_age_hours"], "d"))
        console.print(table)
    stuck = status.get("stuck_stops") or []
    if stuck:
        console.print(f"STUCK STOPS: {len(stuck)} arm(s) whose stop keeps failing (still "
                      "served):")
        for arm in stuck:
            console.print(f"  {arm['arm_id']} (slot {arm['slot']}): {arm['stop_failures']} "
                          f"failed stop(s), last: {arm['last_error']}", markup=False)
    counters = status.get("counters")
    if counters:
        console.print(f"arms {counters['arms']}, deltas accepted {counters['accepted']}, "
                      f"rejected {counters['rejected']}")
    unsettled = status["unsettled"]
    if not status["running"] and unsettled:
        console.print(f"{len(unsettled)} arm(s) the log does not show as stopped (the platform "
                      f"may still serve them): "
                      + ", ".join(f"{a['arm_id']} ({a['state']})" for a in unsettled))
        console.print(f"Stop them: hz-ray stop {run_dir}", markup=False)
    elif not status["running"]:
        console.print("every arm the job launched is stopped.")


@click.command("status", short_help="Show a job: arms, estimates, freshness.")
@click.argument("target", metavar="RUN_DIR|JOB")
@click.option("--address", default=None, metavar="ADDR",
              help="The Ray cluster of a JOB given by id (default auto).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def status_command(target: str, address: str | None, as_json: bool) -> int:
    """Show a job: live arms, estimates, recommendation, stuck stops, data freshness.

    RUN_DIR: from the folder (its status file, rewritten every job hour, and
    the arm states in its log), while the job runs and after it ended or was
    killed. JOB: a job id, asked of the running job on a Ray cluster.
    """
    from hz_ray.cli.job_lookup import is_run_folder, status_from_ray

    if is_run_folder(target):
        run_dir = Path(target)
        status = folder_status(run_dir)
    else:
        status = status_from_ray(target, address)
        run_dir = Path(status["run_dir"])
    if as_json:
        click.echo(json.dumps(status, sort_keys=True))
    else:
        console = Console(highlight=False, soft_wrap=True)
        if not console.is_terminal:  # a pipe or a file: never cut an arm id
            console = Console(highlight=False, soft_wrap=True, width=200)
        render_status(status, run_dir, console)
    return 0


@click.command("report", short_help="Write the readout, PNGs and HTML.")
@click.argument("run_dir", type=RUN_DIR)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Where to write the PNGs and report.html "
              "(default RUN_DIR/report).")
def report_command(run_dir: Path, out_dir: Path | None) -> int:
    """Write the readout, its PNGs and a self-contained report.html from RUN_DIR alone."""
    from hz_ray.readout import build_report

    files = build_report(run_dir, out_dir)
    click.echo(files.text)
    for png in files.pngs:
        click.echo(f"wrote {png}")
    click.echo(f"wrote {files.html}")
    return 0


@click.command("replay", short_help="Rebuild the posterior from the log.")
@click.argument("run_dir", type=RUN_DIR)
def replay_command(run_dir: Path) -> int:
    """Rebuild the posterior from RUN_DIR's event log and print the readout."""
    from hz_ray.readout.replay import replay_readout

    try:
        click.echo(replay_readout(run_dir))
    except FileNotFoundError as exc:
        raise StateError(f"{run_dir} lacks {exc.filename}.", "Point at a job's run folder.") \
            from exc
    return 0
