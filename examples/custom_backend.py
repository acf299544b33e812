"""A template for connecting hz-ray to your own experiment platform.

Copy this file into your own package, replace every ``TODO(platform)`` with
your platform's API calls, and name the class in the job config::

    backend:
      target: "my_package.my_platform:MyPlatform"   # module path : class name
      kwargs: {endpoint: "https://experiments.example.internal", experiment: feed-ranking}
      call_timeout_s: 30                            # longest wait for one call

``kwargs`` are passed to ``MyPlatform(...)`` by keyword; a constructor that takes
a ``clock`` argument also gets the job clock. The module must be importable
where the job runs: by ``hz-ray run``, and on every Ray node for a cluster job
(install your package there, or ship it with the job's runtime environment).
``hz-ray validate CONFIG`` imports the class, checks that it defines
``launch``, ``fetch`` and ``stop``, and checks the config's metrics against
:attr:`MyPlatform.metrics`, without calling anything.

Run the demo: ``python examples/custom_backend.py``. It runs a 24-hour job on a
simulated clock against :class:`ToyApi`, an in-memory stand-in for a platform
whose metrics follow a formula, and prints the readout. The same toy platform
runs from a config (``PYTHONPATH=examples`` so that ``custom_backend`` imports)::

    clock: simulated
    backend:
      target: "custom_backend:MyPlatform"
      kwargs: {endpoint: toy}

How hz-ray calls the three methods
----------------------------------
- ``launch(arm_id, params)`` once per new test arm; again for an arm that is
  already live when a job resumes, and again after a try that failed or timed
  out.
- ``fetch(arm_id, since_hour)`` a few times per job hour (every 0.25 job hour
  by default) for every arm that is live, being stopped, or stopped less than
  ``arms.late_data_hours`` ago.
- ``stop(arm_id)`` when the arm ends (its lifetime, a guardrail, not a
  contender, failed fetches or launch), and at every ending of the job (last
  hour, an error, Ctrl-C, SIGTERM, ``hz-ray stop``) for every arm the job may
  have left live, including arms whose launch failed half-way.

Every call runs with a timeout (``backend.call_timeout_s``, 30 s by default)
and jittered exponential retries (``hz_ray/service/backend_calls.py``). Any
exception counts as a failed try:

- ``launch``: up to 4 tries; if all fail the arm is logged ``launch_failed``,
  ``stop`` is called for it (it may be half-launched) and the slot tries a new
  arm the next job hour.
- ``fetch``: one try per poll; after 5 failed polls in a row the arm is
  stopped with reason ``backend_error``. Other arms go on.
- ``stop``: up to 4 tries per attempt, and failed attempts are retried at later
  polls (after 1, 2, 4, 4, ... polls) until one succeeds. Until then the slot
  launches nothing; the stuck stop shows in ``hz-ray status``, on the progress
  line and in ``hzray_arms_stuck_stopping``. An arm counts as stopped only
  once ``stop`` returned.

A call that overruns the timeout is abandoned (its thread keeps running; what
it returns later is ignored) and no new call of the same kind is made for the
arm until it has returned. So every method must be safe to run twice, even
concurrently with an abandoned earlier try: make ``launch`` and ``stop``
idempotent on the platform side, keyed by ``arm_id``.

hz-ray may build the class several times: every Ray arm worker builds its own,
the final stops build another, and a resumed job builds new ones. Keep no state
in the object that the platform does not hold too: ``fetch`` and ``stop`` must
work for an arm launched by another instance or an earlier process.
"""

from __future__ import annotations

import math
import random
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hz_ray.clock import Clock, current_hour
from hz_ray.errors import ConfigError, HzRayError, StateError, field_error
from hz_ray.records import GroupStats, HourlyReading, InvalidReading

#: The keys of one hourly row of statistics (the same columns as the file-drop format).
ROW_KEYS = ("metric", "test_mean", "test_var", "test_n", "control_mean", "control_var",
            "control_n")


def job_hour_window(clock: Clock, hour: int) -> tuple[float, float]:
    """The wall-time interval ``[start_s, end_s)`` (Unix seconds) of job hour ``hour``.

    Job hour ``h`` covers ``[epoch_s + h * seconds_per_hour, epoch_s + (h + 1) *
    seconds_per_hour)``; the job's ``epoch_s`` is its start, recorded in the run
    folder's ``clock.json``. Read the clock at every call, never once in
    ``__init__``: the Ray driver builds backends before the job starts and sets
    the epoch afterwards.

    Args:
        clock: The job clock handed to the backend (a wall or accelerated clock).
        hour: Job hour index, >= 0.

    Returns:
        ``(start_s, end_s)`` in Unix seconds.

    Raises:
        StateError: ``clock`` is a simulated clock, which has no wall time.
    """
    epoch_s = getattr(clock, "epoch_s", None)
    seconds_per_hour = getattr(clock, "seconds_per_hour", None)
    if epoch_s is None or seconds_per_hour is None:
        raise StateError("A simulated clock has no wall-time hours.",
                         "Run a real platform on clock: wall (or accelerated, to rehearse).")
    start_s = float(epoch_s) + hour * float(seconds_per_hour)
    return start_s, start_s + float(seconds_per_hour)


class MyPlatform:
    """hz-ray's port to an experiment platform (implements ``hz_ray.backends.ArmBackend``).

    The platform runs a control group with the production weights (the
    parameters' ``base`` values) all the time. Each test arm is a fresh,
    disjoint random group of units (users) served the arm's weights; every
    hourly reading of an arm carries the control group's statistics of the same
    job hour, so hz-ray can divide them and cancel time-of-day swings.

    Args:
        clock: The job clock (hz-ray passes it because the argument is named
            ``clock``). ``current_hour(clock)`` is the job hour in progress.
        endpoint: Where your platform's API is; ``"toy"`` uses the in-memory
            :class:`ToyApi` of the demo.
        experiment: Your platform's experiment (or layer) the arms run in.

    Raises:
        ConfigError: A bad ``endpoint`` or ``experiment``; the job stops before
            it launches anything.
    """

    #: Metrics this platform publishes, exactly as the config names them
    #: (objective, constraints, extra_metrics). A misspelled name in a config is
    #: then an error before any arm is launched. ``None`` declares nothing.
    metrics: tuple[str, ...] | None = ("views", "likes")  # TODO(platform): your metrics

    def __init__(self, clock: Clock, endpoint: str = "toy",
                 experiment: str = "feed-ranking") -> None:
        if not isinstance(experiment, str) or not experiment:
            raise field_error(ConfigError, "backend.kwargs.experiment", experiment,
                              "a non-empty experiment name")
        self.clock = clock
        self.experiment = experiment
        if endpoint == "toy":
            self.api: Any = ToyApi.shared(clock)
        else:
            # TODO(platform): build your API client here (read credentials from the
            # environment or a secret store, never from the config), e.g.
            #     self.api = MyPlatformClient(endpoint, token=os.environ["PLATFORM_TOKEN"])
            raise field_error(ConfigError, "backend.kwargs.endpoint", endpoint,
                              "'toy' or the address of a platform this class can talk to",
                              "Fill in the TODO(platform) parts of the template first.")

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Start serving ``params`` to a fresh test group named ``arm_id``.

        Return once the platform has accepted the request; hz-ray then logs the
        arm ``live``. Data of the job hour in progress and later hours count for
        the arm; earlier hours are rejected as before its launch.

        Idempotency: if the platform already serves ``arm_id`` (a retry of a
        try that timed out, or a resumed job relaunching its live arms), do
        nothing. hz-ray never reuses an arm id, so a launch of an arm that was
        stopped is an error: raise instead of serving it again.

        Args:
            arm_id: The arm's id, e.g. ``"feed-vm-7f3a.s03-0012"`` (the job id,
                the slot and the arm's number): letters, digits, ``.``, ``_``
                and ``-``, at most 200 characters. Use it as the test group's
                name or idempotency key.
            params: The weights, by parameter name, as floats.

        Raises:
            StateError: The arm was stopped before; nothing is served.
            Exception: Anything your client raises for a failed request; hz-ray
                retries (see the module docstring).
        """
        group = self.api.get_group(self.experiment, arm_id)  # TODO(platform): look the arm up
        if group is not None:
            if group.serving:
                return  # already served: a retry or a resumed job
            raise StateError(f"Arm {arm_id!r} was stopped on the platform; it is never "
                             "served again.", "hz-ray never reuses an arm id.")
        # TODO(platform): create the test group serving these weights, e.g.
        #     self.api.post(f"/experiments/{self.experiment}/groups",
        #                   json={"name": arm_id, "weights": dict(params)})
        self.api.create_group(self.experiment, arm_id, {k: float(v) for k, v in params.items()})

    def fetch(self, arm_id: str, since_hour: int) -> list[HourlyReading | InvalidReading]:
        """Every published, complete job hour of ``arm_id`` with ``hour >= since_hour``.

        One :class:`~hz_ray.records.HourlyReading` per metric and job hour:
        ``test`` and ``control`` are :class:`~hz_ray.records.GroupStats` of that
        hour, ``mean`` the metric per unit (e.g. views per user), ``var`` the
        variance of the per-unit values across the group's units (not of the
        mean; ``None`` when unknown) and ``n`` the number of units. Job hour
        ``h`` is the wall interval :func:`job_hour_window` gives.

        Return an hour only once it is complete and final: the first value
        hz-ray accepts for ``(arm_id, metric, hour)`` stands, and a different
        value later is rejected as a conflicting duplicate. Returning hours
        late, out of order, or again (unchanged) is fine. Keep the readings of a
        stopped arm fetchable, including the hour in which it stopped.

        A row your platform returns but that cannot be a reading (a missing
        value, ``n = 0``, a control mean of 0) comes back as an
        :class:`~hz_ray.records.InvalidReading` with its reason: hz-ray keeps
        it in the event log and goes on with the other rows.

        Args:
            arm_id: The arm.
            since_hour: The first job hour hz-ray still lacks for the arm.

        Returns:
            The readings (and invalid rows); an empty list for an arm the
            platform does not know (yet).

        Raises:
            Exception: Anything your client raises for a failed request: the
                poll counts as failed (5 in a row stop the arm). Do not raise
                for bad rows; return them as invalid readings.
        """
        # TODO(platform): look the arm up; the toy's group has .serving, .first_hour (the
        # job hour it started serving in) and .end_hour (the first hour it did not serve).
        group = self.api.get_group(self.experiment, arm_id)
        if group is None:
            return []
        complete = current_hour(self.clock)  # hours before the one in progress are complete
        end = complete if group.end_hour is None else min(complete, group.end_hour)
        out: list[HourlyReading | InvalidReading] = []
        for hour in range(max(since_hour, group.first_hour), end):
            # TODO(platform): query the hour's statistics of the test group and of the
            # control group, one row per metric (keys ROW_KEYS). A platform that keeps
            # wall time aggregates over job_hour_window(self.clock, hour), e.g.
            #     start_s, end_s = job_hour_window(self.clock, hour)
            #     rows = self.api.get(f"/experiments/{self.experiment}/stats",
            #                         params={"group": arm_id, "from": start_s, "to": end_s})
            for row in self.api.hourly_stats(self.experiment, arm_id, hour):
                out.append(_reading(arm_id, hour, row))
        return out

    def stop(self, arm_id: str) -> None:
        """Stop serving ``arm_id``; its published readings stay fetchable.

        Return only once the platform has confirmed: hz-ray then counts the arm
        as stopped and may launch the next one in its slot. Never swallow an
        error here; raise it, and hz-ray retries until a stop succeeds.

        Idempotency: stopping an arm that is stopped already, or that the
        platform never heard of (its launch failed before reaching it), is a
        no-op that returns normally.

        Args:
            arm_id: The arm.

        Raises:
            Exception: Anything your client raises for a failed request; hz-ray
                retries.
        """
        group = self.api.get_group(self.experiment, arm_id)  # TODO(platform): look the arm up
        if group is None or not group.serving:
            return  # never launched, or stopped already
        # TODO(platform): end the test group, e.g.
        #     self.api.post(f"/experiments/{self.experiment}/groups/{arm_id}:stop")
        self.api.end_group(self.experiment, arm_id)


def _reading(arm_id: str, hour: int, row: Mapping[str, Any]) -> HourlyReading | InvalidReading:
    """One platform row as a reading, or as an invalid reading with the reason."""
    try:
        return HourlyReading(
            arm_id=arm_id, hour=hour, metric=row["metric"],
            test=GroupStats(float(row["test_mean"]), _variance(row.get("test_var")),
                            int(row["test_n"])),
            control=GroupStats(float(row["control_mean"]), _variance(row.get("control_var")),
                               int(row["control_n"])),
        )
    except (HzRayError, KeyError, TypeError, ValueError) as exc:
        return InvalidReading(arm_id, {**row, "hour": hour}, f"{type(exc).__name__}: {exc}")


def _variance(value: object) -> float | None:
    """A reported variance as a float; ``None`` (unknown) for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ the toy platform
@dataclass
class ToyGroup:
    """A test group on the toy platform.

    Attributes:
        weights: The weights it serves.
        first_hour: The job hour it started serving in.
        end_hour: The first job hour it did not serve, ``None`` while serving.
    """

    weights: dict[str, float]
    first_hour: int
    end_hour: int | None = None

    @property
    def serving(self) -> bool:
        """True until the group is ended."""
        return self.end_hour is None


class ToyApi:
    """An in-memory experiment platform for the demo: metrics follow a formula.

    Views rise as ``w_like / w_click`` falls, likes fall with it; every hour's
    group means carry sampling noise consistent with the reported variances.
    The same instance serves every :class:`MyPlatform` built on the same clock,
    as a real platform is one service behind many clients.

    Args:
        clock: The job clock.
        units: Units (users) per group and hour.
    """

    _instances: weakref.WeakKeyDictionary[Clock, ToyApi] = weakref.WeakKeyDictionary()

    def __init__(self, clock: Clock, units: int = 50_000) -> None:
        self.clock = clock
        self.units = units
        self.groups: dict[tuple[str, str], ToyGroup] = {}

    @classmethod
    def shared(cls, clock: Clock) -> ToyApi:
        """The toy platform of ``clock`` (one per clock object)."""
        api = cls._instances.get(clock)
        if api is None:
            api = cls._instances[clock] = cls(clock)
        return api

    def get_group(self, experiment: str, name: str) -> ToyGroup | None:
        """The group, or ``None`` when the platform does not know it."""
        return self.groups.get((experiment, name))

    def create_group(self, experiment: str, name: str, weights: Mapping[str, float]) -> None:
        """Start serving ``weights`` to a new group from the hour in progress."""
        self.groups.setdefault((experiment, name),
                               ToyGroup(dict(weights), current_hour(self.clock)))

    def end_group(self, experiment: str, name: str) -> None:
        """Stop serving; a stop inside an hour leaves that hour served in part."""
        group = self.groups[(experiment, name)]
        if group.end_hour is None:
            group.end_hour = max(group.first_hour, math.ceil(self.clock.now_hours() - 1e-9))

    def hourly_stats(self, experiment: str, name: str, hour: int) -> list[dict[str, Any]]:
        """One row per metric of ``hour`` (keys :data:`ROW_KEYS`)."""
        weights = self.groups[(experiment, name)].weights
        ratio = math.log(weights["w_like"] / weights["w_click"])
        lifts = {"views": -0.02 * ratio - 0.01 * ratio**2, "likes": 0.03 * ratio}
        rows = []
        for metric, lift in lifts.items():
            base, var = 2.0, 4.0
            noise_sd = math.sqrt(var / self.units)
            control = base + random.Random(f"{experiment}:{metric}:{hour}").gauss(0, noise_sd)
            test = base * (1 + lift) + random.Random(f"{name}:{metric}:{hour}").gauss(0, noise_sd)
            rows.append({"metric": metric, "test_mean": test, "test_var": var,
                         "test_n": self.units, "control_mean": control, "control_var": var,
                         "control_n": self.units})
        return rows


def main() -> None:
    """Run a 24-hour job against the toy platform on a simulated clock; print the readout."""
    from hz_ray import SimClock, load_config, run_local
    from hz_ray.report import readout

    config = load_config({
        "name": "custom-backend-demo",
        "parameters": [{"name": "w_click", "low": 0.5, "high": 2.0, "base": 1.0},
                       {"name": "w_like", "low": 0.5, "high": 2.0, "base": 1.0}],
        "objective": {"metric": "views"},
        "constraints": [{"metric": "likes", "min_delta": -0.01}],
        "arms": {"slots": 4, "min_hours": 3, "max_hours": 8},
        "optimizer": {"seed": 0, "hold_fixed": "w_click"},
        "clock": "simulated",
        "backend": {"target": "custom_backend:MyPlatform", "kwargs": {"endpoint": "toy"}},
    })
    clock = SimClock()
    result = run_local(config, MyPlatform(clock, endpoint="toy"), clock=clock, hours=24)
    print(readout(result))


if __name__ == "__main__":
    main()
