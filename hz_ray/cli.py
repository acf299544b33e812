"""The ``hz-ray`` console entry point.

``hz-ray demo`` runs the embedded demo job on a simulated world;
``hz-ray run CONFIG`` runs a job from a YAML file; ``hz-ray validate CONFIG``
checks a file; ``hz-ray stop RUN_DIR`` stops every arm a job that is not
running left on its platform (after a SIGKILL, say). This is the only hz_ray
module that may import ``actors`` (lazily, for ``--ray``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from importlib import resources
from pathlib import Path

from hz_ray.config import TuningConfig, load_config
from hz_ray.errors import HzRayError

DEMO_CONFIG = "demo.yaml"


def demo_config() -> TuningConfig:
    """The embedded default job used by ``make demo``."""
    from hz_ray.config_loading import config_from_yaml

    text = resources.files("hz_ray.defaults").joinpath(DEMO_CONFIG).read_text()
    return config_from_yaml(text, DEMO_CONFIG)


def _run(config: TuningConfig, args: argparse.Namespace) -> int:
    from hz_ray.backends.factory import build_backend, ground_truth_of
    from hz_ray.clock import SimClock
    from hz_ray.local import run_local
    from hz_ray.report import progress_line, readout

    started = time.perf_counter()

    def show(p) -> None:  # noqa: ANN001
        print(progress_line(p.hour, p.live_arms, p.accepted, p.rejected, len(p.launched),
                            len(p.stopped), p.recommendation, p.stuck_stops), flush=True)

    use_ray = args.ray or (args.command == "demo" and not args.local)
    if use_ray:
        from actors import run_on_ray

        result = run_on_ray(config, hours=args.hours, address=args.address,
                            run_dir=args.run_dir, seed=args.seed, progress=show,
                            resume=args.resume)
        truth_fn = None
        if config.backend.target.startswith("simulated:"):
            truth_fn = ground_truth_of(build_backend(config.backend, SimClock(), seed=0))
        truth = truth_fn(result.recommendation.params) if truth_fn else None
    else:
        clock = SimClock()
        backend = build_backend(config.backend, clock, seed=args.seed or 0)
        result = run_local(config, backend, clock=clock, hours=args.hours, seed=args.seed,
                           run_dir=args.run_dir, resume=args.resume, progress=show)
        truth_fn = ground_truth_of(backend)
        truth = truth_fn(result.recommendation.params) if truth_fn else None
    print(readout(result, truth))
    if truth is not None:
        print(f"(true deltas shown for the simulated world; wall time "
              f"{time.perf_counter() - started:.1f} s)")
    return 0


def _stop(run_dir: Path, deadline_s: float) -> int:
    """``hz-ray stop RUN_DIR``: stop every arm the folder's job may have left live."""
    from hz_ray.backends.factory import build_backend
    from hz_ray.config import config_from_mapping
    from hz_ray.run_folder import CONFIG_FILE, RunFolder
    from hz_ray.service.endings import call_policy, next_hour_in_log, shielded
    from hz_ray.service.messages import STOP_RECONCILED
    from hz_ray.service.reconcile import reconcile_folder
    from hz_ray.storage import load_checkpoint

    saved = load_checkpoint(run_dir / CONFIG_FILE) if (run_dir / CONFIG_FILE).exists() else None
    if saved is None:
        raise HzRayError(f"{str(run_dir)!r} holds no hz-ray job ({CONFIG_FILE} is missing).",
                         "Point at the --run-dir of a job.")
    config = config_from_mapping(saved)
    with RunFolder.open(run_dir, config, resume=True) as folder, shielded():
        hour = next_hour_in_log(run_dir, folder.job_id)
        clock = folder.saved_clock(hour)
        backend = build_backend(config.backend, clock, seed=config.optimizer.seed or 0)
        report = reconcile_folder(run_dir, folder.job_id, backend, hour=hour,
                                  reason=STOP_RECONCILED, policy=call_policy(config),
                                  deadline_s=deadline_s, settle_s=3.0)
    print(f"hz-ray stop {run_dir}: {report.summary()}; "
          f"{report.already_settled} were stopped before.")
    for arm_id, error in report.stuck:
        print(f"  still stopping: {arm_id}: {error}", file=sys.stderr)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="hz-ray", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("demo", "run the embedded demo job on a simulated world, on Ray"),
                            ("run", "run a job from a YAML config")):
        cmd = sub.add_parser(name, help=help_text)
        if name == "run":
            cmd.add_argument("config", type=Path)
        cmd.add_argument("--hours", type=int, default=72, help="job hours to run (default 72)")
        cmd.add_argument("--seed", type=int, default=None, help="override optimizer.seed")
        cmd.add_argument("--run-dir", type=Path, default=None, help="log/checkpoint folder")
        cmd.add_argument("--resume", action="store_true", help="continue from --run-dir")
        cmd.add_argument("--ray", action="store_true", help="run on Ray (actors)")
        cmd.add_argument("--local", action="store_true",
                         help="run in this process (run_local); the demo's default is Ray")
        cmd.add_argument("--address", default=None,
                         help="Ray address ('auto' or host:port); default an embedded local Ray")
    val = sub.add_parser("validate", help="check a YAML config and print it back")
    val.add_argument("config", type=Path)
    stop = sub.add_parser("stop", help="stop every arm a job that is not running left live")
    stop.add_argument("run_dir", type=Path)
    stop.add_argument("--deadline", type=float, default=300.0,
                      help="give up on stops still failing after this many seconds (300)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "validate":
            from hz_ray.backends.factory import check_config_against_backend_target

            config = load_config(args.config)
            check_config_against_backend_target(config)
            print(f"{args.config}: valid; metrics {list(config.metrics)}, "
                  f"{len(config.parameters)} parameters, {config.arms.slots} slots")
            return 0
        if args.command == "stop":
            return _stop(args.run_dir, args.deadline)
        config = demo_config() if args.command == "demo" else load_config(args.config)
        return _run(config, args)
    except HzRayError as exc:
        print(f"hz-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM (JobInterrupted)
        name = getattr(exc, "signal_name", "SIGINT")
        where = f" --run-dir {args.run_dir}" if getattr(args, "run_dir", None) else ""
        print(f"hz-ray: interrupted ({name}); the job's arms were stopped. Continue it with "
              f"--resume{where}.", file=sys.stderr)
        return 143 if name == "SIGTERM" else 130


if __name__ == "__main__":
    raise SystemExit(main())
