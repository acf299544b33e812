"""Time of ``Optimizer.view()`` with and without shared-control loadings.

The view is taken under the Ray posterior actor's lock on every refresh, so it must stay
cheap as arms pile up. Synthetic ledger: ``--arms`` arms of ``--hours`` consecutive hours
each (random start in a 72-hour job), two metrics, every delta with a ``control_var``.

Usage::

    .venv/bin/python benchmarks/view_timing.py --arms 1000 --hours 12
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from hz_ray.config import config_from_mapping
    from hz_ray.optimizer import Optimizer
    from hz_ray.records import HourlyDelta
    from tests.conftest import small_config_mapping

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    config = config_from_mapping(small_config_mapping())
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)
    records = []
    opt = Optimizer(config)
    for i in range(args.arms):
        arm_id = f"arm-{i:05d}"
        opt.register_arm(arm_id, opt.space.decode(torch.rand(opt.space.dim, generator=gen,
                                                             dtype=torch.float64)), hour=0)
        start = rng.randrange(0, 72 - args.hours + 1)
        for h in range(start, start + args.hours):
            for m in ("views", "likes"):
                records.append(HourlyDelta(arm_id, m, h, 0.01 * rng.random(), 2e-5, 1000,
                                           control_var=1e-5))
    opt.observe(records)
    print(f"{len(records)} records, {args.arms} arms")
    for shared in (True, False):
        opt.config = dataclasses.replace(config, optimizer=dataclasses.replace(
            config.optimizer, shared_control_noise=shared))
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            opt.view()
            times.append(time.perf_counter() - start)
        print(f"shared_control_noise={shared}: first {times[0]:.3f} s, "
              f"median of the rest {statistics.median(times[1:]):.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
