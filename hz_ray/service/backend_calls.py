"""Every platform call of a slot, with a timeout and jittered retries.

A slot never waits on the platform longer than ``attempts x call_timeout_s``
plus the backoff between tries, whatever the platform does: each call runs in
its own daemon thread and is abandoned when it overruns (Python cannot kill a
thread; an abandoned call that returns later is ignored). While an abandoned
call of an arm is still running, no new call of the same kind is made for that
arm, so a platform that hangs for good holds at most one thread per arm and
call kind. Retries use :mod:`tenacity` (exponential backoff with jitter).

This module imports no torch (arm workers import it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from hz_ray.errors import ArmStoppedError, ConfigError, TransientError, field_error

logger = logging.getLogger(__name__)
T = TypeVar("T")


class BackendCallError(TransientError):
    """A platform call failed on every try (the last error is its ``__cause__``)."""


class BackendTimeoutError(TransientError, TimeoutError):
    """One platform call took longer than ``call_timeout_s``."""


@dataclass(frozen=True)
class CallPolicy:
    """How platform calls are tried.

    Attributes:
        timeout_s: Longest wait for one call, wall seconds (> 0).
        attempts: Tries of one call before it counts as failed (>= 1).
        initial_backoff_s: First wait between tries, wall seconds; doubles.
        max_backoff_s: Longest wait between tries.
        jitter_s: Up to this many random seconds added to each wait.
    """

    timeout_s: float = 30.0
    attempts: int = 4
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    jitter_s: float = 0.05

    def __post_init__(self) -> None:
        for name in ("timeout_s", "initial_backoff_s", "max_backoff_s", "jitter_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not value >= 0 or value == float("inf"):
                raise field_error(ConfigError, name, value, "a finite number of seconds >= 0")
        if self.timeout_s <= 0:
            raise field_error(ConfigError, "timeout_s", self.timeout_s, "> 0 seconds")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) \
                or self.attempts < 1:
            raise field_error(ConfigError, "attempts", self.attempts, "an integer >= 1")


class BackendCaller:
    """Runs one slot's platform calls under a :class:`CallPolicy`.

    Args:
        policy: Timeouts and retries.
        sleep: Waits between tries (the slot's interruptible sleep).
        on_error: Called with ``(what, arm_id, attempt, error)`` for every failed try.
        name: Names the call threads (e.g. ``"slot-03"``).
    """

    def __init__(self, policy: CallPolicy, sleep: Callable[[float], Any],
                 on_error: Callable[[str, str, int, BaseException], None] | None = None,
                 name: str = "slot") -> None:
        self.policy = policy
        self._sleep = sleep
        self._on_error = on_error
        self._name = name
        self._in_flight: dict[tuple[str, str], threading.Thread] = {}

    def call(self, what: str, arm_id: str, fn: Callable[[], T],
             attempts: int | None = None) -> T:
        """Call ``fn`` with a timeout per try and jittered backoff between tries.

        Args:
            what: ``"launch"``, ``"fetch"`` or ``"stop"`` (for logs and errors).
            arm_id: The arm the call is about.
            fn: The call.
            attempts: Tries (default: the policy's).

        Returns:
            ``fn``'s result.

        Raises:
            BackendCallError: Every try failed or timed out.
            ArmStoppedError: The platform refused to launch a stopped arm (a
                definite answer: not retried).
        """
        p = self.policy
        tries = attempts if attempts is not None else p.attempts
        retrying = Retrying(
            stop=stop_after_attempt(tries),
            # Errors only: a signal's KeyboardInterrupt (JobInterrupted) raised while the
            # call is awaited ends the call; a definite refusal is not asked again.
            retry=(retry_if_exception_type(Exception)
                   & retry_if_not_exception_type(ArmStoppedError)),
            wait=wait_exponential_jitter(multiplier=p.initial_backoff_s, max=p.max_backoff_s,
                                         jitter=p.jitter_s),
            sleep=self._sleep, reraise=False)
        try:
            for attempt in retrying:
                with attempt:
                    try:
                        return self._once(what, arm_id, fn)
                    except Exception as exc:
                        if self._on_error is not None:
                            self._on_error(what, arm_id, attempt.retry_state.attempt_number, exc)
                        raise
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise BackendCallError(
                f"backend {what} of arm {arm_id!r} failed {tries} time(s); last error: "
                f"{type(last).__name__}: {last}",
                "The slot retries later; check the platform.") from last
        raise AssertionError("unreachable")  # pragma: no cover

    def settle(self, what: str, arm_id: str, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for an abandoned (timed-out) call to return.

        Returns:
            True when no such call is running any more (the next try can be made).
        """
        running = self._in_flight.get((what, arm_id))
        if running is None:
            return True
        running.join(timeout_s)
        if running.is_alive():
            return False
        self._in_flight.pop((what, arm_id), None)
        return True

    def _once(self, what: str, arm_id: str, fn: Callable[[], T]) -> T:
        """One try, abandoned after ``timeout_s``."""
        key = (what, arm_id)
        running = self._in_flight.get(key)
        if running is not None and running.is_alive():
            raise BackendTimeoutError(
                f"an earlier {what} of arm {arm_id!r} is still running (hung)",
                "Not called again until it returns.")
        box: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["value"] = fn()
            except Exception as exc:  # noqa: BLE001 - any platform error, handed to the caller
                box["error"] = exc
            except BaseException as exc:  # SystemExit & co. in a platform client
                box["error"] = RuntimeError(f"{type(exc).__name__} raised in backend {what}")
            finally:
                done.set()

        thread = threading.Thread(target=target, name=f"hz-ray-{self._name}-{what}",
                                  daemon=True)
        thread.start()
        if not done.wait(self.policy.timeout_s):
            self._in_flight[key] = thread
            raise BackendTimeoutError(
                f"backend {what} of arm {arm_id!r} took longer than "
                f"{self.policy.timeout_s:g} s", "Raise backend.call_timeout_s if it is slow.")
        self._in_flight.pop(key, None)
        if "error" in box:
            raise box["error"]
        return box["value"]
