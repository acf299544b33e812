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

from collections.abc import Sequence

import torch
from botorch.models import SingleTaskGP
from torch import Tensor

__all__ = ["KERNEL_CHUNK", "LowerFactor", "MetricPosterior", "robust_cholesky"]

KERNEL_CHUNK = 256
"""Rows per kernel evaluation: GPyTorch's Matern kernel makes several temporaries of the size
of its output, so a ``5000 x 5000`` kernel is built in slices of this many rows (30 MiB of
temporaries at 8 weights, 22 MiB with 128 rows, in the same 1.0 s:
``benchmarks/factor_memory.py``)."""


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


class LowerFactor:
    r"""A lower Cholesky factor ``L`` (``n x n``) kept in one half of a square matrix.

    Two factors of one size share one ``n x n`` matrix (:meth:`pack`): the first is its
    lower triangle, diagonal included; the second, written ``L = (I + U^T) D`` with ``D``
    its diagonal, keeps the strictly upper ``U`` (its columns divided by their diagonal
    entries, transposed) in the strict upper triangle and ``D`` as a vector.
    ``torch.linalg.solve_triangular`` reads only the triangle it is told, and with
    ``unitriangular`` not the diagonal, so the two never mix: four metrics at 5000 points
    hold 400 MB of factors instead of 800 MB.

    Args:
        storage: The ``n x n`` matrix.
        diagonal: ``None`` for the first factor (the lower triangle); the second factor's
            diagonal ``D`` (``n``-vector) when it lies in the strict upper triangle.
    """

    def __init__(self, storage: Tensor, diagonal: Tensor | None = None) -> None:
        self.storage = storage
        self.diagonal = diagonal

    @property
    def size(self) -> int:
        """``n``."""
        return int(self.storage.shape[0])

    def solve(self, R: Tensor) -> Tensor:
        """``L^{-1} R`` for ``R``: ``n x k``."""
        if self.diagonal is None:
            return torch.linalg.solve_triangular(self.storage, R, upper=False)
        unit = torch.linalg.solve_triangular(self.storage.mT, R, upper=False, unitriangular=True)
        return unit.div_(self.diagonal.unsqueeze(-1))

    def solve_transposed(self, R: Tensor) -> Tensor:
        """``L^{-T} R`` for ``R``: ``n x k``."""
        if self.diagonal is None:
            return torch.linalg.solve_triangular(self.storage.mT, R, upper=True)
        return torch.linalg.solve_triangular(self.storage, R / self.diagonal.unsqueeze(-1),
                                             upper=True, unitriangular=True)

    def dense(self) -> Tensor:
        """``L`` as a new ``n x n`` matrix (for checks; the factor itself is not copied)."""
        if self.diagonal is None:
            return torch.tril(self.storage)
        return (torch.triu(self.storage, 1).mT + torch.eye(self.size, dtype=self.storage.dtype)
                ) * self.diagonal

    @staticmethod
    def pack(first: Tensor, second: Tensor) -> tuple[LowerFactor, LowerFactor]:
        """Both lower factors in ``first``'s matrix; ``second`` may be freed afterwards.

        ``first``'s strict upper triangle is overwritten (a lower factor's is unused), in
        blocks of :data:`KERNEL_CHUNK` rows, so no second ``n x n`` temporary is made.
        """
        n = int(first.shape[0])
        diagonal = second.diagonal().clone()
        for start in range(0, n, KERNEL_CHUNK):
            stop = min(start + KERNEL_CHUNK, n)
            # rows start..stop of U: second's columns start..stop over their diagonal, transposed
            upper = torch.triu(second[:, start:stop].mT / diagonal[start:stop].unsqueeze(-1),
                               diagonal=start + 1)
            rows = first[start:stop]
            rows.copy_(torch.tril(rows, diagonal=start).add_(upper))
        return LowerFactor(first), LowerFactor(first, diagonal)


def _factorise(model: SingleTaskGP) -> Tensor:
    """Lower Cholesky factor of the model's ``K + Sigma``, in the matrix's own memory."""
    with torch.no_grad():
        cov = _training_covariance(model)
        # Factorise in place (the factor takes the matrix's memory: one n x n, not two);
        # a failed attempt leaves a partial factor, so the matrix is rebuilt for jitter.
        L, info = torch.linalg.cholesky_ex(cov, out=(cov, torch.empty((), dtype=torch.int32)))
        if int(info) != 0:
            del L, cov
            L = robust_cholesky(_training_covariance(model))
        return L


class MetricPosterior:
    """Exact posterior of one metric's GP, from one shared factor plus a fantasy border.

    Build with :meth:`from_model`; extend with :meth:`extended`. Treat as immutable.

    Attributes:
        model: The BoTorch model (kernel, constant mean, noise); its training inputs are
            ``X`` (core rows then fantasy rows).
        X: ``n_all x d`` training inputs.
        factor: The lower factor ``L`` of the core rows' ``K + Sigma`` (``n x n``, shared
            by extensions and, half each, with another metric's; see :class:`LowerFactor`).
        border: ``e x n`` ``B`` of the fantasy rows, or None.
        corner: ``e x e`` lower ``C`` of the fantasy rows, or None.
        alpha: ``n_all`` vector ``(K + Sigma)^{-1} (y - c)``.
        constant: The constant prior mean ``c``.
    """

    def __init__(self, model: SingleTaskGP, factor: LowerFactor, border: Tensor | None,
                 corner: Tensor | None) -> None:
        self.model = model
        self.X = model.train_inputs[0]
        self.factor = factor
        self.border = border
        self.corner = corner
        with torch.no_grad():
            self.constant = model.mean_module.constant.reshape(()).detach()
            y = model.train_targets.reshape(-1) - self.constant
            self.alpha = self.solve(y.unsqueeze(-1)).squeeze(-1)

    @property
    def num_core(self) -> int:
        """Rows ``n`` of the core factor."""
        return self.factor.size

    @classmethod
    def from_model(cls, model: SingleTaskGP) -> MetricPosterior:
        """Factorise ``K + Sigma`` of the model's training points (one Cholesky)."""
        return cls(model, LowerFactor(_factorise(model)), None, None)

    @classmethod
    def from_models(cls, models: Sequence[SingleTaskGP]) -> tuple[MetricPosterior, ...]:
        """Each model's posterior; metrics two by two share one matrix for their factors.

        The models share their training inputs (a snapshot's do). The second factor of a
        pair is built, packed into the first's matrix and freed before the next pair
        starts, so at most two ``n x n`` matrices are new at once.
        """
        out: list[MetricPosterior] = []
        for i in range(0, len(models), 2):
            factors = (LowerFactor(_factorise(models[i])),)
            if i + 1 < len(models):
                second = _factorise(models[i + 1])
                with torch.no_grad():
                    factors = LowerFactor.pack(factors[0].storage, second)
                del second
            out.extend(cls(m, f, None, None) for m, f in zip(models[i:i + 2], factors,
                                                              strict=True))
        return tuple(out)

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
                return MetricPosterior(model, self.factor, None, None)
            cross = kernel(model, self.X[:n], extra)  # n x e
            border = self.factor.solve(cross).T  # e x n
            noise = model.likelihood.noise.reshape(-1)[n:]
            schur = kernel(model, extra, extra) - border @ border.T
            schur.diagonal().add_(noise)
            corner = robust_cholesky(schur)
        return MetricPosterior(model, self.factor, border, corner)

    # ----------------------------------------------------------------- algebra
    def solve_lower(self, R: Tensor) -> Tensor:
        """``F^{-1} R`` for the full lower factor ``F = [[L, 0], [B, C]]``; ``R``: ``n_all x k``."""
        n = self.num_core
        top = self.factor.solve(R[:n])
        if self.border is None:
            return top
        bottom = torch.linalg.solve_triangular(self.corner, R[n:] - self.border @ top,
                                               upper=False)
        return torch.cat([top, bottom])

    def solve(self, R: Tensor) -> Tensor:
        """``(K + Sigma)^{-1} R`` over all training rows; ``R``: ``n_all x k``."""
        n = self.num_core
        if self.border is None:
            # Two triangular solves, not ``torch.cholesky_solve``: that one copies the n x n
            # factor first (+195 MiB at n = 5000, against +8 MiB for these two:
            # ``benchmarks/factor_memory.py``).
            return self.factor.solve_transposed(self.factor.solve(R))
        z = self.solve_lower(R)
        bottom = torch.linalg.solve_triangular(self.corner.T, z[n:], upper=True)
        top = self.factor.solve_transposed(z[:n] - self.border.T @ bottom)
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
