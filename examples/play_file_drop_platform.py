"""Play a file-drop experiment platform for a rehearsal of a live job.

Run it beside the job, in its own process:

    python examples/play_file_drop_platform.py RUN_DIR DROP_FOLDER

It waits for the job's ``clock.json`` in RUN_DIR (written when the job starts;
a real platform learns the job's epoch the same way), then serves the arms
that hz-ray asks for in DROP_FOLDER/requests/ and writes each serving arm's
hourly readings to DROP_FOLDER/readings/ once the job hour has passed. The toy
world: views rise as ``w_like`` falls below its base, likes fall with it.
Stop it with Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from hz_ray.clock import AcceleratedClock
from hz_ray.testing import FileDropPlatform


def lift(params: Mapping[str, float]) -> dict[str, float]:
    """True relative deltas of the toy world at ``params``."""
    r = math.log(params["w_like"] / 3.5 / params["w_click"])
    return {"views": -0.02 * r - 0.01 * r * r, "likes": 0.03 * r}


def job_clock(run_dir: Path, timeout_s: float = 600.0) -> AcceleratedClock:
    """The job's clock, from its run folder's ``clock.json`` (waits for it)."""
    deadline = time.monotonic() + timeout_s
    path = run_dir / "clock.json"
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no {path} after {timeout_s:.0f} s: is the job running?")
        time.sleep(0.2)
    saved = json.loads(path.read_text())
    if saved.get("kind") != "accelerated":
        raise SystemExit(f"{path} is a simulated clock: run the job with clock wall or "
                         "accelerated to play its platform")
    return AcceleratedClock(float(saved["seconds_per_hour"]), float(saved["epoch_s"]))


def main(argv: list[str]) -> int:
    """Play until SIGINT or SIGTERM."""
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    run_dir, drop = Path(argv[0]), Path(argv[1])
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    platform = FileDropPlatform(drop, job_clock(run_dir), lift).start()
    print(f"playing the platform in {drop} for the job in {run_dir}", flush=True)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        platform.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
