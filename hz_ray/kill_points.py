"""Named kill points: SIGKILL this process at a chosen point of the hour cycle (tests only).

A test sets the environment variable ``HZ_RAY_KILL_AT`` to ``"<name>"`` or
``"<name>:<n>"`` in a child process; the ``n``-th time (1-based, default 1)
that process reaches :func:`kill_point` with that name, it writes one line
``hz-ray: kill point <name>:<n> reached`` to stderr and sends itself
``SIGKILL``: no ``finally`` block, no ``atexit`` hook, no flush runs, as when
a machine loses power or the OOM killer strikes. Without the variable (or
with an empty one) :func:`kill_point` returns at once; the variable is read
once per process, on the first call.

The points, in the order an hour of :func:`hz_ray.local.run_local` reaches them:

Hour cycle (``hz_ray.local.LocalScheduler.step``):

- ``hour.after_polls``: every slot polled, retried stops and reported; nothing
  of the hour committed by the driver yet.
- ``hour.after_refresh``: the posterior was rebuilt on the hour's reports.
- ``hour.after_decide``: every slot decided its live arm (arms may have been
  stopped on the platform and retired).
- ``hour.after_launches``: free slots sampled and launched their next arms.
- ``hour.after_progress``: the hour's readout is queued, not yet committed.
- ``hour.after_commit``: the hour's events (readout included) are in a
  committed part file; the checkpoint is not yet written.
- ``hour.after_checkpoint``: the checkpoint is written; the clock not yet
  advanced.

Arm slots (``hz_ray.service.slot.ArmSlotRunner``):

- ``slot.after_launching``: the arm's ``launching`` state is durable; the
  platform's ``launch`` not yet called.
- ``slot.after_launch``: the platform's ``launch`` returned; ``live`` not yet
  told to the service.
- ``slot.after_stop``: the platform's ``stop`` returned; ``stopped`` not yet
  told to the service.

Storage (``hz_ray.storage``; every atomic file write, named by its file):

- ``log.before_write``: ``EventLog.flush`` is about to write a part file.
- ``log.before_replace``: the temporary part file is written and fsynced, not
  yet renamed to its ``part-*.parquet`` name.
- ``log.after_replace``: the part file is renamed into place; its directory
  not yet fsynced.
- ``checkpoint.before_write``, ``checkpoint.before_replace``,
  ``checkpoint.after_replace``: the same steps of writing ``checkpoint.json``
  (and ``job.*``, ``config.*``, ``clock.*`` for the run folder's other files,
  written when a job is created or first run).

Group commit (``hz_ray.service.commit_log.GroupCommitLog``, committer thread):

- ``commit.after_flush``: a part file with the queued events is committed;
  the callers waiting for it are not yet woken.
"""

from __future__ import annotations

import os
import signal
import threading
import time

__all__ = ["ENV_VAR", "kill_point"]

ENV_VAR = "HZ_RAY_KILL_AT"

_UNREAD = object()
_target: object = _UNREAD  # None (disarmed) or (name, n), once read
_counts: dict[str, int] = {}
_lock = threading.Lock()


def _read_target() -> tuple[str, int] | None:
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return None
    name, sep, count = raw.rpartition(":")
    if not sep or not count.isdigit() or int(count) < 1:
        return raw, 1
    return name, int(count)


def kill_point(name: str) -> None:
    """SIGKILL this process if ``HZ_RAY_KILL_AT`` names this point and occurrence.

    Args:
        name: The point's name (listed in the module docstring).
    """
    global _target
    target = _target
    if target is None:
        return
    if target is _UNREAD:
        with _lock:
            if _target is _UNREAD:
                _target = _read_target()
            target = _target
        if target is None:
            return
    wanted, n = target  # type: ignore[misc]
    if name != wanted:
        return
    with _lock:
        _counts[name] = seen = _counts.get(name, 0) + 1
    if seen != n:
        return
    os.write(2, f"hz-ray: kill point {name}:{n} reached\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
    while True:  # the signal is on its way; never go on past the point
        time.sleep(3600)
