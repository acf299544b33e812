"""``hz-ray stop RUN_DIR``: end a job cleanly, with every arm stopped on the platform.

A job running on this host is sent SIGTERM (its driver stops every arm and
exits, as on Ctrl-C); once its folder's lock is free, or when no job was
running (after a SIGKILL, a lost node), every arm the log does not show as
stopped is stopped from the folder alone.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import click

from hz_ray.errors import StateError


def _end_running_driver(run_dir: Path, wait_s: float) -> str | None:
    """SIGTERM the driver that holds ``run_dir``; returns what was done, or ``None``."""
    from hz_ray.run_folder import driver_of, job_is_running

    if not job_is_running(run_dir):
        return None
    driver = driver_of(run_dir)
    if driver is None:
        raise StateError(f"A process holds {run_dir}'s lock but left no driver.json.",
                         "Stop that process, then run hz-ray stop again.")
    host, pid = str(driver.get("host")), int(driver.get("pid", -1))
    if host != socket.gethostname():
        raise StateError(f"The job in {run_dir} runs on host {host!r} (pid {pid}), not here.",
                         f"Run hz-ray stop on {host}, or stop its Ray job there.")
    if pid == os.getpid():
        raise StateError("hz-ray stop cannot stop the process it runs in.", "")
    try:
        os.kill(pid, signal.SIGTERM)
        done = f"its driver (pid {pid}) ended after SIGTERM"
    except ProcessLookupError:  # gone; the lock's holder is finishing its stops (Ray's
        done = "its driver had exited; its final stops ended"  # supervisor, say)
    deadline = time.monotonic() + wait_s
    while job_is_running(run_dir):
        if time.monotonic() > deadline:
            raise StateError(f"The job in {run_dir} still holds its folder {wait_s:.0f} s "
                             f"after SIGTERM to pid {pid}.", "Its final stops may still be "
                             "running; wait and run hz-ray stop again (SIGKILL abandons them).")
        time.sleep(0.2)
    return done


@click.command("stop", short_help="Stop every arm of a job and end it.")
@click.argument("target", metavar="RUN_DIR|JOB")
@click.option("--address", default=None, metavar="ADDR",
              help="The Ray cluster of a JOB given by id (default auto).")
@click.option("--deadline", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Give up on stops that keep failing after this many seconds.")
@click.option("--wait", "wait_s", type=click.FloatRange(min=1), default=300.0,
              show_default=True, help="Longest wait for a running driver to end after SIGTERM.")
def stop_command(target: str, address: str | None, deadline: float, wait_s: float) -> int:
    """Stop every arm of a job and end the job cleanly.

    RUN_DIR: the job's folder; JOB: a job id on a Ray cluster whose folder is
    on this host. Exits 0 when the platform confirmed every stop, 1 when some
    stop still fails (run it again; they are listed).
    """
    from hz_ray.cli.job_lookup import is_run_folder, local_folder_of, status_from_ray

    run_dir = Path(target) if is_run_folder(target) else local_folder_of(
        status_from_ray(target, address))
    from hz_ray.backends.factory import build_backend
    from hz_ray.config import config_from_mapping
    from hz_ray.run_folder import CONFIG_FILE, RunFolder
    from hz_ray.service.endings import call_policy, hour_of_stops, next_hour_in_log, shielded
    from hz_ray.service.messages import STOP_RECONCILED
    from hz_ray.service.reconcile import reconcile_folder
    from hz_ray.storage import load_checkpoint

    saved = load_checkpoint(run_dir / CONFIG_FILE) if (run_dir / CONFIG_FILE).exists() else None
    if saved is None:
        raise StateError(f"{str(run_dir)!r} holds no hz-ray job ({CONFIG_FILE} is missing).",
                         "Point at the --run-dir of a job.")
    ended = _end_running_driver(run_dir, wait_s)
    if ended:
        click.echo(f"hz-ray stop {run_dir}: the job was running; {ended}.")
    config = config_from_mapping(saved)
    with RunFolder.open(run_dir, config, resume=True) as folder, shielded():
        logged = next_hour_in_log(run_dir, folder.job_id)
        clock = folder.saved_clock(logged)
        # A wall-clock job's platform served the arms until now, past the newest readout.
        hour = hour_of_stops(logged, clock)
        backend = build_backend(config.backend, clock, seed=config.optimizer.seed or 0)
        report = reconcile_folder(run_dir, folder.job_id, backend, hour=hour,
                                  reason=STOP_RECONCILED, policy=call_policy(config),
                                  deadline_s=deadline, settle_s=3.0, clock=clock)
    click.echo(f"hz-ray stop {run_dir}: {report.summary()}; "
               f"{report.already_settled} were stopped before.")
    for arm_id, error in report.stuck:
        click.echo(f"  still stopping: {arm_id}: {error}", err=True)
    return 0 if report.ok else 1
