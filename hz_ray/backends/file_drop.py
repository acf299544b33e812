"""A real-platform adapter through a shared folder ("file drop").

Many experiment platforms can export hourly group statistics as files and
read configuration requests from a folder or bucket. This backend speaks that
protocol with two sub-folders of ``root``:

- ``requests/``: hz-ray writes one JSON file per action, atomically:
  ``<arm_id>.launch.json`` ``{"arm_id", "params", "action": "launch", "written_s",
  "job_hour", "job_clock"}`` and
  ``<arm_id>.stop.json``. The platform's side picks them up and serves the
  weights to a fresh test group.
- ``readings/``: the platform drops Parquet or CSV files (any names ending in
  ``.parquet`` or ``.csv``; a file is read once it is complete, so write to a
  temporary name and rename) with one row per arm, metric and hour and the
  columns of :data:`READING_COLUMNS`. ``test_var`` / ``control_var`` may be
  empty when unknown.

Rows are re-read only when a file changes (name, size, mtime and inode). A row
that fails validation comes back as an :class:`~hz_ray.records.InvalidReading`
with its reason, so the driver logs it instead of dropping it.

Safety: other users of the shared folder must not be able to make hz-ray write
or read anything outside it. Arm ids are checked with
:func:`hz_ray.records.check_arm_id` before they become file names. Every file
operation goes through descriptors of ``root`` and its sub-folder opened with
``O_NOFOLLOW``, so no symbolic link is ever followed:

- ``root``, ``requests/`` or ``readings/`` being a symbolic link is refused
  (``ConfigError`` when the backend is built, ``StateError`` on a later call).
- A request is written to a fresh, unpredictable hidden name
  (``.hz-<random>.tmp``, created with ``O_CREAT | O_EXCL | O_NOFOLLOW``),
  fsynced, then renamed onto ``<arm_id>.<action>.json`` with ``os.replace``
  (and the folder fsynced). A final name that is a symbolic link is refused
  with ``StateError``; anything else at the final name is replaced, never
  written through. Stray files, or links, at the temporary names of older
  versions (``<arm_id>.<action>.json.tmp``) are ignored and left alone.
- A reading file that is a symbolic link or not a regular file is not read; it
  comes back as a file-level :class:`~hz_ray.records.InvalidReading`.

Only the last component of ``root`` is checked; links among its parents (a
mount point, say) are the operator's choice.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from stat import S_ISLNK, S_ISREG
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from hz_ray.clock import AcceleratedClock, Clock
from hz_ray.errors import ConfigError, HzRayError, StateError, field_error
from hz_ray.records import GroupStats, HourlyReading, InvalidReading, check_arm_id

FILE_LEVEL = "*"  # arm_id of a problem with a whole file; reported to every arm's feed
READING_COLUMNS = ("arm_id", "hour", "metric", "test_mean", "test_var", "test_n",
                   "control_mean", "control_var", "control_n")
REQUESTS = "requests"
READINGS = "readings"
TEMP_PREFIX = ".hz-"  # hidden, random temporary names of requests being written
Row = HourlyReading | InvalidReading


class FileDropBackend:
    """ArmBackend over a shared folder of request and reading files.

    Args:
        root: The shared folder (not a symbolic link); ``requests/`` and
            ``readings/`` are created in it.
        clock: The job clock (the drivers pass it). With it, every request
            also carries ``job_hour`` (the job hour it was written in) and, on
            a wall-time clock, ``job_clock`` = ``{"epoch_s", "seconds_per_hour"}``:
            job hour ``h`` covers Unix seconds ``[epoch_s + h * seconds_per_hour,
            epoch_s + (h + 1) * seconds_per_hour)``, the hours the platform's
            readings must be labelled by.

    Raises:
        ConfigError: ``root`` cannot be created or opened, or it, ``requests/``
            or ``readings/`` is a symbolic link or not a folder.
    """

    def __init__(self, root: str | os.PathLike[str], clock: Clock | None = None) -> None:
        self.root = Path(root)
        self.clock = clock
        self.requests = self.root / "requests"
        self.readings = self.root / "readings"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for sub in (REQUESTS, READINGS):
                with self._folder(sub):
                    pass
        except (OSError, StateError) as exc:
            raise field_error(ConfigError, "backend.kwargs.root", str(root),
                              "a writable folder whose requests/ and readings/ are folders, "
                              "none of them a symbolic link",
                              f"{exc} Pass the real path (os.path.realpath) of the folder.",
                              ) from exc
        self._cache: dict[str, tuple[tuple[int, int, int], list[Row]]] = {}

    # -------------------------------------------------------------- folders
    @contextlib.contextmanager
    def _folder(self, sub: str) -> Iterator[int]:
        """Yield a descriptor of ``root/sub``, opened without following links.

        ``sub`` is created when missing.

        Raises:
            StateError: ``root`` or ``root/sub`` is a symbolic link or not a folder.
        """
        root_fd = _open_dir(os.fspath(self.root), None, "backend.kwargs.root")
        try:
            try:
                sub_fd = _open_dir(sub, root_fd, f"backend.kwargs.root/{sub}")
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(sub, 0o755, dir_fd=root_fd)
                sub_fd = _open_dir(sub, root_fd, f"backend.kwargs.root/{sub}")
        finally:
            os.close(root_fd)
        try:
            yield sub_fd
        finally:
            os.close(sub_fd)

    # ------------------------------------------------------------- requests
    def _write_request(self, arm_id: str, action: str, body: Mapping[str, Any]) -> None:
        check_arm_id(arm_id)
        data = json.dumps({"arm_id": arm_id, "action": action, "written_s": time.time(),
                           **self._job_time(), **body}, sort_keys=True).encode()
        final = f"{arm_id}.{action}.json"
        with self._folder(REQUESTS) as dir_fd:
            _refuse_link(final, dir_fd, f"requests/{final}")
            tmp, fd = _create_temp(dir_fd)
            try:
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
            with contextlib.suppress(OSError):  # some file systems cannot fsync a folder
                os.fsync(dir_fd)

    def _job_time(self) -> dict[str, Any]:
        """``job_hour`` and ``job_clock`` of a request (none before the clock started)."""
        if self.clock is None:
            return {}
        now = self.clock.now_hours()
        if not math.isfinite(now) or now < 0:  # a clock that has not started yet
            return {}
        out: dict[str, Any] = {"job_hour": math.floor(now + 1e-9)}
        if isinstance(self.clock, AcceleratedClock):
            out["job_clock"] = {"epoch_s": self.clock.epoch_s,
                                "seconds_per_hour": self.clock.seconds_per_hour}
        return out

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Ask the platform to serve ``params`` to a new test group ``arm_id``.

        Writes ``requests/<arm_id>.launch.json``.

        Raises:
            InputDataError: ``arm_id`` is not a safe arm id (see
                :func:`~hz_ray.records.check_arm_id`).
            StateError: The folder, ``requests/`` or the request's name is a
                symbolic link; nothing is written.
        """
        check_arm_id(arm_id)
        self._write_request(arm_id, "launch", {"params": {k: float(v) for k, v in params.items()}})

    def stop(self, arm_id: str) -> None:
        """Ask the platform to stop serving ``arm_id``.

        Writes ``requests/<arm_id>.stop.json``.

        Raises:
            InputDataError: ``arm_id`` is not a safe arm id.
            StateError: The folder, ``requests/`` or the request's name is a
                symbolic link; nothing is written.
        """
        self._write_request(arm_id, "stop", {})

    # ------------------------------------------------------------- readings
    def fetch(self, arm_id: str, since_hour: int) -> list[HourlyReading | InvalidReading]:
        """Every dropped row of ``arm_id`` with ``hour >= since_hour`` (and invalid rows).

        Raises:
            InputDataError: ``arm_id`` is not a safe arm id.
            StateError: The folder or ``readings/`` is a symbolic link.
        """
        check_arm_id(arm_id)
        out: list[HourlyReading | InvalidReading] = []
        with self._folder(READINGS) as dir_fd:
            names = sorted(entry.name for entry in os.scandir(dir_fd))
            for name in names:
                if not name.endswith((".parquet", ".csv")):
                    continue
                for item in self._rows(name, dir_fd):
                    if item.arm_id not in (arm_id, FILE_LEVEL):
                        continue
                    if isinstance(item, InvalidReading) or item.hour >= since_hour:
                        out.append(item)
        return out

    def _rows(self, name: str, dir_fd: int) -> list[HourlyReading | InvalidReading]:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        except OSError as exc:
            reason = ("refused a symbolic link" if exc.errno == errno.ELOOP
                      else f"unreadable file: {exc}")
            return [InvalidReading(FILE_LEVEL, {"file": name}, reason)]
        with os.fdopen(fd, "rb") as handle:
            stat = os.fstat(fd)
            if not S_ISREG(stat.st_mode):
                return [InvalidReading(FILE_LEVEL, {"file": name}, "not a regular file")]
            signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
            cached = self._cache.get(name)
            if cached is not None and cached[0] == signature:
                return cached[1]
            try:
                table = (pq.read_table(handle) if name.endswith(".parquet")
                         else pa_csv.read_csv(handle))
            except (pa.ArrowInvalid, OSError) as exc:
                rows: list[HourlyReading | InvalidReading] = [
                    InvalidReading(FILE_LEVEL, {"file": name}, f"unreadable file: {exc}")]
            else:
                missing = [c for c in READING_COLUMNS if c not in table.column_names]
                if missing:
                    rows = [InvalidReading(FILE_LEVEL, {"file": name},
                                           f"file lacks columns {missing}; "
                                           f"expected {READING_COLUMNS}")]
                else:
                    rows = [_parse_row(row, name) for row in table.to_pylist()]
        self._cache[name] = (signature, rows)
        return rows


def _open_dir(path: str, dir_fd: int | None, where: str) -> int:
    """Open a folder without following a link at its last component.

    Raises:
        StateError: ``path`` is a symbolic link or not a folder.
        FileNotFoundError: ``path`` does not exist.
    """
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise field_error(StateError, where, path,
                              "a folder, not a symbolic link or a file",
                              "Someone replaced it; remove the link and check the folder.",
                              ) from exc
        raise


def _refuse_link(name: str, dir_fd: int, where: str) -> None:
    """Raise StateError when ``name`` in the folder is a symbolic link."""
    try:
        stat = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if S_ISLNK(stat.st_mode):
        raise field_error(StateError, where, name, "a file or absent, not a symbolic link",
                          "Someone planted a link in the requests folder; remove it.")


def _create_temp(dir_fd: int) -> tuple[str, int]:
    """Create a fresh temporary file of an unpredictable name; return (name, fd)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        name = f"{TEMP_PREFIX}{secrets.token_hex(12)}.tmp"
        try:
            return name, os.open(name, flags, 0o644, dir_fd=dir_fd)
        except FileExistsError:
            continue
    raise field_error(StateError, "requests", TEMP_PREFIX + "*",
                      "a folder in which a fresh temporary name can be created")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _opt_var(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _parse_row(row: dict[str, Any], file_name: str) -> HourlyReading | InvalidReading:
    arm_id = str(row.get("arm_id") or "")
    try:
        hour = row["hour"]
        if isinstance(hour, float) and hour.is_integer():
            hour = int(hour)
        return HourlyReading(
            arm_id=arm_id, hour=hour, metric=row["metric"],
            test=GroupStats(float(row["test_mean"]), _opt_var(row["test_var"]),
                            int(row["test_n"])),
            control=GroupStats(float(row["control_mean"]), _opt_var(row["control_var"]),
                               int(row["control_n"])),
        )
    except (HzRayError, TypeError, ValueError) as exc:
        payload = {**row, "file": file_name}
        return InvalidReading(arm_id, payload, str(exc))
