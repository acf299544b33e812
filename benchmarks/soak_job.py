"""One driver life of a soak job (issue 13), run as its own process by ``benchmarks/soak.py``.

Usage: ``python -m benchmarks.soak_job SPEC.json``. The spec names the cluster's
address, the soak folder (run folder, journal, fault files), the job's size and
clock, whether to resume and the fault schedule. Beside the driver, two threads
of this process: the *chaos* thread kills arm workers and the central actor at
their scheduled hours (SIGKILL by pid; each kill claimed once over every driver
life), and the *monitor* thread samples, once per job hour, the RSS of the
central actor and of slot 0's worker and every worker's new sample latencies
(appended to ``samples.jsonl`` / ``latency.jsonl``, so a driver kill loses
nothing written). The end writes ``result-<life>.json``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402

from actors.driver import RayDriver  # noqa: E402
from actors.options import ArmWorkerOptions  # noqa: E402
from benchmarks.soak_platform import Fault, SoakClientFactory, append_line, claim  # noqa: E402
from hz_ray.backends import make_world  # noqa: E402
from hz_ray.config import TuningConfig, config_from_mapping  # noqa: E402
from hz_ray.service.slot_parts import RunnerSettings  # noqa: E402

CALL_TIMEOUT_S = 1.5  # short mode; a full soak passes its own (--call-timeout)
# Longer than a driver restart on a loaded box (the job clock runs on meanwhile): a resumed
# job still polls the arms stopped before the kill for the hours it never acknowledged.
LATE_DATA_HOURS = 12
POLL_INTERVAL_HOURS = 0.5  # 64 workers polling 4 times an hour overload 2 cores


def soak_config(spec: dict[str, Any]) -> TuningConfig:
    """The soak's job: the value-model world, ``slots`` arm slots (the same on resume)."""
    world = make_world("value_model")
    raw = world.config_mapping()
    raw.update(name="soak", extra_metrics=list(world.metrics),
               optimizer={"seed": spec["seed"], "bucket_size": 32, "thompson_draws": 128,
                          "proposals": 128},
               arms={"slots": spec["slots"], "min_hours": 2, "max_hours": spec["max_hours"],
                     "guardrail_stop_probability": 0.0, "late_data_hours": LATE_DATA_HOURS},
               clock="simulated",
               backend={"target": "simulated:value_model",
                        "call_timeout_s": spec.get("call_timeout_s", CALL_TIMEOUT_S)})
    return config_from_mapping(raw)


def _rss(pid: int | None) -> int | None:
    if not pid:
        return None
    try:  # the actors run on this machine (a local cluster): read /proc
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Watch:
    """The chaos and monitor threads of one driver life."""

    def __init__(self, driver: RayDriver, folder: Path, schedule: list[Fault]) -> None:
        self.driver = driver
        self.folder = folder
        self.kills = [f for f in schedule if f.kind in ("worker_kill", "central_kill")]
        self.done = threading.Event()
        self.seen: dict[str, int] = {}

    def now(self) -> float:
        clock = self.driver.clock
        return -1.0 if clock is None else clock.now_hours()

    def chaos(self) -> None:
        import random

        for f in sorted(self.kills, key=lambda f: f.hour):
            while self.now() < f.hour + 0.3 and not self.done.is_set():
                time.sleep(0.05)
            if self.done.is_set():
                return
            if self.now() > f.hour + 1.5 or not claim(str(self.folder / "claims"), f.fid):
                continue  # an hour this life did not see (before a resume), or done before
            slot = random.Random(f.fid).randrange(len(self.driver.workers)) \
                if f.kind == "worker_kill" else None
            try:
                handle = self.driver.posterior if slot is None else self.driver.workers[slot]
                pid = ray.get(handle.get_pid.remote(), timeout=30)
                os.kill(pid, signal.SIGKILL)
                outcome = "killed"
            except Exception as exc:  # noqa: BLE001 - recorded, the soak reports it
                pid, outcome = None, f"not killed: {type(exc).__name__}"
            append_line(str(self.folder / "faults.jsonl"), {
                "fid": f.fid, "kind": f.kind, "hour": self.now(), "slot": slot, "pid": pid,
                "outcome": outcome, "time_s": time.time()})

    def monitor(self) -> None:
        hour = -1
        while not self.done.wait(0.1):
            now = self.now()
            if now < 0 or int(now) == hour:
                continue
            hour = int(now)
            try:
                self.sample(now)
            except Exception:  # noqa: BLE001 - a sample may meet a restarting actor
                logging.debug("sample failed", exc_info=True)

    def sample(self, now: float) -> None:
        d = self.driver
        central = worker = None
        try:
            central = ray.get(d.posterior.get_pid.remote(), timeout=5)
        except Exception:  # noqa: BLE001
            logging.debug("central actor pid", exc_info=True)
        refs = [w.stats.remote() for w in d.workers]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=10)
        got = set(ready)
        lat: list[float] = []
        for slot, ref in enumerate(refs):
            if ref not in got:
                continue
            try:
                st = ray.get(ref, timeout=0)
            except Exception:  # noqa: BLE001
                continue
            if st is None:
                continue
            if slot == 0:
                worker = st.pid
            key = f"{slot}:{st.pid}"
            new = list(st.sample_s)[self.seen.get(key, 0):]
            self.seen[key] = len(st.sample_s)
            lat += new
        append_line(str(self.folder / "samples.jsonl"), {
            "hour": now, "central_pid": central, "central_rss": _rss(central),
            "worker_pid": worker, "worker_rss": _rss(worker), "time_s": time.time()})
        if lat:
            append_line(str(self.folder / "latency.jsonl"), {"hour": now, "sample_s": lat})


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    folder = Path(spec["folder"])
    schedule = [Fault(**f) for f in spec["schedule"]]
    config = soak_config(spec)
    factory = SoakClientFactory(str(folder), spec["seed"], tuple(schedule))
    ray.init(address=spec["address"], log_to_driver=False)
    driver = RayDriver(config, factory, folder / "run", seconds_per_hour=spec["seconds_per_hour"],
                       resume=spec["resume"],
                       worker_options=ArmWorkerOptions(resources={"arm_slot": 1}),
                       runner_settings=RunnerSettings(poll_interval_hours=POLL_INTERVAL_HOURS,
                                                      call_timeout_s=config.backend.call_timeout_s))
    watch = Watch(driver, folder, schedule)
    threads = [threading.Thread(target=watch.chaos, daemon=True),
               threading.Thread(target=watch.monitor, daemon=True)]
    started = time.time()
    try:
        driver.start()
        for t in threads:
            t.start()
        run = driver.run(spec["hours"])
        watch.done.set()
        rec = run.result.recommendation
        out = {
            "completed": True, "wall_s": time.time() - started,
            "recommended": rec.arm_id, "params": dict(rec.params),
            "arms": len(run.result.arms), "records": run.status.num_records,
            "central_pid": run.status.pid, "restored": run.status.restored,
            "refresh_errors": run.status.refresh_errors,
            "workers": [{"slot": w.slot, "pid": w.pid, "node": w.node_id,
                         "resumed": w.resumed, "torch": w.torch_imported,
                         "backend_errors": w.backend_errors,
                         "tick_lag_max_s": max(w.tick_lag_s, default=None),
                         "sample_s": list(w.sample_s)} for w in run.workers],
            "unstopped": list(run.result.unstopped),
        }
    finally:
        watch.done.set()
        report = driver.shutdown()
        ray.shutdown()
    out["unstopped_at_end"] = [] if report is None else [a for a, _ in report.stuck]
    (folder / f"result-{spec['life']}.json").write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
