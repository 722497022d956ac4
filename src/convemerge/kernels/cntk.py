r"""Convolutional kernels computed from first-layer patch maps: the CNTK / CNN-GP of a vanilla conv net and the
patch-averaged Laplace kernel.

The network: D × [conv q×q ('same' zero padding, stride 1, no bias), ReLU], optional k×k average pooling
(stride k), flatten, dense readout; NTK parameterisation, first-layer weight variance 1, hidden-layer variance
``weight_var`` (2 keeps the variance of ReLU features constant), readout variance 1.

Why same-offset maps suffice. Let Σ^ℓ_{p,p'}(x,z) be the pre-activation covariance of layer ℓ between position
p of x and p' of z. A conv layer gives ``Σ^{ℓ+1}_{p,p'} = (σ²/q²) Σ_a K^ℓ_{p+a,p'+a}`` (zero outside the image),
so an entry with offset δ = p' − p only ever depends on entries with the same offset δ at lower layers, plus
the variances Σ_{p,p}(x,x) and Σ_{p',p'}(z,z) that the ReLU expectations need. The flatten + dense readout only
reads δ = 0 (``K_out = (1/HW) Σ_p K^D_{p,p}``), and k×k average pooling reads |δ| < k within a window. So the
whole recursion runs on maps of shape (n_x, n_z, O, H, W) — one H×W map per needed offset (O = 1 without
pooling, (2k−1)² with) — plus (n, H, W) variance maps per side, instead of (H·W)² covariances per pair.

Recursion (maps indexed by the x-side position p; z-side quantities are shifted by δ, zero outside):

    S¹ = c / (C q²),  v¹ = s / (C q²)        c_{δ,p} = x_pᵀ M z_{p+δ},  s_p = x_pᵀ M x_p   (learned metric M)
    Θ¹ = S¹
    K^ℓ  = E[relu(u) relu(v)] = √(v_x v_z) J₁(ρ)/(2π),  K̇^ℓ = E[relu'(u) relu'(v)] = J₀(ρ)/(2π),  ρ = S/√(v_x v_z)
    J₁(ρ) = √(1−ρ²) + (π − arccos ρ) ρ,   J₀(ρ) = π − arccos ρ          (arc-cosine kernels of degree 1 and 0)
    S^{ℓ+1} = σ² box_q(K^ℓ),   v^{ℓ+1} = σ² box_q(v^ℓ / 2),   Θ^{ℓ+1} = S^{ℓ+1} + σ² box_q(K̇^ℓ Θ^ℓ)
    CNN-GP = Σ_{δ,p} w_{δ,p} K^D,     CNTK = Σ_{δ,p} w_{δ,p} (K^D + K̇^D Θ^D)

``box_q`` is the q×q mean with zero padding (a separable sum of shifted slices, divided by q²), applied per offset map
and followed by re-masking entries whose partner p+δ lies outside the image. ``w`` is 1/(HW) at δ = 0 without
pooling; with pooling ``w_{δ,p} = [p, p+δ in the same window] / (k⁴ · #windows)``.

Numerics (they matter for gradients, not for values): J₁' = π − arccos ρ is finite everywhere; J₀' = 1/√(1−ρ²)
diverges at ρ → ±1 — the cusp of the ReLU NTK at x = z — and is set to 0 there (where 1 − ρ² ≤ 100·eps),
exactly like dropping the zero-distance term of the Laplace kernel: the average of the one-sided derivatives.
Variances are floored at eps² so that all-zero patches (image borders, MNIST background) give K ≈ 0 and
finite derivatives (and float32 products stay clear of slow denormal numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

KINDS = ("cntk", "cnngp", "patch-laplace")


class _ArcCos(torch.autograd.Function):
    """Both arc-cosine functions from one arccos, on ρ clamped to [−1, 1]:
    J₁(ρ) = √(1−ρ²) + (π − arccos ρ)ρ with derivative π − arccos ρ (finite), and J₀(ρ) = π − arccos ρ with
    derivative 1/√(1−ρ²), dropped (0) where 1 − ρ² ≤ 100·eps (the cusp at ρ = ±1)."""

    @staticmethod
    def forward(ctx, rho):
        r = rho.clamp(-1.0, 1.0)
        one_m = (1 - r).mul_(1 + r)  # (1−r)(1+r): accurate near |ρ| = 1, unlike 1 − ρ²
        j0 = torch.arccos(r).neg_().add_(math.pi)
        j1 = torch.sqrt(one_m).addcmul_(j0, r)
        ctx.save_for_backward(j0, one_m)
        return j1, j0

    @staticmethod
    def backward(ctx, g1, g0):
        j0, one_m = ctx.saved_tensors
        grad = None if g1 is None else g1 * j0
        if g0 is not None:
            keep = one_m > 100 * torch.finfo(one_m.dtype).eps
            d0 = torch.where(keep, torch.rsqrt(torch.where(keep, one_m, torch.ones_like(one_m))),
                             torch.zeros_like(one_m))
            grad = g0 * d0 if grad is None else grad + g0 * d0
        return grad


class _SafeSqrt(torch.autograd.Function):
    """√d² whose derivative is 0 where d² ≤ floor (a zero distance: the Laplace cusp, dropped)."""

    @staticmethod
    def forward(ctx, d2, floor):
        d = torch.sqrt(d2.clamp(min=0))
        ctx.save_for_backward(d, d2 > floor)
        return d

    @staticmethod
    def backward(ctx, g):
        d, keep = ctx.saved_tensors
        return torch.where(keep, g / (2 * torch.where(keep, d, torch.ones_like(d))), torch.zeros_like(d)), None


def relu_expectations(S: torch.Tensor, va: torch.Tensor, vb: torch.Tensor, *, need_dot: bool = True):
    """``(E[relu(u)relu(v)], E[relu'(u)relu'(v)])`` for (u, v) Gaussian with variances va, vb and covariance S."""
    # floor for variances: far below any real one, and high enough that products stay normal floats
    # (float32 denormals from all-zero patches would make every operation on them ~100x slower)
    tiny = torch.finfo(S.dtype).eps ** 2
    norm = torch.sqrt(va.clamp(min=tiny)) * torch.sqrt(vb.clamp(min=tiny))
    j1, j0 = _ArcCos.apply(S / norm)
    k1 = (norm * j1).mul_(1 / (2 * math.pi))
    k0 = j0 * (1 / (2 * math.pi)) if need_dot else None
    return k1, k0


@dataclass(frozen=True)
class Geometry:
    """Image size, patch size and pooling: which offsets are needed and how the readout weighs them."""

    height: int
    width: int
    patch: int
    pool: int | None = None

    @property
    def offsets(self) -> list[tuple[int, int]]:
        k = self.pool or 1
        return [(dy, dx) for dy in range(-(k - 1), k) for dx in range(-(k - 1), k)]

    def tensors(self, dtype: torch.dtype, device: torch.device):
        """``(mask, weights)``, both (O, H, W): partner inside the image; readout weight of each entry."""
        return _geometry_tensors(self, dtype, device)


@lru_cache(maxsize=32)
def _geometry_tensors(geo: Geometry, dtype, device):
    H, W = geo.height, geo.width
    ys = torch.arange(H).view(H, 1)
    xs = torch.arange(W).view(1, W)
    masks, weights = [], []
    k = geo.pool or 1
    Hp, Wp = H // k, W // k
    for dy, dx in geo.offsets:
        inside = (ys + dy >= 0) & (ys + dy < H) & (xs + dx >= 0) & (xs + dx < W)
        masks.append(inside)
        if geo.pool is None:
            weights.append(torch.full((H, W), 1.0 / (H * W), dtype=torch.float64))
        else:
            pooled = (ys < Hp * k) & (xs < Wp * k)
            same = ((ys + dy) // k == ys // k) & ((xs + dx) // k == xs // k) & inside
            weights.append((pooled & same).double() / (k**4 * Hp * Wp))
    mask = torch.stack(masks).to(device=device, dtype=dtype)
    w = torch.stack(weights).to(device=device, dtype=dtype)
    return mask, w


def shift_maps(v: torch.Tensor, offsets: list[tuple[int, int]]) -> torch.Tensor:
    """``out[..., k, y, x] = v[..., y + dy_k, x + dx_k]`` (0 outside): (..., H, W) → (..., O, H, W)."""
    if offsets == [(0, 0)]:
        return v.unsqueeze(-3)
    R = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    H, W = v.shape[-2:]
    vp = F.pad(v, (R, R, R, R))
    return torch.stack([vp[..., R + dy : R + dy + H, R + dx : R + dx + W] for dy, dx in offsets], dim=-3)


def _box_sum(v: torch.Tensor, q: int, scale: float) -> torch.Tensor:
    r = q // 2
    h = v * scale
    src = h.clone() if r else h
    for s in range(1, r + 1):
        h[..., :, s:] += src[..., :, :-s]
        h[..., :, :-s] += src[..., :, s:]
    out = h.clone() if r else h
    for s in range(1, r + 1):
        out[..., s:, :] += h[..., :-s, :]
        out[..., :-s, :] += h[..., s:, :]
    return out


class _Box(torch.autograd.Function):
    """The zero-padded q×q box sum is self-adjoint, so its backward is the same filter (no autograd through the
    in-place slice adds, which would copy whole tensors per slice)."""

    @staticmethod
    def forward(ctx, v, q, scale):
        ctx.q, ctx.scale = q, scale
        return _box_sum(v, q, scale)

    @staticmethod
    def backward(ctx, g):
        return _box_sum(g, ctx.q, ctx.scale), None, None


def box_filter(v: torch.Tensor, q: int, scale: float = 1.0) -> torch.Tensor:
    """``scale`` × the q×q sum over the last two axes with zero padding (a conv layer's sum over a patch).

    Separable, as in-place adds of shifted slices into fresh tensors: several times faster than ``avg_pool2d``
    on many small single-channel maps.
    """
    return _Box.apply(v, q, float(scale))


def conv_kernel_from_maps(c: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor, *, kind: str, geometry: Geometry,
                          depth: int = 3, in_dim: int = 1, weight_var: float = 2.0,
                          bandwidth: float = 10.0) -> torch.Tensor:
    """Kernel values from the first-layer maps (see the module docstring).

    c: (A, B, O, H, W) cross patch products ``x_pᵀ M z_{p+δ}``; sa: (A, 1 or B, H, W) ``x_pᵀ M x_p``;
    sb: (1 or A, B, H, W) ``z_pᵀ M z_p`` (unshifted); ``in_dim`` = C·q·q. Returns (A, B).
    """
    mask, w = geometry.tensors(c.dtype, c.device)
    offsets = geometry.offsets
    if kind == "patch-laplace":
        sbs = shift_maps(sb, offsets)
        sas = sa.unsqueeze(-3)
        d2 = sas + sbs - 2 * c
        tol = 100 * torch.finfo(c.dtype).eps
        d = _SafeSqrt.apply(d2, tol * (sas + sbs))
        return (torch.exp(-d / bandwidth) * w).sum((-3, -2, -1))
    if kind not in ("cntk", "cnngp"):
        raise ValueError(f"unknown convolutional kernel {kind!r}")
    ntk = kind == "cntk"
    q = geometry.patch
    S = c / in_dim
    va, vb = sa / in_dim, sb / in_dim
    theta = S if ntk else None
    box = weight_var / q**2
    masked = len(offsets) > 1  # without pooling every partner is inside the image
    for _ in range(depth - 1):
        k1, k0 = relu_expectations(S, va.unsqueeze(-3), shift_maps(vb, offsets), need_dot=ntk)
        S = box_filter(k1, q, box)
        if masked:
            S = S * mask
        if ntk:
            kt = box_filter(k0 * theta, q, box)
            theta = S + (kt * mask if masked else kt)
        va = box_filter(va, q, box / 2)
        vb = box_filter(vb, q, box / 2)
    k1, k0 = relu_expectations(S, va.unsqueeze(-3), shift_maps(vb, offsets), need_dot=ntk)
    out = k1 + k0 * theta if ntk else k1
    return (out * w).sum((-3, -2, -1))
