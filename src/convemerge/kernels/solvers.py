"""Kernel ridge regression solvers: ``α = (K + λI)⁻¹ Y``.

``"solve"`` (LU), ``"cholesky"`` (falls back to LU when rounding makes ``K + λI`` numerically indefinite),
``"eigenpro"`` (preconditioned SGD that never forms the n×n matrix; see :mod:`convemerge.kernels.eigenpro`) and
``"auto"``, which picks by n and memory (:func:`choose_solver`): Cholesky while the matrix and its factor fit in
half the device's memory, Cholesky **in place** (LAPACK ``potrf`` overwriting the kernel matrix; the training
predictions then come from ``Kα = Y − λα``) while the matrix alone fits in 70 % of it, EigenPro beyond.
On a 24 GiB machine in float32 the crossovers are n ≈ 40,000 and n ≈ 65,000: all of MNIST (54,000 rounds /
60,000 refit) is solved in place.
"""

from __future__ import annotations

import os
import warnings

import torch

from convemerge.errors import ConfigError

SOLVERS = ("solve", "cholesky", "eigenpro", "auto")


def check_solver(name: str) -> str:
    if name not in SOLVERS:
        raise ConfigError(f"solver={name!r} is not one of {SOLVERS}")
    return name


def device_memory(device: torch.device) -> int:
    """Bytes of memory of ``device`` (CUDA: the GPU's total; CPU: physical memory)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def choose_solver(n: int, dtype: torch.dtype, device: torch.device, memory: int | None = None) -> str:
    """``"cholesky"``, ``"cholesky-inplace"`` or ``"eigenpro"`` for an n×n system (see the module docstring)."""
    memory = device_memory(device) if memory is None else memory
    size = n * n * torch.finfo(dtype).bits // 8
    if 2 * size <= 0.5 * memory:
        return "cholesky"
    if size <= 0.7 * memory and device.type == "cpu":
        return "cholesky-inplace"
    return "eigenpro"


def cholesky_in_place(K: torch.Tensor, Y: torch.Tensor, reg: float) -> torch.Tensor:
    """Solve ``(K + reg·I) α = Y`` overwriting K with its Cholesky factor (no second n×n matrix).

    K is symmetric, so its transposed view is the same matrix in column-major order: LAPACK ``potrf`` (through
    ``torch.linalg.cholesky_ex(..., out=)``) factors that view where it lies, and the two triangular solves read the
    factor through views too. (scipy's LP64 ``potrf`` crashes once n² exceeds 2³¹ — n ≈ 46,300 — so it is not
    used.)"""
    K.diagonal().add_(reg)
    A = K.mT
    info = torch.zeros((), dtype=torch.int32, device=K.device)
    torch.linalg.cholesky_ex(A, out=(A, info))
    if int(info) != 0:
        raise ConfigError(f"the kernel system is not numerically positive definite (potrf info={int(info)}); "
                          "use a larger reg or dtype='float64'")
    Y = Y.to(K.dtype)
    z = torch.linalg.solve_triangular(A, Y, upper=False)
    return torch.linalg.solve_triangular(A.mT, z, upper=True)


def solve_regularized(K: torch.Tensor, Y: torch.Tensor, reg: float, method: str = "solve") -> torch.Tensor:
    """Solve ``(K + reg·I) α = Y`` for a precomputed kernel matrix (left unchanged on return)."""
    check_solver(method)
    if method == "auto":
        method = "cholesky"
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
