r"""The CNTK / CNN-GP without pooling, fast: chunked same-offset recursion with a closed-form adjoint.

Without pooling the readout only reads same-position entries (offset δ = 0, see :mod:`.cntk`), so a block of the
kernel is one recursion over maps of shape (h, w, A, B) — position first, pairs last, so that a conv layer's q×q box
sum adds whole contiguous slabs. This module runs that recursion on chunks of pairs and also runs it **backwards**
in closed form (no autograd graph): the adjoint of every map with respect to the kernel value gives ∂K/∂c_p and
∂K/∂s_p for every pair at once, from which the patch gradients follow by batched matrix products (:mod:`.conv`).

Forward, per layer ℓ (maps; n = √v_a √v_b, ρ = S/n clamped to [−1, 1], J₀ = π − arccos ρ):

    K1 = n (√(1−ρ²) + J₀ρ)/(2π),  K0 = J₀/(2π),   S' = s·box(K1),   Θ' = S' + s·box(K0 Θ),   v' = (s/2)·box(v)

with ``s = σ²/q²``; the output is mean_p(K1 + K0 Θ) (CNTK) or mean_p K1 (CNN-GP) at the last layer.

Adjoint (Ḡ_X = ∂K/∂X), from the output down; with ∂K1/∂S = K0, ∂K1/∂n = √(1−ρ²)/(2π), ∂K0/∂S = J₀'/(2πn),
∂K0/∂n = −ρJ₀'/(2πn), J₀' = 1/√(1−ρ²) (dropped where 1−ρ² ≤ 100·eps, the cusp — as in :mod:`.cntk`):

    Ḡ_S = Ḡ_K1 K0 + Ḡ_K0 J₀'/(2πn) + Ḡ_Θ,        Ḡ_n = Ḡ_K1 √(1−ρ²)/(2π) − Ḡ_K0 ρJ₀'/(2πn)
    Ḡ_va += Ḡ_n √v_b/(2√v_a)   (0 where v_a is floored)
    Ḡ_K1⁻ = s·boxᵀ(Ḡ_S),   Ḡ_K0⁻ = s·boxᵀ(Ḡ_Θ) Θ⁻,   Ḡ_Θ⁻ = s·boxᵀ(Ḡ_Θ) K0⁻,   Ḡ_va⁻ = (s/2)·boxᵀ(Ḡ_va)

and finally ∂K/∂c = Ḡ_S/(c·q·q), ∂K/∂s_a = Ḡ_va/(c·q·q) at the first layer. ``∂K1/∂n`` uses √(1−ρ²), the limit
from inside [−1, 1]; autograd through the clamp gives a different split between ∂/∂S and ∂/∂n only where
rounding pushed ρ past ±1 (self pairs), and there the two splits give the same directional derivative.

Padding: ``"same"`` (zero padding, every layer keeps H×W; the box is self-adjoint) or ``"valid"`` (no padding:
patches at the (H−q+1)×(W−q+1) interior positions and every further layer loses q−1 rows and columns; boxᵀ is
the box of the map zero-padded by q−1 — a 'full' convolution).

The per-layer element-wise work can be fused by ``torch.compile`` (``fused=True``): one loop per layer instead of
~20 passes over memory; values agree with the eager path to rounding.
"""

from __future__ import annotations

import math
import warnings

import torch

PADDINGS = ("same", "valid")
_INV_2PI = 1.0 / (2.0 * math.pi)


def layer_sizes(height: int, width: int, q: int, depth: int, padding: str) -> list[tuple[int, int]]:
    """Map size (h, w) at each of the ``depth`` layers (layer 1 = the patch positions)."""
    if padding == "same":
        return [(height, width)] * depth
    return [(height - (l + 1) * (q - 1), width - (l + 1) * (q - 1)) for l in range(depth)]


def box(v: torch.Tensor, q: int, padding: str) -> torch.Tensor:
    """The q×q sum over the two leading axes: zero-padded ('same') or over interior windows ('valid')."""
    if padding == "same":
        r = q // 2
        if r == 0:
            return v
        vp = v.new_zeros(v.shape[0] + 2 * r, v.shape[1] + 2 * r, *v.shape[2:])
        vp[r : r + v.shape[0], r : r + v.shape[1]] = v
        v = vp
    h, w = v.shape[0] - q + 1, v.shape[1] - q + 1
    rows = v[0:h]
    for i in range(1, q):
        rows = rows + v[i : i + h]
    out = rows[:, 0:w]
    for j in range(1, q):
        out = out + rows[:, j : j + w]
    return out


def box_adjoint(g: torch.Tensor, q: int, padding: str) -> torch.Tensor:
    """The adjoint of :func:`box`."""
    if padding == "same":
        return box(g, q, "same")
    p = q - 1
    gp = g.new_zeros(g.shape[0] + 2 * p, g.shape[1] + 2 * p, *g.shape[2:])
    gp[p : p + g.shape[0], p : p + g.shape[1]] = g
    return box(gp, q, "valid")


def side_variances(s: torch.Tensor, *, depth: int, q: int, scale: float, padding: str, in_dim: int):
    """Per-image variance maps of every layer from ``s = x_pᵀ M x_p`` (h₁, w₁, n).

    Returns ``(root, inv)``: lists over layers of √max(v, tiny) and ``[v > tiny]/(2√v)`` (for the adjoint).
    """
    tiny = torch.finfo(s.dtype).eps ** 2
    v = s / in_dim
    roots, invs = [], []
    for l in range(depth):
        if l:
            v = box(v, q, padding) * (scale / 2)
        r = torch.sqrt(v.clamp(min=tiny))
        roots.append(r)
        invs.append(torch.where(v > tiny, 0.5 / r, torch.zeros_like(r)))
    return roots, invs


def pair_forward(S: torch.Tensor, ra: list, rb: list, *, q: int, scale: float, padding: str, ntk: bool,
                 save: bool):
    """Kernel values (A, B) of a chunk from its first-layer maps ``S`` = c/(c·q·q), shape (h₁, w₁, A, B).

    ``ra[l]`` (h, w, A, 1) and ``rb[l]`` (h, w, 1, B) are the roots of the variance maps. With ``save`` the maps
    the adjoint needs are returned too: one (ρ, K0, Θ) triple per layer.
    """
    depth = len(ra)
    theta = S if ntk else None
    saved = []
    for l in range(depth):
        n = ra[l] * rb[l]
        rho = (S / n).clamp(-1.0, 1.0)
        j0 = math.pi - torch.arccos(rho)
        k1 = n * (torch.sqrt((1.0 - rho) * (1.0 + rho)) + j0 * rho) * _INV_2PI
        k0 = j0 * _INV_2PI
        if save:
            saved.append((rho, k0, theta))
        if l == depth - 1:
            break
        S = box(k1, q, padding) * scale
        if ntk:
            theta = S + box(k0 * theta, q, padding) * scale
    out = k1 + k0 * theta if ntk else k1
    K = out.sum((0, 1)) * (1.0 / (out.shape[0] * out.shape[1]))
    return K, saved


def pair_backward(saved: list, ra: list, rb: list, ia: list, *, q: int, scale: float, padding: str, ntk: bool,
                  in_dim: int):
    """∂K/∂c and ∂K/∂s_a, both (h₁, w₁, A, B), from the maps saved by :func:`pair_forward`."""
    depth = len(saved)
    eps = torch.finfo(saved[0][0].dtype).eps
    rho, k0, theta = saved[-1]
    w = 1.0 / (rho.shape[0] * rho.shape[1])
    g_k1 = torch.full_like(rho, w)
    g_k0 = theta * w if ntk else None
    g_theta = k0 * w if ntk else None
    g_va = None
    for l in range(depth - 1, -1, -1):
        rho, k0, theta = saved[l]
        n = ra[l] * rb[l]
        one_m = (1.0 - rho) * (1.0 + rho)
        g_s = g_k1 * k0
        g_n = g_k1 * torch.sqrt(one_m) * _INV_2PI
        if g_k0 is not None:
            keep = one_m > 100 * eps
            d0 = torch.where(keep, torch.rsqrt(torch.where(keep, one_m, torch.ones_like(one_m))),
                             torch.zeros_like(one_m)) * _INV_2PI / n
            g_s = g_s + g_k0 * d0
            g_n = g_n - g_k0 * rho * d0
        local = g_n * rb[l] * ia[l]
        g_va = local if g_va is None else g_va + local
        if ntk:
            g_s = g_s + g_theta
        if l == 0:
            break
        g_k1 = box_adjoint(g_s, q, padding) * scale
        if ntk:
            t = box_adjoint(g_theta, q, padding) * scale
            _, k0_prev, theta_prev = saved[l - 1]
            g_k0 = t * theta_prev
            g_theta = t * k0_prev
        g_va = box_adjoint(g_va, q, padding) * (scale / 2)
    return g_s / in_dim, g_va / in_dim


def _forward_only(S, ra, rb, q: int, scale: float, padding: str, ntk: bool):
    return pair_forward(S, ra, rb, q=q, scale=scale, padding=padding, ntk=ntk, save=False)[0]


def _forward_backward(S, ra, rb, ia, q: int, scale: float, padding: str, ntk: bool, in_dim: int):
    K, saved = pair_forward(S, ra, rb, q=q, scale=scale, padding=padding, ntk=ntk, save=True)
    g_c, g_s = pair_backward(saved, ra, rb, ia, q=q, scale=scale, padding=padding, ntk=ntk, in_dim=in_dim)
    return K, g_c, g_s


_COMPILED: dict = {}
_COMPILE_FAILED: set = set()


def _fused(fn):
    """``torch.compile(fn)`` once per process; the eager function if compiling is unavailable or fails."""
    name = fn.__name__
    if name in _COMPILE_FAILED:
        return fn
    if name not in _COMPILED:
        try:
            _COMPILED[name] = torch.compile(fn, dynamic=None)
        except Exception as exc:  # no compiler backend on this machine
            warnings.warn(f"torch.compile is unavailable ({exc}); the CNTK runs unfused", RuntimeWarning, stacklevel=3)
            _COMPILE_FAILED.add(name)
            return fn
    compiled = _COMPILED[name]

    def run(*args, **kwargs):
        if name in _COMPILE_FAILED:
            return fn(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except Exception as exc:  # a compiler error (e.g. no C++ toolchain): keep going, unfused
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); the CNTK runs unfused",
                          RuntimeWarning, stacklevel=2)
            _COMPILE_FAILED.add(name)
            return fn(*args, **kwargs)

    return run


def forward_fn(fused: bool):
    return _fused(_forward_only) if fused else _forward_only


def forward_backward_fn(fused: bool):
    return _fused(_forward_backward) if fused else _forward_backward
