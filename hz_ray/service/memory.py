"""Process memory helpers of the posterior service (RSS readings, heap trimming)."""

from __future__ import annotations

import contextlib
import ctypes
import gc


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Rebuilds and checkpoints allocate hundreds of MB of short-lived objects,
    which glibc would otherwise keep mapped; replaced snapshots also hold GP
    modules in reference cycles.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_bytes() -> int:
    """Resident set size of this process, bytes (0 where unknown)."""
    return _status_kb("VmRSS:") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size of this process, bytes (0 where unknown)."""
    return _status_kb("VmHWM:") * 1024


def _status_kb(key: str) -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
