"""The kernel base class: the kernel matrix, the gradient of a kernel predictor and its AGOP, defined once.

A kernel predictor is ``f(x) = Σ_i coef[i] · K(x, centers[i])`` with ``coef`` of shape (n_centers, n_outputs).
Subclasses implement :meth:`Kernel.block` (one block of the kernel matrix) and, where a closed form exists,
:meth:`Kernel.gradient_block`; everything else — blocking so that memory stays bounded, prediction, the
gradients of a predictor over many points and the (patch-)AGOP — lives here.

Gradients have shape ``(n_points, n_outputs, *feature_shape)`` where the last axis is the axis the AGOP is
taken over: for kernels on vectors it is ``(n, c, d)``; for convolutional kernels it is ``(n, c, P, c·q·q)`` —
one gradient per input patch, each patch treated as an independent input (the patch-AGOP).
"""

from __future__ import annotations

import torch

from ._utils import DEFAULT_BLOCK_ELEMENTS, rows_per_block


class Kernel:
    """Base class of all kernels.

    Parameters
    ----------
    block_elements:
        Memory budget of one block, in tensor elements; kernel matrices, predictions and gradients are
        computed in row blocks sized to stay within it.
    """

    #: elements of temporary storage per (row, centre) pair of a gradient block, per output; subclasses tune it
    grad_cost_per_pair: float = 3.0
    #: elements of temporary storage per (row, centre) pair of a kernel block
    block_cost_per_pair: float = 2.0

    def __init__(self, *, block_elements: int = DEFAULT_BLOCK_ELEMENTS):
        self.block_elements = int(block_elements)

    # -- to implement ---------------------------------------------------------------------------------------
    def block(self, X: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """The kernel matrix ``K(X, Z)`` of one block, shape (len(X), len(Z))."""
        raise NotImplementedError

    def gradient_block(self, X: torch.Tensor, centers: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """Gradients ``∇_x f_o(x)`` of the predictor at the rows of ``X``: shape (len(X), n_outputs, d).

        The default differentiates :meth:`block` with autograd (one backward pass per output); kernels with a
        closed form override it.
        """
        with torch.enable_grad():
            Xg = X.detach().clone().requires_grad_(True)
            F = self.block(Xg, centers) @ coef
            outs = []
            for o in range(F.shape[1]):
                (g,) = torch.autograd.grad(F[:, o].sum(), Xg, retain_graph=o + 1 < F.shape[1])
                outs.append(g)
        return torch.stack(outs, dim=1)

    # -- defined once -----------------------------------------------------------------------------------------
    @staticmethod
    def _check_coef(centers: torch.Tensor, coef: torch.Tensor) -> None:
        if coef.ndim != 2 or coef.shape[0] != len(centers):
            raise ValueError(f"coef must have shape (n_centers={len(centers)}, n_outputs), got {tuple(coef.shape)}")

    def _centres_side(self, Z: torch.Tensor, build):
        """``build(Z)``: the centres' side of every block (shifted points and their norms, patch matrices, …),
        computed once while the same centres and metric ``self.M`` come back — the row blocks of one matrix,
        prediction or AGOP. Keyed by the tensors' identity and in-place versions and holding them, so a freed
        tensor's address is never mistaken for another's and an in-place change is seen; dropped when pickled.
        Inference tensors (no version counter) are not cached."""
        M = getattr(self, "M", None)
        try:
            key = (Z._version, None if M is None else M._version)
        except RuntimeError:  # inference tensors do not count their in-place changes
            return build(Z)
        c = getattr(self, "_side_cache", None)
        if c is not None and c[0] is Z and c[1] is M and c[2] == key:
            return c[3]
        self._side_cache = None  # free the old side before building the new one
        value = build(Z)
        self._side_cache = (Z, M, key, value)
        return value

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_side_cache", None)
        return state

    def _block_rows(self, n_centers: int) -> int:
        """Rows of one kernel block against ``n_centers`` columns."""
        return rows_per_block(n_centers, self.block_cost_per_pair, self.block_elements)

    def _grad_rows(self, n_centers: int, n_outputs: int, dim: int = 1) -> int:
        """Rows of one gradient block (``dim``: features per point)."""
        return rows_per_block(n_centers, self.grad_cost_per_pair * n_outputs, self.block_elements)

    def matrix(self, X: torch.Tensor, Z: torch.Tensor | None = None) -> torch.Tensor:
        """The full kernel matrix ``K(X, Z)`` (``Z = X`` when omitted), computed in row blocks."""
        Z = X if Z is None else Z
        rows = self._block_rows(len(Z))
        out = torch.empty(len(X), len(Z), dtype=X.dtype, device=X.device)
        for s in range(0, len(X), rows):
            out[s : s + rows] = self.block(X[s : s + rows], Z)
        return out

    def predict(self, X: torch.Tensor, centers: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """``K(X, centers) @ coef`` without holding the whole kernel matrix."""
        self._check_coef(centers, coef)
        rows = self._block_rows(len(centers))
        parts = [self.block(X[s : s + rows], centers) @ coef for s in range(0, len(X), rows)]
        if not parts:
            return torch.empty(0, coef.shape[1], dtype=coef.dtype, device=coef.device)
        return torch.cat(parts)

    def gradients(self, X: torch.Tensor, centers: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """Gradients of the predictor at every row of ``X`` (see the module docstring for the shape)."""
        self._check_coef(centers, coef)
        rows = self._grad_rows(len(centers), coef.shape[1], X[0].numel() if len(X) else 1)
        return torch.cat([self.gradient_block(X[s : s + rows], centers, coef) for s in range(0, len(X), rows)])

    def agop(self, X: torch.Tensor, centers: torch.Tensor, coef: torch.Tensor, *, centering: bool = False,
             diag: bool = False) -> torch.Tensor:
        """Average gradient outer product of the predictor over the rows of ``X``.

        ``G = (1/n) Σ_i Σ_o Σ_p g g^T`` with ``g = ∇f_o`` at point ``i`` (and patch ``p`` for convolutional
        kernels). With ``centering`` the mean gradient of each output (over points and patches) is removed
        first, i.e. the gradient covariance is returned: ``G − (1/n) Σ_o N_o ḡ_o ḡ_o^T`` with ``N_o`` the number
        of gradients averaged. With ``diag`` only the diagonal (d,) is accumulated.
        """
        self._check_coef(centers, coef)
        rows = self._grad_rows(len(centers), coef.shape[1], X[0].numel() if len(X) else 1)
        n_out = coef.shape[1]
        total = None
        sums = None
        count = 0
        for s in range(0, len(X), rows):
            g = self.gradient_block(X[s : s + rows], centers, coef)  # (b, c, ..., d)
            d = g.shape[-1]
            flat = g.reshape(-1, d)
            part = (flat * flat).sum(0) if diag else flat.T @ flat
            total = part if total is None else total + part
            if centering:
                per_out = g.transpose(0, 1).reshape(n_out, -1, d).sum(1)  # (c, d)
                sums = per_out if sums is None else sums + per_out
                count += g[:, 0].reshape(-1, d).shape[0]
        if total is None:
            raise ValueError("agop needs at least one evaluation point")
        if centering and count:
            means = sums / count
            total = total - count * ((means * means).sum(0) if diag else means.T @ means)
        return total / len(X)
