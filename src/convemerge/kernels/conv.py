"""Convolutional kernels with a learned patch metric M (c·q·q square): CNTK, CNN-GP and patch-Laplace.

Images enter flattened (n, C·H·W) or as (n, C, H, W). Patches are the q×q neighbourhoods with 'same' zero
padding (``F.unfold``), so there are P = H·W of them, each of dimension c·q·q; patch inner products use M:
``⟨x_p, z_p'⟩_M = x_pᵀ M z_p'``. The kernel itself is computed from these first-layer maps by
:func:`convemerge.kernels.cntk.conv_kernel_from_maps`.

Gradients are taken with respect to each input patch of the evaluation image, the patch treated as an
independent input (the patch-AGOP of the ConvRFM). A kernel value K(a, b) depends on the patch a_p only through
``c_{δ,p} = a_pᵀ M b_{p+δ}`` and ``s_p = a_pᵀ M a_p``, so by the chain rule

    ∇_{a_p} f_o(a) = Σ_i α_io [ Σ_δ ∂K(a,b_i)/∂c_{δ,p} · M b_{i,p+δ}  +  2 ∂K(a,b_i)/∂s_p · M a_p ].

The partial derivatives ∂K/∂c and ∂K/∂s of every (a, b_i) pair come from ONE backward pass through the map
recursion (each pair's maps are separate leaves, so ``∂(Σ K)/∂maps`` gives them all at once); the sums over
centres and offsets are then batched matrix products — no per-output or per-patch autograd.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from convemerge.errors import ConfigError

from ._utils import DEFAULT_BLOCK_ELEMENTS
from .base import Kernel
from .cntk import KINDS, Geometry, conv_kernel_from_maps, shift_maps
from .cntk_fast import PADDINGS, layer_sizes
from .conv_fast import FastRecursionMixin
from .mahalanobis import apply_metric


class ConvolutionalKernel(FastRecursionMixin, Kernel):
    """A convolutional kernel on images of shape ``image_shape = (C, H, W)``.

    Parameters
    ----------
    kind: ``"cntk"`` (NTK of the vanilla conv net), ``"cnngp"`` (its NNGP) or ``"patch-laplace"``
        (``Σ_{δ,p} w_{δ,p} exp(−‖x_p − z_{p+δ}‖_M / L)``, the patch-averaged Laplace kernel).
    patch_size: q (odd). depth: number of conv layers D (CNTK/CNN-GP). pool: k×k average pooling before the
        readout (None: flatten). M: None (identity), (c·q·q,) diagonal or (c·q·q, c·q·q). bandwidth: L of
        patch-laplace. weight_var: hidden conv weight variance σ².
    padding: ``"same"`` (zero padding, every layer H×W) or ``"valid"`` (no padding: patches at the interior
        positions, each further conv layer loses q−1 rows and columns; not with pooling).
    fused: how the CNTK/CNN-GP recursion (no pooling) runs. None (default): the fused C recursion on CPU when a
        C compiler is available (built once, cached), torch operations otherwise (CUDA included); False: torch
        operations always; True: also ``torch.compile`` the torch path for calls with > 10⁸ map entries (meant
        for CUDA; the first compile takes minutes).
    """

    def __init__(self, image_shape, *, kind: str = "cntk", patch_size: int = 3, depth: int = 3,
                 pool: int | None = None, M: torch.Tensor | None = None, bandwidth: float = 10.0,
                 weight_var: float = 2.0, block_elements: int = DEFAULT_BLOCK_ELEMENTS, padding: str = "same",
                 fused: bool | None = None):
        super().__init__(block_elements=block_elements)
        if kind not in KINDS:
            raise ConfigError(f"kernel={kind!r} is not one of {KINDS}")
        if patch_size < 1 or patch_size % 2 == 0:
            raise ConfigError(f"patch_size={patch_size} must be a positive odd integer")
        if depth < 1:
            raise ConfigError(f"depth={depth} must be >= 1")
        C, H, W = (int(v) for v in image_shape)
        if pool is not None and (pool < 1 or pool > min(H, W)):
            raise ConfigError(f"pool={pool} must lie between 1 and the image side {min(H, W)}")
        if padding not in PADDINGS:
            raise ConfigError(f"padding={padding!r} is not one of {PADDINGS}")
        if padding == "valid" and pool not in (None, 1):
            raise ConfigError("padding='valid' is not supported with pooling; use padding='same' or pool=None")
        sizes = layer_sizes(H, W, int(patch_size), int(depth) if kind != "patch-laplace" else 1, padding)
        if min(sizes[-1]) < 1:
            raise ConfigError(f"padding='valid' with patch_size={patch_size} and depth={depth} leaves no positions "
                              f"in a {H}×{W} image; lower the depth or use padding='same'")
        self.image_shape = (C, H, W)
        self.kind = kind
        self.patch_size = int(patch_size)
        self.depth = int(depth)
        self.pool = None if pool in (None, 1) else int(pool)
        self.M = M
        self.bandwidth = float(bandwidth)
        self.weight_var = float(weight_var)
        self.padding = padding
        self.fused = fused
        self.map_shape = sizes[0]  # (h₁, w₁): the patch positions
        self.geometry = Geometry(*self.map_shape, self.patch_size, self.pool)
        self.n_offsets = len(self.geometry.offsets)

    @property
    def patch_dim(self) -> int:
        """c·q·q."""
        return self.image_shape[0] * self.patch_size**2

    # -- patches ------------------------------------------------------------------------------------------------
    def patches(self, X: torch.Tensor) -> torch.Tensor:
        """(n, P, c·q·q) patches, channel-major within a patch; 'same': P = H·W (zero padding), 'valid':
        P = (H−q+1)(W−q+1)."""
        x = X.reshape(len(X), *self.image_shape)
        pad = self.patch_size // 2 if self.padding == "same" else 0
        return F.unfold(x, self.patch_size, padding=pad).transpose(1, 2)

    def _shifted(self, U: torch.Tensor) -> torch.Tensor:
        """(b, P, d) → (b, O, P, d) with entry [.., k, p] = patch at p + δ_k (0 outside)."""
        if self.n_offsets == 1:
            return U.unsqueeze(1)
        b, P, d = U.shape
        H, W = self.map_shape
        s = shift_maps(U.transpose(1, 2).reshape(b, d, H, W), self.geometry.offsets)  # (b, d, O, H, W)
        return s.reshape(b, d, self.n_offsets, P).permute(0, 2, 3, 1)

    def _side(self, U: torch.Tensor):
        UM = apply_metric(self.M, U)
        s = (UM * U).sum(-1).reshape(len(U), *self.map_shape)
        return UM, s

    def _cross(self, UMa: torch.Tensor, Ubs: torch.Tensor) -> torch.Tensor:
        """c[a, b, k, p] = (M a_p) · b_{p+δ_k} → (A, B, O, H, W)."""
        A, P, d = UMa.shape
        B, O = Ubs.shape[:2]
        left = UMa.transpose(0, 1).contiguous()  # (P, A, d); bmm copies strided batches one by one
        maps = [torch.bmm(left, Ubs[:, k].permute(1, 2, 0).contiguous()) for k in range(O)]  # (P, A, B) each
        return torch.stack(maps, 0).permute(2, 3, 0, 1).reshape(A, B, O, *self.map_shape)

    def _maps_kernel(self, c, sa, sb):
        return conv_kernel_from_maps(c, sa, sb, kind=self.kind, geometry=self.geometry, depth=self.depth,
                                     in_dim=self.patch_dim, weight_var=self.weight_var, bandwidth=self.bandwidth)

    # -- blocks -------------------------------------------------------------------------------------------------
    def _pair_cost(self) -> float:
        per_layer = 6 if self.kind == "patch-laplace" else 8
        return self.n_offsets * self.geometry.height * self.geometry.width * per_layer * max(1, self.depth)

    def _tile(self, extra: float = 0.0) -> int:
        return max(1, int(math.sqrt(self.block_elements / (self._pair_cost() + extra))))

    def _block_rows(self, n_centers: int) -> int:
        return self._fast_rows(n_centers) if self._fast else self._tile()

    def _grad_rows(self, n_centers: int, n_outputs: int, dim: int = 1) -> int:
        return self._fast_grad_rows(n_centers, n_outputs) if self._fast else self._grad_tile(n_outputs)

    def _grad_tile(self, n_outputs: int) -> int:
        # autograd keeps ~3x the forward intermediates, plus the (pairs × outputs) product in the assembly
        extra = self.n_offsets * self.geometry.height * self.geometry.width * (2 * self.depth + n_outputs)
        return max(1, int(math.sqrt(self.block_elements / (3 * self._pair_cost() + extra))))

    def block_from_patches(self, Ua: torch.Tensor, Ub: torch.Tensor) -> torch.Tensor:
        """K between images given by their patches (A, P, d) and (B, P, d) — differentiable in both."""
        if self._fast:
            return self._fast_block_from_patches(Ua, Ub)
        UMa, sa = self._side(Ua)
        _, sb = self._side(Ub)
        c = self._cross(UMa, self._shifted(Ub))
        return self._maps_kernel(c, sa.unsqueeze(1), sb.unsqueeze(0))

    def block(self, X: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        if self._fast:
            return self._fast_block(X, Z)
        tile = self._tile()
        Ua = self.patches(X)
        UMa, sa = self._side(Ua)
        out = torch.empty(len(X), len(Z), dtype=X.dtype, device=X.device)
        for s in range(0, len(Z), tile):
            Ub = self.patches(Z[s : s + tile])
            _, sb = self._side(Ub)
            c = self._cross(UMa, self._shifted(Ub))
            out[:, s : s + tile] = self._maps_kernel(c, sa.unsqueeze(1), sb.unsqueeze(0))
        return out

    def gradient_block(self, X: torch.Tensor, centers: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """Patch gradients ``∇_{x_p} f_o(x)``: (len(X), n_outputs, P, c·q·q) (see the module docstring)."""
        if self._fast:
            return self._fast_gradients(X, centers, coef)
        A, n_out = len(X), coef.shape[1]
        H, W = self.map_shape
        P = H * W
        Ua = self.patches(X)
        UMa, sa = self._side(Ua)
        cross_part = torch.zeros(P, A * n_out, self.patch_dim, dtype=X.dtype, device=X.device)
        var_part = torch.zeros(A, n_out, P, dtype=X.dtype, device=X.device)
        tile = self._grad_tile(n_out)
        for s in range(0, len(centers), tile):
            Ub = self.patches(centers[s : s + tile])
            UMb, sb = self._side(Ub)
            B = len(Ub)
            alpha = coef[s : s + tile]
            with torch.enable_grad():
                c = self._cross(UMa, self._shifted(Ub)).detach().requires_grad_(True)
                sa_pair = sa.unsqueeze(1).expand(A, B, H, W).clone().requires_grad_(True)
                K = self._maps_kernel(c, sa_pair, sb.unsqueeze(0))
                g_c, g_s = torch.autograd.grad(K.sum(), (c, sa_pair))
            MBs = self._shifted(UMb)  # (B, O, P, d): M b_{p+δ}
            d = self.patch_dim
            for k in range(self.n_offsets):
                # Σ_i α_io ∂K_ai/∂c_{k,p} (M b_{i,p+δ_k}), as a batched GEMM over positions p; the outputs
                # are folded into whichever side of the product is smaller
                gk = g_c[:, :, k].reshape(A, B, P).permute(2, 0, 1)  # (P, A, B)
                mb = MBs[:, k].transpose(0, 1)  # (P, B, d)
                if d < A:
                    rhs = (mb.unsqueeze(2) * alpha.reshape(1, B, n_out, 1)).reshape(P, B, n_out * d)
                    cross_part.view(P, A, n_out * d).baddbmm_(gk, rhs)
                else:
                    ga = (gk.unsqueeze(2) * alpha.T.reshape(1, 1, n_out, B)).reshape(P, A * n_out, B)
                    cross_part.baddbmm_(ga, mb.contiguous())
            var_part += torch.einsum("abp,bo->aop", g_s.reshape(A, B, P), alpha)
        grads = cross_part.reshape(P, A, n_out, -1).permute(1, 2, 0, 3)
        return grads + 2 * var_part.unsqueeze(-1) * UMa.unsqueeze(1)
