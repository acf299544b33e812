"""Run one job for ``hz-ray run`` / ``demo``: pick the driver and clock, show progress."""

from __future__ import annotations

import time
from pathlib import Path

import click

from hz_ray.cli.progress_view import ProgressView
from hz_ray.clock import AcceleratedClock, Clock, SimClock, WallClock
from hz_ray.config import TuningConfig
from hz_ray.config_runtime import ray_seconds_per_hour
from hz_ray.run_folder import CLOCK_FILE, RunFolder


def local_clock(config: TuningConfig, run_dir: Path, resume: bool) -> Clock:
    """The clock of a local job: the folder's on resume, else a new one of ``clock.mode``.

    A resumed job keeps the clock its folder recorded (a wall-time job's hours
    went on while it was down); a new one starts at job hour 0 now.
    """
    if resume and (run_dir / CLOCK_FILE).exists():
        from hz_ray.service.endings import next_hour_in_log

        folder = RunFolder.read(run_dir)
        saved = folder.saved_clock(next_hour_in_log(run_dir, folder.job_id))
        if saved is not None:
            return saved
    mode = config.clock_mode()
    if mode == "wall":
        return WallClock()
    if mode == "accelerated":
        return AcceleratedClock(float(config.clock.seconds_per_hour or 0))
    return SimClock()


def _warn_if_the_folder_keeps_another_clock(config: TuningConfig, run_dir: Path,
                                           resume: bool) -> None:
    """A resumed job keeps its folder's clock; say so when the config asks for another."""
    from hz_ray.storage import load_checkpoint

    saved = load_checkpoint(run_dir / CLOCK_FILE) if resume else None
    if saved is None:
        return
    kept = "simulated" if saved.get("kind") == "simulated" else \
        f"{float(saved['seconds_per_hour']):g} s per job hour"
    wanted = config.clock_mode()
    pace = config.clock.wall_seconds_per_hour(config.backend.target)
    asked = "simulated" if pace is None else f"{pace:g} s per job hour"
    if kept != asked:
        click.echo(f"hz-ray: note: the job keeps the clock it started with ({kept}); clock "
                   f"{wanted} ({asked}) applies to new jobs only.", err=True)


def seconds_per_hour_of(config: TuningConfig, clock: Clock | None, use_ray: bool) -> float | None:
    """Wall seconds per job hour (for the ETA), or ``None`` on a simulated clock."""
    if use_ray:
        return ray_seconds_per_hour(config.clock, config.backend.target)
    return clock.seconds_per_hour if isinstance(clock, AcceleratedClock) else None


def run_job(config: TuningConfig, *, hours: int, run_dir: Path, resume: bool, use_ray: bool,
            address: str | None, seed: int | None, quiet: bool) -> int:
    """Run the job to ``hours`` and print its readout; returns the exit code."""
    from hz_ray.backends.factory import (
        build_backend,
        check_config_against_backend_target,
        ground_truth_of,
    )
    from hz_ray.report import readout

    check_config_against_backend_target(config)  # as validate does: before any arm launches
    started = time.perf_counter()
    clock = None if use_ray else local_clock(config, run_dir, resume)
    if not use_ray:  # (on Ray a simulated clock runs at a pace: the comparison differs)
        _warn_if_the_folder_keeps_another_clock(config, run_dir, resume)
    mode = "on Ray" + (f" at {address}" if address else " (embedded)") if use_ray else "here"
    pace = seconds_per_hour_of(config, clock, use_ray)
    click.echo(f"hz-ray: job {'resumed' if resume else 'started'} {mode} in {run_dir}; "
               f"clock {config.clock_mode()}"
               + (f" ({pace:g} s per job hour)" if pace else "") + f"; until hour {hours}.")
    view = ProgressView(run_dir, hours=hours, seconds_per_hour=pace, quiet=quiet,
                        started_wall_s=time.time())
    try:
        if use_ray:
            from actors import run_on_ray

            result = run_on_ray(config, hours=hours, address=address, run_dir=run_dir,
                                seed=seed, progress=view.update, resume=resume)
            truth_fn = None
            if config.backend.target.startswith("simulated:"):
                truth_fn = ground_truth_of(build_backend(config.backend, SimClock(), seed=0))
        else:
            from hz_ray.local import run_local

            backend = build_backend(config.backend, clock, seed=seed or 0)
            result = run_local(config, backend, clock=clock, hours=hours, seed=seed,
                               run_dir=run_dir, resume=resume, progress=view.update)
            truth_fn = ground_truth_of(backend)
    finally:
        view.close()
    truth = truth_fn(result.recommendation.params) if truth_fn else None
    click.echo(readout(result, truth))
    if truth is not None:
        click.echo(f"(true deltas shown for the simulated world; wall time "
                   f"{time.perf_counter() - started:.1f} s)")
    click.echo(f"Run folder: {run_dir}  (hz-ray report {run_dir} writes the HTML readout)")
    if result.unstopped:
        click.echo(f"hz-ray: error: {len(result.unstopped)} arm(s) could not be stopped on the "
                   f"platform: {', '.join(result.unstopped)}. Run 'hz-ray stop {run_dir}' "
                   "until it reports none left.", err=True)
        return 1
    return 0
