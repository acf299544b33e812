"""The lifecycle of a test arm on the platform, as the event log records it.

Every arm hz-ray hands out is served to real people once it is launched, so
its lifecycle is logged (``arm_state`` events, :mod:`hz_ray.storage`) and the
log alone says which arms may still be live::

    proposed -> launching -> live -> stopping -> stopped
                    |                  ^   |
                    v                  |   v
              launch_failed -----------+  stop_failed (a failed attempt; still stopping)

- ``proposed``: the posterior service handed the arm out (``arm_registered``);
  the platform has not been asked to launch it.
- ``launching``: logged (durably) *before* the platform's ``launch`` is called,
  so after a crash the log tells an arm that may be live from one that never
  reached the platform.
- ``live``: ``launch`` returned.
- ``launch_failed``: ``launch`` kept failing; the arm may be half-launched, so
  it is stopped like any other.
- ``stopping``: the stop was decided (``arm_retired`` carries the reason).
- ``stop_failed``: one stop attempt failed (logged with the error); the arm
  stays ``stopping`` and the stop is retried with backoff until it succeeds.
- ``stopped``: ``stop`` returned. Only now does the arm count as stopped.
- ``handed_off``: at the job's end the recommended arm was kept live, on
  request (``arms.handoff_recommended``), for a confirmation test.

An arm *occupies* its slot until it is ``stopped`` or ``handed_off``: a slot
never has more than one arm that may be live, so live arms never exceed
``arms.slots``.
"""

from __future__ import annotations

from hz_ray.errors import StateError, field_error

PROPOSED = "proposed"
LAUNCHING = "launching"
LIVE = "live"
LAUNCH_FAILED = "launch_failed"
STOPPING = "stopping"
STOP_FAILED = "stop_failed"
STOPPED = "stopped"
HANDED_OFF = "handed_off"

STATES = (PROPOSED, LAUNCHING, LIVE, LAUNCH_FAILED, STOPPING, STOP_FAILED, STOPPED, HANDED_OFF)
#: States after which the platform serves the arm no more (or, handed off, no more for us).
SETTLED = frozenset({STOPPED, HANDED_OFF})
#: States in which the platform may serve the arm.
MAYBE_SERVED = frozenset({LAUNCHING, LIVE, LAUNCH_FAILED, STOPPING, STOP_FAILED})

_NEXT: dict[str, frozenset[str]] = {
    PROPOSED: frozenset({LAUNCHING, STOPPING, STOPPED}),  # stopped: never reached the platform
    LAUNCHING: frozenset({LIVE, LAUNCH_FAILED, STOPPING}),
    LIVE: frozenset({STOPPING, HANDED_OFF}),
    LAUNCH_FAILED: frozenset({STOPPING}),
    STOPPING: frozenset({STOP_FAILED, STOPPED}),
    STOP_FAILED: frozenset({STOP_FAILED, STOPPED}),
    STOPPED: frozenset(),
    HANDED_OFF: frozenset(),
}


def effective_state(state: str) -> str:
    """The state an arm is in after ``state`` was logged (a failed stop is still stopping)."""
    return STOPPING if state == STOP_FAILED else state


def can_move(current: str, new: str) -> bool:
    """True when the lifecycle allows ``current -> new`` (a repeat of ``current`` is allowed)."""
    if new == current and new != STOP_FAILED:
        return True
    return new in _NEXT.get(current, frozenset())


def check_move(arm_id: str, current: str, new: str) -> None:
    """Raise :class:`StateError` unless ``current -> new`` is a lifecycle step.

    Args:
        arm_id: The arm (for the message).
        current: Its logged state.
        new: The state asked for.
    """
    if new not in STATES:
        raise field_error(StateError, "state", new, f"one of {list(STATES)}")
    if not can_move(current, new):
        allowed = sorted(_NEXT.get(current, ()))
        raise field_error(StateError, f"state of arm {arm_id!r}", new,
                          f"a step from {current!r} (one of {allowed})",
                          "Arms move proposed -> launching -> live -> stopping -> stopped.")
