"""The chunked CNTK / CNN-GP path (no pooling): fused C == torch operations, closed-form patch gradients and
patch-AGOP == autograd, and padding='valid' == Monte-Carlo estimates from wide finite VALID-padded nets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from convemerge.errors import ConfigError
from convemerge.kernels import ConvolutionalKernel, cntk_native
from convemerge.kernels.cntk_fast import box, box_adjoint

D64 = torch.float64
native_only = pytest.mark.skipif(cntk_native.library() is None, reason="no C compiler: the fused path is off")


def _data(C=2, H=8, W=7, q=3, seed=0, dtype=D64):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(3, C, H, W, generator=gen, dtype=dtype)
    X[0, :, :2, :2] = 0  # all-zero patches, as in image backgrounds
    Z = torch.randn(5, C, H, W, generator=gen, dtype=dtype)
    A = torch.randn(C * q * q, C * q * q, generator=gen, dtype=dtype)
    return X.flatten(1), Z.flatten(1), A @ A.T / (C * q * q)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_box_adjoint_is_the_transpose(padding):
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(7, 6, 2, generator=gen, dtype=D64)
    out = box(v, 3, padding)
    g = torch.randn(out.shape, generator=gen, dtype=D64)
    assert out.shape[:2] == ((7, 6) if padding == "same" else (5, 4))
    torch.testing.assert_close((out * g).sum(), (v * box_adjoint(g, 3, padding)).sum())


@native_only
@pytest.mark.parametrize("kind", ["cntk", "cnngp"])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_fused_equals_torch_operations(kind, padding):
    X, Z, M = _data()
    fast = ConvolutionalKernel((2, 8, 7), kind=kind, depth=3, M=M, padding=padding)
    plain = ConvolutionalKernel((2, 8, 7), kind=kind, depth=3, M=M, padding=padding, fused=False)
    torch.testing.assert_close(fast.matrix(X, Z), plain.matrix(X, Z), rtol=1e-12, atol=1e-14)
    # self pairs sit at ρ = 1, where √(1−ρ²) amplifies rounding: looser, as in test_cntk.py
    torch.testing.assert_close(fast.matrix(Z), plain.matrix(Z), rtol=1e-7, atol=1e-9)
    coef = torch.randn(5, 2, dtype=D64)
    torch.testing.assert_close(fast.gradients(X, Z, coef), plain.gradients(X, Z, coef), rtol=1e-10, atol=1e-13)
    # float32: the polynomial arccos (|error| ≤ 2e-8) and float32 rounding only
    f32 = ConvolutionalKernel((2, 8, 7), kind=kind, depth=3, M=M.float(), padding=padding)
    torch.testing.assert_close(f32.matrix(X.float(), Z.float()).double(), plain.matrix(X, Z), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("kind", ["cntk", "cnngp"])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_closed_form_patch_gradients_and_agop_equal_autograd(fused, kind, padding):
    X, Z, M = _data(seed=2)
    k = ConvolutionalKernel((2, 8, 7), kind=kind, depth=3, M=M, padding=padding, fused=fused)
    P = 56 if padding == "same" else 30
    coef = torch.randn(3, 2, dtype=D64)
    g = k.gradients(Z, X, coef)
    assert g.shape == (5, 2, P, 18)
    Uz = k.patches(Z).detach().requires_grad_(True)
    f = k.block_from_patches(Uz, k.patches(X)) @ coef  # the recursion as torch operations, differentiated by autograd
    brute = torch.stack([torch.autograd.grad(f[:, o].sum(), Uz, retain_graph=True)[0] for o in range(2)], 1)
    torch.testing.assert_close(g, brute, rtol=1e-9, atol=1e-12)
    G = torch.einsum("nopi,nopj->ij", brute, brute) / 5
    torch.testing.assert_close(k.agop(Z, X, coef), G, rtol=1e-9, atol=1e-12)


def test_valid_padding_shapes_and_errors():
    k = ConvolutionalKernel((1, 9, 9), depth=3, padding="valid")
    assert k.map_shape == (7, 7)
    assert k.patches(torch.zeros(2, 81)).shape == (2, 49, 9)
    with pytest.raises(ConfigError, match="leaves no positions"):
        ConvolutionalKernel((1, 6, 6), depth=3, padding="valid")
    with pytest.raises(ConfigError, match="padding"):
        ConvolutionalKernel((1, 6, 6), padding="full")
    with pytest.raises(ConfigError, match="pooling"):
        ConvolutionalKernel((1, 6, 6), depth=1, pool=2, padding="valid")


# ---------------------------------------------------------------------------------------------------------------
# Monte-Carlo with VALID convolutions: wide finite vanilla nets in the NTK parameterisation (first layer variance 1,
# hidden 2, readout 1/√features), as in test_cntk.py but without padding.
def _valid_net(x, Ws, v, q):
    h = F.conv2d(x, Ws[0]) / math.sqrt(Ws[0][0].numel())
    for W in Ws[1:]:
        h = F.conv2d(F.relu(h), W) * math.sqrt(2.0 / W[0].numel())
    g = F.relu(h).flatten(1)
    return g, (g @ v / math.sqrt(g.shape[1]) if v is not None else None)


def _draw(C, width, depth, q, feat, gen):
    Ws = [torch.randn(width, C, q, q, generator=gen, dtype=D64)]
    Ws += [torch.randn(width, width, q, q, generator=gen, dtype=D64) for _ in range(depth - 1)]
    return Ws, torch.randn(feat, generator=gen, dtype=D64)


def test_valid_padding_matches_wide_finite_valid_nets():
    gen = torch.Generator().manual_seed(13)
    X = torch.randn(4, 2, 7, 7, generator=gen, dtype=D64)
    width, depth, q = 256, 2, 3
    ntk = ConvolutionalKernel((2, 7, 7), kind="cntk", depth=depth, padding="valid").matrix(X.flatten(1))
    gp = ConvolutionalKernel((2, 7, 7), kind="cnngp", depth=depth, padding="valid").matrix(X.flatten(1))
    same = ConvolutionalKernel((2, 7, 7), kind="cntk", depth=depth).matrix(X.flatten(1))
    feat = width * 9  # 3×3 positions after two valid 3×3 layers
    ntks, gps = [], []
    for _ in range(8):
        Ws, v = _draw(2, width, depth, q, feat, gen)
        params = [w.requires_grad_() for w in Ws] + [v.requires_grad_()]
        _, f = _valid_net(X, Ws, v, q)
        J = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(f[i], params, retain_graph=True)])
                         for i in range(4)])
        ntks.append(J @ J.T)
    for _ in range(16):
        Ws, _ = _draw(2, width, depth, q, 1, gen)
        g, _ = _valid_net(X, Ws, None, q)
        gps.append(g @ g.T / g.shape[1])
    for samples, analytic, other in ((torch.stack(ntks), ntk, gp), (torch.stack(gps), gp, ntk)):
        mean = samples.mean(0)
        tol = 4 * samples.std(0).max() / math.sqrt(len(samples)) + 0.02 * analytic.abs().max()
        assert (mean - analytic).abs().max() <= tol
        assert (mean - other).abs().max() > 2 * tol  # the test can tell the NTK from the NNGP
    assert (ntk - same).abs().max() > 0.05 * ntk.abs().max()  # and VALID from SAME on noise images


@pytest.mark.parametrize("fused", [None, False])
def test_patch_gradients_with_more_rows_than_patch_dimensions(fused):
    """14 rows > c·q·q = 9: the assembly folds the outputs into the centres' factor instead of the adjoints'."""
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(6, 36, generator=gen, dtype=D64)
    Z = torch.randn(14, 36, generator=gen, dtype=D64)
    k = ConvolutionalKernel((1, 6, 6), depth=2, fused=fused)
    coef = torch.randn(6, 3, generator=gen, dtype=D64)
    g = k.gradients(Z, X, coef)
    Uz = k.patches(Z).detach().requires_grad_(True)
    f = k.block_from_patches(Uz, k.patches(X)) @ coef
    brute = torch.stack([torch.autograd.grad(f[:, o].sum(), Uz, retain_graph=True)[0] for o in range(3)], 1)
    torch.testing.assert_close(g, brute, rtol=1e-9, atol=1e-12)


@native_only
@pytest.mark.parametrize("kind", ["cntk", "cnngp"])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("block_elements", [2**25, 2000])
def test_symmetric_patch_agop_over_the_centres_equals_all_ordered_pairs(kind, padding, block_elements):
    """agop(X, X): each unordered pair once (the columns' gradients from the transposed adjoints) == every ordered
    pair; with a small block budget the pairs span several off-diagonal tiles."""
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(9, 2 * 8 * 7, generator=gen, dtype=D64)
    M = torch.randn(18, 18, generator=gen, dtype=D64)
    M = M @ M.T / 18
    k = ConvolutionalKernel((2, 8, 7), kind=kind, depth=3, M=M, padding=padding, block_elements=block_elements)
    assert k._chunk_shape(True, 9, 9, True)[0] < 9 or block_elements == 2**25
    coef = torch.randn(9, 3, generator=gen, dtype=D64)
    # reference: the row-block path (points ≠ centres as tensors, so every ordered pair is visited), whose closed
    # form equals autograd above; autograd itself cannot serve at the self pairs (arccos' is infinite at ρ = 1)
    rows = k.gradients(X.clone(), X, coef)
    G = torch.einsum("nopi,nopj->ij", rows, rows) / 9
    sym = k.agop(X, X, coef)
    assert torch.isfinite(sym).all()
    torch.testing.assert_close(sym, G, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(k.agop(X, X, coef, diag=True), G.diagonal(), rtol=1e-9, atol=1e-12)
    plain = ConvolutionalKernel((2, 8, 7), kind=kind, depth=3, M=M, padding=padding, fused=False)
    # torch operations: self pairs sit at ρ = 1, where the two paths' rounding differs (√(1−ρ²), the cusp test)
    torch.testing.assert_close(plain.agop(X, X, coef), G, rtol=1e-5, atol=1e-9)
