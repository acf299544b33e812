"""The ``hz-ray`` command line (click).

Commands: ``run CONFIG``, ``demo``, ``validate CONFIG``, ``status RUN_DIR``,
``stop RUN_DIR``, ``report RUN_DIR``, ``replay RUN_DIR``; ``--version`` and
``--help`` everywhere. Errors print one line and a hint, and exit non-zero:
2 for a bad config or bad usage, 1 for a job that could not be stopped or
read, 130 / 143 after SIGINT / SIGTERM (the job's arms were stopped first).

This is the only hz_ray package that may import ``actors`` (lazily, for Ray).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from hz_ray import __version__
from hz_ray.cli.folder_commands import replay_command, report_command, status_command
from hz_ray.cli.run_commands import (
    InterruptedJobError,
    demo_command,
    demo_config,
    run_command,
    validate_command,
)
from hz_ray.cli.stop_command import stop_command
from hz_ray.errors import HzRayError

__all__ = ["cli", "demo_config", "main"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="hz-ray",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """Tune value-model weights from hourly A/B deltas (HyperZero, on Ray)."""


for command in (run_command, demo_command, validate_command, status_command, stop_command,
                report_command, replay_command):
    cli.add_command(command)


def _print_error(message: str, hint: str = "") -> None:
    """One line on stderr: what is wrong, then how to fix it."""
    text = " ".join(f"{message} {hint}".split())  # a multi-line message stays one line
    click.echo(f"hz-ray: error: {text}", err=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (the console script exits with it)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="hz-ray", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "hz-ray"
        _print_error(exc.format_message(), f"Run '{command} --help'.")
        return 2
    except click.ClickException as exc:
        _print_error(exc.format_message())
        return int(exc.exit_code)
    except click.Abort:
        return 130
    except HzRayError as exc:
        _print_error(exc.message, exc.hint)
        return 2
    except InterruptedJobError as exc:  # SIGINT, or SIGTERM, during a job
        click.echo(f"hz-ray: interrupted ({exc.signal_name}); the job's arms were stopped. "
                   f"Continue it with: hz-ray run CONFIG --resume --run-dir {exc.run_dir}",
                   err=True)
        return 143 if exc.signal_name == "SIGTERM" else 130
    except KeyboardInterrupt as exc:  # outside a job
        name = getattr(exc, "signal_name", "SIGINT")
        click.echo(f"hz-ray: interrupted ({name}).", err=True)
        return 143 if name == "SIGTERM" else 130
    return int(code or 0)
