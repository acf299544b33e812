"""Group commit of the Parquet event log: callers queue appends and wait until durable.

The posterior service is called from many threads; every log append is queued
as an *intent* with a ticket, and one committer thread (the only writer of the
:class:`~hz_ray.storage.EventLog`) writes every queued intent and flushes one
part file for all of them. A caller that must not answer before its events are
on disk (an ack, a handed-out arm) waits for its ticket.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from hz_ray.errors import TransientError
from hz_ray.kill_points import kill_point
from hz_ray.storage import EventLog

logger = logging.getLogger(__name__)
_ERROR_BACKOFF_S = 1.0


class GroupCommitLog:
    """An :class:`EventLog` written by one committer thread, many callers at once.

    :meth:`queue` must be called under the caller's own lock (the one that
    orders its state changes), so the log's order is the state's order.

    Args:
        log: The event log (this object becomes its only writer).
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._queue_lock = threading.Lock()
        self._committed = threading.Condition()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: Exception | None = None
        self._intents: list[tuple[Any, ...]] = []
        self._issued = 0          # tickets handed out (one per intent)
        self._durable_ticket = 0  # every intent with a ticket <= this is committed
        self.durable_seq = log.last_seq
        self._thread = threading.Thread(target=self._loop, name="hz-ray-commit", daemon=True)
        self._thread.start()

    @property
    def issued(self) -> int:
        """The newest ticket handed out."""
        return self._issued

    def queue(self, method: str, *args: Any) -> int:
        """Queue ``log.<method>(*args)``; returns its ticket.

        Args:
            method: An ``EventLog.append_*`` method name.
            *args: Its arguments.
        """
        with self._queue_lock:
            self._intents.append((method, args))
            self._issued += 1
            return self._issued

    def wait(self, ticket: int | None = None) -> None:
        """Return once every append up to ``ticket`` (default: all) is committed.

        Raises:
            TransientError: The log could not be written (the appends stay queued).
        """
        ticket = self._issued if ticket is None else ticket
        if ticket <= self._durable_ticket:
            return
        self._ready.set()
        with self._committed:
            while self._durable_ticket < ticket:
                if self._error is not None:
                    raise TransientError(f"event log write failed: {self._error}",
                                         "Retried by the caller; check the disk of run_dir.")
                self._committed.wait(timeout=1.0)

    def close(self) -> None:
        """Commit what is queued, then stop the committer thread."""
        self.wait()
        self._stop.set()
        self._ready.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        """Take every queued append, write them, flush one part file, wake the waiters."""
        while True:
            self._ready.wait()
            self._ready.clear()
            with self._queue_lock:
                intents, self._intents = self._intents, []
                last_ticket = self._issued
            if not intents and self._stop.is_set():
                return
            if not intents:
                continue
            try:
                for method, args in intents:
                    getattr(self.log, method)(*args)
                self.log.flush()  # on failure the log keeps its buffer; the next round retries
            except Exception as exc:  # keep serving; waiters get a TransientError
                logger.exception("Event log write failed; retrying.")
                with self._committed:
                    self._error = exc
                    self._committed.notify_all()
                time.sleep(_ERROR_BACKOFF_S)
                self._ready.set()
                continue
            kill_point("commit.after_flush")
            with self._committed:
                self._error = None
                self.durable_seq = self.log.last_seq
                self._durable_ticket = last_ticket
                self._committed.notify_all()
