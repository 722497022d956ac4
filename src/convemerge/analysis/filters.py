"""Eigenvectors of a patch-AGOP / filter covariance shown as filters (c×q×q) or as input-shaped images.

The top eigenvectors of the first layer's patch-AGOP of an image model look like oriented edge detectors,
as do those of WᵀW when the (convolutional) neural feature ansatz holds. For a fully connected first layer
(S-FC) the AGOP is taken over the flattened image, so its eigenvectors are whole images.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from convemerge.analysis.agop import filter_covariance, find_weight_layers, layer_agop, resolve_layer
from convemerge.errors import ConfigError

__all__ = ["eigenfilters", "input_agop_eigenimages", "patch_shape", "top_eigenvectors"]


def top_eigenvectors(m: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest eigenvalues (descending) and eigenvectors as rows (k, d) of a symmetric matrix.

    The sign of each eigenvector is fixed so that its largest-magnitude entry is positive (deterministic
    pictures; an eigenvector's sign is arbitrary).
    """
    m = m.detach().double()
    evals, evecs = torch.linalg.eigh(0.5 * (m + m.T))
    k = min(k, m.shape[0])
    evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k].T.contiguous()
    peak = evecs.gather(1, evecs.abs().argmax(1, keepdim=True))
    return evals, evecs * torch.where(peak < 0, -1.0, 1.0).to(evecs.dtype)


def patch_shape(module: nn.Module) -> tuple[int, ...]:
    """(c, q, q) of a conv / locally connected layer's input patch, (in_features,) for a linear layer."""
    w = module.weight
    if isinstance(module, nn.Linear):
        return (w.shape[1],)
    if w.dim() == 3:  # locally connected: (L, out, c·k·k)
        ks = module.kernel_size
        kh, kw = (ks, ks) if isinstance(ks, int) else tuple(ks)
        return (w.shape[-1] // (kh * kw), kh, kw)
    return tuple(w.shape[1:])


def eigenfilters(m: torch.Tensor, shape: tuple[int, ...], k: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k eigenvalues and eigenvectors of m reshaped to ``(k, *shape)`` (e.g. (k, c, q, q))."""
    if math.prod(shape) != m.shape[0]:
        raise ConfigError(f"shape {tuple(shape)} has {math.prod(shape)} entries but the matrix is {m.shape[0]} wide")
    evals, evecs = top_eigenvectors(m, k)
    return evals, evecs.reshape(evecs.shape[0], *shape)


def input_agop_eigenimages(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer_name: str | None = None,
    k: int = 8,
    **agop_options,
) -> dict[str, torch.Tensor]:
    """AGOP w.r.t. a fully connected first layer's input (the flattened image) and its top eigenvectors as
    images of the input's shape, next to those of WᵀW.

    ``layer_name`` defaults to the model's first weight layer; it must be a Linear layer whose in_features
    equal the number of entries of one input image. Returns ``{"agop", "wtw", "agop_evals", "agop_images",
    "wtw_evals", "wtw_images"}`` with images of shape ``(k, *x.shape[1:])``.
    """
    name = layer_name if layer_name is not None else find_weight_layers(model)[0].name
    layer = resolve_layer(model, name)
    image_shape = tuple(x.shape[1:])
    if layer.kind != "linear" or layer.in_dim != math.prod(image_shape):
        raise ConfigError(
            f"layer {name!r} is not a linear layer over the flattened {image_shape} input; pass layer_name= "
            "of such a layer (e.g. the first layer of an S-FC model)"
        )
    agop = layer_agop(model, name, x, **agop_options)
    wtw = filter_covariance(layer.module)
    a_evals, a_images = eigenfilters(agop, image_shape, k)
    w_evals, w_images = eigenfilters(wtw, image_shape, k)
    return {
        "agop": agop,
        "wtw": wtw,
        "agop_evals": a_evals,
        "agop_images": a_images,
        "wtw_evals": w_evals,
        "wtw_images": w_images,
    }
