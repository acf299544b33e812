"""The Parquet event log (the source of truth) and atomic JSON checkpoints.

Event log
---------
An :class:`EventLog` is a directory of Parquet part files
``part-<first seq, 12 digits>.parquet``, all with the one schema
:data:`EVENT_SCHEMA`. It is append-only: events are buffered in memory and
:meth:`EventLog.flush` writes them as one new part file, atomically (temporary
file in the same directory, fsync, ``os.replace``, fsync of the directory). A
temporary file left behind by a crash is never read. One process writes a log
at a time; reopening a directory continues the sequence numbers after the
largest one on disk. Checkpoints only shorten the replay: a run is rebuilt by
loading its checkpoint and :func:`replay_into` the events after the
checkpoint's ``seq``.

Columns (one row per event; "null" where a column does not apply):

====================  =========  ==============================================================
column                type       meaning
====================  =========  ==============================================================
``seq``               int64      Event number, 0, 1, 2, ... in append order; unique and
                                 increasing within a log, also across restarts.
``wall_time_s``       float64    Wall-clock time of the append, seconds since the Unix epoch.
``kind``              string     ``job_started``, ``arm_registered``, ``arm_state``,
                                 ``delta_accepted``, ``delta_rejected``, ``arm_retired``,
                                 ``suggestion``, ``recommendation`` or ``job_alarm``.
``arm_id``            string     The arm. Null only for a rejected raw payload without a usable
                                 ``arm_id``.
``metric``            string     Metric name (``delta_*`` events).
``hour``              int64      Job hour: of the delta (``delta_*``), of registration
                                 (``arm_registered``), of a state change (``arm_state``), of
                                 retirement (``arm_retired``) or of a readout
                                 (``recommendation``); nullable.
``mean``              float64    Relative delta of the hour, ``X(w)/X(w0) - 1`` (0.01 = +1%);
                                 for ``recommendation``, the objective's posterior mean.
``var``               float64    Variance of ``mean`` by the delta method, (relative delta)^2;
                                 null when the platform reported no group variances.
``n``                 int64      Test-group unit count of the hour (the aggregation weight).
``params_json``       string     The arm's weights as a JSON object ``{"name": value}``
                                 (``arm_registered``, ``suggestion``, ``recommendation``).
``reason``            string     Why a record was rejected, an arm retired or a state was
                                 entered (``arm_state``), or the alarm (``job_alarm``).
``payload_json``      string     ``delta_rejected``: the raw input of a record that could
                                 not even become a delta (e.g. a reading with NaN), as strict
                                 JSON; non-finite numbers are written as the strings ``"nan"``,
                                 ``"inf"``, ``"-inf"``. ``job_started``: the job's id, config
                                 (as loaded) and fingerprint. ``recommendation``: the whole
                                 readout (bound, P(feasible), per-metric posteriors).
``model_version``     int64      ``suggestion`` only: the ledger version of the posterior
                                 snapshot the suggestion was drawn from.
``control_var``       float64    ``delta_*``: the part of ``var`` due to the control group's
                                 sampling error, shared by every arm of the hour; null when
                                 unknown. Logs written before this column (schema version 1)
                                 are read with nulls here.
``state``             string     ``arm_state`` only: the arm's new lifecycle state
                                 (:mod:`hz_ray.service.arm_states`: ``launching``, ``live``,
                                 ``stopping``, ``stop_failed``, ``stopped``, ...); ``reason``
                                 then holds the error of a failed attempt or the stop reason.
                                 Parts of schema versions 1 and 2 are read with nulls here.
====================  =========  ==============================================================

Read a log with any Parquet reader, e.g. ``pyarrow.dataset.dataset(dir)`` or
DuckDB's ``read_parquet('dir/part-*.parquet')``; ignore files starting with a dot.

Checkpoints
-----------
:func:`save_checkpoint` writes a JSON object atomically (temporary file, fsync,
``os.replace``); :func:`load_checkpoint` reads it back. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hz_ray.errors import InputDataError, StateError, field_error
from hz_ray.kill_points import kill_point
from hz_ray.ledger import Ledger
from hz_ray.records import ArmEstimate, HourlyDelta, MetricPosterior, Recommendation

__all__ = [
    "EVENT_KINDS",
    "EVENT_SCHEMA",
    "EventLog",
    "load_checkpoint",
    "recommendation_from_event",
    "replay_into",
    "save_checkpoint",
]

EVENT_KINDS = ("job_started", "arm_registered", "arm_state", "delta_accepted", "delta_rejected",
               "arm_retired", "suggestion", "recommendation", "job_alarm")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("wall_time_s", pa.float64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("arm_id", pa.string()),
        pa.field("metric", pa.string()),
        pa.field("hour", pa.int64()),
        pa.field("mean", pa.float64()),
        pa.field("var", pa.float64()),
        pa.field("n", pa.int64()),
        pa.field("params_json", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("payload_json", pa.string()),
        pa.field("model_version", pa.int64()),
        pa.field("control_var", pa.float64()),
        pa.field("state", pa.string()),
    ],
    metadata={"hz_ray.event_log.schema_version": "3"},
)
# Older versions lacked trailing columns: version 1 ``control_var`` and ``state``, version 2
# ``state``. Their parts are read with nulls there.
_OLDER_SCHEMAS = tuple(pa.schema([EVENT_SCHEMA.field(name) for name in EVENT_SCHEMA.names[:k]])
                       for k in (len(EVENT_SCHEMA.names) - 2, len(EVENT_SCHEMA.names) - 1))

# Column names in schema order, computed once: iterating the pyarrow schema per
# event cost ~40 us and bounded the central actor's ingest rate.
_EVENT_FIELD_NAMES: tuple[str, ...] = tuple(EVENT_SCHEMA.names)

_PART_RE = re.compile(r"^part-(\d+)\.parquet$")
_SEQ_DIGITS = 12


# -------------------------------------------------------------------- file helpers


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` via a temporary file in the same directory, fsync, ``os.replace``.

    Args:
        path: Final path.
        write: Called with a binary file object open for writing.
    """
    kill_point(f"{'log' if path.suffix == '.parquet' else path.stem}.before_write")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        kill_point(f"{'log' if path.suffix == '.parquet' else path.stem}.before_replace")
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    kill_point(f"{'log' if path.suffix == '.parquet' else path.stem}.after_replace")
    _fsync_directory(path.parent)


# ------------------------------------------------------------------- JSON helpers


def _plain(value: Any) -> Any:
    """Turn a raw payload into strict-JSON-able builtins; never fails."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        try:
            return _plain(value.item())
        except (TypeError, ValueError):
            pass
    return repr(value)


def _params_json(params: Mapping[str, float]) -> str:
    if not isinstance(params, Mapping):
        raise field_error(InputDataError, "params", params, "a mapping of name -> weight")
    try:
        return json.dumps({str(k): float(v) for k, v in params.items()},
                          sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise field_error(
            InputDataError, "params", dict(params), "finite numbers by name", str(exc)) from exc


def _text(field: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise field_error(InputDataError, field, value, "a non-empty string")
    return value


def _optional_int(field: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise field_error(InputDataError, field, value, "an integer or None")
    return value


# ------------------------------------------------------------------------- log


class EventLog:
    """Append-only Parquet event log in one directory.

    Args:
        directory: The log's directory; created if missing.
        clock: Returns the wall time in seconds since the epoch (injectable for
            tests).

    Raises:
        StateError: A part file on disk cannot be read.
    """

    def __init__(self, directory: str | Path, clock: Callable[[], float] = time.time) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._buffer: list[dict[str, Any]] = []
        self._last_seq = self._last_seq_on_disk()

    # ------------------------------------------------------------------ views
    @property
    def directory(self) -> Path:
        """The log's directory."""
        return self._dir

    @property
    def last_seq(self) -> int:
        """Largest ``seq`` appended so far (flushed or not); -1 for an empty log."""
        return self._last_seq

    @property
    def pending(self) -> int:
        """Number of buffered events not yet flushed."""
        return len(self._buffer)

    def part_files(self) -> list[Path]:
        """The committed part files, in ``seq`` order (temporary files excluded)."""
        parts = []
        for path in self._dir.iterdir():
            match = _PART_RE.match(path.name)
            if match and path.is_file():
                parts.append((int(match.group(1)), path))
        return [path for _, path in sorted(parts)]

    # ---------------------------------------------------------------- appends
    def _append(self, kind: str, **columns: Any) -> int:
        self._last_seq += 1
        row = dict.fromkeys(_EVENT_FIELD_NAMES)
        row.update(columns)
        row["seq"] = self._last_seq
        row["wall_time_s"] = float(self._clock())
        row["kind"] = kind
        self._buffer.append(row)
        return self._last_seq

    def append_arm(
        self, arm_id: str, params: Mapping[str, float], hour: int | None = None
    ) -> int:
        """Log an arm registration with its weights; returns the event's ``seq``."""
        return self._append(
            "arm_registered", arm_id=_text("arm_id", arm_id), hour=_optional_int("hour", hour),
            params_json=_params_json(params),
        )

    def append_accepted(self, deltas: Iterable[HourlyDelta]) -> list[int]:
        """Log accepted deltas, one event each; returns their ``seq`` numbers.

        Raises:
            InputDataError: An item is not an :class:`HourlyDelta` (nothing is
                appended then).
        """
        items = list(deltas)
        for index, item in enumerate(items):
            if not isinstance(item, HourlyDelta):
                raise field_error(
                    InputDataError, f"deltas[{index}]", type(item).__name__, "an HourlyDelta")
        return [self._append("delta_accepted", **_delta_columns(item)) for item in items]

    def append_rejected(self, record_or_raw: Any, reason: str) -> int:
        """Quarantine a rejected record with its reason; returns the event's ``seq``.

        Args:
            record_or_raw: An :class:`HourlyDelta` the ledger refused, or any raw
                input that could not become one (a dict, a dataclass, ...). Raw
                input is stored in ``payload_json``; its ``arm_id``, ``metric`` and
                ``hour`` fill their columns when present with the right types.
            reason: Why it was rejected (non-empty).
        """
        reason = _text("reason", reason)
        if isinstance(record_or_raw, HourlyDelta):
            return self._append("delta_rejected", reason=reason, **_delta_columns(record_or_raw))
        payload = _plain(record_or_raw)
        columns: dict[str, Any] = {"payload_json": json.dumps(payload, sort_keys=True)}
        if isinstance(payload, dict):
            for name, kind in (("arm_id", str), ("metric", str), ("hour", int)):
                value = payload.get(name)
                if isinstance(value, kind) and not isinstance(value, bool):
                    columns[name] = value
        return self._append("delta_rejected", reason=reason, **columns)

    def append_retired(self, arm_id: str, reason: str, hour: int | None = None) -> int:
        """Log an arm's retirement; returns the event's ``seq``."""
        return self._append(
            "arm_retired", arm_id=_text("arm_id", arm_id), reason=_text("reason", reason),
            hour=_optional_int("hour", hour),
        )

    def append_suggestion(
        self, arm_id: str, params: Mapping[str, float], model_version: int | None
    ) -> int:
        """Log a suggestion handed out by the optimizer; returns the event's ``seq``."""
        return self._append(
            "suggestion", arm_id=_text("arm_id", arm_id), params_json=_params_json(params),
            model_version=_optional_int("model_version", model_version),
        )

    def append_job_started(self, job_id: str, payload: Mapping[str, Any]) -> int:
        """Log the start (or a resume) of a job: its id, config and fingerprint."""
        return self._append("job_started", arm_id=_text("job_id", job_id),
                            payload_json=json.dumps(_plain(dict(payload)), sort_keys=True))

    def append_job_alarm(self, job_id: str, reason: str, hour: int) -> int:
        """Log an alarm that stops the job's launches (e.g. a metric never reported)."""
        return self._append("job_alarm", arm_id=_text("job_id", job_id),
                            reason=_text("reason", reason), hour=_optional_int("hour", hour))

    def append_arm_state(self, arm_id: str, state: str, hour: int | None = None,
                         reason: str | None = None) -> int:
        """Log an arm's change of state (e.g. ``live`` once the platform launched it)."""
        return self._append("arm_state", arm_id=_text("arm_id", arm_id),
                            state=_text("state", state), hour=_optional_int("hour", hour),
                            reason=reason)

    def append_recommendation(self, hour: int, recommendation: Recommendation) -> int:
        """Log the readout after job ``hour``; :func:`recommendation_from_event` reads it."""
        payload = dataclasses.asdict(recommendation)
        return self._append(
            "recommendation", arm_id=_text("arm_id", recommendation.arm_id),
            hour=_optional_int("hour", hour), mean=float(recommendation.objective_mean),
            params_json=_params_json(recommendation.params),
            payload_json=json.dumps(_plain(payload), sort_keys=True))

    # ------------------------------------------------------------------ flush
    def flush(self) -> Path | None:
        """Write the buffered events as one new part file, atomically.

        On failure the buffer is kept, so a later flush writes the same events
        under the same file name.

        Returns:
            The new part file, or ``None`` when nothing was buffered.

        Raises:
            StateError: The part file already exists (two writers on one log).
        """
        if not self._buffer:
            return None
        first = self._buffer[0]["seq"]
        path = self._dir / f"part-{first:0{_SEQ_DIGITS}d}.parquet"
        if path.exists():
            raise StateError(
                f"Event log part {str(path)!r} already exists.",
                "Only one process may write an event log; open a new directory.",
            )
        table = pa.Table.from_pylist(self._buffer, schema=EVENT_SCHEMA)
        _atomic_write(path, lambda handle: pq.write_table(table, handle))
        self._buffer = []
        return path

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()

    # ------------------------------------------------------------------- read
    def read(self, since_seq: int = -1) -> pa.Table:
        """All events with ``seq > since_seq`` in ``seq`` order, buffered ones included.

        Returns:
            A table with schema :data:`EVENT_SCHEMA`.

        Raises:
            StateError: A part file is unreadable or has another schema.
        """
        if isinstance(since_seq, bool) or not isinstance(since_seq, int) or since_seq < -1:
            raise field_error(InputDataError, "since_seq", since_seq, "an integer >= -1")
        parts = self.part_files()
        firsts = [int(_PART_RE.match(p.name).group(1)) for p in parts]  # type: ignore[union-attr]
        tables = []
        for index, path in enumerate(parts):
            next_first = firsts[index + 1] if index + 1 < len(parts) else None
            if next_first is not None and next_first - 1 <= since_seq:
                continue  # every seq in this part is <= since_seq
            tables.append(_read_part(path))
        if self._buffer:
            tables.append(pa.Table.from_pylist(self._buffer, schema=EVENT_SCHEMA))
        if not tables:
            return EVENT_SCHEMA.empty_table()
        table = pa.concat_tables(tables)
        table = table.filter(pc.greater(table["seq"], since_seq))
        return table.sort_by("seq")

    def iter_events(self, since_seq: int = -1) -> Iterator[dict[str, Any]]:
        """Yield the events of :meth:`read` as dicts, in ``seq`` order."""
        for batch in self.read(since_seq).to_batches():
            yield from batch.to_pylist()

    def _last_seq_on_disk(self) -> int:
        last = -1
        for path in self.part_files():
            seqs = _read_part(path, columns=["seq"])["seq"]
            if len(seqs):
                last = max(last, pc.max(seqs).as_py())
        return last


def _delta_columns(delta: HourlyDelta) -> dict[str, Any]:
    return {"arm_id": delta.arm_id, "metric": delta.metric, "hour": delta.hour,
            "mean": delta.mean, "var": delta.var, "n": delta.n,
            "control_var": delta.control_var}


def _read_part(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        table = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise StateError(
            f"Event log part {str(path)!r} cannot be read: {exc}.",
            "Restore the file from backup or move it aside; committed parts are written "
            "atomically, so this is disk damage or an outside edit.",
        ) from exc
    expected = EVENT_SCHEMA if columns is None else pa.schema(
        [EVENT_SCHEMA.field(name) for name in columns])
    if columns is None and any(table.schema.equals(old, check_metadata=False)
                               for old in _OLDER_SCHEMAS):
        for name in EVENT_SCHEMA.names[len(table.schema.names):]:
            column = EVENT_SCHEMA.field(name)
            table = table.append_column(column, pa.nulls(len(table), column.type))
    if not table.schema.equals(expected, check_metadata=False):
        raise StateError(
            f"Event log part {str(path)!r} has schema {table.schema} instead of EVENT_SCHEMA.",
            "It was not written by this hz-ray version; move it to another directory.",
        )
    return table.replace_schema_metadata(expected.metadata)


# ---------------------------------------------------------------------- replay


def replay_into(ledger: Ledger, log: EventLog, since_seq: int = -1) -> int:
    """Re-apply a log's arm registrations, retirements and accepted deltas to a ledger.

    Events are applied in ``seq`` order; rejected records and suggestions are
    skipped. Everything the ledger does is idempotent, so replaying events it
    already holds changes nothing.

    Args:
        ledger: The ledger to bring up to date (e.g. restored from a checkpoint).
        log: The event log.
        since_seq: Apply only events with ``seq > since_seq`` (the checkpoint's).

    Returns:
        The last ``seq`` applied or skipped, or ``since_seq`` if there was none.

    Raises:
        StateError: An event contradicts the ledger (e.g. an arm logged with
            other weights, or an accepted delta the ledger rejects).
    """
    last = since_seq
    batch: list[tuple[int, HourlyDelta]] = []
    for event in log.iter_events(since_seq):
        kind = event["kind"]
        if kind == "delta_accepted":
            batch.append((event["seq"], _event_delta(event)))
        else:
            _apply_deltas(ledger, batch)
            batch = []
            _apply_event(ledger, event)
        last = event["seq"]
    _apply_deltas(ledger, batch)
    return last


def _event_delta(event: Mapping[str, Any]) -> HourlyDelta:
    try:
        return HourlyDelta(arm_id=event["arm_id"], metric=event["metric"], hour=event["hour"],
                           mean=event["mean"], var=event["var"], n=event["n"],
                           control_var=event.get("control_var"))
    except InputDataError as exc:
        raise StateError(f"Event seq {event['seq']}: {exc}", "The event log is damaged.") from exc


def _apply_deltas(ledger: Ledger, batch: list[tuple[int, HourlyDelta]]) -> None:
    if not batch:
        return
    result = ledger.ingest([delta for _, delta in batch])
    if result.rejected:
        bad = result.rejected[0]
        seq = next(seq for seq, delta in batch if delta is bad.record)
        raise StateError(
            f"Event seq {seq}: the ledger rejects a logged accepted delta: {bad.reason}",
            "The checkpoint and the log disagree; replay the whole log into a fresh ledger.",
        )


def _apply_event(ledger: Ledger, event: Mapping[str, Any]) -> None:
    kind, seq = event["kind"], event["seq"]
    try:
        if kind == "arm_registered":
            ledger.register_arm(event["arm_id"], json.loads(event["params_json"]), event["hour"])
        elif kind == "arm_retired":
            ledger.retire_arm(event["arm_id"], event["reason"])
    except (InputDataError, StateError, ValueError, TypeError) as exc:
        raise StateError(
            f"Event seq {seq} ({kind}) cannot be applied: {exc}",
            "The checkpoint and the log disagree; replay the whole log into a fresh ledger.",
        ) from exc


def recommendation_from_event(event: Mapping[str, Any]) -> Recommendation:
    """The :class:`Recommendation` of a ``recommendation`` event (as a dict row).

    Raises:
        StateError: The row is not a readable ``recommendation`` event.
    """
    try:
        raw = json.loads(event["payload_json"])
        return Recommendation(
            arm_id=raw["arm_id"], params={k: float(v) for k, v in raw["params"].items()},
            objective_mean=float(raw["objective_mean"]),
            objective_lcb=float(raw["objective_lcb"]), p_feasible=float(raw["p_feasible"]),
            metrics={k: MetricPosterior(float(v["mean"]), float(v["sd"]))
                     for k, v in raw["metrics"].items()},
            observed={k: ArmEstimate(**v) for k, v in raw["observed"].items()})
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"Event seq {event.get('seq')} is not a readable recommendation: "
                         f"{exc!r}", "The event log is damaged.") from exc


# ------------------------------------------------------------------ checkpoints


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` as a JSON object, atomically (temporary file, fsync, ``os.replace``).

    Args:
        path: The checkpoint file; its directory is created if missing.
        state: A JSON-able mapping with string keys and finite numbers.

    Raises:
        InputDataError: ``state`` is not a mapping or not strict-JSON-able.
    """
    if not isinstance(state, Mapping):
        raise field_error(InputDataError, "state", type(state).__name__, "a mapping")
    try:
        text = json.dumps(dict(state), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise field_error(
            InputDataError, "state", f"<{type(state).__name__}>",
            "strict JSON (string keys, finite numbers, builtins only)", str(exc),
        ) from exc
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(target, lambda handle: handle.write(text.encode("utf-8")))


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns:
        The state, or ``None`` when the file does not exist.

    Raises:
        StateError: The file is not a JSON object.
    """
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise StateError(
            f"Checkpoint {str(target)!r} is not valid JSON: {exc}.",
            "Delete it and rebuild from the event log (replay from seq -1).",
        ) from exc
    if not isinstance(state, dict):
        raise StateError(
            f"Checkpoint {str(target)!r} holds a {type(state).__name__}, not a JSON object.",
            "Delete it and rebuild from the event log (replay from seq -1).",
        )
    return state
