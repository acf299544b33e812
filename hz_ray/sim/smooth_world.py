"""SmoothWorld: four value-model weights, four metrics, smooth trade-offs.

The first and simplest world. Each metric's true delta is a saturated concave
quadratic of the *centred* log-weights ``z = log(w / w0) - mean(log(w / w0))``,
so it is exactly zero at the base weights and invariant to the overall scale of
``w`` (a ranker only uses the order of its scores). Every metric peaks at a
different ``z``: more like-weight buys likes and costs views, and so on.
"""

from __future__ import annotations

import numpy as np

from hz_ray.sim.world_base import BenchmarkProblem, World

_PARAMS = ("w_click", "w_like", "w_share", "w_watch")
_METRICS = ("views", "likes", "shares", "watch_time")

# Peak of each metric in centred log-weight space (rows sum to zero) and the
# metric's gain at its peak. Order of columns: click, like, share, watch.
_PEAKS = np.array([
    [0.55, -0.20, -0.45, 0.10],    # views: favour clicks, away from like/share
    [-0.10, 0.50, -0.15, -0.25],   # likes: favour like-weight
    [-0.30, 0.10, 0.60, -0.40],    # shares: favour share-weight
    [-0.25, -0.20, -0.10, 0.55],   # watch_time: favour watch-weight
])
_PEAK_GAINS = np.array([0.045, 0.03, 0.04, 0.03])
# Per-metric curvature along each log-weight axis (anisotropy; > 0).
_CURVATURE = np.array([
    [1.0, 1.4, 0.8, 1.2],
    [1.2, 1.0, 1.0, 0.9],
    [0.9, 1.1, 1.0, 1.3],
    [1.1, 0.8, 1.2, 1.0],
])
# Deltas saturate smoothly at +-_SATURATION (``s * tanh(q / s)``).
_SATURATION = 0.15


class SmoothWorld(World):
    """Four log-scale weights around 1.0 and four metrics with smooth trade-offs.

    For metric ``m`` with peak ``c_m``, diagonal curvature ``A_m`` (projected on
    the zero-sum subspace) and scale ``a_m`` chosen so the gain at the peak is
    ``g_m``::

        q_m(z) = a_m * (c_m^T A_m z - z^T A_m z / 2)
        delta_m(z) = 0.15 * tanh(q_m(z) / 0.15)

    The world has no random parts: the same weights always give the same deltas.

    Args:
        search_factor: The search box is ``[w0 / f, w0 * f]`` per weight, f > 1.

    Example:
        >>> world = SmoothWorld()
        >>> world.true_deltas({"w_click": 1, "w_like": 1, "w_share": 1, "w_watch": 1})["views"]
        0.0
    """

    name = "smooth"
    scale_invariant = True

    def __init__(self, search_factor: float = 3.0) -> None:
        super().__init__()
        self.metrics = _METRICS
        self.parameter_names = _PARAMS
        self.base_params = {p: 1.0 for p in _PARAMS}
        self.bounds = {p: (1.0 / search_factor, float(search_factor)) for p in _PARAMS}
        self.log_scale = {p: True for p in _PARAMS}
        self.base_levels = {"views": 4.0, "likes": 0.25, "shares": 0.05, "watch_time": 90.0}
        self.unit_cv = {"views": 1.2, "likes": 2.5, "shares": 4.0, "watch_time": 1.5}
        self.default_problem = BenchmarkProblem({"views": 1.0}, {"likes": -0.005})
        d = len(_PARAMS)
        proj = np.eye(d) - np.full((d, d), 1.0 / d)
        # Projected curvature matrices P A P, shape (J, d, d).
        self._hess = np.stack([proj @ np.diag(a) @ proj for a in _CURVATURE])
        lin = np.einsum("jkl,jl->jk", self._hess, _PEAKS)            # (J, d): A_m c_m
        peak_q = 0.5 * np.einsum("jk,jk->j", lin, _PEAKS)              # q at the peak, a=1
        self._scale = _PEAK_GAINS / peak_q                              # (J,)
        self._lin = lin
        self._finish_init()

    def _deltas_canonical(self, Z: np.ndarray) -> np.ndarray:
        """Deltas at centred log-weights.

        Args:
            Z: ``(n, 4)`` centred log-weights.

        Returns:
            ``(n, 4)`` relative deltas of views, likes, shares, watch_time.
        """
        linear = Z @ self._lin.T                                        # (n, J)
        quad = np.einsum("nk,jkl,nl->nj", Z, self._hess, Z)             # (n, J)
        q = self._scale * (linear - 0.5 * quad)
        return _SATURATION * np.tanh(q / _SATURATION)
