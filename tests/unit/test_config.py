from __future__ import annotations

import copy

import pytest

from hz_ray.config import ConstraintSpec, load_config
from hz_ray.errors import ConfigError
from tests.conftest import small_config_mapping


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
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    text = str(info.value)
    assert repr(field) in text
    assert fragment in text


def test_duplicate_parameter_names_rejected():
    raw = small_config_mapping()
    raw["parameters"][1]["name"] = "w_click"
    with pytest.raises(ConfigError, match="unique names"):
        load_config(raw)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="existing YAML file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


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
