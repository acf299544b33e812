"""Find a job for ``status`` and ``stop``: a run folder here, or a job id on a Ray cluster.

A TARGET that is an existing folder is a run folder. Anything else is read as
a job id (``feed-vm-7f3a``, as ``hz-ray run`` prints it): the command attaches
to the Ray cluster at ``--address`` (default ``auto``: ``RAY_ADDRESS`` or the
cluster started on this machine) and asks the job's central actor, found by
name in the job's namespace, for its status and run folder.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

from hz_ray.errors import StateError

_JOB_ID = re.compile(r"[A-Za-z0-9_-]+")


def is_run_folder(target: str) -> bool:
    """Whether ``target`` names a folder (a run folder, or a mistaken one)."""
    return Path(target).is_dir()


def status_from_ray(job_id: str, address: str | None) -> dict[str, Any]:
    """The running job's status, asked of its central actor on Ray.

    Args:
        job_id: The job's id.
        address: The Ray cluster (default ``"auto"``).

    Returns:
        The job's newest ``status.json`` plus ``run_dir`` and ``host`` (where its
        folder lives), ``running`` (True) and ``unsettled`` (empty: the arm
        states of a running job are in its live arms).

    Raises:
        StateError: ``job_id`` is not a folder or an id, no Ray cluster answers
            at ``address``, or it runs no such job.
    """
    if not _JOB_ID.fullmatch(job_id):
        raise StateError(f"{job_id!r} is neither a run folder nor a job id.",
                         "Give the job's --run-dir, or its id as hz-ray run printed it.")
    import ray

    from actors.options import POSTERIOR_ACTOR_NAME, job_namespace

    try:
        ray.init(address=address or "auto", log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError) as exc:
        raise StateError(f"No Ray cluster answers at {address or 'auto'!r} (looking for job "
                         f"{job_id!r}): {exc}", "Pass --address host:port, or give the "
                         "job's run folder instead.") from exc
    try:
        try:
            actor = ray.get_actor(POSTERIOR_ACTOR_NAME, namespace=job_namespace(job_id))
        except ValueError as exc:
            raise StateError(f"The Ray cluster runs no job {job_id!r}.",
                             "Check the id (hz-ray run prints it), or give the job's run "
                             "folder: a job that ended is read from there.") from exc
        status = ray.get(actor.job_status.remote(), timeout=60)
    finally:
        ray.shutdown()
    updated = status.get("updated_s")
    status.update(running=True, unsettled=[],
                  age_s=time.time() - updated if updated is not None else None)
    return status


def local_folder_of(status: dict[str, Any]) -> Path:
    """The run folder of a job found on Ray, when it lives on this host.

    Raises:
        StateError: It lives on another host.
    """
    folder = Path(status["run_dir"])
    if status.get("host") != socket.gethostname() or not folder.is_dir():
        raise StateError(f"Job {status['job_id']!r} keeps its run folder {folder} on host "
                         f"{status.get('host')!r}, not here.",
                         f"Run hz-ray stop {folder} on that host (the head node).")
    return folder
