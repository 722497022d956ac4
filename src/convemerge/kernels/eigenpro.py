"""EigenPro 2: preconditioned stochastic gradient descent for kernel (ridge) regression.

Problem: ``min_α (1/2n) ‖(K + λI)α − Y‖²`` whose solution is the ridge solution ``α = (K + λI)⁻¹Y``. In
function space one SGD step on a mini-batch B of size m is ``α_B ← α_B − (η/m) r_B`` with the residual
``r_B = f(X_B) + λα_B − Y_B``. Its speed is limited by the top eigenvalue λ₁ of the (normalised) kernel
operator ``𝒦 = (1/n)Σ k(x_i,·)⊗k(x_i,·)``; EigenPro flattens the top of the spectrum with the preconditioner

    P = I − Σ_{j≤q} (1 − (τ/λ_j)^a) e_j ⊗ e_j ,        τ = λ_{q+1},

(``a`` ≤ 1 a damping exponent, 0.95 as in EigenPro 2) so that the step may grow by λ₁/τ. The eigenpairs come
from a Nyström approximation on a fixed subsample S of size s: ``K_S/s = V diag(λ) Vᵀ`` and
``e_j = Σ_{a∈S} V_{aj} k(x_a,·) / √(s λ_j)``. Applying P to the stochastic gradient only changes the
coefficients of the subsample:

    α_S ← α_S + (η/m) · V D Vᵀ K(X_S, X_B) r_B ,     D = diag((1 − (τ/λ_j)^a) / (s λ_j)).

Step size and batch size follow EigenPro 2: β = max_a k_P(x_a, x_a) (the preconditioned kernel's diagonal),
the critical batch size ``m* = β/τ'`` with ``τ' = λ₁ (τ/λ₁)^a`` the new top eigenvalue, ``m = min(m*, memory)``
and ``η = m / (β + (m − 1)τ')`` — the optimal step of m-batch SGD in the interpolation regime (Ma, Bassily &
Belkin 2018): ≈ m/β well below m* (EigenPro 2's linear-scaling rule) and ≈ 1/τ' above it; at m = m* it is half
of m/β, a deliberately safe choice because τ' is itself a Nyström estimate.
The ridge term enters the residual exactly; the preconditioner is built from K alone (λ shifts the spectrum by
λ/n, negligible next to the top eigenvalues it acts on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .base import Kernel


@dataclass
class EigenProInfo:
    """What the solver did: the spectrum it used and the training MSE after each epoch."""

    n_components: int
    subsample_size: int
    batch_size: int
    step_size: float
    top_eigenvalue: float
    tail_eigenvalue: float
    beta: float
    epochs_run: int = 0
    train_mse: list[float] = field(default_factory=list)


def eigenpro_solve(kernel: Kernel, X: torch.Tensor, Y: torch.Tensor, reg: float = 0.0, *, epochs: int = 20,
                   subsample_size: int | None = None, n_components: int | None = None,
                   batch_size: int | None = None, damping: float = 0.95, tol: float | None = None,
                   eval_size: int = 2000, generator: torch.Generator | None = None,
                   init: torch.Tensor | None = None) -> tuple[torch.Tensor, EigenProInfo]:
    """Approximately solve ``(K(X, X) + reg·I) α = Y`` with EigenPro 2; returns ``(α, info)``.

    ``tol`` stops early once the training MSE (on a fixed sample of ``eval_size`` points) falls below it.
    All random choices (subsample, batch order) use ``generator`` (a CPU generator).
    """
    n = len(X)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    s = min(n, subsample_size or min(n, 4000))
    sub = torch.randperm(n, generator=gen)[:s].to(X.device)
    Xs = X[sub]
    Ks = kernel.matrix(Xs)  # (s, s)
    vals, vecs = torch.linalg.eigh(Ks / s)
    vals, vecs = vals.flip(0), vecs.flip(1)  # descending
    q = n_components if n_components is not None else min(s - 1, max(1, s // 10), 160)
    q = int(max(1, min(q, s - 1)))
    top, tail = float(vals[0]), float(vals[q].clamp(min=1e-300))
    lam = vals[:q].clamp(min=tail)
    ratio = (tail / lam) ** damping
    V = vecs[:, :q]
    D = (1.0 - ratio) / (s * lam)  # (q,)
    new_top = top * (tail / top) ** damping
    # diagonal of the preconditioned kernel on the subsample: k(x_a,x_a) − Σ_j (1 − ratio_j) e_j(x_a)²,
    # e_j(x_a) = √(s λ_j) V_aj
    kdiag = Ks.diagonal()
    kp = kdiag - (V * V * ((1.0 - ratio) * s * lam)).sum(1)
    beta = float(kp.max().clamp(min=float(kdiag.max()) * 1e-6)) + reg
    del Ks
    m_crit = max(1, int(beta / new_top))
    mem_rows = max(1, kernel.block_elements // max(1, n))
    m = int(batch_size or min(m_crit, mem_rows, n))
    m = max(1, min(m, n))
    eta = m / (beta + (m - 1) * new_top)
    alpha = torch.zeros_like(Y) if init is None else init.clone()
    info = EigenProInfo(q, s, m, eta, top, tail, beta)
    ev = torch.randperm(n, generator=gen)[: min(n, eval_size)].to(X.device)
    VD = V * D
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(X.device)
        for start in range(0, n, m):
            idx = order[start : start + m]
            r = kernel.block(X[idx], X) @ alpha + reg * alpha[idx] - Y[idx]  # (b, c)
            step = eta / len(idx)
            alpha.index_add_(0, idx, r, alpha=-step)
            corr = VD @ (V.T @ (kernel.block(Xs, X[idx]) @ r))  # (s, c)
            alpha.index_add_(0, sub, corr, alpha=step)
        info.epochs_run += 1
        res = kernel.predict(X[ev], X, alpha) + reg * alpha[ev] - Y[ev]
        mse = float((res * res).mean())
        info.train_mse.append(mse)
        if not math.isfinite(mse):
            break
        if tol is not None and mse < tol:
            break
    return alpha, info
