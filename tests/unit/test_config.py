from __future__ import annotations

import copy
import math
import textwrap
from pathlib import Path

import pytest

from hz_ray.config import ConstraintSpec, load_config
from hz_ray.errors import ConfigError
from tests.conftest import small_config_mapping

ROOT = Path(__file__).resolve().parents[2]
VALID_FILES = (ROOT / "examples" / "quickstart.yaml", ROOT / "examples" / "file_drop_platform.yaml",
               ROOT / "hz_ray" / "defaults" / "demo.yaml")


def _error(source) -> str:
    """The one-line text of the ConfigError that loading ``source`` raises."""
    with pytest.raises(ConfigError) as info:
        load_config(source)
    text = str(info.value)
    assert "\n" not in text and "\r" not in text, text
    return text


def _write(tmp_path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


QUICK = """\
name: quick
parameters:
  - {name: w_click, low: 0.5, high: 2.0, scale: log, base: 1.0}
  - {name: w_like, low: 0.5, high: 2.0, scale: log, base: 1.0}
objective: {metric: views}
constraints:
  - {metric: likes, min_delta: -0.005}
arms:
  slots: 4
  min_hours: 2
  max_hours: 8
optimizer: {seed: 0}
"""


def test_valid_config_derives_metrics_and_base(small_config):
    assert small_config.metrics == ("views", "likes")
    assert small_config.base_params == {"w_click": 1.0, "w_like": 1.0, "w_share": 1.0}
    assert small_config.objective.weights == {"views": 1.0}


def test_round_trip_through_mapping(small_config):
    from hz_ray.config import config_from_mapping

    again = config_from_mapping(small_config.to_mapping())
    assert again == small_config


def test_yaml_file_loads(tmp_path):
    import yaml

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(small_config_mapping()))
    assert load_config(path).parameter_names == ("w_click", "w_like", "w_share")


def test_loaders_importable_from_both_modules():
    from hz_ray import config, config_loading

    assert config.load_config is config_loading.load_config
    assert config.config_from_mapping is config_loading.config_from_mapping


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (lambda r: r["parameters"][0].update(low=-1.0), "parameters[0].low", "> 0 for scale 'log'"),
        (lambda r: r["parameters"][1].update(base=5.0), "parameters[1].base", "within [low, high]"),
        (lambda r: r["parameters"][2].update(high=0.0), "parameters[2].high", "greater than low"),
        (lambda r: r["parameters"][2].update(scale="cubic"), "parameters[2].scale", "one of"),
        (lambda r: r["arms"].update(slots=0), "arms.slots", "[1, 10000]"),
        (lambda r: r["arms"].update(max_hours=1), "arms.max_hours", ">= min_hours"),
        (lambda r: r["optimizer"].update(proposal_probability=1.5),
         "optimizer.proposal_probability", "in [0, 1]"),
        (lambda r: r["optimizer"].update(hold_fixed="w_nope"), "optimizer.hold_fixed", "one of"),
        (lambda r: r["optimizer"].update(ramp_hours=-1), "optimizer.ramp_hours", "an integer in"),
        (lambda r: r["optimizer"].update(ramp_hours=2.5), "optimizer.ramp_hours", "an integer in"),
        (lambda r: r["optimizer"].update(refine_proposals="yes"), "optimizer.refine_proposals",
         "true or false"),
        (lambda r: r["optimizer"].update(shared_control_noise=1),
         "optimizer.shared_control_noise", "true or false"),
        (lambda r: r["optimizer"].update(proposal_features=1), "optimizer.proposal_features",
         "[2, 100000]"),
        (lambda r: r["constraints"][0].update(max_delta=0.1), "constraints[0]", "exactly one"),
        (lambda r: r["objective"].update(direction="up"), "objective.direction", "one of"),
        (lambda r: r["arms"].update(slotz=3), "arms", "known keys"),
        (lambda r: r.update(paramters=[]), "config", "known keys"),
        (lambda r: r["parameters"][0].update(low=float("nan")), "parameters[0].low", "finite"),
    ],
)
def test_bad_field_names_field_value_and_fix(mutate, field, fragment):
    raw = copy.deepcopy(small_config_mapping())
    mutate(raw)
    text = _error(raw)
    assert repr(field) in text
    assert fragment in text


def test_duplicate_parameter_names_rejected():
    raw = small_config_mapping()
    raw["parameters"][1]["name"] = "w_click"
    with pytest.raises(ConfigError, match="unique names"):
        load_config(raw)


def test_constraint_sense_and_bound():
    low = ConstraintSpec("likes", min_delta=-0.01)
    high = ConstraintSpec("latency", max_delta=0.02)
    assert (low.sense, low.bound) == (1.0, -0.01)
    assert (high.sense, high.bound) == (-1.0, 0.02)


def test_weighted_objective_and_minimize():
    raw = small_config_mapping(objective={"weights": {"views": 1.0, "watch_time": 0.5},
                                          "direction": "minimize"})
    config = load_config(raw)
    assert config.metrics == ("views", "watch_time", "likes")
    assert config.objective.sign == -1.0


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    assert load_config(path).parameters


# ------------------------------------------------------------------ YAML 1.2 numbers, integers


def test_exponent_floats_load_as_numbers(tmp_path):
    text = QUICK.replace("low: 0.5, high: 2.0", "low: 5e-1, high: 2E0", 1)
    text = text.replace("min_delta: -0.005", "min_delta: -5e-3")
    config = load_config(_write(tmp_path, text))
    assert config.parameters[0].low == 0.5 and isinstance(config.parameters[0].low, float)
    assert config.parameters[0].high == 2.0
    assert config.constraints[0].min_delta == -0.005


def test_yaml_keeps_ints_strings_and_special_floats(tmp_path):
    from hz_ray.config_loading import parse_yaml

    data = parse_yaml("a: 12\nb: '1e6'\nc: .inf\nd: 1.5e+3\ne: +7\nf: 1_000\ng: .5\nh: 1e\n")
    assert data == {"a": 12, "b": "1e6", "c": math.inf, "d": 1500.0, "e": 7, "f": 1000,
                    "g": 0.5, "h": "1e"}
    assert type(data["a"]) is int and type(data["e"]) is int


def test_integral_float_accepted_for_integer_fields(tmp_path):
    text = QUICK.replace("slots: 4", "slots: 4.0").replace(
        "optimizer: {seed: 0}", "optimizer: {seed: 0, thompson_draws: 2e3, proposals: 1.024e3}")
    config = load_config(_write(tmp_path, text))
    assert config.arms.slots == 4 and type(config.arms.slots) is int
    assert config.optimizer.thompson_draws == 2000 and type(config.optimizer.thompson_draws) is int
    assert config.optimizer.proposals == 1024


@pytest.mark.parametrize(("section", "key", "value"),
                         [("arms", "slots", 2.5), ("optimizer", "proposals", 1e-3),
                          ("optimizer", "seed", float("inf")), ("arms", "max_hours", float("nan"))])
def test_non_integral_number_rejected_for_integer_fields(section, key, value):
    raw = small_config_mapping()
    raw[section][key] = value
    text = _error(raw)
    assert repr(f"{section}.{key}") in text and "an integer" in text


def test_float_fields_keep_their_floats():
    raw = small_config_mapping()
    raw["optimizer"]["var_floor"] = 1
    config = load_config(raw)
    assert config.optimizer.var_floor == 1
    assert config.parameters[0].low == pytest.approx(1 / 3)


# -------------------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        (QUICK.replace("  max_hours: 8\n", "  max_hours: 8\n  slots: 6\n"), "arms.slots", 12),
        (QUICK + "optimizer: {seed: 1}\n", "optimizer", 13),
        (QUICK.replace("{name: w_like, low: 0.5,", "{name: w_like, low: 0.5, low: 0.4,"),
         "parameters[1].low", 4),
        (QUICK.replace("name: quick\n", "name: quick\nname: other\n"), "name", 2),
    ],
    ids=["nested", "top-level", "flow-in-list", "first-key"],
)
def test_duplicate_key_names_key_and_line(tmp_path, text, field, line):
    message = _error(_write(tmp_path, text))
    assert repr(field) in message
    assert f"line {line}" in message
    assert "once" in message


def test_merge_keys_are_not_duplicates(tmp_path):
    text = QUICK.replace("arms:\n  slots: 4\n  min_hours: 2\n  max_hours: 8\n",
                         "x-arms: &arms {slots: 4, min_hours: 2, max_hours: 8}\n"
                         "arms:\n  <<: *arms\n  slots: 6\n")
    text = text.replace("x-arms: &arms", "extra_metrics: []\narms_base: &arms")
    path = _write(tmp_path, text)
    assert "'arms_base'" in _error(path)  # an unknown key, not a duplicate: merges are fine
    text = text.replace("arms_base: &arms {slots: 4, min_hours: 2, max_hours: 8}\n", "")
    text = text.replace("<<: *arms", "<<: {slots: 4, min_hours: 2, max_hours: 8}")
    assert load_config(_write(tmp_path, text)).arms.slots == 6


# ------------------------------------------------------------------------ file-read problems


def _check_names(message: str, field: str, *fragments: str) -> None:
    assert message.startswith(repr(field)), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_missing_file(tmp_path):
    _check_names(_error(tmp_path / "nope.yaml"), "path", "existing YAML file", "nope.yaml",
                 "examples/")


def test_directory_is_not_a_file(tmp_path):
    _check_names(_error(tmp_path), "path", "not a directory", str(tmp_path))


def test_unreadable_file(tmp_path, monkeypatch):
    path = _write(tmp_path, QUICK)
    real_open = Path.open

    def deny(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    _check_names(_error(path), "path", "readable", "Permission denied", "permissions")


def test_non_utf8_bytes_name_line(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes(QUICK.replace("name: quick", "name: caf\xe9").encode("latin-1"))
    _check_names(_error(path), "path", "UTF-8", "line 1", "0xe9", "Save the file as UTF-8")


def test_utf16_file_named_as_such(tmp_path):
    path = tmp_path / "wide.yaml"
    path.write_bytes(QUICK.encode("utf-16"))
    _check_names(_error(path), "path", "UTF-8", "UTF-16")


def test_utf8_bom_is_fine(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(QUICK.encode("utf-8-sig"))
    assert load_config(path).name == "quick"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path, text):
    _check_names(_error(_write(tmp_path, text)), "path", "empty", "examples/quickstart.yaml")


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"),
                                            ("12\n", "int")])
def test_top_level_not_a_mapping(tmp_path, text, kind):
    _check_names(_error(_write(tmp_path, text)), "config", "a mapping", kind)


def test_syntax_error_names_line(tmp_path):
    text = QUICK.replace("objective: {metric: views}", "objective: {metric: views")
    message = _error(_write(tmp_path, text))
    _check_names(message, "path", "valid YAML", "line ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: [\n")
    _check_names(_error(bad), "path", "valid YAML", "line 2")


@pytest.mark.parametrize(
    "text",
    ["name: a\x00b\n", "a: !!float abc\n", "a: !!int x\n", "a: !!timestamp nope\n",
     "a: !!python/object:os.system {}\n", "a: 1\n---\nb: 2\n", "[" * 5000 + "]" * 5000,
     "a: " + "9" * 5000 + "\n", "a: &x [*x]\nb: *y\n", "? [1, 2]\n: 3\n"],
    ids=["nul", "bad-float-tag", "bad-int-tag", "bad-timestamp", "python-tag", "two-docs",
         "deep", "huge-int", "unknown-alias", "unhashable-key"],
)
def test_yaml_oddities_are_config_errors(tmp_path, text):
    _check_names(_error(_write(tmp_path, text)), "path")


def test_oversized_file_refused(tmp_path):
    from hz_ray.config_loading import MAX_CONFIG_BYTES

    path = tmp_path / "big.yaml"
    path.write_bytes(QUICK.encode() + b"#" * MAX_CONFIG_BYTES)
    _check_names(_error(path), "path", "at most")


# ------------------------------------------------------------- wrong types anywhere -> typed


BAD_TYPES = [
    ("parameters-null-item", lambda r: r["parameters"].__setitem__(0, None), "parameters[0]"),
    ("parameters-mapping", lambda r: r.__setitem__("parameters", {"a": 1}), "parameters"),
    ("parameters-string", lambda r: r.__setitem__("parameters", "w_click"), "parameters"),
    ("objective-null", lambda r: r.__setitem__("objective", None), "objective"),
    ("objective-list", lambda r: r.__setitem__("objective", ["views"]), "objective"),
    ("objective-metric-list", lambda r: r["objective"].__setitem__("metric", ["a", "b"]),
     "objective.metric"),
    ("objective-metric-map", lambda r: r["objective"].__setitem__("metric", {"a": 1}),
     "objective.metric"),
    ("weights-list", lambda r: r.__setitem__("objective", {"weights": ["views"]}),
     "objective.weights"),
    ("arms-list", lambda r: r.__setitem__("arms", [1, 2]), "arms"),
    ("arms-int-key", lambda r: r["arms"].update({1: 2, "zz": 3}), "arms"),
    ("slots-mapping", lambda r: r["arms"].__setitem__("slots", {"a": 1}), "arms.slots"),
    ("slots-bool", lambda r: r["arms"].__setitem__("slots", True), "arms.slots"),
    ("slots-huge", lambda r: r["arms"].__setitem__("slots", 10**400), "arms.slots"),
    ("low-huge-int", lambda r: r["parameters"][0].__setitem__("low", 10**400),
     "parameters[0].low"),
    ("low-bool", lambda r: r["parameters"][0].__setitem__("low", False), "parameters[0].low"),
    ("low-inf", lambda r: r["parameters"][0].__setitem__("low", -math.inf), "parameters[0].low"),
    ("base-list", lambda r: r["parameters"][0].__setitem__("base", [1.0]), "parameters[0].base"),
    ("scale-list", lambda r: r["parameters"][0].__setitem__("scale", ["log"]),
     "parameters[0].scale"),
    ("name-list", lambda r: r["parameters"][0].__setitem__("name", ["w"]), "parameters[0].name"),
    ("job-name-int", lambda r: r.__setitem__("name", 5), "name"),
    ("seed-huge", lambda r: r["optimizer"].__setitem__("seed", 2**64), "optimizer.seed"),
    ("hours-huge", lambda r: r["arms"].__setitem__("late_data_hours", 10**30),
     "arms.late_data_hours"),
    ("min-hours-huge", lambda r: r["arms"].update(min_hours=10**30, max_hours=10**31),
     "arms.min_hours"),
    ("silence-huge", lambda r: r["arms"].__setitem__("metric_silence_hours", 10**30),
     "arms.metric_silence_hours"),
    ("constraints-mapping", lambda r: r.__setitem__("constraints", {"metric": "likes"}),
     "constraints"),
    ("constraint-null", lambda r: r["constraints"].__setitem__(0, None), "constraints[0]"),
    ("constraint-missing-metric", lambda r: r["constraints"][0].pop("metric"), "constraints[0]"),
    ("constraint-delta-str", lambda r: r["constraints"][0].__setitem__("min_delta", "-1%"),
     "constraints[0].min_delta"),
    ("extra-string", lambda r: r.__setitem__("extra_metrics", "shares"), "extra_metrics"),
    ("extra-nested", lambda r: r.__setitem__("extra_metrics", [["a"]]), "extra_metrics"),
    ("hold-fixed-list", lambda r: r["optimizer"].__setitem__("hold_fixed", ["w_click"]),
     "optimizer.hold_fixed"),
    ("backend-list", lambda r: r.__setitem__("backend", ["simulated:smooth"]), "backend"),
    ("backend-kwargs-list", lambda r: r.__setitem__("backend", {"kwargs": [1]}),
     "backend.kwargs"),
    ("backend-kwargs-int-key", lambda r: r.__setitem__("backend", {"kwargs": {1: 2}}),
     "backend.kwargs"),
    ("backend-target-int", lambda r: r.__setitem__("backend", {"target": 5}), "backend.target"),
    ("timeout-nan", lambda r: r.__setitem__("backend", {"call_timeout_s": math.nan}),
     "backend.call_timeout_s"),
    ("top-int-key", lambda r: r.update({3: "x"}), "config"),
    ("param-missing-base", lambda r: r["parameters"][0].pop("base"), "parameters[0]"),
]


@pytest.mark.parametrize(("mutate", "field"), [(m, f) for _, m, f in BAD_TYPES],
                         ids=[i for i, _, _ in BAD_TYPES])
def test_wrong_types_are_config_errors(mutate, field):
    raw = copy.deepcopy(small_config_mapping())
    mutate(raw)
    message = _error(raw)
    assert message.startswith(repr(field)), message


def test_long_values_are_clipped_in_messages():
    raw = small_config_mapping()
    raw["arms"]["slots"] = list(range(100_000))
    message = _error(raw)
    assert len(message) < 400 and "'arms.slots'" in message


def test_self_referencing_yaml_value_is_reported(tmp_path):
    text = QUICK.replace("name: quick", "name: &n [*n, *n]")
    message = _error(_write(tmp_path, text))
    assert message.startswith("'name'") and len(message) < 400


# ------------------------------------------------------------------ memory estimate


def test_estimate_mirrors_the_optimizer_constants():
    from hz_ray import config, optimizer, surrogate, thompson

    assert config.EXACT_SAMPLE_LIMIT == surrogate.EXACT_SAMPLE_LIMIT
    assert config.PATHWISE_NUM_FEATURES == surrogate.PATHWISE_NUM_FEATURES
    assert config.REFINE_POINTS == thompson.REFINE_POINTS
    assert config.CERTIFY_POINTS == optimizer.CERTIFY_POINTS


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.name)
def test_shipped_and_default_estimates_far_below_cap(path):
    from hz_ray.config import MEMORY_CAP_BYTES, estimate_plan_bytes

    config = load_config(path)
    assert estimate_plan_bytes(config) < MEMORY_CAP_BYTES / 10
    default = load_config(small_config_mapping(optimizer={}))
    assert default.optimizer.thompson_draws == 1000
    assert 10 * 2**20 < estimate_plan_bytes(default) < MEMORY_CAP_BYTES / 10


@pytest.mark.parametrize(("knob", "other"), [("thompson_draws", "proposals"),
                                             ("proposals", "thompson_draws")])
def test_memory_estimate_caps_sizes(tmp_path, knob, other):
    from hz_ray.config import MEMORY_CAP_BYTES, estimate_plan_bytes

    text = QUICK.replace("optimizer: {seed: 0}", f"optimizer: {{seed: 0, {knob}: 1e6}}")
    message = _error(_write(tmp_path, text))
    assert message.startswith(f"'optimizer.{knob}'"), message
    assert "GiB" in message and f"{other}=" in message
    bound = int(message.split(f"optimizer.{knob} to <= ")[1].split()[0])
    assert 1 <= bound < 1_000_000
    fits = load_config(_write(tmp_path, text.replace("1e6", str(bound))))
    assert estimate_plan_bytes(fits) <= MEMORY_CAP_BYTES
    with pytest.raises(ConfigError, match=f"'optimizer.{knob}'"):
        load_config(_write(tmp_path, text.replace("1e6", str(bound + max(1, bound // 50)))))


def test_estimate_grows_with_every_size_knob(small_config):
    from dataclasses import replace

    from hz_ray.config import estimate_plan_bytes

    base = estimate_plan_bytes(small_config)
    for knob in ("thompson_draws", "proposals", "proposal_draws", "proposal_features",
                 "bucket_size"):
        bigger = replace(small_config.optimizer, **{knob: getattr(small_config.optimizer,
                                                                 knob) * 8})
        assert estimate_plan_bytes(small_config, optimizer=bigger) > base, knob
    assert estimate_plan_bytes(small_config, num_arms=5000) > base


def test_a_non_finite_number_in_backend_kwargs_names_its_field():
    """The run folder records the config as strict JSON: `.inf` there failed at the job's
    start with an error about 'state' (reported by the endings tests)."""
    raw = small_config_mapping(backend={"target": "hz_ray.backends.journal:JournalBackend",
                                        "kwargs": {"faults": {"hang": {"fetch": {
                                            "seconds": float("inf"), "calls": [1]}}}}})
    with pytest.raises(ConfigError, match=r"backend\.kwargs\.faults\.hang\.fetch\.seconds.*"
                                          r"finite"):
        load_config(raw)
