"""The PyTorch CNTK / CNN-GP: same-offset recursion == full-covariance recursion, == Monte-Carlo estimates from
wide finite conv nets, and patch gradients == autograd."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from convemerge.kernels import ConvolutionalKernel

D64 = torch.float64


# ---------------------------------------------------------------------------------------------------------------
# An independent reference: the textbook recursion on full (H·W × H·W) covariances per pair, plain torch ops.
def _reference(X, Z, M, q, depth, pool, kind, weight_var=2.0, bandwidth=10.0):
    n, C, H, W = X.shape
    P, r, d = H * W, q // 2, C * q * q
    Ux = F.unfold(X, q, padding=r).transpose(1, 2)
    Uz = F.unfold(Z, q, padding=r).transpose(1, 2)
    Sxz = torch.einsum("apd,de,bqe->abpq", Ux, M, Uz)
    vx0 = torch.einsum("apd,de,ape->ap", Ux, M, Ux)
    vz0 = torch.einsum("apd,de,ape->ap", Uz, M, Uz)
    if kind == "patch-laplace":
        d2 = vx0[:, None, :, None] + vz0[None, :, None, :] - 2 * Sxz
        return _readout(torch.exp(-d2.clamp(min=0).sqrt() / bandwidth), H, W, pool)

    def box(T):  # conv over both position indices with the same offset a, zero padding
        sh = T.shape[:-2]
        T = T.reshape(*sh, H, W, H, W)
        T = F.pad(T, (r, r, r, r))  # pads the z-side position
        T = F.pad(T.movedim((-4, -3), (-2, -1)), (r, r, r, r)).movedim((-2, -1), (-4, -3))  # x-side
        out = 0
        for ay in range(-r, r + 1):
            for ax in range(-r, r + 1):
                out = out + T[..., r + ay : r + ay + H, r + ax : r + ax + W, r + ay : r + ay + H, r + ax : r + ax + W]
        return (out / q**2).reshape(*sh, P, P)

    def relu(S, va, vb):
        norm = (va * vb).clamp(min=1e-300).sqrt()
        rho = (S / norm).clamp(-1, 1)
        th = torch.arccos(rho)
        return norm * (torch.sin(th) + (math.pi - th) * rho) / (2 * math.pi), (math.pi - th) / (2 * math.pi)

    S, vx, vz = Sxz / d, vx0 / d, vz0 / d
    Th = S
    for _ in range(depth - 1):
        K1, K0 = relu(S, vx[:, None, :, None], vz[None, :, None, :])
        Th = weight_var * box(K1) + weight_var * box(K0 * Th)
        S = weight_var * box(K1)
        # the variance of position p at the next layer: a box over the diagonal E[relu(u)²] = v/2
        vx = weight_var * box(torch.diag_embed(vx / 2)).diagonal(dim1=-2, dim2=-1)
        vz = weight_var * box(torch.diag_embed(vz / 2)).diagonal(dim1=-2, dim2=-1)
    K1, K0 = relu(S, vx[:, None, :, None], vz[None, :, None, :])
    return _readout(K1 + K0 * Th if kind == "cntk" else K1, H, W, pool)


def _readout(T, H, W, pool):
    if pool is None:
        return T.diagonal(dim1=-2, dim2=-1).mean(-1)
    k, Hp, Wp = pool, H // pool, W // pool
    A = torch.zeros(Hp * Wp, H * W, dtype=T.dtype)
    for i in range(Hp):
        for j in range(Wp):
            for y in range(i * k, i * k + k):
                for x in range(j * k, j * k + k):
                    A[i * Wp + j, y * W + x] = 1.0 / k**2
    return torch.einsum("wp,abpq,wq->ab", A, T, A) / (Hp * Wp)


def _data(C=2, H=6, W=5, q=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(3, C, H, W, generator=gen, dtype=D64)
    X[0, :, :2, :2] = 0  # all-zero patches, as in image backgrounds
    Z = torch.randn(4, C, H, W, generator=gen, dtype=D64)
    A = torch.randn(C * q * q, C * q * q, generator=gen, dtype=D64)
    return X, Z, A @ A.T / (C * q * q)


@pytest.mark.parametrize("kind", ["cntk", "cnngp", "patch-laplace"])
@pytest.mark.parametrize("pool", [None, 2])
def test_same_offset_recursion_equals_full_covariance_recursion(kind, pool):
    X, Z, M = _data()
    k = ConvolutionalKernel((2, 6, 5), kind=kind, depth=3, pool=pool, M=M)
    torch.testing.assert_close(k.matrix(X.flatten(1), Z.flatten(1)), _reference(X, Z, M, 3, 3, pool, kind),
                               rtol=1e-12, atol=1e-14)
    # self pairs sit at ρ = 1, where arccos amplifies rounding (√ of it): looser but still tight
    torch.testing.assert_close(k.matrix(X.flatten(1)), _reference(X, X, M, 3, 3, pool, kind), rtol=1e-7, atol=1e-9)


def test_blocking_and_identity_metric():
    X, Z, _ = _data(seed=1)
    big = ConvolutionalKernel((2, 6, 5), depth=2)
    small = ConvolutionalKernel((2, 6, 5), depth=2, M=torch.eye(18, dtype=D64), block_elements=3000)
    torch.testing.assert_close(big.matrix(X.flatten(1), Z.flatten(1)), small.matrix(X.flatten(1), Z.flatten(1)))
    coef = torch.randn(4, 2, dtype=D64)
    torch.testing.assert_close(big.gradients(X.flatten(1), Z.flatten(1), coef),
                               small.gradients(X.flatten(1), Z.flatten(1), coef))


@pytest.mark.parametrize("kind", ["cntk", "cnngp", "patch-laplace"])
@pytest.mark.parametrize("pool", [None, 2])
def test_patch_gradients_match_autograd(kind, pool):
    X, Z, M = _data(seed=2)
    k = ConvolutionalKernel((2, 6, 5), kind=kind, depth=3, pool=pool, M=M)
    coef = torch.randn(3, 2, dtype=D64)
    g = k.gradients(Z.flatten(1), X.flatten(1), coef)  # (4, 2, P, 18)
    assert g.shape == (4, 2, 30, 18)
    # brute force 1: every patch of Z an independent leaf, one backward pass per output
    Uz = k.patches(Z.flatten(1)).detach().requires_grad_(True)
    f = k.block_from_patches(Uz, k.patches(X.flatten(1))) @ coef
    brute = torch.stack([torch.autograd.grad(f[:, o].sum(), Uz, retain_graph=True)[0] for o in range(2)], 1)
    torch.testing.assert_close(g, brute, rtol=1e-9, atol=1e-12)
    # brute force 2: the image gradient of the independent reference equals the patch gradients folded back
    Zi = Z.clone().requires_grad_(True)
    fr = _reference(Zi, X, M, 3, 3, pool, kind) @ coef
    gi = torch.stack([torch.autograd.grad(fr[:, o].sum(), Zi, retain_graph=True)[0] for o in range(2)], 1)
    folded = F.fold(g.reshape(8, 30, 18).transpose(1, 2), (6, 5), 3, padding=1).reshape(4, 2, 2, 6, 5)
    torch.testing.assert_close(folded, gi, rtol=1e-9, atol=1e-12)


def test_patch_gradients_with_many_rows_match_autograd():
    """More evaluation images than patch dimensions: the assembly folds the outputs into the other factor."""
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(5, 1, 5, 5, generator=gen, dtype=D64)
    Z = torch.randn(14, 1, 5, 5, generator=gen, dtype=D64)
    k = ConvolutionalKernel((1, 5, 5), kind="cntk", depth=2, pool=2)
    coef = torch.randn(5, 3, generator=gen, dtype=D64)
    g = k.gradients(Z.flatten(1), X.flatten(1), coef)
    Uz = k.patches(Z.flatten(1)).detach().requires_grad_(True)
    f = k.block_from_patches(Uz, k.patches(X.flatten(1))) @ coef
    brute = torch.stack([torch.autograd.grad(f[:, o].sum(), Uz, retain_graph=True)[0] for o in range(3)], 1)
    torch.testing.assert_close(g, brute, rtol=1e-9, atol=1e-12)


def test_patch_agop_equals_brute_outer_products():
    X, Z, M = _data(seed=3)
    k = ConvolutionalKernel((2, 6, 5), depth=2, M=M)
    coef = torch.randn(3, 3, dtype=D64)
    Uz = k.patches(Z.flatten(1)).detach().requires_grad_(True)
    f = k.block_from_patches(Uz, k.patches(X.flatten(1))) @ coef
    G = 0
    for o in range(3):
        (g,) = torch.autograd.grad(f[:, o].sum(), Uz, retain_graph=True)
        G = G + torch.einsum("npi,npj->ij", g, g)
    torch.testing.assert_close(k.agop(Z.flatten(1), X.flatten(1), coef), G / 4, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["cntk", "cnngp"])
def test_gradients_at_training_images_are_finite(kind):
    """At a centre ρ = 1 everywhere; the NTK's cusp term is dropped, the GP part is differentiable there."""
    X, _, M = _data(seed=4)
    k = ConvolutionalKernel((2, 6, 5), kind=kind, depth=3, M=M)
    coef = torch.randn(3, 2, dtype=D64)
    g = k.gradients(X.flatten(1), X.flatten(1), coef)
    assert torch.isfinite(g).all()
    if kind == "cnngp":  # central differences along a random patch direction agree with the gradient
        U = k.patches(X.flatten(1))
        E = torch.randn_like(U)
        h = 1e-6
        fp = k.block_from_patches(U + h * E, U) @ coef
        fm = k.block_from_patches(U - h * E, U) @ coef
        fd = (fp - fm) / (2 * h)
        torch.testing.assert_close(torch.einsum("nopd,npd->no", g, E), fd, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# Monte-Carlo: wide finite vanilla conv nets in the NTK parameterisation (weights N(0, 1); conv layer ℓ scaled by
# √(σ²/fan_in), σ² = 1 for the first layer and 2 after, readout 1/√fan_in).
def _net(x, Ws, v, q, pool):
    h = F.conv2d(x, Ws[0], padding=q // 2) / math.sqrt(Ws[0][0].numel())
    for W in Ws[1:]:
        h = F.conv2d(F.relu(h), W, padding=q // 2) * math.sqrt(2.0 / W[0].numel())
    g = F.relu(h)
    g = (F.avg_pool2d(g, pool) if pool else g).flatten(1)
    return g, (g @ v / math.sqrt(g.shape[1]) if v is not None else None)


def _draw(C, width, depth, q, feat, gen):
    Ws = [torch.randn(width, C, q, q, generator=gen, dtype=D64)]
    Ws += [torch.randn(width, width, q, q, generator=gen, dtype=D64) for _ in range(depth - 1)]
    return Ws, torch.randn(feat, generator=gen, dtype=D64)


def empirical_ntk(X, width, depth, q, pool, n_nets, seed=0):
    """Σ over all parameters of ∇θf(x)·∇θf(z), one (n, n) matrix per random net."""
    gen = torch.Generator().manual_seed(seed)
    n, C, H, W = X.shape
    feat = width * (H // (pool or 1)) * (W // (pool or 1))
    out = []
    for _ in range(n_nets):
        Ws, v = _draw(C, width, depth, q, feat, gen)
        params = [w.requires_grad_() for w in Ws] + [v.requires_grad_()]
        _, f = _net(X, Ws, v, q, pool)
        J = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(f[i], params, retain_graph=True)])
                         for i in range(n)])
        out.append(J @ J.T)
    return torch.stack(out)


def empirical_nngp(X, width, depth, q, pool, n_nets, seed=0):
    """Output covariance E[f(x)f(z)] with the expectation over the readout taken exactly: g(x)·g(z)/features."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_nets):
        Ws, _ = _draw(X.shape[1], width, depth, q, 1, gen)
        g, _ = _net(X, Ws, None, q, pool)
        out.append(g @ g.T / g.shape[1])
    return torch.stack(out)


def _assert_mc_agrees(samples, analytic, other):
    """Mean of per-net estimates vs the analytic kernel.

    Tolerance: 4 standard errors of the mean (per-net estimates are independent; their spread is O(1/√width),
    so the SE is estimated from the samples, pooled over entries as the largest SE because few nets make per-entry
    SEs noisy) plus 2% of the kernel's scale for the O(1/width) finite-width bias. The test also asserts it has
    the power to tell a different kernel apart (``other``: the NNGP for the NTK and vice versa).
    """
    mean = samples.mean(0)
    se = samples.std(0).max() / math.sqrt(len(samples))
    tol = 4 * se + 0.02 * analytic.abs().max()
    err = (mean - analytic).abs().max()
    assert err <= tol, (err, tol)
    assert (mean - other).abs().max() > 2 * tol


@pytest.mark.parametrize("pool", [None, 2])
def test_cntk_and_cnngp_match_wide_finite_nets(pool):
    gen = torch.Generator().manual_seed(10)
    X = torch.randn(4, 2, 6, 6, generator=gen, dtype=D64)
    ntk = ConvolutionalKernel((2, 6, 6), kind="cntk", depth=2, pool=pool).matrix(X.flatten(1))
    gp = ConvolutionalKernel((2, 6, 6), kind="cnngp", depth=2, pool=pool).matrix(X.flatten(1))
    _assert_mc_agrees(empirical_ntk(X, 256, 2, 3, pool, n_nets=8), ntk, gp)
    _assert_mc_agrees(empirical_nngp(X, 256, 2, 3, pool, n_nets=16), gp, ntk)


@pytest.mark.slow
@pytest.mark.parametrize("pool", [None, 2])
def test_deeper_cntk_matches_wide_finite_nets(pool):
    gen = torch.Generator().manual_seed(11)
    X = torch.randn(5, 3, 6, 6, generator=gen, dtype=D64)
    ntk = ConvolutionalKernel((3, 6, 6), kind="cntk", depth=3, pool=pool).matrix(X.flatten(1))
    gp = ConvolutionalKernel((3, 6, 6), kind="cnngp", depth=3, pool=pool).matrix(X.flatten(1))
    _assert_mc_agrees(empirical_ntk(X, 512, 3, 3, pool, n_nets=8), ntk, gp)
    _assert_mc_agrees(empirical_nngp(X, 512, 3, 3, pool, n_nets=16), gp, ntk)


@pytest.mark.slow
def test_cnngp_is_the_output_covariance_of_many_random_nets():
    """E[f(x) f(z)] over 8,000 random width-128 nets (readout drawn too), computed as grouped convolutions."""
    gen = torch.Generator().manual_seed(12)
    X = torch.randn(4, 1, 6, 6, generator=gen, dtype=D64)
    gp = ConvolutionalKernel((1, 6, 6), kind="cnngp", depth=2).matrix(X.flatten(1))
    width, q, chunk, total = 128, 3, 250, 8000
    prods = []
    x32 = X.float()  # float32 nets: their rounding is far below the Monte-Carlo error
    for _ in range(total // chunk):
        W1 = torch.randn(chunk * width, 1, q, q, generator=gen) / q
        W2 = torch.randn(chunk * width, width, q, q, generator=gen) * math.sqrt(2.0 / (width * q * q))
        v = torch.randn(chunk, width * 36, generator=gen) / math.sqrt(width * 36)
        h = F.conv2d(x32.repeat(1, chunk, 1, 1), W1, padding=1, groups=chunk)
        g = F.relu(F.conv2d(F.relu(h), W2, padding=1, groups=chunk)).reshape(4, chunk, -1)
        f = torch.einsum("ncf,cf->nc", g, v)  # (images, nets)
        prods.append(torch.einsum("ac,bc->cab", f, f).double())
    samples = torch.cat(prods)
    se = samples.std(0) / math.sqrt(len(samples))
    err = (samples.mean(0) - gp).abs()
    assert (err <= 4.5 * se + 0.02 * gp.abs().max()).all(), (err, se)


def test_against_neural_tangents_if_available():
    nt = pytest.importorskip("neural_tangents")
    stax = nt.stax
    import numpy as np

    gen = torch.Generator().manual_seed(13)
    X = torch.randn(3, 2, 6, 6, generator=gen, dtype=D64)
    layers = [stax.Conv(1, (3, 3), padding="SAME", W_std=1.0, b_std=None), stax.Relu()]
    layers += [stax.Conv(1, (3, 3), padding="SAME", W_std=math.sqrt(2.0), b_std=None), stax.Relu()]
    layers += [stax.Flatten(), stax.Dense(1, W_std=1.0, b_std=None)]
    _, _, kernel_fn = stax.serial(*layers)
    x = np.asarray(X.permute(0, 2, 3, 1))  # NHWC
    ref = kernel_fn(x, x, ("ntk", "nngp"))
    ours = {kind: ConvolutionalKernel((2, 6, 6), kind=kind, depth=2).matrix(X.flatten(1)) for kind in ("cntk", "cnngp")}
    np.testing.assert_allclose(ours["cntk"].numpy(), np.asarray(ref.ntk), rtol=1e-4)
    np.testing.assert_allclose(ours["cnngp"].numpy(), np.asarray(ref.nngp), rtol=1e-4)
