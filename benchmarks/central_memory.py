"""Does the central service's RSS follow its data, or grow with its age? (issue 13)

The 7-day soak's central actor grew 44-73% after day 1, and each life of it (a new
process after every injected kill) ended above what the next life, restored with
more arms, started at. This benchmark separates the two in one process tree, on
the cost curve's world (``benchmarks/system.py``: 8 weights, 4 metrics):

- a *long-lived* service takes arms in steps of ``--step`` (each arm 6 hours x 4
  metrics, reported and retired), with a refresh (refit or condition, and a plan),
  an hourly readout and a checkpoint after every step, like a job that runs on;
- after every ``--fresh-every`` steps a *fresh* child process restores the same
  run folder and makes the same refresh, like the central actor after a kill.

At each checkpoint it prints both processes' RSS (current and peak). RSS that
follows the data shows the fresh and the long-lived process close together; a
leak (or memory the allocator keeps) shows the long-lived one pulling ahead.

    .venv/bin/python benchmarks/central_memory.py --arms 1200 --step 100 --fresh-every 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUCKET = 1024


def _mb(value: float) -> float:
    return round(value / 2**20, 1)


def _config(slots: int) -> Any:
    from system import bench_config

    return bench_config("central-memory", slots=slots, bucket=BUCKET, refit=True)


def fresh(folder: Path, slots: int) -> dict[str, Any]:
    """Restore the service from a copy of ``folder`` in this (new) process; refresh it once.

    A copy, since the restored service writes its log as well, and the long-lived
    one still owns the original.
    """
    from hz_ray.service.memory import peak_rss_bytes, release_memory, rss_bytes
    from hz_ray.service.posterior import PosteriorService
    from hz_ray.torch_threads import torch_threads

    copy = Path(tempfile.mkdtemp(prefix="hz-ray-central-memory-fresh-")) / "run"
    shutil.copytree(folder, copy)
    folder = copy
    with torch_threads(1):
        began = time.perf_counter()
        service = PosteriorService(_config(slots), folder, restore=True, background=False)
        service.refresh_now(force_refit=True)
        service.hour_progress(service.last_hour() + 1)
        restore_s = time.perf_counter() - began
        release_memory()
        out = {"rss_mb": _mb(rss_bytes()), "peak_mb": _mb(peak_rss_bytes()),
               "restore_s": round(restore_s, 1), "arms": service.status().arms}
        service.close()
    shutil.rmtree(copy.parent, ignore_errors=True)
    return out


def long_lived(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """Grow one service by ``args.step`` arms at a time; the rows of every checkpoint."""
    from cost_curve import populate

    from hz_ray.service.memory import peak_rss_bytes, release_memory, rss_bytes
    from hz_ray.service.posterior import PosteriorService
    from hz_ray.torch_threads import torch_threads

    slots = args.arms + 1
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    with torch_threads(1):
        service = PosteriorService(_config(slots), folder, job_id="central-memory",
                                   background=False)
        hour, arms, step = 0, 0, 0
        while arms < args.arms:
            began = time.perf_counter()
            count = min(args.step, args.arms - arms)
            populate(service, count, first_slot=arms, hour=hour, rng=rng)
            arms += count
            service.refresh_now()
            hour += 1
            service.hour_progress(hour)
            service.checkpoint_now()
            step += 1
            release_memory()
            row: dict[str, Any] = {"arms": arms, "step_s": round(time.perf_counter() - began, 1),
                                   "long_rss_mb": _mb(rss_bytes()),
                                   "long_peak_mb": _mb(peak_rss_bytes())}
            if step % args.fresh_every == 0 or arms >= args.arms:
                service.commit()
                child = subprocess.run(
                    [sys.executable, __file__, "--fresh", str(folder), "--slots", str(slots)],
                    capture_output=True, text=True, check=True, timeout=1800)
                got = json.loads(child.stdout.strip().splitlines()[-1])
                row.update({f"fresh_{k}": v for k, v in got.items()})
            rows.append(row)
            print(json.dumps(row), flush=True)
        service.close()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", type=int, default=1200)
    p.add_argument("--step", type=int, default=100)
    p.add_argument("--fresh-every", type=int, default=3)
    p.add_argument("--fresh", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--slots", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None, help="write the rows (JSON) here")
    args = p.parse_args()
    if args.fresh is not None:
        print(json.dumps(fresh(args.fresh, args.slots)))
        return 0
    folder = Path(tempfile.mkdtemp(prefix="hz-ray-central-memory-")) / "run"
    rows = long_lived(args, folder)
    print("| arms | long-lived RSS MiB | long-lived peak | fresh RSS MiB | fresh peak "
          "| long - fresh |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "fresh_rss_mb" in r:
            print(f"| {r['arms']} | {r['long_rss_mb']} | {r['long_peak_mb']} | "
                  f"{r['fresh_rss_mb']} | {r['fresh_peak_mb']} | "
                  f"{r['long_rss_mb'] - r['fresh_rss_mb']:+.1f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
