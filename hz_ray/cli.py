"""The ``hz-ray`` console entry point.

``hz-ray demo`` runs the embedded demo job on a simulated world;
``hz-ray run CONFIG`` runs a job from a YAML file; ``hz-ray validate CONFIG``
checks a file. This is the only hz_ray module that may import ``actors``
(lazily, for ``--ray``).
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
    import yaml

    text = resources.files("hz_ray.defaults").joinpath(DEMO_CONFIG).read_text()
    return load_config(yaml.safe_load(text))


def _run(config: TuningConfig, args: argparse.Namespace) -> int:
    from hz_ray.backends.factory import build_backend, ground_truth_of
    from hz_ray.clock import SimClock
    from hz_ray.local import run_local
    from hz_ray.report import progress_line, readout

    started = time.perf_counter()

    def show(p) -> None:  # noqa: ANN001
        print(progress_line(p.hour, p.live_arms, p.accepted, p.rejected, len(p.launched),
                            len(p.stopped), p.recommendation), flush=True)

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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "validate":
            config = load_config(args.config)
            print(f"{args.config}: valid; metrics {list(config.metrics)}, "
                  f"{len(config.parameters)} parameters, {config.arms.slots} slots")
            return 0
        config = demo_config() if args.command == "demo" else load_config(args.config)
        return _run(config, args)
    except HzRayError as exc:
        print(f"hz-ray: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
