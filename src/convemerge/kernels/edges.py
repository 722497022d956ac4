"""What a learned patch metric M detects: its top eigenvectors as c×q×q patches, and ‖M^{1/2} x_p‖ maps.

Both functions return tensors (plots are in :mod:`convemerge.kernels.plots`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convemerge.errors import ConfigError


def metric_eigenpatches(M: torch.Tensor, patch_shape: tuple[int, int, int], k: int = 8):
    """Top-``k`` eigenpairs of the symmetric metric M (c·q·q square), eigenvectors reshaped to ``patch_shape``.

    Returns ``(eigenvalues (k,), patches (k, c, q, q))`` in decreasing order of eigenvalue; each eigenvector's
    sign is fixed so that its largest-magnitude entry is positive (eigenvectors are defined up to sign).
    """
    M = torch.as_tensor(M)
    c, q1, q2 = patch_shape
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] != c * q1 * q2:
        raise ConfigError(f"M of shape {tuple(M.shape)} is not the square metric of {patch_shape} patches")
    vals, vecs = torch.linalg.eigh(0.5 * (M + M.T))
    vals, vecs = vals.flip(0)[:k], vecs.flip(1)[:, :k]
    idx = vecs.abs().argmax(0)
    signs = torch.sign(vecs[idx, torch.arange(vecs.shape[1])])
    signs[signs == 0] = 1
    vecs = vecs * signs
    return vals, vecs.T.reshape(-1, c, q1, q2)


def patch_norm_map(M: torch.Tensor, images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``‖M^{1/2} x_p‖ = √(x_pᵀ M x_p)`` at every position p ('same' zero padding).

    images: (C, H, W) or (n, C, H, W); returns (H, W) or (n, H, W).
    """
    M = torch.as_tensor(M)
    x = torch.as_tensor(images)
    single = x.ndim == 3
    if single:
        x = x.unsqueeze(0)
    n, C, H, W = x.shape
    if M.shape[0] != C * patch_size**2:
        raise ConfigError(f"M of size {M.shape[0]} does not fit {C}-channel {patch_size}×{patch_size} patches")
    U = F.unfold(x.to(M.dtype), patch_size, padding=patch_size // 2).transpose(1, 2)  # (n, P, d)
    UM = U * M if M.ndim == 1 else U @ M
    out = (UM * U).sum(-1).clamp(min=0).sqrt().reshape(n, H, W)
    return out[0] if single else out
