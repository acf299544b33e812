"""The soak's client side (issue 13): backends and faults of every job process; no torch.

:class:`SoakClientFactory` builds, in each arm worker (and the driver), three layers:
:class:`ScheduledFaults` (backend errors and hangs on launch, fetch and stop from
a seeded per-hour schedule; each fault fires once over every process, claimed
with an exclusive file create, and is appended to ``faults.jsonl``) around a
:class:`~hz_ray.backends.journal.JournalBackend` (every call that reached the
platform, journaled) around :class:`HostClient` (the platform: one
:class:`SoakHost` actor hosting :class:`benchmarks.soak_world.SoakWorld`).
:class:`SoakHost` lives here, not beside the world: a worker that looks the
actor up by name imports its class's module, and the world's imports pull torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.testing import PlatformHost, RemoteBackend
from hz_ray.backends.journal import JournalBackend
from hz_ray.clock import Clock
from hz_ray.records import HourlyReading, parse_arm_id

HOST_NAME = "soak-platform"
HOST_NAMESPACE = "hz-ray-soak"
CLIENT_TARGET = "benchmarks.soak_platform:HostClient"
BACKEND_FAULTS = ("error", "hang")
CALL_KINDS = ("launch", "fetch", "stop")


# ------------------------------------------------------------------ schedule
@dataclass(frozen=True)
class Fault:
    """One scheduled fault.

    Attributes:
        fid: Unique id (claims and the faults file use it).
        hour: Job hour from which it may fire (at the next matching call).
        kind: ``"backend"``, ``"reading"``, ``"worker_kill"``, ``"central_kill"``,
            ``"node_kill"`` or ``"driver_kill"``.
        call: ``launch``/``fetch``/``stop`` for backend faults.
        how: ``"error"`` or ``"hang"`` (backend), the bad reading's kind (reading).
        seconds: How long a hang holds the answer back (wall seconds).
    """

    fid: str
    hour: int
    kind: str
    call: str = ""
    how: str = ""
    seconds: float = 0.0


def append_line(path: str, record: Mapping[str, Any]) -> None:
    """Append one JSON line (one ``os.write`` with ``O_APPEND``: whole lines from any process)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


def claim(claims: str, fid: str) -> bool:
    """Claim fault ``fid`` once over every process (exclusive create); True for the winner."""
    try:
        fd = os.open(os.path.join(claims, fid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


class SoakHost(PlatformHost):
    """The platform actor: :class:`PlatformHost` plus the soak's readout of the platform."""

    def report(self) -> dict[str, Any] | None:
        """What the platform published and how many arms it served at once."""
        return None if self.backend is None else self.backend.report()  # type: ignore[attr-defined]

    def get_pid(self) -> int:
        """The host's process id."""
        return os.getpid()


def start_host(factory: Any, name: str = HOST_NAME) -> Any:
    """Start the host actor, owned by the calling process (so it outlives a driver kill),
    on the head node (the ``soak_head`` resource), so it outlives the worker node."""
    import ray

    return ray.remote(num_cpus=0, max_concurrency=32, resources={"soak_head": 0.01})(
        SoakHost).options(name=name, namespace=HOST_NAMESPACE).remote(factory)


class HostClient:
    """An ``ArmBackend`` that finds the host actor by name (buildable from a target string).

    Args:
        name: The host actor's name.
        namespace: Its namespace.
        clock: The job clock.
    """

    def __init__(self, name: str, namespace: str, clock: Clock) -> None:
        import ray

        self._remote = RemoteBackend(ray.get_actor(name, namespace=namespace), clock,
                                     timeout_s=120.0)

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Launch on the platform."""
        self._remote.launch(arm_id, params)

    def fetch(self, arm_id: str, since_hour: int) -> Sequence[HourlyReading]:
        """Fetch from the platform."""
        return self._remote.fetch(arm_id, since_hour)

    def stop(self, arm_id: str) -> None:
        """Stop on the platform."""
        self._remote.stop(arm_id)


# ------------------------------------------------------------------ client faults
class ScheduledFaults:
    """Backend errors and hangs from the schedule, outside the journal.

    An error never reaches the platform; a hang makes the call, then holds its
    answer back. Each fault fires once over all processes (first matching call
    from its hour on claims it).
    """

    def __init__(self, inner: Any, clock: Clock, schedule: Sequence[Fault], faults_file: str,
                 claims_dir: str) -> None:
        self.inner = inner
        self.clock = clock
        self.faults_file = faults_file
        self.claims = claims_dir
        self.pending = {kind: [f for f in schedule if f.kind == "backend" and f.call == kind]
                        for kind in CALL_KINDS}

    def _take(self, kind: str, arm_id: str) -> Fault | None:
        now = self.clock.now_hours()
        queue = self.pending[kind]
        while queue and queue[0].hour <= now:
            f = queue.pop(0)
            if claim(self.claims, f.fid):
                slot = parse_arm_id(arm_id)
                append_line(self.faults_file, {
                    "fid": f.fid, "kind": "backend", "call": kind, "how": f.how,
                    "seconds": f.seconds, "arm_id": arm_id, "hour": now,
                    "slot": slot[1] if slot else None, "pid": os.getpid(),
                    "time_s": time.time()})
                return f
        return None

    def _call(self, kind: str, arm_id: str, fn: Any) -> Any:
        f = self._take(kind, arm_id)
        if f is not None and f.how == "error":
            raise ConnectionError(f"soak-injected {kind} error ({f.fid})")
        result = fn()
        if f is not None:
            time.sleep(f.seconds)
        return result

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Launch, unless a scheduled fault says otherwise."""
        self._call("launch", arm_id, lambda: self.inner.launch(arm_id, params))

    def fetch(self, arm_id: str, since_hour: int) -> Sequence[HourlyReading]:
        """Fetch, unless a scheduled fault says otherwise."""
        return self._call("fetch", arm_id, lambda: self.inner.fetch(arm_id, since_hour))

    def stop(self, arm_id: str) -> None:
        """Stop, unless a scheduled fault says otherwise."""
        self._call("stop", arm_id, lambda: self.inner.stop(arm_id))


@dataclass(frozen=True)
class SoakClientFactory:
    """Builds a worker's (or driver's) backend: faults around the journal around the host."""

    folder: str
    seed: int
    schedule: tuple[Fault, ...] = ()
    host_name: str = HOST_NAME

    def __call__(self, clock: Clock) -> Any:
        """The backend of one process."""
        root = Path(self.folder)
        journal = JournalBackend(CLIENT_TARGET, {"name": self.host_name,
                                                 "namespace": HOST_NAMESPACE},
                                 journal=str(root / "calls.jsonl"), clock=clock, seed=self.seed)
        if not any(f.kind == "backend" for f in self.schedule):
            return journal
        claims = root / "claims"
        with contextlib.suppress(FileExistsError):
            claims.mkdir(parents=True)
        return ScheduledFaults(journal, clock, self.schedule, str(root / "faults.jsonl"),
                               str(claims))
