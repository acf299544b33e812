"""How a job runs, as opposed to what it tunes: its clock and its telemetry.

Two config sections::

    clock: wall                                   # or simulated, or:
    clock: {mode: accelerated, seconds_per_hour: 5}
    telemetry: {host: 127.0.0.1, port: 9464}      # port 0: a free port

``clock.mode``:

- ``simulated``: the local driver steps a simulated clock as fast as it can
  (only a simulated world can keep up); on Ray, whose actors run on wall time,
  it means the fast default pace of :data:`RAY_SIMULATED_SECONDS_PER_HOUR`.
- ``accelerated``: wall time, ``seconds_per_hour`` wall seconds per job hour,
  for rehearsals against a platform that plays along (or a simulated world).
- ``wall``: one job hour is one real hour, for real platforms.

Unset, the mode is ``simulated`` for ``simulated:`` backends and ``wall`` for
every other backend: a real platform is never driven faster than real time by
accident.

Neither section changes what the job is: they are left out of the config
fingerprint, so a job resumes with another metrics port, and a resumed job
keeps the clock its folder recorded (``clock.json``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hz_ray.errors import ConfigError, field_error

CLOCK_MODES = ("simulated", "accelerated", "wall")
RAY_SIMULATED_SECONDS_PER_HOUR = 0.5
WALL_SECONDS_PER_HOUR = 3600.0
RAY_WORKER_PORTS = range(10002, 20000)  # Ray's default worker port range
RUNTIME_SECTIONS = ("clock", "telemetry")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


@dataclass(frozen=True)
class ClockSpec:
    """The job clock.

    Attributes:
        mode: ``"simulated"``, ``"accelerated"`` or ``"wall"``; ``None`` picks
            by the backend (see :meth:`resolved_mode`).
        seconds_per_hour: Wall seconds per job hour; required for (and only
            for) ``accelerated``, in ``[0.05, 3600]``.
    """

    mode: str | None = None
    seconds_per_hour: float | None = None

    def validate(self, where: str) -> None:
        """Raise ConfigError unless the spec is well-formed."""
        if self.mode is not None and self.mode not in CLOCK_MODES:
            raise field_error(ConfigError, f"{where}.mode", self.mode, f"one of {CLOCK_MODES}",
                              "Use 'wall' for a real platform, 'accelerated' with "
                              "seconds_per_hour for a rehearsal.")
        if self.mode == "accelerated":
            sph = self.seconds_per_hour
            if not _is_number(sph) or not 0.05 <= sph <= WALL_SECONDS_PER_HOUR:
                raise field_error(ConfigError, f"{where}.seconds_per_hour", sph,
                                  "a number of wall seconds in [0.05, 3600] for mode "
                                  "'accelerated'",
                                  "E.g. clock: {mode: accelerated, seconds_per_hour: 5} runs a "
                                  "72-hour job in 6 minutes.")
        elif self.seconds_per_hour is not None:
            raise field_error(ConfigError, f"{where}.seconds_per_hour", self.seconds_per_hour,
                              "unset unless mode is 'accelerated'",
                              f"Write clock: {{mode: accelerated, seconds_per_hour: "
                              f"{self.seconds_per_hour}}}, or drop seconds_per_hour.")

    def resolved_mode(self, backend_target: str) -> str:
        """The mode to run: the given one, else by the backend (simulated worlds only).

        Args:
            backend_target: The config's ``backend.target``.
        """
        if self.mode is not None:
            return self.mode
        return "simulated" if backend_target.startswith("simulated:") else "wall"

    def wall_seconds_per_hour(self, backend_target: str) -> float | None:
        """Wall seconds per job hour, or ``None`` for a simulated clock."""
        mode = self.resolved_mode(backend_target)
        if mode == "accelerated":
            return float(self.seconds_per_hour)  # type: ignore[arg-type]
        return WALL_SECONDS_PER_HOUR if mode == "wall" else None

    def to_mapping(self) -> dict[str, Any]:
        """A plain mapping that the config loader reads back."""
        out: dict[str, Any] = {"mode": self.mode}
        if self.seconds_per_hour is not None:
            out["seconds_per_hour"] = self.seconds_per_hour
        return out


@dataclass(frozen=True)
class TelemetrySpec:
    """Where the job serves its Prometheus metrics.

    Attributes:
        enabled: Serve ``/metrics`` at all.
        host: Interface to bind: an IP address or a host name; loopback by
            default (bind another interface only for a scraper on another host).
        port: TCP port; 0 picks a free one (the address is printed and written
            to the run folder's ``telemetry.json``).
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 0

    def validate(self, where: str) -> None:
        """Raise ConfigError unless the spec is well-formed."""
        if not isinstance(self.enabled, bool):
            raise field_error(ConfigError, f"{where}.enabled", self.enabled, "true or false")
        if not isinstance(self.host, str) or not _valid_host(self.host):
            raise field_error(ConfigError, f"{where}.host", self.host,
                              "an IP address or a host name", "Keep 127.0.0.1 unless Prometheus "
                              "runs on another host.")
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise field_error(ConfigError, f"{where}.port", port, "an integer in [0, 65535]",
                              "0 picks a free port; 9464 is the documented one.")
        if port in RAY_WORKER_PORTS:
            raise field_error(ConfigError, f"{where}.port", port,
                              "outside Ray's worker port range 10002-19999",
                              "Ray's workers take ports there; use e.g. 9464.")


def served_port(telemetry: TelemetrySpec, override: int | None = None) -> int | None:
    """The port a driver serves metrics on: ``override``, else the config's; ``None``: none.

    Args:
        telemetry: The config's ``telemetry`` section.
        override: A caller's explicit port (e.g. ``run_on_ray(metrics_port=...)``).
    """
    if override is not None:
        return int(override)
    return telemetry.port if telemetry.enabled else None


def ray_seconds_per_hour(clock: ClockSpec, backend_target: str) -> float:
    """Wall seconds per job hour on Ray, whose actors always run on wall time.

    A simulated clock there means the fast default pace
    (:data:`RAY_SIMULATED_SECONDS_PER_HOUR`).
    """
    return clock.wall_seconds_per_hour(backend_target) or RAY_SIMULATED_SECONDS_PER_HOUR


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(host))


def clock_spec_from(raw: object, where: str = "clock") -> ClockSpec:
    """Read the ``clock`` section: a mode name, or a mapping; null is the default.

    Raises:
        ConfigError: Not a mode name or a mapping of ``mode`` and
            ``seconds_per_hour``.
    """
    if raw is None:
        return ClockSpec()
    if isinstance(raw, str):
        return ClockSpec(mode=raw)
    if not isinstance(raw, Mapping):
        raise field_error(ConfigError, where, raw, f"a mode {CLOCK_MODES} or a mapping",
                          "Write clock: wall, or clock: {mode: accelerated, "
                          "seconds_per_hour: 5}.")
    unknown = sorted(str(k) for k in raw if k not in ("mode", "seconds_per_hour"))
    if unknown:
        raise field_error(ConfigError, where, unknown,
                          "made of known keys ['mode', 'seconds_per_hour']",
                          "Check the spelling of the key.")
    return ClockSpec(mode=raw.get("mode"), seconds_per_hour=raw.get("seconds_per_hour"))


def telemetry_spec_from(raw: object, where: str = "telemetry") -> TelemetrySpec:
    """Read the ``telemetry`` section; null is the default (loopback, a free port).

    Raises:
        ConfigError: Not a mapping of ``enabled``, ``host`` and ``port``.
    """
    if raw is None:
        return TelemetrySpec()
    known = ("enabled", "host", "port")
    if not isinstance(raw, Mapping):
        raise field_error(ConfigError, where, raw, "a mapping",
                          "Write telemetry: {host: 127.0.0.1, port: 9464}.")
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise field_error(ConfigError, where, unknown, f"made of known keys {list(known)}",
                          "Check the spelling of the key.")
    port = raw.get("port", 0)
    if isinstance(port, float) and port.is_integer():
        port = int(port)
    return TelemetrySpec(enabled=raw.get("enabled", True), host=raw.get("host", "127.0.0.1"),
                         port=port)
