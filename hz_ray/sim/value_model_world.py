"""ValueModelWorld: lifts that emerge from ranking with a linear value model.

A fixed pool of simulated requests, drawn once per world seed, each brings a
slate of candidate items with true engagement rates for five signals (click,
like, share, follow, watch seconds). The ranker sees noisy, imperfectly
calibrated predictions ``p_hat`` of them, scores every item by
``sum_k w_k * p_hat_k``, and the user consumes the top ``k`` items with a
position-decaying attention. A metric is the attention-weighted sum of true
engagement over the consumed items, averaged over requests; an arm's true
delta is that metric under ``w`` relative to under ``w0``.

Trade-offs are real (items good for likes are not the items good for views),
and only the *order* of scores matters, so deltas are exactly invariant to the
scale of ``w``.
"""

from __future__ import annotations

import numpy as np

from hz_ray.errors import ConfigError, field_error
from hz_ray.sim.realism import rng_for
from hz_ray.sim.world_base import BenchmarkProblem, World

_PARAMS = ("w_click", "w_like", "w_share", "w_follow", "w_watch")
_METRICS = ("views", "likes", "shares", "follows", "watch_time")
_BASE = {"w_click": 1.0, "w_like": 3.5, "w_share": 4.0, "w_follow": 6.0, "w_watch": 0.02}
_TAG_POOL = 101

# Logit model of true engagement: intercept, weight of request activity, item
# quality, and of the signal's own idiosyncratic factor.
_INTERCEPT = np.array([-1.2, -3.6, -5.0, -6.0])
_QUALITY = np.array([1.0, 0.9, 0.8, 0.7])
_OWN = np.array([0.7, 0.7, 0.8, 0.8])
# Prediction model on the logit scale: slope (calibration), bias, noise sd.
_PRED_SLOPE = np.array([1.0, 0.85, 0.8, 0.75, 0.9])
_PRED_BIAS = np.array([0.1, -0.2, 0.3, -0.1, -0.1])
_PRED_NOISE = np.array([0.35, 0.5, 0.6, 0.7, 0.45])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class ValueModelWorld(World):
    """A ranker with a linear value model over five predicted signals.

    Args:
        seed: Seed of the request pool (the world's identity), >= 0.
        n_requests: Requests in the pool, ``R`` (e.g. 3000).
        n_items: Candidate items per request, ``I`` (e.g. 50).
        top_k: Items a user consumes per request, ``k`` (<= ``n_items``).
        sessions_per_hour: Requests per user per hour; scales ``base_levels``.
        search_factor: The search box is ``[w0 / f, w0 * f]`` per weight, f > 1.

    The pool holds ``R x I x 5`` true rates and predictions (about 12 MB at the
    defaults); ``true_deltas`` costs one scoring and top-k pass (a few ms) and
    is cached by canonical (rounded, scale-free) weights.
    """

    name = "value_model"
    scale_invariant = True
    piecewise_constant = True

    def __init__(self, seed: int = 0, *, n_requests: int = 3000, n_items: int = 50,
                 top_k: int = 8, sessions_per_hour: float = 2.0,
                 search_factor: float = 3.0) -> None:
        super().__init__()
        for name, value, low in (("n_requests", n_requests, 1), ("n_items", n_items, 2),
                                 ("top_k", top_k, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise field_error(ConfigError, name, value, f"an integer >= {low}")
        if top_k > n_items:
            raise field_error(ConfigError, "top_k", top_k, f"<= n_items ({n_items})")
        if not search_factor > 1:
            raise field_error(ConfigError, "search_factor", search_factor, "a number > 1")
        self.seed = seed
        self.top_k = top_k
        self.metrics = _METRICS
        self.parameter_names = _PARAMS
        self.base_params = dict(_BASE)
        self.bounds = {p: (v / search_factor, v * search_factor) for p, v in _BASE.items()}
        self.log_scale = {p: True for p in _PARAMS}
        self.unit_cv = {"views": 1.2, "likes": 2.5, "shares": 5.0, "follows": 7.0,
                        "watch_time": 1.6}
        # Guard every other metric: with fewer guardrails the optimum trades away
        # shares/follows/watch time and sits on the search box's corner.
        self.default_problem = BenchmarkProblem(
            {"views": 1.0},
            {"likes": -0.005, "shares": -0.01, "follows": -0.01, "watch_time": -0.005})
        self._truth, self._pred = self._draw_pool(seed, n_requests, n_items)
        self._truth_flat = self._truth.reshape(n_requests * n_items, len(_METRICS))
        self._row_offset = (np.arange(n_requests) * n_items)[:, None]
        self._position = 1.0 / np.log2(np.arange(top_k) + 2.0)             # (k,)
        self._base_metrics = self._metrics_at(self._canonical(self.base_vector()[None, :])[0])
        self.base_levels = {m: float(v * sessions_per_hour)
                            for m, v in zip(_METRICS, self._base_metrics, strict=True)}
        self._finish_init()

    @staticmethod
    def _draw_pool(seed: int, n_requests: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw true rates and predictions, each ``(R, I, 5)`` float64."""
        rng = rng_for(seed, _TAG_POOL)
        activity = rng.normal(0.0, 0.4, size=(n_requests, 1, 1))
        quality = rng.standard_normal((n_requests, n_items, 1))
        own = rng.standard_normal((n_requests, n_items, 5))
        logits = _INTERCEPT + activity + _QUALITY * quality + _OWN * own[..., :4]
        logits[..., 1] += 0.3 * own[..., 0]        # likers click a bit more
        logits[..., 2] += 0.3 * own[..., 1]        # sharers like a bit more
        rates = _sigmoid(logits)                    # (R, I, 4)
        dwell = np.exp(3.0 + 0.3 * quality[..., 0] + 0.7 * own[..., 4] - 0.35 * own[..., 0])
        watch = rates[..., 0] * dwell               # expected seconds per impression
        truth = np.concatenate([rates, watch[..., None]], axis=-1)
        eps = rng.standard_normal((n_requests, n_items, 5))
        pred_logits = _PRED_SLOPE[:4] * logits + _PRED_BIAS[:4] + _PRED_NOISE[:4] * eps[..., :4]
        pred_watch = np.exp(_PRED_SLOPE[4] * np.log(watch) + _PRED_BIAS[4]
                            + _PRED_NOISE[4] * eps[..., 4])
        pred = np.concatenate([_sigmoid(pred_logits), pred_watch[..., None]], axis=-1)
        return truth, pred

    def _metrics_at(self, z: np.ndarray) -> np.ndarray:
        """Per-request engagement of the top-k under log-weights ``z``.

        Args:
            z: ``(5,)`` log-weights (any additive constant; only the order matters).

        Returns:
            ``(5,)`` attention-weighted engagement per request, averaged over requests.
        """
        w = np.exp(z - z.max())
        scores = self._pred @ w                                             # (R, I)
        k = self.top_k
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] \
            else np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        ranked = np.take_along_axis(top, order, axis=1) + self._row_offset  # (R, k) flat ids
        taken = self._truth_flat[ranked]                                      # (R, k, 5)
        return np.einsum("rkm,k->m", taken, self._position) / scores.shape[0]

    def _deltas_canonical(self, Z: np.ndarray) -> np.ndarray:
        """Deltas at centred log-weights.

        Args:
            Z: ``(n, 5)`` centred log-weights.

        Returns:
            ``(n, 5)`` relative deltas of views, likes, shares, follows, watch_time.
        """
        out = np.empty((Z.shape[0], len(_METRICS)))
        for i, z in enumerate(Z):
            out[i] = self._metrics_at(z) / self._base_metrics - 1.0
        return out
