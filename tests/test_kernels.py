"""Mahalanobis kernels, their closed-form gradients and AGOP, blocking, and the ridge solvers."""

from __future__ import annotations

import pytest
import torch

from convemerge.errors import ConfigError
from convemerge.kernels import GaussianKernel, Kernel, LaplaceKernel, eigenpro_solve, solve_regularized
from convemerge.kernels._utils import normalize_metric, psd_power

D64 = torch.float64


def _metric(kind: str, d: int, gen: torch.Generator, dtype=D64):
    if kind == "identity":
        return None
    if kind == "diag":
        return torch.rand(d, generator=gen, dtype=dtype) + 0.1
    A = torch.randn(d, d, generator=gen, dtype=dtype)
    return A @ A.T / d


def _dense(M, d, dtype):
    if M is None:
        return torch.eye(d, dtype=dtype)
    return torch.diag(M) if M.ndim == 1 else M


@pytest.mark.parametrize("metric", ["identity", "diag", "full"])
@pytest.mark.parametrize("cls", [LaplaceKernel, GaussianKernel])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_values_match_direct_formula(cls, metric, dtype):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(13, 6, generator=gen, dtype=dtype)
    Z = torch.randn(7, 6, generator=gen, dtype=dtype)
    M = _metric(metric, 6, gen, dtype)
    K = cls(M, bandwidth=2.5).matrix(X, Z)
    Md = _dense(M, 6, dtype).double()
    diff = X.double()[:, None] - Z.double()[None]
    d2 = torch.einsum("abi,ij,abj->ab", diff, Md, diff)
    ref = torch.exp(-d2.sqrt() / 2.5) if cls is LaplaceKernel else torch.exp(-d2 / (2 * 2.5**2))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(K.double(), ref, rtol=tol, atol=tol)
    assert K.dtype == dtype


def test_distances_clamped_and_self_kernel_is_one():
    X = torch.randn(50, 30, dtype=torch.float32) * 100  # large norms: the expansion cancels badly
    k = LaplaceKernel(None, 1.0)
    d2 = k.sq_distances(X, X)
    assert (d2 >= 0).all()
    K = k.matrix(X)
    assert torch.equal(K.diagonal(), torch.ones(50))  # K(X, X): the diagonal is exact
    assert torch.isfinite(k.block(X, X)).all() and (k.block(X, X) <= 1).all()
    assert torch.isfinite(k.gradients(X, X, torch.randn(50, 2))).all()


@pytest.mark.parametrize("metric", ["identity", "diag", "full"])
@pytest.mark.parametrize("cls", [LaplaceKernel, GaussianKernel])
def test_closed_form_gradient_matches_autograd(cls, metric):
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(40, 5, generator=gen, dtype=D64)
    Z = torch.randn(11, 5, generator=gen, dtype=D64)
    coef = torch.randn(40, 3, generator=gen, dtype=D64)
    k = cls(_metric(metric, 5, gen), bandwidth=1.7)
    g = k.gradients(Z, X, coef)
    g_auto = Kernel.gradient_block(k, Z, X, coef)  # the base class differentiates block() with autograd
    assert g.shape == (11, 3, 5)
    assert ((g - g_auto).norm() / g_auto.norm()).item() <= 1e-6


def test_laplace_gradient_drops_zero_distance_term():
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(20, 4, generator=gen, dtype=D64)
    coef = torch.randn(20, 2, generator=gen, dtype=D64)
    k = LaplaceKernel(None, 2.0)
    g = k.gradients(X[:1], X, coef)[0]  # at a centre: its own term is dropped
    g_rest = Kernel.gradient_block(k, X[:1], X[1:], coef[1:])[0]
    torch.testing.assert_close(g, g_rest, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("centering", [False, True])
def test_agop_equals_mean_outer_product(centering):
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(30, 6, generator=gen, dtype=D64)
    coef = torch.randn(30, 4, generator=gen, dtype=D64)
    k = LaplaceKernel(_metric("full", 6, gen), 3.0, block_elements=200)  # forces several blocks
    g = k.gradients(X, X, coef)  # (n, c, d)
    if centering:
        g = g - g.mean(0, keepdim=True)
    ref = torch.einsum("nci,ncj->ij", g, g) / len(X)
    torch.testing.assert_close(k.agop(X, X, coef, centering=centering), ref)
    torch.testing.assert_close(k.agop(X, X, coef, centering=centering, diag=True), ref.diagonal())


def test_blocking_does_not_change_results():
    gen = torch.Generator().manual_seed(4)
    X = torch.randn(37, 8, generator=gen, dtype=D64)
    Z = torch.randn(23, 8, generator=gen, dtype=D64)
    coef = torch.randn(23, 2, generator=gen, dtype=D64)
    big, small = GaussianKernel(None, 3.0), GaussianKernel(None, 3.0, block_elements=50)
    torch.testing.assert_close(big.matrix(X, Z), small.matrix(X, Z))
    torch.testing.assert_close(big.predict(X, Z, coef), small.predict(X, Z, coef))
    torch.testing.assert_close(big.gradients(X, Z, coef), small.gradients(X, Z, coef))


def test_direct_solvers_agree_and_leave_k_unchanged():
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(80, 5, generator=gen, dtype=D64)
    Y = torch.randn(80, 2, generator=gen, dtype=D64)
    K = LaplaceKernel(None, 2.0).matrix(X)
    K0 = K.clone()
    a1 = solve_regularized(K, Y, 1e-2, "solve")
    a2 = solve_regularized(K, Y, 1e-2, "cholesky")
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close((K + 1e-2 * torch.eye(80, dtype=D64)) @ a1, Y)
    assert torch.equal(K, K0)
    with pytest.raises(ConfigError):
        solve_regularized(K, Y, 1e-2, "qr")


def test_eigenpro_converges_to_direct_solution():
    gen = torch.Generator().manual_seed(6)
    X = torch.randn(300, 5, generator=gen, dtype=D64)
    Y = torch.sin(2 * X[:, :1]) + X[:, 1:2] * X[:, 2:3]
    Xt = torch.randn(200, 5, generator=gen, dtype=D64)
    k = LaplaceKernel(None, 2.0)
    direct = solve_regularized(k.matrix(X), Y, 0.1)
    alpha, info = eigenpro_solve(k, X, Y, 0.1, epochs=20, batch_size=100, generator=torch.Generator().manual_seed(0))
    assert info.tail_eigenvalue < info.top_eigenvalue / 10
    p_direct, p_ep = k.predict(Xt, X, direct), k.predict(Xt, X, alpha)
    assert ((p_ep - p_direct).norm() / p_direct.norm()).item() < 1e-3
    assert ((alpha - direct).norm() / direct.norm()).item() < 1e-2
    # the preconditioner is what makes it fast: plain mini-batch SGD (damping 0 switches it off, same batch
    # size, its own optimal step) is far behind after the same number of epochs
    _, plain = eigenpro_solve(k, X, Y, 0.1, epochs=5, batch_size=100, damping=0.0,
                              generator=torch.Generator().manual_seed(0))
    assert info.train_mse[4] < 0.01 * plain.train_mse[4]


def test_psd_power_and_normalisation():
    gen = torch.Generator().manual_seed(7)
    A = torch.randn(6, 3, generator=gen, dtype=D64)
    G = A @ A.T  # rank 3, PSD
    R = psd_power(G, 0.5)
    torch.testing.assert_close(R @ R, G, atol=1e-10, rtol=1e-8)
    assert torch.linalg.eigvalsh(normalize_metric(G, "max"))[-1].item() == pytest.approx(1.0)
    assert torch.linalg.matrix_norm(normalize_metric(G, "frobenius")).item() == pytest.approx(6**0.5)
    assert torch.trace(normalize_metric(G, "trace")).item() == pytest.approx(6.0)
    assert normalize_metric(torch.tensor([1.0, 4.0]), "max").tolist() == [0.25, 1.0]
    with pytest.raises(ConfigError):
        normalize_metric(G, "spectral")


def _laplace(M, block_elements=None):
    return LaplaceKernel(M, 3.0, **({"block_elements": block_elements} if block_elements else {}))


def _cntk(M, block_elements=None):
    from convemerge.kernels import ConvolutionalKernel

    return ConvolutionalKernel((1, 4, 4), kind="cntk", depth=2, M=M,
                               **({"block_elements": block_elements} if block_elements else {}))


@pytest.mark.parametrize("make, d", [(_laplace, 6), (_cntk, 9)], ids=["laplace", "cntk-fast"])
def test_centres_side_is_cached_and_refreshed_on_change(make, d):
    """The centres' side (shift and norms; patch matrices) is built once per (centres, metric) and rebuilt when
    either changes in place — blocks then equal a kernel built afresh (a cache keyed by address alone would return
    the stale side after Z.mul_)."""
    gen = torch.Generator().manual_seed(3)
    n_in = 6 if make is _laplace else 16
    X = torch.randn(40, n_in, generator=gen, dtype=torch.float64)
    Z = torch.randn(30, n_in, generator=gen, dtype=torch.float64)
    A = torch.randn(d, d, generator=gen, dtype=torch.float64)
    M = A @ A.T / d
    k = make(M, block_elements=200)  # several row blocks
    K1 = k.matrix(X, Z)
    assert k._side_cache[0] is Z
    torch.testing.assert_close(K1, make(M.clone()).matrix(X, Z))
    Z.mul_(2.0)  # in place: the cache must not be reused
    torch.testing.assert_close(k.matrix(X, Z), make(M.clone()).matrix(X, Z.clone()))
    M.mul_(0.5)
    torch.testing.assert_close(k.matrix(X, Z), make(M.clone()).matrix(X, Z.clone()))
    import pickle

    assert "_side_cache" not in pickle.loads(pickle.dumps(k)).__dict__
    with torch.inference_mode():  # no version counter: computed afresh, not cached
        Zi = Z.clone()
    torch.testing.assert_close(k.matrix(X, Zi), make(M.clone()).matrix(X, Z.clone()))
