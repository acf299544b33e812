"""Fuzzing the config loader: a mutated config loads or is one ConfigError line, nothing else."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hz_ray.cli import main
from hz_ray.config import TuningConfig, load_config
from hz_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "examples" / "quickstart.yaml", ROOT / "examples" / "file_drop_platform.yaml",
           ROOT / "hz_ray" / "defaults" / "demo.yaml"]
TEXTS = [p.read_text(encoding="utf-8") for p in SOURCES]
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**60),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["1e6", "5e-1", ".nan", "-.inf", "0x1F", "yes", "~", "2020-01-01", "1_000",
                     "simulated:smooth", "os:system", "views", "log", "w_click"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indexes) to a value inside ``node``."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, child in items:
        out.append((*prefix, key))
        out += _paths(child, (*prefix, key))
    return out


def _parent(root: Any, path: tuple) -> Any:
    for key in path[:-1]:
        root = root[key]
    return root


@st.composite
def mutated_mapping_text(draw) -> str:
    """A valid config with one structural mutation, dumped as YAML."""
    raw = yaml.safe_load(draw(st.sampled_from(TEXTS)))
    path = draw(st.sampled_from(_paths(raw)))
    parent, key = _parent(raw, path), path[-1]
    action = draw(st.sampled_from(["delete", "replace", "rename"]))
    if action == "delete":
        del parent[key]
    elif action == "replace":
        parent[key] = draw(values)
    elif isinstance(parent, dict):
        parent[draw(st.one_of(st.text(max_size=10), st.integers(), st.none()))] = parent.pop(key)
    else:
        parent[key] = [parent[key]]
    return yaml.safe_dump(raw, allow_unicode=True)


@st.composite
def mutated_text(draw) -> str:
    """A valid config's text with a textual mutation: a duplicated line, a cut, an insertion."""
    text = draw(st.sampled_from(TEXTS))
    lines = text.splitlines(keepends=True)
    action = draw(st.sampled_from(["duplicate", "truncate", "insert", "delete-line"]))
    i = draw(st.integers(0, len(lines) - 1))
    if action == "duplicate":
        lines.insert(i, lines[i])
    elif action == "delete-line":
        del lines[i]
    elif action == "truncate":
        return text[:draw(st.integers(0, len(text)))]
    else:
        at = draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:at] + draw(st.text(max_size=6)) + lines[i][at:]
    return "".join(lines)


@st.composite
def mutated_bytes(draw) -> bytes:
    """Random bytes, or a config's text in another encoding, or with raw bytes spliced in."""
    text = draw(st.one_of(st.sampled_from(TEXTS), mutated_text()))
    action = draw(st.sampled_from(["random", "latin-1", "utf-16", "utf-16-le", "utf-32",
                                   "splice"]))
    if action == "random":
        return draw(st.binary(max_size=200))
    if action == "splice":
        data = text.encode()
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    text = text.replace("name: ", "name: caf\xe9-", 1)
    return text.encode(action, errors="replace")


def _loads_or_one_line_error(path: Path) -> None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        text = str(exc)
        assert text and "\n" not in text and "\r" not in text, text
        assert text.startswith("'"), text  # names the field
    else:
        assert isinstance(config, TuningConfig)
        assert all(math.isfinite(p.low) and p.low < p.high for p in config.parameters)


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "job.yaml"


@FUZZ
@given(text=st.one_of(mutated_mapping_text(), mutated_text()))
def test_mutated_text_loads_or_raises_one_config_error_line(fuzz_file, text):
    fuzz_file.write_text(text, encoding="utf-8")
    _loads_or_one_line_error(fuzz_file)


@FUZZ
@given(data=mutated_bytes())
def test_mutated_bytes_load_or_raise_one_config_error_line(fuzz_file, data):
    fuzz_file.write_bytes(data)
    _loads_or_one_line_error(fuzz_file)


def test_shipped_configs_survive_the_fuzz_harness(fuzz_file):
    for text in TEXTS:  # the unmutated files load: the harness accepts valid configs
        fuzz_file.write_text(text, encoding="utf-8")
        assert isinstance(load_config(fuzz_file), TuningConfig)


QUICK = TEXTS[0]
BAD_FILES = {
    "latin-1": QUICK.replace("name: quickstart", "name: caf\xe9").encode("latin-1"),
    "utf-16": QUICK.encode("utf-16"),
    "duplicate-key": QUICK.replace(
        "objective: {metric: views}", "objective: {metric: views}\nobjective: {metric: likes}"
    ).encode(),
    "syntax": QUICK.replace("[shares, watch_time]", "[shares, watch_time").encode(),
    "top-level-list": b"- name: x\n",
    "empty": b"",
    "huge-draws": QUICK.replace("optimizer: {seed: 0,", "optimizer: {seed: 0, thompson_draws: 1e6,")
    .encode(),
    "null-parameter": QUICK.replace("  - {name: w_watch, low: 0.3333, high: 3.0, scale: log, "
                                    "base: 1.0}", "  - null").encode(),
    "bad-target": QUICK.replace('"simulated:smooth"', '"../evil:X"').encode(),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_cli_validate_reports_one_line(tmp_path, capsys, name):
    path = tmp_path / "job.yaml"
    path.write_bytes(BAD_FILES[name])
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hz-ray: error: '"), err
    assert "Traceback" not in out + err


def test_cli_validate_accepts_the_quickstart(tmp_path, capsys):
    assert main(["validate", str(SOURCES[0])]) == 0
    out, err = capsys.readouterr()
    assert "valid" in out and err == ""
