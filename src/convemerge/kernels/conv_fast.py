r"""Blocks, patch gradients and the patch-AGOP of the CNTK / CNN-GP without pooling, through :mod:`.cntk_fast`.

Work is cut into chunks of (A rows × B centres) pairs whose maps (h, w, A, B) hold about ``chunk_elements``
entries each, so that one layer's maps stay in cache and memory is bounded by the block budget whatever n is.

Patch gradients (see :mod:`.conv`): with ``ḡ_c = ∂K(a,b)/∂c_p`` and ``ḡ_s = ∂K(a,b)/∂s_p`` from the closed-form
adjoint of the recursion,

    ∇_{a_p} f_o(a) = Σ_b α_bo ḡ_c[p,a,b] · M b_p  +  2 (Σ_b α_bo ḡ_s[p,a,b]) · M a_p ,

two batched matrix products over positions p per chunk — the (P, A, B) adjoints times (P, B, outputs·c·q·q).
"""

from __future__ import annotations

import math

import torch

from . import cntk_native
from .cntk_fast import forward_backward_fn, forward_fn, pair_forward, side_variances
from .mahalanobis import apply_metric

#: map entries above which ``fused=None`` compiles the recursion (below it, compiling costs more than it saves)
FUSE_THRESHOLD = 10**8
#: entries of one map of a chunk (cache-sized)
CHUNK_ENTRIES = 2**18


class _Side:
    """What the recursion needs of one set of images: metric patches, first-layer variance roots per layer."""

    def __init__(self, kernel, X: torch.Tensor):
        U = kernel.patches(X)  # (n, P, d)
        UM = apply_metric(kernel.M, U)
        n, P, d = U.shape
        h, w = kernel.map_shape
        s = (UM * U).sum(-1).T.reshape(h, w, n)
        self.left = UM.transpose(0, 1).contiguous()  # (P, n, d): M x_p
        self.right = U.permute(1, 2, 0).contiguous()  # (P, d, n): x_p
        self.roots, self.invs = side_variances(s, depth=kernel.depth, q=kernel.patch_size, scale=kernel._scale,
                                               padding=kernel.padding, in_dim=kernel.patch_dim)

    def native(self, s: int, e: int, inv: bool = False):
        return [m[:, :, s:e] for m in (self.invs if inv else self.roots)]

    def rows(self, a0: int, a1: int):
        return ([r[:, :, a0:a1].unsqueeze(-1).contiguous() for r in self.roots],
                [v[:, :, a0:a1].unsqueeze(-1).contiguous() for v in self.invs])

    def cols(self, b0: int, b1: int):
        return [r[:, :, b0:b1].unsqueeze(-2).contiguous() for r in self.roots]


class FastRecursionMixin:
    """Mixed into :class:`~convemerge.kernels.conv.ConvolutionalKernel`; active for CNTK/CNN-GP without pooling."""

    @property
    def _fast(self) -> bool:
        return self.pool is None and self.kind in ("cntk", "cnngp")

    @property
    def _scale(self) -> float:
        return self.weight_var / self.patch_size**2

    @property
    def _positions(self) -> int:
        return self.map_shape[0] * self.map_shape[1]

    def _chunk_pairs(self, save: bool) -> int:
        """Pairs per chunk: the live maps (~6 forward, ~3·depth + 8 with the adjoint) fit the block budget,
        and one map stays under 2**20 entries (cache-sized)."""
        live = 3 * self.depth + 8 if save else 6
        # CPU: cache-sized chunks; CUDA: as large as the block budget allows (fewer, larger kernel launches)
        cap = self.block_elements if getattr(self, "_on_cuda", False) else CHUNK_ENTRIES
        entries = min(cap, self.block_elements // live)
        return max(1, entries // self._positions)

    def _native(self, X: torch.Tensor) -> bool:
        return self.fused is not False and cntk_native.available(X)

    def _chunk_shape(self, save: bool, n_rows: int, n_cols: int, native: bool = False) -> tuple[int, int]:
        if native:  # one C call per block; the C code cuts it into cache-sized chunks itself
            pairs = max(1, min(2**23, self.block_elements // (6 if save else 2)) // self._positions)
        else:
            pairs = self._chunk_pairs(save)
        a = max(1, min(n_rows, int(math.sqrt(pairs))))
        return a, max(1, min(n_cols, pairs // a))

    def _use_fused(self, n_pairs: int) -> bool:
        """torch.compile for the torch path (CUDA) only with ``fused=True``: not yet measured on a GPU, so eager
        torch operations (large chunks) are the default there."""
        return bool(self.fused) and n_pairs * self._positions * self.depth > FUSE_THRESHOLD

    def _fast_rows(self, n_centers: int) -> int:
        return max(1, self.block_elements // (4 * max(1, n_centers)))

    def _fast_grad_rows(self, n_centers: int, n_outputs: int) -> int:
        # the accumulators hold (P, rows, outputs·d) numbers, twice (sum and the returned gradients)
        per_row = 2 * self._positions * n_outputs * (self.patch_dim + 1)
        return max(1, min(self.block_elements // per_row, self._chunk_shape(True, 1 << 30, 1 << 30)[0] * 8))

    def _side_of(self, Z: torch.Tensor) -> _Side:
        """The centres' side, built once while the same centres come back (:meth:`Kernel._centres_side`)."""
        return self._centres_side(Z, lambda Z: _Side(self, Z))

    def _static(self) -> dict:
        return {"q": self.patch_size, "scale": self._scale, "padding": self.padding, "ntk": self.kind == "cntk"}

    def _fast_block(self, X: torch.Tensor, Z: torch.Tensor, *, sides=None) -> torch.Tensor:
        a_side, b_side = sides if sides is not None else (_Side(self, X), self._side_of(Z))
        A, B = len(X), len(Z)
        out = torch.empty(A, B, dtype=X.dtype, device=X.device)
        self._on_cuda = X.device.type == "cuda"
        native = self._native(X)
        fn = forward_fn(self._use_fused(A * B))
        ca, cb = self._chunk_shape(False, A, B, native)
        h, w = self.map_shape
        inv_dim = 1.0 / self.patch_dim
        for b0 in range(0, B, cb):
            b1 = min(B, b0 + cb)
            rb = None if native else b_side.cols(b0, b1)
            right = b_side.right[:, :, b0:b1]
            for a0 in range(0, A, ca):
                a1 = min(A, a0 + ca)
                S = torch.bmm(a_side.left[:, a0:a1], right).mul_(inv_dim)
                if native:
                    out[a0:a1, b0:b1] = cntk_native.native_block(
                        S, a_side.native(a0, a1), b_side.native(b0, b1), None, grad=False,
                        in_dim=self.patch_dim, map_shape=self.map_shape, **self._static())
                    continue
                ra, _ = a_side.rows(a0, a1)
                out[a0:a1, b0:b1] = fn(S.view(h, w, a1 - a0, b1 - b0), ra, rb, **self._static())
        return out

    def _fast_block_from_patches(self, Ua: torch.Tensor, Ub: torch.Tensor) -> torch.Tensor:
        """The recursion as plain torch operations on patches (A, P, d), (B, P, d): differentiable (a reference
        for the closed-form adjoint)."""
        h, w = self.map_shape
        UMa, UMb = apply_metric(self.M, Ua), apply_metric(self.M, Ub)
        sa = (UMa * Ua).sum(-1).T.reshape(h, w, len(Ua))
        sb = (UMb * Ub).sum(-1).T.reshape(h, w, len(Ub))
        S = torch.einsum("apd,bpd->pab", UMa, Ub).reshape(h, w, len(Ua), len(Ub)) / self.patch_dim
        opts = dict(depth=self.depth, q=self.patch_size, scale=self._scale, padding=self.padding,
                    in_dim=self.patch_dim)
        ra, _ = side_variances(sa, **opts)
        rb, _ = side_variances(sb, **opts)
        return pair_forward(S, [r.unsqueeze(-1) for r in ra], [r.unsqueeze(-2) for r in rb], save=False,
                            **self._static())[0]

    def matrix(self, X: torch.Tensor, Z: torch.Tensor | None = None) -> torch.Tensor:
        """As :meth:`Kernel.matrix`; ``K(X, X)`` computes one triangle of blocks and mirrors it."""
        if not self._fast or Z is not None:
            return super().matrix(X, Z)
        side = _Side(self, X)
        n = len(X)
        out = torch.empty(n, n, dtype=X.dtype, device=X.device)
        native = self._native(X)
        ca, cb = self._chunk_shape(False, n, n, native)
        step = ca if native else max(64, cb * 8)
        for s in range(0, n, step):
            e = min(n, s + step)
            sub = _SubSide(side, s, e)
            for t in range(s, n, step):
                f = min(n, t + step)
                blk = self._fast_block(X[s:e], X[t:f], sides=(sub, _SubSide(side, t, f)))
                out[s:e, t:f] = blk
                if t != s:
                    out[t:f, s:e] = blk.T
        return out

    def agop(self, X: torch.Tensor, centers: torch.Tensor, coef: torch.Tensor, *, centering: bool = False,
             diag: bool = False) -> torch.Tensor:
        """As :meth:`Kernel.agop`. When the points are the centres (ConvRFM's patch-AGOP over its training images)
        the fused path visits each unordered pair of images once: ∂K/∂c is symmetric in the pair, and the adjoint
        also returns the columns' variance term, so one forward + adjoint serves both images' gradients."""
        same = X.data_ptr() == centers.data_ptr() and X.shape == centers.shape
        n, n_out, d = len(X), coef.shape[1], self.patch_dim
        fits = self._positions * n * n_out * (d + 1) <= max(8 * self.block_elements, 2**26)  # the row accumulators
        if not (self._fast and same and fits and not centering and self._native(X)):
            return super().agop(X, centers, coef, centering=centering, diag=diag)
        self._check_coef(centers, coef)
        side = _Side(self, X)
        P = self._positions
        u_c = torch.zeros(P, n, n_out * d, dtype=X.dtype)
        u_s = torch.zeros(P, n, n_out, dtype=X.dtype)
        step = self._chunk_shape(True, n, n, True)[0]
        static = dict(self._static(), in_dim=self.patch_dim)
        for s in range(0, n, step):
            e = min(n, s + step)
            for t in range(s, n, step):
                f = min(n, t + step)
                S = torch.bmm(side.left[:, s:e], side.right[:, :, t:f]).mul_(1.0 / d)
                _, g_c, g_a, g_b = cntk_native.native_block(
                    S, side.native(s, e), side.native(t, f), side.native(s, e, inv=True), grad=True,
                    map_shape=self.map_shape, ib=side.native(t, f, inv=True), **static)
                self._assemble(u_c, u_s, s, e, g_c, g_a, side.left[:, t:f], coef[t:f])
                if t != s:
                    self._assemble(u_c, u_s, t, f, g_c.transpose(1, 2), g_b.transpose(1, 2), side.left[:, s:e],
                                   coef[s:e])
        G = torch.zeros(d, d, dtype=torch.float64) if not diag else torch.zeros(d, dtype=torch.float64)
        rows = max(1, self.block_elements // (P * n_out * d))
        for s in range(0, n, rows):
            e = min(n, s + rows)
            g = u_c[:, s:e].view(P, e - s, n_out, d).addcmul(u_s[:, s:e].unsqueeze(-1),
                                                              side.left[:, s:e].unsqueeze(2), value=2.0)
            flat = g.reshape(-1, d)
            G += ((flat * flat).sum(0) if diag else flat.T @ flat).double()
        return (G / n).to(X.dtype)

    @staticmethod
    def _assemble(u_c, u_s, s: int, e: int, g_c, g_s, mb, alpha) -> None:
        """Rows s:e gain Σ_b α_bo ḡ_c[p,a,b] M b_p and Σ_b α_bo ḡ_s[p,a,b] (g_c, g_s: (P, A, B))."""
        P, A, B = g_c.shape
        n_out, d = alpha.shape[1], mb.shape[-1]
        if d <= A:
            rhs = (mb.unsqueeze(2) * alpha.unsqueeze(-1)).reshape(P, B, n_out * d)
            u_c[:, s:e].baddbmm_(g_c, rhs)
        else:
            ga = (g_c.reshape(P, A, 1, B) * alpha.T).reshape(P, A * n_out, B)
            u_c[:, s:e].view(P, A * n_out, d).baddbmm_(ga, mb)
        u_s[:, s:e] += torch.matmul(g_s, alpha)

    def _fast_gradients(self, X: torch.Tensor, centers: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        a_side, b_side = _Side(self, X), self._side_of(centers)
        A, B, n_out, d = len(X), len(centers), coef.shape[1], self.patch_dim
        P = self._positions
        h, w = self.map_shape
        self._on_cuda = X.device.type == "cuda"
        native = self._native(X)
        fn = forward_backward_fn(self._use_fused(A * B))
        ca, cb = self._chunk_shape(True, A, B, native)
        u_c = torch.zeros(P, A, n_out * d, dtype=X.dtype, device=X.device)
        u_s = torch.zeros(P, A, n_out, dtype=X.dtype, device=X.device)
        inv_dim = 1.0 / self.patch_dim
        static = dict(self._static(), in_dim=self.patch_dim)
        for b0 in range(0, B, cb):
            b1 = min(B, b0 + cb)
            rb = None if native else b_side.cols(b0, b1)
            right = b_side.right[:, :, b0:b1]
            alpha = coef[b0:b1]
            mb = b_side.left[:, b0:b1]  # (P, B, d): M b_p
            # the outputs go into whichever factor of the product is smaller: (P, B, outputs·d) when d is small,
            # else the adjoints (P, A·outputs, B) — deep levels have d = width·q² in the hundreds
            small_d = d <= ca
            rhs = (mb.unsqueeze(2) * alpha.unsqueeze(-1)).reshape(P, b1 - b0, n_out * d) if small_d else None
            for a0 in range(0, A, ca):
                a1 = min(A, a0 + ca)
                S = torch.bmm(a_side.left[:, a0:a1], right).mul_(inv_dim)
                if native:
                    _, g_c, g_s = cntk_native.native_block(
                        S, a_side.native(a0, a1), b_side.native(b0, b1), a_side.native(a0, a1, inv=True),
                        grad=True, map_shape=self.map_shape, **static)
                else:
                    ra, ia = a_side.rows(a0, a1)
                    _, g_c, g_s = fn(S.view(h, w, a1 - a0, b1 - b0), ra, rb, ia, **static)
                if small_d:
                    u_c[:, a0:a1].baddbmm_(g_c.reshape(P, a1 - a0, b1 - b0), rhs)
                else:
                    ga = (g_c.reshape(P, a1 - a0, 1, b1 - b0) * alpha.T).reshape(P, (a1 - a0) * n_out, b1 - b0)
                    u_c[:, a0:a1].view(P, (a1 - a0) * n_out, d).baddbmm_(ga, mb)
                u_s[:, a0:a1] += torch.matmul(g_s.reshape(P, a1 - a0, b1 - b0), alpha)
        grads = u_c.view(P, A, n_out, d).addcmul_(u_s.unsqueeze(-1), a_side.left.unsqueeze(2), value=2.0)
        return grads.permute(1, 2, 0, 3)


class _SubSide:
    """Rows s:e of a :class:`_Side` (views; used by the symmetric kernel matrix)."""

    def __init__(self, side: _Side, s: int, e: int):
        self.left = side.left[:, s:e]
        self.right = side.right[:, :, s:e]
        self.roots = [r[:, :, s:e] for r in side.roots]
        self.invs = [v[:, :, s:e] for v in side.invs]

    rows = _Side.rows
    cols = _Side.cols
    native = _Side.native
