"""Backend targets: only ArmBackend classes are built, metrics are checked early."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hz_ray.clock import SimClock
from hz_ray.config import BackendSpec, load_config
from hz_ray.errors import ConfigError
from tests.conftest import small_config_mapping

ROOT = Path(__file__).resolve().parents[2]
HERE = __name__  # the name pytest imported this module under: targets resolve to it
CALLS: list[str] = []  # what the targets below were asked to do


def make_backend(**kwargs):
    """A function target: calling it would run code."""
    CALLS.append("make_backend")
    return GoodBackend()


class NoStop:
    """Has launch and fetch, no stop."""

    def __init__(self, **kwargs) -> None:
        CALLS.append("NoStop")

    def launch(self, arm_id, params):
        pass

    def fetch(self, arm_id, since_hour):
        return []


class StopOnInstance(NoStop):
    """Adds ``stop`` only on instances: not structurally an ArmBackend class."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.stop = lambda arm_id: None


class GoodBackend:
    """A minimal ArmBackend that takes the clock and declares its metrics."""

    metrics = ("views", "likes")

    def __init__(self, clock=None, scale: float = 1.0) -> None:
        self.clock, self.scale = clock, scale

    def launch(self, arm_id, params):
        pass

    def fetch(self, arm_id, since_hour):
        return []

    def stop(self, arm_id):
        pass


class Undeclared(GoodBackend):
    """Declares nothing."""

    metrics = None


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()


def _build(target, **kwargs):
    from hz_ray.backends.factory import build_backend

    return build_backend(BackendSpec(target=target, kwargs=kwargs), SimClock(), seed=0)


def _config(**overrides):
    return load_config(small_config_mapping(**overrides))


# ------------------------------------------------------------------------- target security


def test_os_system_target_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    with pytest.raises(ConfigError) as info:
        _build("os:system", command=f"touch {marker}")
    assert not marker.exists()
    assert str(info.value).startswith("'backend.target'")
    assert "class" in str(info.value)


def test_popen_class_is_not_a_backend(tmp_path):
    marker = tmp_path / "marker"
    with pytest.raises(ConfigError, match="'backend.target'"):
        _build("subprocess:Popen", args=f"touch {marker}", shell=True)
    time.sleep(0.5)  # a started child would have touched it by now
    assert not marker.exists()


def test_function_target_is_not_called():
    with pytest.raises(ConfigError, match="'backend.target'.*a class"):
        _build(f"{HERE}:make_backend")
    assert CALLS == []


@pytest.mark.parametrize("name", ["NoStop", "StopOnInstance"])
def test_class_without_the_protocol_is_not_built(name):
    with pytest.raises(ConfigError) as info:
        _build(f"{HERE}:{name}")
    assert CALLS == []
    assert "stop" in str(info.value) and str(info.value).startswith("'backend.target'")


@pytest.mark.parametrize("target", ["../evil:Cls", ":Cls", "a..b:C", "1abc:C", "pkg.mod:",
                                    "pkg/mod:Cls", "pkg.mod:Cls.attr", "os :system",
                                    "pkg.mod:Cls:x"])
def test_target_must_be_dotted_module_and_class(target):
    with pytest.raises(ConfigError) as info:
        _build(target)
    assert str(info.value).startswith("'backend.target'")
    with pytest.raises(ConfigError, match="'backend.target'"):
        _config(backend={"target": target})


def test_missing_module_and_attribute_are_config_errors():
    with pytest.raises(ConfigError, match="importable"):
        _build("no_such_package_hz.mod:Cls")
    with pytest.raises(ConfigError, match="importable"):
        _build(f"{HERE}:Missing")


def test_good_class_is_built_with_the_clock_and_kwargs():
    backend = _build(f"{HERE}:GoodBackend", scale=2.0)
    assert isinstance(backend, GoodBackend)
    assert isinstance(backend.clock, SimClock) and backend.scale == 2.0


def test_bad_kwargs_name_backend_kwargs():
    with pytest.raises(ConfigError, match="'backend.kwargs'"):
        _build(f"{HERE}:GoodBackend", nope=1)


def test_file_drop_target_still_builds(tmp_path):
    from hz_ray.backends.file_drop import FileDropBackend

    backend = _build("hz_ray.backends.file_drop:FileDropBackend", root=str(tmp_path / "drop"))
    assert isinstance(backend, FileDropBackend)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"world_seed": "abc"}, "backend.kwargs.world_seed"),
    ({"world_seed": [1]}, "backend.kwargs.world_seed"),
    ({"world_seed": True}, "backend.kwargs.world_seed"),
    ({"world_kwargs": 5}, "backend.kwargs.world_kwargs"),
    ({"world_kwargs": {"bogus": 1}}, "backend.kwargs.world_kwargs"),
    ({"realism": {"bogus": 1}}, "backend.kwargs.realism"),
    ({"realism": 7}, "backend.kwargs.realism"),
    ({"realism": "rough"}, "backend.kwargs.realism"),
    ({"traffic_per_arm": "many"}, "traffic_per_arm"),
    ({"speed": 2}, "backend.kwargs"),
])
def test_simulated_kwargs_are_typed_errors(kwargs, field):
    with pytest.raises(ConfigError) as info:
        _build("simulated:smooth", **kwargs)
    assert repr(field) in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------- declared metrics


def test_simulated_backend_declares_its_world_metrics():
    from hz_ray.backends.base import declared_metrics
    from hz_ray.sim import make_world

    backend = _build("simulated:value_model")
    assert backend.metrics == make_world("value_model").metrics
    assert declared_metrics(backend) == ("views", "likes", "shares", "follows", "watch_time")


def test_declared_metrics_conventions():
    from hz_ray.backends.base import declared_metrics

    assert declared_metrics(object()) is None
    assert declared_metrics(Undeclared()) is None
    assert declared_metrics(GoodBackend()) == ("views", "likes")

    class Listed(GoodBackend):
        metrics = ["views"]

    assert declared_metrics(Listed()) == ("views",)
    for bad in ("views", ("views", 3), ("views", ""), 5):
        class Bad(GoodBackend):
            metrics = bad

        with pytest.raises(ConfigError, match="metrics"):
            declared_metrics(Bad())


@pytest.mark.parametrize(("overrides", "field", "got", "guess"), [
    ({"constraints": [{"metric": "likez", "min_delta": -0.01}]}, "constraints[0].metric",
     "likez", "likes"),
    ({"objective": {"metric": "viewz"}}, "objective", "viewz", "views"),
    ({"extra_metrics": ["likes_total"]}, "extra_metrics[0]", "likes_total", "likes"),
    ({"extra_metrics": ["zzz"]}, "extra_metrics[0]", "zzz", None),
])
def test_check_backend_metrics_names_the_misspelled_metric(overrides, field, got, guess):
    from hz_ray.backends.factory import check_backend_metrics

    config = _config(**overrides)
    with pytest.raises(ConfigError) as info:
        check_backend_metrics(config, GoodBackend())
    text = str(info.value)
    assert text.startswith(f"{field!r} must be a metric the backend publishes")
    assert f"got {got!r}" in text and "\n" not in text
    if guess:
        assert f"Did you mean {guess!r}?" in text
    else:
        assert "Did you mean" not in text


def test_check_backend_metrics_passes_and_skips_undeclared():
    from hz_ray.backends.factory import check_backend_metrics

    config = _config(extra_metrics=["zzz"])
    assert check_backend_metrics(_config(), GoodBackend()) is None
    assert check_backend_metrics(config, Undeclared()) is None


# ------------------------------------------------------------- checking a config's target


def test_shipped_simulated_configs_match_their_worlds():
    from hz_ray.backends.factory import check_config_against_backend_target

    for path in (ROOT / "examples" / "quickstart.yaml", ROOT / "hz_ray" / "defaults" / "demo.yaml"):
        assert check_config_against_backend_target(load_config(path)) is None


def test_target_check_catches_metric_and_parameter_mismatch():
    from hz_ray.backends.factory import check_config_against_backend_target

    raw = load_config(ROOT / "examples" / "quickstart.yaml").to_mapping()
    raw["constraints"][0]["metric"] = "like"
    with pytest.raises(ConfigError, match=r"'constraints\[0\].metric'.*Did you mean 'likes'"):
        check_config_against_backend_target(load_config(raw))
    raw = load_config(ROOT / "examples" / "quickstart.yaml").to_mapping()
    raw["parameters"][3]["name"] = "w_wach"
    with pytest.raises(ConfigError, match=r"'parameters\[3\].name'.*Did you mean 'w_watch'"):
        check_config_against_backend_target(load_config(raw))
    raw["parameters"].pop(3)
    with pytest.raises(ConfigError, match=r"'parameters'.*w_watch"):
        check_config_against_backend_target(load_config(raw))


def test_target_check_of_import_targets(tmp_path):
    from hz_ray.backends.factory import check_config_against_backend_target

    marker = tmp_path / "marker"
    config = _config(backend={"target": "os:system", "kwargs": {"command": f"touch {marker}"}})
    with pytest.raises(ConfigError, match="'backend.target'"):
        check_config_against_backend_target(config)
    assert not marker.exists()
    good = _config(backend={"target": f"{HERE}:GoodBackend"})
    assert check_config_against_backend_target(good) is None
    assert CALLS == []
    typo = _config(backend={"target": f"{HERE}:GoodBackend"},
                   constraints=[{"metric": "likez", "min_delta": -0.01}])
    with pytest.raises(ConfigError, match="Did you mean 'likes'"):
        check_config_against_backend_target(typo)
