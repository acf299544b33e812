from __future__ import annotations

import math

import pytest
import torch

from hz_ray.config import load_config
from hz_ray.errors import InputDataError
from hz_ray.space import ParameterSpace
from tests.conftest import small_config_mapping


def make_space(hold_fixed=None):
    raw = small_config_mapping()
    raw["optimizer"]["hold_fixed"] = hold_fixed
    return ParameterSpace.from_config(load_config(raw))


def test_log_scale_puts_base_in_the_middle_and_is_symmetric():
    space = make_space()
    u = space.encode({"w_click": 1.0, "w_like": 3.0, "w_share": 0.5})
    assert torch.allclose(u, torch.tensor([0.5, 1.0, 0.25], dtype=torch.float64))
    half = space.encode({"w_click": 0.5, "w_like": 1.0, "w_share": 1.0})[0]
    double = space.encode({"w_click": 2.0, "w_like": 1.0, "w_share": 1.0})[0]
    assert math.isclose(0.5 - half, double - 0.5, rel_tol=1e-12)


def test_decode_inverts_encode():
    space = make_space()
    params = {"w_click": 0.7, "w_like": 2.2, "w_share": 1.3}
    back = space.decode(space.encode(params))
    for k, v in params.items():
        assert math.isclose(back[k], v, rel_tol=1e-12)


def test_values_outside_the_range_are_clamped():
    space = make_space()
    u = space.encode({"w_click": 100.0, "w_like": 1e-9, "w_share": -5.0})
    assert u.tolist() == [1.0, 0.0, 0.0]


def test_hold_fixed_drops_a_dimension_and_canonicalizes():
    space = make_space(hold_fixed="w_click")
    assert space.dim == 2
    decoded = space.decode([0.5, 0.5])
    assert decoded["w_click"] == 1.0
    canon = space.canonicalize({"w_click": 2.0, "w_like": 1.0, "w_share": 0.8})
    assert canon == {"w_click": 1.0, "w_like": 0.5, "w_share": 0.4}


def test_missing_or_bad_params_raise_typed_errors():
    space = make_space()
    with pytest.raises(InputDataError, match="missing"):
        space.encode({"w_click": 1.0})
    with pytest.raises(InputDataError, match="'params.w_like'"):
        space.encode({"w_click": 1.0, "w_like": float("nan"), "w_share": 1.0})
    with pytest.raises(InputDataError, match="length 3"):
        space.decode([0.1, 0.2])
