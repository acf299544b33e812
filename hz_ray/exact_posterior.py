r"""The exact GP posterior of one metric from one Cholesky factor, lean enough for 5000 arms.

GPyTorch's prediction strategy, asked for means and variances, factorises the training
covariance twice (once for the mean cache, once for the variance cache), keeps the dense
training covariance, its factor and an ``n x n`` inverse root per model, and, for a fantasy
update, starts again from scratch. At ``n = 5000`` points and 4 metrics that was 28 s and
3.2 GB before a single Thompson draw (``benchmarks/cost_curve.py``). The same exact posterior
needs only one lower Cholesky factor ``L`` of ``K + Sigma`` per metric:

- mean: ``c + k(x, X) alpha`` with ``alpha = (K + Sigma)^{-1} (y - c)``;
- variance: ``k(x, x) - |L^{-1} k(X, x)|^2``;
- joint draws, pathwise updates: solves with ``L``.

Fantasy points (live arms without data, with independent noise) extend the factor by a
border instead of refactorising: with ``B = (L^{-1} K_{Xe})^T`` and
``C = chol(K_ee + Sigma_e - B B^T)`` the factor of the extended matrix is
``[[L, 0], [B, C]]``, which shares ``L`` with the snapshot it came from (``O(n^2 e)``).

Everything here is in the model's standardised units (its outcome transform is frozen);
:class:`~hz_ray.surrogate.PosteriorSnapshot` converts to lift units. Kernels, means and
noise come from the BoTorch model itself, so the posterior is exactly the model's.
"""

from __future__ import annotations

import torch
from botorch.models import SingleTaskGP
from torch import Tensor

__all__ = ["KERNEL_CHUNK", "MetricPosterior", "robust_cholesky"]

KERNEL_CHUNK = 256
"""Rows per kernel evaluation: GPyTorch's Matern kernel makes several temporaries of the size
of its output, so a ``5000 x 5000`` kernel is built in slices of this many rows."""


def robust_cholesky(cov: Tensor) -> Tensor:
    """Lower Cholesky factor of a PSD matrix with escalating jitter; a PSD root as last resort.

    Jitter is added to a copy's diagonal only when the plain factorisation fails, so the
    common case allocates nothing beyond the factor.
    """
    L, info = torch.linalg.cholesky_ex(cov)
    if int(info) == 0:
        return L
    n = cov.shape[-1]
    base = float(cov.diagonal().abs().mean()) if n else 1.0
    base = base if base > 0 else 1.0
    jitter = 1e-12 * base
    while jitter <= 1e-4 * base:
        shifted = cov.clone()
        shifted.diagonal().add_(jitter)
        L, info = torch.linalg.cholesky_ex(shifted)
        del shifted
        if int(info) == 0:
            return L
        jitter *= 10.0
    evals, evecs = torch.linalg.eigh(cov)  # pragma: no cover - only for pathological inputs
    return evecs * evals.clamp_min(0.0).sqrt().unsqueeze(-2)  # pragma: no cover


def kernel(model: SingleTaskGP, A: Tensor, B: Tensor) -> Tensor:
    """``k(A, B)`` of the model's covariance module, ``len(A) x len(B)``, built in row slices."""
    with torch.no_grad():
        if A.shape[0] <= KERNEL_CHUNK:
            return model.covar_module(A, B).to_dense()
        out = torch.empty(A.shape[0], B.shape[0], dtype=A.dtype)
        for start in range(0, A.shape[0], KERNEL_CHUNK):
            stop = start + KERNEL_CHUNK
            out[start:stop] = model.covar_module(A[start:stop], B).to_dense()
        return out


def prior_variance(model: SingleTaskGP, X: Tensor) -> Tensor:
    """``k(x, x)`` at each row of ``X`` (standardised units), ``N``-vector."""
    with torch.no_grad():
        return model.covar_module(X, diag=True).reshape(-1)


def noise_parts(model: SingleTaskGP) -> tuple[Tensor, Tensor | None]:
    """The model's training noise as ``(residual, loadings)``: ``Sigma = diag(r) + U U^T``.

    ``loadings`` is None for independent noise (then ``r`` is the whole noise).
    """
    noise_covar = model.likelihood.noise_covar
    loadings = getattr(noise_covar, "loadings", None)
    if loadings is not None:
        return noise_covar.residual.reshape(-1), loadings
    return model.likelihood.noise.reshape(-1), None


def _training_covariance(model: SingleTaskGP) -> Tensor:
    """``K + Sigma`` of the model's training points (standardised), built without a dense noise."""
    X = model.train_inputs[0]
    cov = kernel(model, X, X)
    residual, loadings = noise_parts(model)
    cov.diagonal().add_(residual)
    if loadings is not None:
        cov.addmm_(loadings, loadings.T)
    return cov


class MetricPosterior:
    """Exact posterior of one metric's GP, from one shared factor plus a fantasy border.

    Build with :meth:`from_model`; extend with :meth:`extended`. Treat as immutable.

    Attributes:
        model: The BoTorch model (kernel, constant mean, noise); its training inputs are
            ``X`` (core rows then fantasy rows).
        X: ``n_all x d`` training inputs.
        L: ``n x n`` lower factor of the core rows' ``K + Sigma`` (shared by extensions).
        border: ``e x n`` ``B`` of the fantasy rows, or None.
        corner: ``e x e`` lower ``C`` of the fantasy rows, or None.
        alpha: ``n_all`` vector ``(K + Sigma)^{-1} (y - c)``.
        constant: The constant prior mean ``c``.
    """

    def __init__(self, model: SingleTaskGP, L: Tensor, border: Tensor | None,
                 corner: Tensor | None) -> None:
        self.model = model
        self.X = model.train_inputs[0]
        self.L = L
        self.border = border
        self.corner = corner
        with torch.no_grad():
            self.constant = model.mean_module.constant.reshape(()).detach()
            y = model.train_targets.reshape(-1) - self.constant
            self.alpha = self.solve(y.unsqueeze(-1)).squeeze(-1)

    @property
    def num_core(self) -> int:
        """Rows ``n`` of the core factor."""
        return int(self.L.shape[0])

    @classmethod
    def from_model(cls, model: SingleTaskGP) -> MetricPosterior:
        """Factorise ``K + Sigma`` of the model's training points (one Cholesky)."""
        with torch.no_grad():
            cov = _training_covariance(model)
            # Factorise in place (the factor takes the matrix's memory: one n x n, not two);
            # a failed attempt leaves a partial factor, so the matrix is rebuilt for jitter.
            L, info = torch.linalg.cholesky_ex(cov, out=(cov, torch.empty((), dtype=torch.int32)))
            if int(info) != 0:
                del L, cov
                L = robust_cholesky(_training_covariance(model))
        return cls(model, L, None, None)

    def extended(self, model: SingleTaskGP) -> MetricPosterior:
        """The posterior of ``model`` by a border on this one's core factor.

        ``model``'s training rows are this posterior's core rows followed by fantasy rows with
        independent noise (this one's own fantasy rows, if any, included again).
        """
        n = self.num_core
        with torch.no_grad():
            X = model.train_inputs[0]
            extra = X[n:]
            if extra.shape[0] == 0:
                return MetricPosterior(model, self.L, None, None)
            cross = kernel(model, self.X[:n], extra)  # n x e
            border = torch.linalg.solve_triangular(self.L, cross, upper=False).T  # e x n
            noise = model.likelihood.noise.reshape(-1)[n:]
            schur = kernel(model, extra, extra) - border @ border.T
            schur.diagonal().add_(noise)
            corner = robust_cholesky(schur)
        return MetricPosterior(model, self.L, border, corner)

    # ----------------------------------------------------------------- algebra
    def solve_lower(self, R: Tensor) -> Tensor:
        """``F^{-1} R`` for the full lower factor ``F = [[L, 0], [B, C]]``; ``R``: ``n_all x k``."""
        n = self.num_core
        top = torch.linalg.solve_triangular(self.L, R[:n], upper=False)
        if self.border is None:
            return top
        bottom = torch.linalg.solve_triangular(self.corner, R[n:] - self.border @ top,
                                               upper=False)
        return torch.cat([top, bottom])

    def solve(self, R: Tensor) -> Tensor:
        """``(K + Sigma)^{-1} R`` over all training rows; ``R``: ``n_all x k``."""
        n = self.num_core
        if self.border is None:
            return torch.cholesky_solve(R, self.L)
        z = self.solve_lower(R)
        bottom = torch.linalg.solve_triangular(self.corner.T, z[n:], upper=True)
        top = torch.linalg.solve_triangular(self.L.T, z[:n] - self.border.T @ bottom,
                                            upper=True)
        return torch.cat([top, bottom])

    def noise_times(self, A: Tensor) -> Tensor:
        """``Sigma A`` for the training noise ``diag(r) + U U^T``; ``A``: ``n_all x k``."""
        residual, loadings = noise_parts(self.model)
        out = residual.unsqueeze(-1) * A
        if loadings is not None:
            out = out + loadings @ (loadings.T @ A)
        return out

    # -------------------------------------------------------------- predictions
    def training_mean(self) -> Tensor:
        r"""Posterior mean at every training row, standardised, ``n_all``-vector, ``O(n H)``.

        At training inputs ``K alpha = (y - c) - Sigma alpha``, so the mean
        ``c + K alpha`` is ``y - Sigma alpha``: no kernel evaluation.
        """
        with torch.no_grad():
            y = self.model.train_targets.reshape(-1)
            return y - self.noise_times(self.alpha.unsqueeze(-1)).squeeze(-1)

    def mean(self, X: Tensor) -> Tensor:
        """Posterior mean at ``X`` (``N x d``), standardised, ``N``-vector."""
        with torch.no_grad():
            out = torch.empty(X.shape[0], dtype=X.dtype)
            for start in range(0, X.shape[0], KERNEL_CHUNK):
                chunk = X[start:start + KERNEL_CHUNK]
                out[start:start + KERNEL_CHUNK] = (
                    self.constant + kernel(self.model, chunk, self.X) @ self.alpha)
            return out

    def mean_and_var(self, X: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
        """Posterior mean and latent variance at ``X``, standardised; each ``N``-vector."""
        with torch.no_grad():
            means, variances = [], []
            for start in range(0, X.shape[0], chunk_size):
                chunk = X[start:start + chunk_size]
                cross = kernel(self.model, self.X, chunk)  # n_all x c
                means.append(self.constant + cross.T @ self.alpha)
                V = self.solve_lower(cross)
                variances.append((prior_variance(self.model, chunk) - (V * V).sum(dim=0))
                                 .clamp_min(0.0))
            if not means:
                empty = torch.zeros(0, dtype=X.dtype)
                return empty, empty
            return torch.cat(means), torch.cat(variances)

    def mean_and_covariance(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Joint posterior mean (``N``) and latent covariance (``N x N``) at ``X``."""
        with torch.no_grad():
            cross = kernel(self.model, self.X, X)
            V = self.solve_lower(cross)
            mean = self.constant + cross.T @ self.alpha
            return mean, kernel(self.model, X, X) - V.T @ V

    def noise_draws(self, z: Tensor, generator: torch.Generator) -> Tensor:
        """Draws ``eps ~ N(0, Sigma)`` of the training noise from standard normals ``z``.

        Args:
            z: ``n_all x K`` standard normals.
            generator: Source of the extra normals of the shared part, when there is one.

        Returns:
            ``n_all x K``: ``sqrt(r) z + U z_H`` with ``z_H ~ N(0, I_H)`` for the core rows
            (the fantasy rows have independent noise and no loadings).
        """
        residual, loadings = noise_parts(self.model)
        eps = residual.clamp_min(0.0).sqrt().unsqueeze(-1) * z
        if loadings is not None:
            z_shared = torch.randn(loadings.shape[1], z.shape[1], generator=generator,
                                   dtype=z.dtype)
            eps = eps + loadings @ z_shared
        return eps
