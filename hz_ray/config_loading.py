"""Reading a tuning config: YAML file or text or a mapping -> :class:`~hz_ray.config.TuningConfig`.

Every problem, from a missing file to a wrong type deep inside a section, is a
one-line :class:`~hz_ray.errors.ConfigError` naming the field (or ``path``), the
value and the fix; nothing else escapes :func:`load_config`.

YAML details:

- Numbers follow YAML 1.2 as well as 1.1: ``5e-1`` and ``1e6`` are floats
  (PyYAML's YAML 1.1 rules read them as strings).
- An integer field accepts a float that is exactly an integer (``slots: 8.0``,
  ``thompson_draws: 1e4``); ``2.5`` is rejected as not an integer.
- A key written twice in one mapping is an error naming the key and both lines
  (YAML would silently keep the last one). Merge keys (``<<``) are fine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import yaml

from hz_ray.config import (
    ArmsSpec,
    BackendSpec,
    ConstraintSpec,
    ObjectiveSpec,
    OptimizerSpec,
    ParameterSpec,
    TuningConfig,
    _require,
    _Shown,
)
from hz_ray.config_runtime import clock_spec_from, telemetry_spec_from
from hz_ray.errors import ConfigError, field_error

#: Largest config file read, bytes (a config is a few hundred bytes).
MAX_CONFIG_BYTES = 1024 * 1024
TOP_KEYS = ("name", "parameters", "objective", "constraints", "arms", "optimizer", "backend",
            "extra_metrics", "clock", "telemetry")
_TEMPLATE = "Start from examples/quickstart.yaml."
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader, plus YAML 1.2 core-schema floats with an exponent."""


# Tried after SafeLoader's own resolvers, so 1.1 ints and floats keep their meaning.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _syntax_error(source: str, exc: Exception) -> ConfigError:
    """A YAML or construction error as one ConfigError line."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = _one_line(f"{exc.context or ''} {exc.problem or ''}") or _one_line(exc)
        hint = f"Syntax error{where}: {what}. Fix the YAML there."
    elif isinstance(exc, RecursionError):
        hint = "It is nested too deeply to read; a config is a few levels deep."
    else:
        hint = f"It could not be read: {_one_line(exc)[:200]}. Fix the YAML."
    return field_error(ConfigError, "path", source, "valid YAML", hint)  # type: ignore[return-value]


def _key_path(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_duplicate_keys(loader: _Loader, root: yaml.Node, source: str) -> None:
    """Raise ConfigError for a key written twice in one mapping, at any depth of the tree."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    visited: set[int] = set()  # aliases share nodes: visit each once (also ends cycles)
    while stack:
        node, path = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack += [(child, f"{path}[{i}]") for i, child in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode):
            continue
        lines: dict[object, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                stack.append((value_node, path))
                continue
            key = (loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode)
                   else None)
            line = key_node.start_mark.line + 1
            try:
                first = lines.get(key) if key is not None else None
                if first is None and key is not None:
                    lines[key] = line
            except TypeError:  # an unhashable key: construction reports it
                first = None
            if first is not None:
                raise ConfigError(
                    f"{_Shown(_key_path(path, key))!r} must appear once in its mapping; got it at "
                    f"line {first} and again at line {line} of {source!r}.",
                    "YAML would silently keep the last one: delete or rename one of them.")
            stack.append((value_node, _key_path(path, key)))


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse one YAML document with hz-ray's rules (YAML 1.2 floats, no duplicate keys).

    Args:
        text: The YAML text.
        source: Where it came from (a path), for messages.

    Returns:
        The parsed value (``None`` for an empty document).

    Raises:
        ConfigError: On a syntax error (naming the line), a duplicated key
            (naming the key and both lines), or a value YAML cannot build.
    """
    loader = None
    try:
        loader = _Loader(text)  # checks the characters
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(loader, node, source)
        return loader.construct_document(node)
    except ConfigError:
        raise
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError,
            RecursionError) as exc:  # PyYAML raises the latter on some bad scalars (!!int x)
        raise _syntax_error(source, exc) from exc
    finally:
        if loader is not None:
            loader.dispose()


def _read_text(path: Path) -> str:
    """The file's text, or a ConfigError saying what is wrong with the file."""
    where = str(path)
    if path.is_dir():
        raise field_error(ConfigError, "path", where, "a YAML file, not a directory",
                          "Name the .yaml file itself.")
    if not path.exists():
        raise field_error(ConfigError, "path", where, "an existing YAML file",
                          "Check the path; see examples/ for templates.")
    if not path.is_file():
        raise field_error(ConfigError, "path", where, "a regular YAML file",
                          "Save the config to a file and name that.")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise field_error(ConfigError, "path", where, "a readable file",
                          f"{_one_line(exc.strerror or exc)}: check the file's permissions "
                          "(and that it is not locked).") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise field_error(ConfigError, "path", where,
                          f"a config file of at most {MAX_CONFIG_BYTES} bytes",
                          "Is this the config? A config is a few hundred bytes.")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        raise field_error(ConfigError, "path", where, "UTF-8 text",
                          "It looks UTF-16 or UTF-32 encoded (a byte-order mark or NUL bytes): "
                          "save the file as UTF-8.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise field_error(ConfigError, "path", where, "UTF-8 text",
                          f"Byte 0x{data[exc.start]:02x} at line {line} (offset {exc.start}) "
                          "is not UTF-8. Save the file as UTF-8.") from exc


def config_from_yaml(text: str, source: str = "<string>") -> TuningConfig:
    """Build and validate a config from YAML text.

    Args:
        text: The YAML text of the config.
        source: Where it came from, for messages.

    Returns:
        The validated config.

    Raises:
        ConfigError: On bad YAML, an empty document, or any invalid field.
    """
    raw = parse_yaml(text, source)
    if raw is None:
        raise field_error(ConfigError, "path", source, "a YAML mapping of the config's sections",
                          f"The document is empty (or only comments). {_TEMPLATE}")
    return config_from_mapping(raw)


def load_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> TuningConfig:
    """Load a tuning config from a YAML file, or validate a mapping.

    Args:
        source: A path to a UTF-8 YAML file (at most :data:`MAX_CONFIG_BYTES`),
            or an already parsed mapping.

    Returns:
        The validated config.

    Raises:
        ConfigError: When the file is missing, a directory, unreadable, not
            UTF-8, empty or not valid YAML, or any field is invalid. Its text is
            one line naming the field (or ``path``), the value and the fix.
    """
    if isinstance(source, Mapping):
        return config_from_mapping(source)
    _require(isinstance(source, (str, os.PathLike)), "path", source, "a path or a mapping")
    path = Path(source)
    return config_from_yaml(_read_text(path), str(path))


def _unknown_keys(raw: Mapping[Any, Any], known: set[str]) -> list[object]:
    return sorted((k for k in raw if not isinstance(k, str) or k not in known), key=repr)


def _build(cls: type, raw: object, where: str) -> Any:
    """Build a flat dataclass from a mapping, rejecting unknown and missing keys.

    An integer field takes a float that is exactly an integer (``1e6``) as that integer.
    ``None`` stands for an empty mapping when every field has a default.
    """
    specs = fields(cls)
    required = [f.name for f in specs if f.default is MISSING and f.default_factory is MISSING]
    if raw is None and not required:
        return cls()
    _require(isinstance(raw, Mapping), where, raw, "a mapping",
             "Write key: value pairs (see the README's config section).")
    assert isinstance(raw, Mapping)  # narrowed by _require
    known = {f.name for f in specs}
    unknown = _unknown_keys(raw, known)
    _require(not unknown, where, unknown, f"made of known keys {sorted(known)}",
             "Check the spelling of the key.")
    missing = [k for k in required if k not in raw]
    _require(not missing, where, dict(raw), f"a mapping with the keys {required}",
             f"Add {', '.join(missing)}; see the README's config section.")
    kwargs = dict(raw)
    for spec in specs:
        value = kwargs.get(spec.name)
        if spec.type == "int" and isinstance(value, float) and value.is_integer():
            kwargs[spec.name] = int(value)
    return cls(**kwargs)


def _items(raw: Mapping[str, Any], key: str) -> tuple[Any, ...]:
    """A list-valued section as a tuple; absent or null is empty."""
    value = raw.get(key)
    if value is None:
        return ()
    _require(isinstance(value, (list, tuple)), key, value, "a list",
             f"Write {key}: [...] or one '- ' item per line.")
    return tuple(value)


def config_from_mapping(raw: Mapping[str, Any]) -> TuningConfig:
    """Build and validate a :class:`TuningConfig` from a plain mapping.

    Args:
        raw: Parsed YAML/JSON. ``objective`` may be ``{metric: m}`` (weight 1)
            or ``{weights: {...}}`` with an optional ``direction``.

    Returns:
        The validated config.

    Raises:
        ConfigError: On any missing, unknown, mistyped or out-of-range field.
    """
    _require(isinstance(raw, Mapping), "config", _Shown(type(raw).__name__),
             f"a mapping of sections {list(TOP_KEYS)}", _TEMPLATE)
    unknown = _unknown_keys(raw, set(TOP_KEYS))
    _require(not unknown, "config", unknown, f"made of known keys {sorted(TOP_KEYS)}",
             "Check the spelling of the section.")
    params_raw = _items(raw, "parameters")
    _require(len(params_raw) > 0, "parameters", list(params_raw), "a non-empty list",
             "List at least one weight to tune.")
    parameters = tuple(_build(ParameterSpec, p, f"parameters[{i}]")
                       for i, p in enumerate(params_raw))
    obj_raw = raw.get("objective")
    _require(isinstance(obj_raw, Mapping), "objective", obj_raw, "a mapping",
             "Write objective: {metric: views}.")
    obj_raw = dict(obj_raw)  # type: ignore[arg-type]
    if "metric" in obj_raw:
        _require("weights" not in obj_raw, "objective", obj_raw,
                 "either 'metric' or 'weights', not both")
        metric = obj_raw.pop("metric")
        _require(isinstance(metric, str) and bool(metric), "objective.metric", metric,
                 "a metric name", "Write objective: {weights: {a: 1, b: 0.5}} for several.")
        obj_raw["weights"] = {metric: 1.0}
    objective = _build(ObjectiveSpec, obj_raw, "objective")
    constraints = tuple(_build(ConstraintSpec, c, f"constraints[{i}]")
                        for i, c in enumerate(_items(raw, "constraints")))
    extra = _items(raw, "extra_metrics")
    _require(all(isinstance(m, str) and m for m in extra), "extra_metrics", list(extra),
             "a list of metric names")
    kwargs: dict[str, Any] = {
        "parameters": parameters, "objective": objective, "constraints": constraints,
        "arms": _build(ArmsSpec, raw.get("arms"), "arms"),
        "optimizer": _build(OptimizerSpec, raw.get("optimizer"), "optimizer"),
        "backend": _build(BackendSpec, raw.get("backend"), "backend"),
        "extra_metrics": extra,
        "clock": clock_spec_from(raw.get("clock")),
        "telemetry": telemetry_spec_from(raw.get("telemetry")),
    }
    if "name" in raw:
        kwargs["name"] = raw["name"]
    return TuningConfig(**kwargs)
