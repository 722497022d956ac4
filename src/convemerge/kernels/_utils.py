"""Small shared helpers: dtype resolution, metric normalisation, block sizes (PSD powers and devices have their
owners: :func:`convemerge.analysis.agop.psd_power`, :func:`convemerge.devices.resolve_device`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from convemerge.analysis.agop import psd_power  # noqa: F401 (the one PSD matrix power)
from convemerge.devices import resolve_device  # noqa: F401 (the one device resolver)
from convemerge.errors import ConfigError

#: Default memory budget of one block, in tensor elements (2**25 float64 elements = 256 MiB).
DEFAULT_BLOCK_ELEMENTS = 2**25

NORMALIZATIONS = ("max", "frobenius", "trace", "none")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Accept ``"float32"``/``"float64"`` (or the torch dtypes)."""
    table = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32,
             torch.float64: torch.float64}
    if dtype not in table:
        raise ConfigError(f"dtype={dtype!r} is not supported; use 'float32' or 'float64'")
    return table[dtype]


def to_tensor(X, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A fresh (owned, writable) tensor copy of array-like ``X``."""
    if isinstance(X, torch.Tensor):
        return X.detach().to(device=device, dtype=dtype).clone()
    return torch.from_numpy(np.array(X, dtype=np.float64 if dtype == torch.float64 else np.float32)).to(device)


def normalize_metric(M: torch.Tensor, how: str) -> torch.Tensor:
    """Rescale a metric so that it has the size of the identity it replaces, under the named norm.

    ``"max"``: largest eigenvalue 1 (i.e. divide by the spectral norm); ``"frobenius"``: ‖M‖_F = ‖I‖_F = √d;
    ``"trace"``: tr M = d; ``"none"``: unchanged. A zero metric is returned unchanged (nothing to scale).
    M may be a full (d, d) matrix or the diagonal (d,) of a diagonal one.
    """
    if how not in NORMALIZATIONS:
        raise ConfigError(f"normalize={how!r} is not one of {NORMALIZATIONS}")
    if how == "none":
        return M
    d = M.shape[0]
    if how == "max":
        size = M.max() if M.ndim == 1 else torch.linalg.eigvalsh(0.5 * (M + M.T))[-1]
        target = 1.0
    elif how == "frobenius":
        size = torch.linalg.vector_norm(M) if M.ndim == 1 else torch.linalg.matrix_norm(M)
        target = math.sqrt(d)
    else:
        size = M.sum() if M.ndim == 1 else torch.trace(M)
        target = float(d)
    size = float(size)
    if not math.isfinite(size) or size <= 0:
        return M
    return M * (target / size)


def rows_per_block(cols: int, per_pair: float, budget: int) -> int:
    """How many rows a block may hold when each (row, column) pair costs ``per_pair`` elements."""
    return max(1, int(budget // max(1.0, cols * per_pair)))


def identity_metric(d: int, diag: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.ones(d, dtype=dtype, device=device) if diag else torch.eye(d, dtype=dtype, device=device)
