"""Parameter encoding: weights <-> points of the unit cube the GP works in.

Each tuned weight maps to one coordinate in ``[0, 1]``: linearly, or on a log
scale so that halving and doubling a weight are equally far from its base.

Value-model scale invariance: a ranking by ``score = sum_k w_k p_k`` does not
change when every weight is multiplied by the same ``c > 0``. Searching all
``d`` weights therefore wastes one dimension on a direction with no effect.
With ``hold_fixed = name`` that weight stays at its base and the cube has
``d - 1`` dimensions; :meth:`ParameterSpace.canonicalize` rescales any weight
vector onto that slice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from hz_ray.config import ParameterSpec, TuningConfig
from hz_ray.errors import ConfigError, InputDataError, field_error

DTYPE = torch.float64


class ParameterSpace:
    """Encodes weights to the unit cube and back.

    Args:
        parameters: Parameter specs in a fixed order.
        hold_fixed: Name of a weight held at its base, or ``None``.
    """

    def __init__(self, parameters: Sequence[ParameterSpec], hold_fixed: str | None = None) -> None:
        self.parameters = tuple(parameters)
        names = [p.name for p in self.parameters]
        if hold_fixed is not None and hold_fixed not in names:
            raise field_error(ConfigError, "hold_fixed", hold_fixed, f"one of {names}")
        self.hold_fixed = hold_fixed
        self.free = tuple(p for p in self.parameters if p.name != hold_fixed)

    @classmethod
    def from_config(cls, config: TuningConfig) -> ParameterSpace:
        """Build the space of a tuning config."""
        return cls(config.parameters, config.optimizer.hold_fixed)

    @property
    def dim(self) -> int:
        """Dimension of the unit cube (tuned weights less the fixed one)."""
        return len(self.free)

    @property
    def names(self) -> tuple[str, ...]:
        """All parameter names, fixed one included."""
        return tuple(p.name for p in self.parameters)

    @property
    def base_params(self) -> dict[str, float]:
        """The control arm's weights."""
        return {p.name: float(p.base) for p in self.parameters}

    def _check(self, params: Mapping[str, float]) -> None:
        missing = [n for n in self.names if n not in params]
        if missing:
            raise field_error(InputDataError, "params", dict(params),
                              f"a mapping with every parameter; missing {missing}")
        for name in self.names:
            value = params[name]
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise field_error(InputDataError, f"params.{name}", value, "a finite number")

    def encode(self, params: Mapping[str, float]) -> torch.Tensor:
        """Map weights to the unit cube.

        Args:
            params: Weight by name (values outside the range are clamped).

        Returns:
            A ``dim``-vector in ``[0, 1]``, float64.
        """
        self._check(params)
        coords = []
        for p in self.free:
            value = float(params[p.name])
            if p.scale == "log":
                value = max(value, p.low)
                u = (math.log(value) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
            else:
                u = (value - p.low) / (p.high - p.low)
            coords.append(min(1.0, max(0.0, u)))
        return torch.tensor(coords, dtype=DTYPE)

    def encode_many(self, params_list: Sequence[Mapping[str, float]]) -> torch.Tensor:
        """Encode several weight vectors; returns an ``n x dim`` tensor."""
        if not params_list:
            return torch.zeros(0, self.dim, dtype=DTYPE)
        return torch.stack([self.encode(p) for p in params_list])

    def decode(self, u: torch.Tensor | Sequence[float]) -> dict[str, float]:
        """Map a point of the unit cube to weights (fixed weight at its base).

        Args:
            u: A ``dim``-vector in ``[0, 1]``.

        Returns:
            Weight by name, for every parameter.
        """
        values = [float(x) for x in (u.tolist() if isinstance(u, torch.Tensor) else u)]
        if len(values) != self.dim:
            raise field_error(InputDataError, "u", values, f"a vector of length {self.dim}")
        out = self.base_params
        for p, x in zip(self.free, values, strict=True):
            x = min(1.0, max(0.0, x))
            if p.scale == "log":
                out[p.name] = math.exp(math.log(p.low) + x * (math.log(p.high) - math.log(p.low)))
            else:
                out[p.name] = p.low + x * (p.high - p.low)
        return out

    def canonicalize(self, params: Mapping[str, float]) -> dict[str, float]:
        """Rescale weights so the fixed weight sits at its base (no-op without one).

        Only valid for a value model whose ranking is scale invariant, which
        is what ``hold_fixed`` declares.
        """
        self._check(params)
        out = {n: float(params[n]) for n in self.names}
        if self.hold_fixed is None:
            return out
        fixed = next(p for p in self.parameters if p.name == self.hold_fixed)
        if out[fixed.name] <= 0:
            raise field_error(InputDataError, f"params.{fixed.name}", out[fixed.name],
                              "> 0 to rescale under scale invariance")
        factor = fixed.base / out[fixed.name]
        return {n: v * factor for n, v in out.items()}

    def control_point(self) -> torch.Tensor:
        """The control arm's weights in the unit cube."""
        return self.encode(self.base_params)
