"""Run the quickstart job on Ray: a central posterior actor and one worker per arm slot.

    .venv/bin/python examples/ray_quickstart.py                    # embedded local Ray
    .venv/bin/python examples/ray_quickstart.py --address auto     # a running cluster
    .venv/bin/python examples/ray_quickstart.py --metrics-port 9464  # + Prometheus metrics

The simulated world runs on an accelerated clock (1 job hour = --seconds-per-hour
wall seconds), so arms really are asynchronous. While it runs, tools can find
the job's central actor by name:

    ray.get_actor("posterior", namespace="hz-ray-quickstart").status.remote()
"""

from __future__ import annotations

import argparse
from pathlib import Path

from actors import run_on_ray
from hz_ray import load_config
from hz_ray.report import progress_line, readout

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "quickstart.yaml")
    parser.add_argument("--hours", type=int, default=48)
    parser.add_argument("--address", default=None, help="None: embedded Ray; 'auto' or host:port")
    parser.add_argument("--seconds-per-hour", type=float, default=0.5)
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args()
    config = load_config(args.config)

    def show(p) -> None:  # an HourProgress
        print(progress_line(p.hour, p.live_arms, p.accepted, p.rejected, len(p.launched),
                            len(p.stopped), p.recommendation), flush=True)

    result = run_on_ray(config, hours=args.hours, address=args.address, run_dir=args.run_dir,
                        seconds_per_hour=args.seconds_per_hour, progress=show,
                        metrics_port=args.metrics_port)
    print(readout(result))
    print(f"event log: {result.log_path}")


if __name__ == "__main__":
    main()
