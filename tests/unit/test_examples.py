"""The shipped examples load and run, and the README's examples match the code.

The README tests fail when the docs drift: every job config in it validates, its CSV and
Parquet examples read as valid readings through the file-drop backend, its request and
clock.json examples have the fields the code writes, and every metric name it mentions is
defined in hz_ray/telemetry.py.
"""

from __future__ import annotations

import csv
import io
import json
import re
import runpy
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hz_ray.backends.base import ArmBackend, declared_metrics
from hz_ray.backends.factory import (
    build_backend,
    check_config_against_backend_target,
    resolve_backend_class,
)
from hz_ray.backends.file_drop import READING_COLUMNS, FileDropBackend
from hz_ray.clock import AcceleratedClock, SimClock, WallClock
from hz_ray.config import BackendSpec, load_config
from hz_ray.config_loading import config_from_yaml, parse_yaml
from hz_ray.errors import ConfigError, StateError
from hz_ray.reading_checks import screen_reading
from hz_ray.records import HourlyReading, InvalidReading
from hz_ray.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"
TEMPLATE = "custom_backend:MyPlatform"


def all_fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block of a Markdown text, in order."""
    blocks: list[tuple[str, str]] = []
    language: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if language is None and line.startswith("```"):
            language, body = line[3:].strip(), []
        elif language is not None and line.strip() == "```":
            blocks.append((language, "\n".join(body) + "\n"))
            language = None
        elif language is not None:
            body.append(line)
    assert language is None, "an unclosed fenced block"
    return blocks


def fenced_blocks(language: str, text: str | None = None) -> list[str]:
    """The bodies of the README's (or ``text``'s) fenced code blocks of ``language``."""
    source = README.read_text() if text is None else text
    return [body for lang, body in all_fenced_blocks(source) if lang == language]


def section(heading: str) -> str:
    """The README text under ``heading`` (a whole heading line), up to the next heading."""
    text = README.read_text()
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1:]
    nxt = re.search(r"^#{2,3} ", rest, re.M)
    return rest if nxt is None else rest[:nxt.start()]


# ------------------------------------------------------------------ shipped examples
@pytest.mark.parametrize("name", ["quickstart.yaml", "file_drop_platform.yaml"])
def test_example_configs_validate(name, capsys):
    from hz_ray.cli import main

    assert main(["validate", str(EXAMPLES / name)]) == 0
    assert "valid" in capsys.readouterr().out


def test_demo_config_is_the_value_model_world():
    from hz_ray.cli import demo_config

    config = demo_config()
    assert config.backend.target == "simulated:value_model"
    assert config.arms.slots == 8


def test_cli_runs_a_short_local_job_and_prints_a_readout(tmp_path, capsys):
    from hz_ray.cli import main

    code = main(["run", str(EXAMPLES / "quickstart.yaml"), "--hours", "3",
                 "--run-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("hour ") >= 3 and "=== hz-ray readout ===" in out
    assert (tmp_path / "checkpoint.json").exists()


def test_cli_reports_config_errors_without_a_traceback(tmp_path, capsys):
    from hz_ray.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: []\nobjective: {metric: views}\n")
    assert main(["validate", str(bad)]) == 2
    assert "'parameters' must be a non-empty list" in capsys.readouterr().err


# ------------------------------------------------------------------ the backend template
def test_custom_backend_example_runs(capsys):
    runpy.run_path(str(EXAMPLES / "custom_backend.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "=== hz-ray readout ===" in out


@pytest.fixture
def template(monkeypatch):
    """The template module, importable as ``custom_backend`` (as with PYTHONPATH=examples)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import custom_backend

    return custom_backend


def template_config(**overrides: Any):
    raw = {
        "name": "template",
        "parameters": [{"name": "w_click", "low": 0.5, "high": 2.0, "base": 1.0},
                       {"name": "w_like", "low": 0.5, "high": 2.0, "base": 1.0}],
        "objective": {"metric": "views"},
        "constraints": [{"metric": "likes", "min_delta": -0.01}],
        "arms": {"slots": 2, "min_hours": 2, "max_hours": 4},
        "optimizer": {"seed": 0, "hold_fixed": "w_click", "bucket_size": 32,
                      "thompson_draws": 200, "proposals": 256},
        "clock": "simulated",
        "backend": {"target": TEMPLATE, "kwargs": {"endpoint": "toy"}},
    }
    raw.update(overrides)
    return load_config(raw)


def test_template_class_passes_the_factory_checks(template):
    cls = resolve_backend_class(TEMPLATE)
    assert cls is template.MyPlatform
    assert declared_metrics(cls) == ("views", "likes")
    clock = SimClock()
    backend = build_backend(BackendSpec(target=TEMPLATE, kwargs={"endpoint": "toy"}), clock)
    assert isinstance(backend, ArmBackend) and isinstance(backend, template.MyPlatform)
    assert backend.clock is clock, "the factory hands the job clock to a 'clock' argument"
    check_config_against_backend_target(template_config())


def test_template_declared_metrics_catch_a_misspelled_guardrail(template):
    config = template_config(constraints=[{"metric": "likez", "min_delta": -0.01}])
    with pytest.raises(ConfigError, match="Did you mean 'likes'"):
        check_config_against_backend_target(config)


def test_template_refuses_an_unfilled_endpoint(template):
    with pytest.raises(ConfigError, match="backend.kwargs.endpoint"):
        build_backend(BackendSpec(target=TEMPLATE, kwargs={"endpoint": "https://x"}),
                      SimClock())


def test_template_calls_are_idempotent(template):
    clock = SimClock()
    platform = template.MyPlatform(clock, endpoint="toy")
    arm = "template-0001.s00-0000"
    platform.stop("template-0001.s09-0009")  # never launched: a no-op
    assert platform.fetch("template-0001.s09-0009", 0) == []
    platform.launch(arm, {"w_click": 1.0, "w_like": 0.8})
    platform.launch(arm, {"w_click": 1.0, "w_like": 0.8})  # a retry or a resume: a no-op
    assert len(platform.api.groups) == 1
    clock.advance(3.0)
    readings = platform.fetch(arm, 0)
    assert all(isinstance(r, HourlyReading) for r in readings)
    assert sorted({r.hour for r in readings}) == [0, 1, 2], "complete hours only"
    assert {r.metric for r in readings} == {"views", "likes"}
    platform.stop(arm)
    platform.stop(arm)  # stopped already: a no-op
    clock.advance(2.0)
    assert sorted({r.hour for r in platform.fetch(arm, 1)}) == [1, 2], \
        "a stopped arm's hours stay fetchable, and no hour after its stop appears"
    with pytest.raises(StateError):
        platform.launch(arm, {"w_click": 1.0, "w_like": 0.8})
    other = template.MyPlatform(clock, endpoint="toy")  # another instance, same platform
    assert len(other.fetch(arm, 0)) == len(platform.fetch(arm, 0))


def test_template_turns_a_bad_row_into_an_invalid_reading(template):
    row = {"metric": "views", "test_mean": 2.0, "test_var": 4.0, "test_n": 100,
           "control_mean": 0.0, "control_var": 4.0, "control_n": 100}
    bad = template._reading("template-0001.s00-0000", 3, row)
    assert isinstance(bad, InvalidReading) and "control.mean" in bad.reason
    assert bad.payload["hour"] == 3
    missing = template._reading("template-0001.s00-0000", 3, {"metric": "views"})
    assert isinstance(missing, InvalidReading) and "test_mean" in missing.reason


def test_job_hour_window_follows_the_clock_epoch(template):
    assert template.job_hour_window(AcceleratedClock(5.0, epoch_s=1000.0), 2) == (1010.0, 1015.0)
    assert template.job_hour_window(WallClock(epoch_s=0.0), 1) == (3600.0, 7200.0)
    with pytest.raises(StateError):
        template.job_hour_window(SimClock(), 0)


# ------------------------------------------------------------------ the README
def test_readme_stays_inside_the_repository():
    text = README.read_text()
    assert "../shared" not in text
    assert str(ROOT.parent) not in text  # no path of the machine the checkout lives on


def readme_job_configs() -> list[str]:
    return [block for block in fenced_blocks("yaml") if re.search(r"^parameters:", block, re.M)]


def test_readme_has_job_configs():
    assert len(readme_job_configs()) >= 2


@pytest.mark.parametrize("index", range(len(readme_job_configs())))
def test_readme_job_config_validates(index):
    config = config_from_yaml(readme_job_configs()[index], f"README.md yaml block {index}")
    check_config_against_backend_target(config)  # imports the target; calls nothing


def test_readme_backend_snippets_are_well_formed():
    snippets = [block for block in fenced_blocks("yaml")
                if "backend:" in block and not re.search(r"^parameters:", block, re.M)]
    assert snippets
    for block in snippets:
        raw = parse_yaml(block, "README.md")
        BackendSpec(**raw["backend"]).validate("backend")


def readme_csv() -> str:
    (block,) = fenced_blocks("csv")
    return block


def readme_csv_rows() -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(readme_csv())))


def check_valid_readings(backend: FileDropBackend, rows: list[dict[str, str]]) -> list[Any]:
    """Fetch every arm of ``rows``; assert each row came back as a valid reading."""
    metrics = tuple(sorted({r["metric"] for r in rows}))
    last_hour = max(int(r["hour"]) for r in rows)
    readings = []
    for arm in sorted({r["arm_id"] for r in rows}):
        got = backend.fetch(arm, since_hour=0)
        assert [g for g in got if isinstance(g, InvalidReading)] == []
        assert len(got) == sum(r["arm_id"] == arm for r in rows)
        for reading in got:
            verdict = screen_reading(reading, arm_id=arm, metrics=metrics, first_hour=0,
                                     now_hour=last_hour + 1, data_end=None, oldest_hour=None)
            assert verdict.reason is None, verdict.reason
        readings.extend(got)
    return sorted(readings, key=lambda r: (r.arm_id, r.hour, r.metric))


def test_readme_csv_example_reads_as_valid_readings(tmp_path):
    header = readme_csv().splitlines()[0]
    assert header == ",".join(READING_COLUMNS)
    backend = FileDropBackend(tmp_path / "drop")
    (backend.readings / "hour-00005.csv").write_text(readme_csv())
    readings = check_valid_readings(backend, readme_csv_rows())
    assert any(r.test.var is None and r.control.var is None for r in readings), \
        "the example shows a row with unknown variances"
    by_hour: dict[tuple[int, str], set[Any]] = {}
    for reading in readings:
        by_hour.setdefault((reading.hour, reading.metric), set()).add(reading.control)
    assert all(len(controls) == 1 for controls in by_hour.values()), \
        "every arm's row of an hour carries the same control statistics"


def readme_parquet_schema() -> pa.Schema:
    (block,) = fenced_blocks("", section("### Reading files"))
    types = {"string": pa.string(), "int64": pa.int64(), "double": pa.float64()}
    fields = []
    for line in block.strip().splitlines():
        name, kind = (part.strip() for part in line.split(":", 1))
        nullable = kind.endswith("(nullable)")
        fields.append(pa.field(name, types[kind.removesuffix("(nullable)").strip()], nullable))
    return pa.schema(fields)


def test_readme_parquet_schema_reads_the_csv_example(tmp_path):
    schema = readme_parquet_schema()
    assert tuple(schema.names) == READING_COLUMNS
    assert [f.name for f in schema if f.nullable] == ["test_var", "control_var"]
    rows = readme_csv_rows()
    typed = [{name: (None if value == "" else
                     str(value) if schema.field(name).type == pa.string() else
                     int(value) if schema.field(name).type == pa.int64() else float(value))
              for name, value in row.items()} for row in rows]
    backend = FileDropBackend(tmp_path / "drop")
    pq.write_table(pa.Table.from_pylist(typed, schema=schema), backend.readings / "h.parquet")
    from_parquet = check_valid_readings(backend, rows)
    csv_backend = FileDropBackend(tmp_path / "csv-drop")
    (csv_backend.readings / "h.csv").write_text(readme_csv())
    assert from_parquet == check_valid_readings(csv_backend, rows)


def test_readme_column_table_lists_every_reading_column():
    names = re.findall(r"^\| `(\w+)` \|", section("### Reading files"), re.M)
    assert tuple(names) == READING_COLUMNS


def readme_json_examples() -> dict[str, dict[str, Any]]:
    examples = [json.loads(block) for block in fenced_blocks("json")]
    return {e.get("action", e.get("kind")): e for e in examples}


def test_readme_request_examples_have_the_fields_the_backend_writes(tmp_path):
    examples = readme_json_examples()
    launch, stop = examples["launch"], examples["stop"]
    clock = AcceleratedClock(3600.0, time.time() - 60.0)  # a wall clock, in its first hour
    backend = FileDropBackend(tmp_path, clock=clock)
    backend.launch(launch["arm_id"], launch["params"])
    backend.stop(stop["arm_id"])
    text = section("### Requests")
    for action, example in (("launch", launch), ("stop", stop)):
        name = f"{example['arm_id']}.{action}.json"
        assert f"requests/{name}" in text, "the README names the file it shows"
        written = json.loads((backend.requests / name).read_text())
        assert set(written) == set(example)
        assert written["action"] == action and written["arm_id"] == example["arm_id"]
    assert json.loads((backend.requests / f"{launch['arm_id']}.launch.json").read_text()
                      )["params"] == launch["params"]
    table = set(re.findall(r"^\| `(\w+)` \|", text, re.M))
    assert table == set(launch) | set(stop)


def test_readme_clock_json_example_has_the_fields_a_job_writes(tmp_path):
    example = readme_json_examples()["accelerated"]
    with RunFolder.open(tmp_path / "run", template_config()) as folder:
        folder.save_clock(WallClock(epoch_s=example["epoch_s"]))
    written = json.loads((tmp_path / "run" / "clock.json").read_text())
    assert written == example


def test_readme_metric_names_are_defined_in_telemetry():
    # A histogram is exported with _bucket/_sum/_count series, an Info metric as <name>_info.
    defined = (ROOT / "hz_ray" / "telemetry.py").read_text()
    named = set(re.findall(r"\bhzray_\w+", README.read_text()))
    assert named
    missing = sorted(n for n in named
                     if f'"{n}"' not in defined
                     and f'"{re.sub(r"_(bucket|sum|count|info)$", "", n)}"' not in defined)
    assert missing == [], "README names metrics hz_ray/telemetry.py does not define"
