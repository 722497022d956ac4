"""Solver by n: the crossovers of ``solver='auto'`` and the in-place Cholesky it uses for all of MNIST."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convemerge.kernels import LaplaceKernel, RFMClassifier, solve_regularized
from convemerge.kernels import _estimator
from convemerge.errors import ConfigError
from convemerge.kernels.solvers import cholesky_in_place, choose_solver

GIB = 2**30


def test_crossovers_on_a_24_gib_machine():
    cpu = torch.device("cpu")
    assert choose_solver(10_000, torch.float32, cpu, 24 * GIB) == "cholesky"
    assert choose_solver(40_000, torch.float32, cpu, 24 * GIB) == "cholesky"
    assert choose_solver(54_000, torch.float32, cpu, 24 * GIB) == "cholesky-inplace"
    assert choose_solver(60_000, torch.float32, cpu, 24 * GIB) == "cholesky-inplace"
    assert choose_solver(70_000, torch.float32, cpu, 24 * GIB) == "eigenpro"
    assert choose_solver(60_000, torch.float64, cpu, 24 * GIB) == "eigenpro"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_cholesky_equals_the_solve(dtype):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(60, 7, generator=gen, dtype=dtype)
    Y = torch.randn(60, 3, generator=gen, dtype=dtype)
    K = LaplaceKernel(None, 3.0).matrix(X)
    ref = solve_regularized(K, Y, 1e-2, "solve")
    L = torch.linalg.cholesky(K + 1e-2 * torch.eye(60, dtype=dtype))
    ptr = K.data_ptr()
    coef = cholesky_in_place(K, Y, 1e-2)  # K is overwritten
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(coef, ref, rtol=tol, atol=tol)
    # the factor lies in K's own storage: its transposed (column-major) view holds L
    assert K.data_ptr() == ptr
    torch.testing.assert_close(torch.tril(K.mT), L, rtol=tol, atol=tol)


def test_in_place_cholesky_refuses_an_indefinite_system():
    K = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ConfigError, match="not numerically positive definite"):
        cholesky_in_place(K, torch.ones(2, 1), 0.0)


def test_auto_solver_in_place_path_matches_cholesky(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6))
    y = (X[:, 0] > 0).astype(int)
    ref = RFMClassifier(n_iter=1, solver="cholesky", random_state=0).fit(X, y)
    monkeypatch.setattr(_estimator, "choose_solver", lambda n, dtype, device: "cholesky-inplace")
    est = RFMClassifier(n_iter=1, solver="auto", random_state=0).fit(X, y)
    torch.testing.assert_close(est.coef_, ref.coef_, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(est.M_, ref.M_, rtol=1e-8, atol=1e-10)
    assert est.train_metrics_["accuracy"] == pytest.approx(ref.train_metrics_["accuracy"])
    np.testing.assert_allclose(est.decision_function(X[:5]), ref.decision_function(X[:5]), rtol=1e-6)
