"""Kernel ridge regression solvers: ``α = (K + λI)⁻¹ Y``.

``"solve"`` (LU), ``"cholesky"`` (falls back to LU when rounding makes ``K + λI`` numerically indefinite) and
``"eigenpro"`` (preconditioned SGD that never forms the n×n matrix; see :mod:`convemerge.kernels.eigenpro`).
"""

from __future__ import annotations

import warnings

import torch

from convemerge.errors import ConfigError

SOLVERS = ("solve", "cholesky", "eigenpro")


def check_solver(name: str) -> str:
    if name not in SOLVERS:
        raise ConfigError(f"solver={name!r} is not one of {SOLVERS}")
    return name


def solve_regularized(K: torch.Tensor, Y: torch.Tensor, reg: float, method: str = "solve") -> torch.Tensor:
    """Solve ``(K + reg·I) α = Y`` for a precomputed kernel matrix (left unchanged on return)."""
    check_solver(method)
    diag = K.diagonal()
    diag.add_(reg)  # in place: the n×n matrix is the largest object here; undone below
    try:
        if method == "cholesky":
            L, info = torch.linalg.cholesky_ex(K)
            if int(info) == 0:
                return torch.cholesky_solve(Y, L)
            warnings.warn("Cholesky factorisation failed (K + reg·I not numerically positive definite); "
                          "using an LU solve instead — consider a larger reg or dtype='float64'",
                          RuntimeWarning, stacklevel=2)
        return torch.linalg.solve(K, Y)
    finally:
        diag.sub_(reg)
