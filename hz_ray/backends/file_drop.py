"""A real-platform adapter through a shared folder ("file drop").

Many experiment platforms can export hourly group statistics as files and
read configuration requests from a folder or bucket. This backend speaks that
protocol with two sub-folders of ``root``:

- ``requests/``: hz-ray writes one JSON file per action, atomically:
  ``<arm_id>.launch.json`` ``{"arm_id", "params", "action": "launch", "written_s"}`` and
  ``<arm_id>.stop.json``. The platform's side picks them up and serves the
  weights to a fresh test group.
- ``readings/``: the platform drops Parquet or CSV files (any names ending in
  ``.parquet`` or ``.csv``; a file is read once it is complete, so write to a
  temporary name and rename) with one row per arm, metric and hour and the
  columns of :data:`READING_COLUMNS`. ``test_var`` / ``control_var`` may be
  empty when unknown.

Rows are re-read only when a file changes (path, size and mtime). A row that
fails validation comes back as an :class:`~hz_ray.records.InvalidReading`
with its reason, so the driver logs it instead of dropping it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from hz_ray.errors import ConfigError, HzRayError, InputDataError, field_error
from hz_ray.records import GroupStats, HourlyReading, InvalidReading

FILE_LEVEL = "*"  # arm_id of a problem with a whole file; reported to every arm's feed
READING_COLUMNS = ("arm_id", "hour", "metric", "test_mean", "test_var", "test_n",
                   "control_mean", "control_var", "control_n")


class FileDropBackend:
    """ArmBackend over a shared folder of request and reading files.

    Args:
        root: The shared folder; ``requests/`` and ``readings/`` are created.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.requests = self.root / "requests"
        self.readings = self.root / "readings"
        try:
            self.requests.mkdir(parents=True, exist_ok=True)
            self.readings.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise field_error(ConfigError, "backend.kwargs.root", str(root),
                              "a writable folder", str(exc)) from exc
        self._cache: dict[Path, tuple[tuple[int, float], list[HourlyReading | InvalidReading]]] = {}

    # ------------------------------------------------------------- requests
    def _write_request(self, arm_id: str, action: str, body: Mapping[str, Any]) -> None:
        if not isinstance(arm_id, str) or not arm_id or "/" in arm_id:
            raise field_error(InputDataError, "arm_id", arm_id, "a non-empty name without '/'")
        path = self.requests / f"{arm_id}.{action}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"arm_id": arm_id, "action": action,
                                   "written_s": time.time(), **body}, sort_keys=True))
        os.replace(tmp, path)

    def launch(self, arm_id: str, params: Mapping[str, float]) -> None:
        """Ask the platform to serve ``params`` to a new test group ``arm_id``."""
        self._write_request(arm_id, "launch", {"params": {k: float(v) for k, v in params.items()}})

    def stop(self, arm_id: str) -> None:
        """Ask the platform to stop serving ``arm_id``."""
        self._write_request(arm_id, "stop", {})

    # ------------------------------------------------------------- readings
    def fetch(self, arm_id: str, since_hour: int) -> list[HourlyReading | InvalidReading]:
        """Every dropped row of ``arm_id`` with ``hour >= since_hour`` (and invalid rows)."""
        out: list[HourlyReading | InvalidReading] = []
        for path in sorted(self.readings.iterdir()):
            if path.suffix not in (".parquet", ".csv"):
                continue
            for item in self._rows(path):
                if item.arm_id not in (arm_id, FILE_LEVEL):
                    continue
                if isinstance(item, InvalidReading) or item.hour >= since_hour:
                    out.append(item)
        return out

    def _rows(self, path: Path) -> list[HourlyReading | InvalidReading]:
        stat = path.stat()
        signature = (stat.st_size, stat.st_mtime)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            table = pq.read_table(path) if path.suffix == ".parquet" else pa_csv.read_csv(path)
        except (pa.ArrowInvalid, OSError) as exc:
            rows: list[HourlyReading | InvalidReading] = [
                InvalidReading(FILE_LEVEL, {"file": path.name}, f"unreadable file: {exc}")]
        else:
            missing = [c for c in READING_COLUMNS if c not in table.column_names]
            if missing:
                rows = [InvalidReading(FILE_LEVEL, {"file": path.name},
                                       f"file lacks columns {missing}; expected {READING_COLUMNS}")]
            else:
                rows = [_parse_row(row, path.name) for row in table.to_pylist()]
        self._cache[path] = (signature, rows)
        return rows


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
