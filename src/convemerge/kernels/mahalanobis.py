"""Laplace and Gaussian kernels with a Mahalanobis metric M (full matrix or diagonal), closed-form gradients.

Squared distances are computed as ``‖x‖²_M + ‖z‖²_M − 2 xᵀMz`` (one matrix product, so blocks run at GEMM
speed) and **clamped at 0**: rounding makes the expansion slightly negative for (near-)identical points, where
the exact value is 0. The clamp is the only change to the exact formula.

Gradient of the predictor ``f(x) = Σ_i α_i K(x, x_i)``:

* Laplace ``K = exp(−‖x − x_i‖_M / L)``: ``∇f(x) = −(1/L) Σ_i α_i K_i / ‖x − x_i‖_M · M(x − x_i)``.
  The term of a centre at distance ≈ 0 is **dropped** (its gradient is undefined: the kernel has a cusp there,
  and the average of its one-sided derivatives is 0). "≈ 0" means ``d² ≤ tol · (‖x‖²_M + ‖x_i‖²_M)`` with
  ``tol = 100 · machine epsilon`` — below that the computed distance is rounding noise.
* Gaussian ``K = exp(−‖x − x_i‖²_M / (2L²))``: ``∇f(x) = −(1/L²) Σ_i α_i K_i · M(x − x_i)`` (smooth, nothing dropped).
"""

from __future__ import annotations

import torch

from ._utils import DEFAULT_BLOCK_ELEMENTS
from .base import Kernel


def _offset(Z: torch.Tensor) -> torch.Tensor:
    return Z.mean(0, keepdim=True) if len(Z) else torch.zeros(1, Z.shape[1], dtype=Z.dtype, device=Z.device)


def apply_metric(M: torch.Tensor | None, X: torch.Tensor) -> torch.Tensor:
    """``X M`` for row vectors (M symmetric): identity when ``M`` is None, elementwise when it is a vector."""
    if M is None:
        return X
    if M.ndim == 1:
        return X * M
    return X @ M


def zero_distance_tol(dtype: torch.dtype) -> float:
    """Relative threshold below which a squared distance counts as 0 (see the module docstring)."""
    return 100.0 * torch.finfo(dtype).eps


class MahalanobisKernel(Kernel):
    """A kernel ``K(x, z) = φ(‖x − z‖²_M)``; subclasses give the profile φ and the gradient weight.

    Parameters
    ----------
    M:
        None (identity), a (d,) vector (diagonal metric) or a (d, d) symmetric PSD matrix.
    bandwidth:
        The length scale L.
    """

    #: (rows × centres) temporaries of a gradient block: distances, kernel values, weights and the masks and
    #: square roots of the weights, and the one product buffer every output reuses — not multiplied by outputs
    grad_cost_per_pair = 6.0

    def __init__(self, M: torch.Tensor | None = None, bandwidth: float = 10.0, *,
                 block_elements: int = DEFAULT_BLOCK_ELEMENTS):
        super().__init__(block_elements=block_elements)
        self.M = M
        self.bandwidth = float(bandwidth)

    def _centres(self, Z: torch.Tensor):
        """(shift, Z − shift, ‖Z − shift‖²_M), once per (centres, metric) (:meth:`Kernel._centres_side`):
        recomputing it per row block cost as much as the block itself at n = 54,000."""
        return self._centres_side(Z, self._build_centres)

    def _build_centres(self, Z: torch.Tensor):
        shift = _offset(Z)
        Zs = Z - shift
        return shift, Zs, (apply_metric(self.M, Zs) * Zs).sum(1)

    # profile φ(d²) and w(d²) with ∂K/∂x = w · M(x − z)
    def _profile(self, d2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _grad_weight(self, d2: torch.Tensor, K: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sq_distances(self, X: torch.Tensor, Z: torch.Tensor, *, return_norms: bool = False):
        """Clamped squared Mahalanobis distances (len(X), len(Z)); optionally also the two squared norms.

        Both sides are first translated by the mean of Z (distances do not change; the norms in the expansion,
        and so its rounding error, shrink when the data sit away from the origin).
        """
        shift, Z, zz = self._centres(Z)
        X = X - shift
        XM = apply_metric(self.M, X)
        xx = (XM * X).sum(1)
        d2 = (xx[:, None] + zz[None, :]).addmm_(XM, Z.T, alpha=-2.0).clamp_(min=0)
        return (d2, xx, zz) if return_norms else d2

    def block(self, X: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        return self._profile(self.sq_distances(X, Z))

    def matrix(self, X: torch.Tensor, Z: torch.Tensor | None = None) -> torch.Tensor:
        """As :meth:`Kernel.matrix`; for ``K(X, X)`` the diagonal is set to its exact value φ(0) = 1."""
        K = super().matrix(X, Z)
        if Z is None:
            K.diagonal().fill_(1.0)
        return K

    def _grad_rows(self, n_centers: int, n_outputs: int, dim: int = 1) -> int:
        # per row: the (row × centre) temporaries plus the (outputs × d) gradients twice; the product with the
        # centres runs one output at a time, so the rows (the GEMM's M) do not shrink with the number of outputs
        per_row = self.grad_cost_per_pair * n_centers + 2 * n_outputs * dim
        return max(1, int(self.block_elements // per_row))

    def gradient_block(self, X: torch.Tensor, centers: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        d2, xx, zz = self.sq_distances(X, centers, return_norms=True)
        shift, Z, _ = self._centres(centers)
        K = self._profile(d2)
        W = self._grad_weight(d2, K, xx[:, None] + zz[None, :])  # ∂K/∂x = W · M(x − x_i)
        del d2, K
        # Σ_i W_i α_io (x − x_i) = (W α)_o x − Σ_i W_i α_io x_i ; the second sum one output at a time, each a
        # (rows × centres) @ (centres × d) GEMM through one reused buffer (no (outputs × rows × centres) tensor)
        s = W @ coef  # (b, c)
        c = coef.shape[1]
        T = torch.empty(c, len(X), Z.shape[1], dtype=W.dtype, device=W.device)
        buf = torch.empty_like(W)
        for o in range(c):
            torch.mul(W, coef[:, o], out=buf)
            torch.mm(buf, Z, out=T[o])
        G = T.neg_().addcmul_(s.T.unsqueeze(-1), (X - shift).unsqueeze(0))
        return apply_metric(self.M, G).transpose(0, 1)  # (b, c, d)


class LaplaceKernel(MahalanobisKernel):
    """``K(x, z) = exp(−‖x − z‖_M / L)``."""

    def _profile(self, d2):
        return torch.exp(-torch.sqrt(d2) / self.bandwidth)

    def _grad_weight(self, d2, K, scale):
        keep = d2 > zero_distance_tol(d2.dtype) * scale
        d = torch.sqrt(torch.where(keep, d2, torch.ones_like(d2)))
        return torch.where(keep, -K / (self.bandwidth * d), torch.zeros_like(d2))


class GaussianKernel(MahalanobisKernel):
    """``K(x, z) = exp(−‖x − z‖²_M / (2 L²))``."""

    def _profile(self, d2):
        return torch.exp(-d2 / (2.0 * self.bandwidth**2))

    def _grad_weight(self, d2, K, scale):
        return -K / self.bandwidth**2


def make_mahalanobis_kernel(name: str, M, bandwidth: float, **kw) -> MahalanobisKernel:
    """``"laplace"`` or ``"gaussian"``."""
    from convemerge.errors import ConfigError

    table = {"laplace": LaplaceKernel, "gaussian": GaussianKernel}
    if name not in table:
        raise ConfigError(f"kernel={name!r} is not one of {sorted(table)}")
    return table[name](M, bandwidth, **kw)
