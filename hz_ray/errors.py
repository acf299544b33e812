"""Typed errors of hz-ray.

Every error carries a message (what is wrong: the field and the value) and a
hint (how to fix it). ``str(error)`` joins the two, in the style of Ax's
``AxError``. Retryable failures are :class:`TransientError`; everything else is
permanent.
"""

from __future__ import annotations


class HzRayError(Exception):
    """Root of all hz-ray errors.

    Args:
        message: What is wrong, naming the field and the offending value.
        hint: How to fix it. May be empty.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class ConfigError(HzRayError, ValueError):
    """A configuration value is missing, malformed or out of range."""


class InputDataError(HzRayError, ValueError):
    """A record from a platform or a caller is invalid (NaN, negative count, ...)."""


class StateError(HzRayError, RuntimeError):
    """A call came out of order or a stored state is incompatible."""


class ArmStoppedError(StateError):
    """The platform refused to launch an arm id it has already stopped.

    Arm ids are single-use: a backend raises this on a launch of a stopped id,
    so a restarted slot that relaunches the arm its log still calls live learns
    that the arm's stop reached the platform (see ``ArmBackend.launch``).
    """


class TransientError(HzRayError):
    """A retryable failure (a backend timeout, a busy actor)."""


def field_error(
    cls: type[HzRayError], field: str, value: object, constraint: str, hint: str = ""
) -> HzRayError:
    """Build an error in one house format.

    Args:
        cls: The error class to build.
        field: Dotted name of the offending field, e.g. ``"arms.slots"``.
        value: The value that was given.
        constraint: What the value must be, e.g. ``"an integer >= 1"``.
        hint: How to fix it.

    Returns:
        An instance of ``cls`` whose message reads
        ``"'<field>' must be <constraint>; got <value!r>."``.
    """
    return cls(f"{field!r} must be {constraint}; got {value!r}.", hint)
