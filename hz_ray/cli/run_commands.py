"""``hz-ray run``, ``hz-ray demo`` and ``hz-ray validate``."""

from __future__ import annotations

import dataclasses
import time
from importlib import resources
from pathlib import Path
from typing import Any

import click

from hz_ray.config import TuningConfig, load_config
from hz_ray.config_runtime import CLOCK_MODES, ClockSpec, TelemetrySpec

DEMO_CONFIG = "demo.yaml"
RUNS_DIR = Path("runs")


class InterruptedJobError(Exception):
    """SIGINT or SIGTERM ended a job (after its arms were stopped).

    Args:
        signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
        run_dir: The job's folder (to resume it).
    """

    def __init__(self, signal_name: str, run_dir: Path) -> None:
        super().__init__(signal_name, str(run_dir))
        self.signal_name = signal_name
        self.run_dir = run_dir


def demo_config() -> TuningConfig:
    """The embedded default job used by ``make demo``."""
    from hz_ray.config_loading import config_from_yaml

    text = resources.files("hz_ray.defaults").joinpath(DEMO_CONFIG).read_text()
    return config_from_yaml(text, DEMO_CONFIG)


def with_overrides(config: TuningConfig, *, clock: str | None = None,
                   seconds_per_hour: float | None = None, metrics_host: str | None = None,
                   metrics_port: int | None = None, no_metrics: bool = False) -> TuningConfig:
    """The config with the command line's clock and telemetry flags applied (validated).

    Raises:
        ConfigError: The result is not a valid config (e.g. ``--clock
            accelerated`` with no seconds per hour anywhere).
    """
    clock_spec = config.clock
    if clock is not None or seconds_per_hour is not None:
        mode = clock or ("accelerated" if seconds_per_hour is not None else clock_spec.mode)
        pace = seconds_per_hour if seconds_per_hour is not None else (
            clock_spec.seconds_per_hour if mode == "accelerated" else None)
        clock_spec = ClockSpec(mode=mode, seconds_per_hour=pace)
    telemetry = config.telemetry
    if metrics_host is not None or metrics_port is not None or no_metrics:
        telemetry = TelemetrySpec(
            enabled=not no_metrics,
            host=metrics_host if metrics_host is not None else telemetry.host,
            port=metrics_port if metrics_port is not None else telemetry.port)
    return dataclasses.replace(config, clock=clock_spec, telemetry=telemetry)


def default_run_dir(config: TuningConfig) -> Path:
    """``runs/<job name>-<UTC time>``: a new folder for a job started without ``--run-dir``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in config.name).strip("-")
    return RUNS_DIR / f"{safe or 'job'}-{stamp}"


def job_options(func: Any) -> Any:
    """The options ``run`` and ``demo`` share."""
    options = [
        click.option("--hours", type=click.IntRange(min=1), default=72, show_default=True,
                     help="Job hours to run (the job ends at this hour)."),
        click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
                     default=None, help="The job's folder (log, checkpoint, status); "
                     "default runs/<name>-<UTC time>."),
        click.option("--resume", is_flag=True, help="Continue the job in --run-dir."),
        click.option("--address", default=None, metavar="ADDR",
                     help="Run on this Ray cluster ('auto' or host:port)."),
        click.option("--ray", "use_ray", is_flag=True,
                     help="Run on Ray (an embedded local Ray unless --address)."),
        click.option("--clock", type=click.Choice(CLOCK_MODES), default=None,
                     help="Override clock.mode: simulated (as fast as it goes), accelerated, "
                     "wall (one job hour per hour)."),
        click.option("--seconds-per-hour", type=click.FloatRange(min=0.05, max=3600),
                     default=None, help="Wall seconds per job hour (implies --clock "
                     "accelerated)."),
        click.option("--metrics-host", default=None, metavar="HOST",
                     help="Override telemetry.host (default 127.0.0.1)."),
        click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
                     help="Override telemetry.port (0: a free port)."),
        click.option("--no-metrics", is_flag=True, help="Serve no Prometheus metrics."),
        click.option("--seed", type=click.IntRange(min=0), default=None,
                     help="Override optimizer.seed."),
        click.option("--quiet", "-q", is_flag=True, help="No per-hour lines, only the readout."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(config: TuningConfig, *, hours: int, run_dir: Path | None, resume: bool,
         address: str | None, use_ray: bool, clock: str | None, seconds_per_hour: float | None,
         metrics_host: str | None, metrics_port: int | None, no_metrics: bool,
         seed: int | None, quiet: bool) -> int:
    from hz_ray.cli.job_runner import run_job

    config = with_overrides(config, clock=clock, seconds_per_hour=seconds_per_hour,
                            metrics_host=metrics_host, metrics_port=metrics_port,
                            no_metrics=no_metrics)
    if resume and run_dir is None:
        raise click.UsageError("--resume needs --run-dir (the folder of the job to continue).")
    folder = run_dir if run_dir is not None else default_run_dir(config)
    try:
        return run_job(config, hours=hours, run_dir=folder, resume=resume,
                       use_ray=use_ray or address is not None, address=address, seed=seed,
                       quiet=quiet)
    except KeyboardInterrupt as exc:  # click would turn it into a bare Abort
        raise InterruptedJobError(getattr(exc, "signal_name", "SIGINT"), folder) from exc


@click.command("run", short_help="Run a tuning job from a YAML config.")
@click.argument("config_path", metavar="CONFIG",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@job_options
def run_command(config_path: Path, **options: Any) -> int:
    """Run a tuning job from a YAML config, here or on a Ray cluster.

    Prints a status line every job hour (hour, live arms, deltas in, the
    current recommendation and its 95% bound, ETA on an accelerated clock),
    then the readout. Every ending stops every arm the job launched.
    """
    return _run(load_config(config_path), **options)


@click.command("demo", short_help="Run the embedded demo job (simulated).")
@job_options
@click.option("--local", is_flag=True, help="Run in this process instead of on Ray.")
def demo_command(local: bool, use_ray: bool, **options: Any) -> int:
    """Run the embedded demo job (a simulated value-model world), on Ray by default."""
    return _run(demo_config(), use_ray=use_ray or not local, **options)


@click.command("validate", short_help="Check a config without running it.")
@click.argument("config_path", metavar="CONFIG",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate_command(config_path: Path) -> int:
    """Check a YAML config (and its backend target) without running anything."""
    from hz_ray.backends.factory import check_config_against_backend_target

    config = load_config(config_path)
    check_config_against_backend_target(config)
    mode = config.clock_mode()
    pace = f", {config.clock.seconds_per_hour} s per job hour" if mode == "accelerated" else ""
    telemetry = (f"{config.telemetry.host}:{config.telemetry.port or 'a free port'}"
                 if config.telemetry.enabled else "off")
    click.echo(f"{config_path}: valid; metrics {list(config.metrics)}, "
               f"{len(config.parameters)} parameters, {config.arms.slots} slots; clock {mode}"
               f"{pace}; telemetry {telemetry}")
    return 0
