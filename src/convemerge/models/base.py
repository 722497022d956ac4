"""What every convemerge model shares: its weight layers with their input geometry, first-layer filters as
images, and the weight count the paper's tables use (conv / local / linear weights; no biases, no norms)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from convemerge.layers import LocallyConnected2d

__all__ = ["ConvemergeModel", "WeightLayer", "count_weights", "layer_kind", "nonzero_per_layer", "set_input_shape",
           "weight_layers", "weights_per_layer"]

_IN_SHAPE = "_convemerge_in_shape"  # attribute the model builders set on each nn.Conv2d


@dataclass(frozen=True)
class WeightLayer:
    """A conv / locally connected / linear layer of a model, with the geometry of what it sees."""

    name: str  # as in model.named_modules()
    module: nn.Module
    kind: str  # "conv" | "local" | "linear"
    in_shape: tuple[int, ...]  # (C, H, W) for conv/local, (F,) for linear; () when unknown (a plain nn.Module)
    kernel_size: int | None  # None for linear
    stride: int | None
    padding: int | None


def layer_kind(module: nn.Module) -> str | None:
    """"conv", "local" or "linear" for a weight layer this package counts, else None.

    Weight layers are ``nn.Linear``, every (non-transposed) convolution ``nn.Conv1d/2d/3d`` and
    :class:`~convemerge.layers.LocallyConnected2d` (or a module with its layout); norms, embeddings and
    transposed convolutions are not.
    """
    if isinstance(module, LocallyConnected2d) or _local_contract(module):
        return "local"
    if isinstance(module, nn.modules.conv._ConvNd):
        return None if module.transposed else "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    return None


def _local_contract(module: nn.Module) -> bool:
    """Any module laid out like LocallyConnected2d (weight (L, out, C·k·k), kernel_size/stride/padding/in_size)."""
    w = getattr(module, "weight", None)
    return (isinstance(w, torch.Tensor) and w.dim() == 3
            and all(hasattr(module, a) for a in ("kernel_size", "stride", "padding", "in_size")))


def set_input_shape(conv: nn.Conv2d, in_shape: tuple[int, int, int]) -> nn.Conv2d:
    """Record the (C, H, W) a conv layer sees; builders call this so ``weight_layers()`` needs no forward pass."""
    setattr(conv, _IN_SHAPE, tuple(int(v) for v in in_shape))
    return conv


def _square(v) -> int:
    v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    return int(v[0]) if len(set(v)) == 1 else v  # type: ignore[return-value]


def _describe(name: str, module: nn.Module) -> WeightLayer:
    kind = layer_kind(module)
    if kind == "linear":
        return WeightLayer(name, module, kind, (module.in_features,), None, None, None)
    if kind == "local":
        in_shape = (module.in_channels, *module.in_size)
    else:
        in_shape = getattr(module, _IN_SHAPE, None)
        if in_shape is None:
            raise RuntimeError(f"conv layer {name!r} has no recorded input shape (builder bug: call set_input_shape)")
    return WeightLayer(name, module, kind, tuple(in_shape), _square(module.kernel_size), _square(module.stride),
                       _square(module.padding))


class ConvemergeModel(nn.Module):
    """Base of the registered models: ``weight_layers()``, ``first_layer_filters()``, ``count_weights()``.

    Subclasses set ``input_shape`` (C, H, W), ``num_classes`` and ``alpha`` (their width parameter, or None),
    build their layers in forward order and call :func:`set_input_shape` on every ``nn.Conv2d``.
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    alpha: int | None

    def weight_layers(self) -> list[WeightLayer]:
        """Conv / locally connected / linear layers in module-registration order (input → output)."""
        return [_describe(n, m) for n, m in self.named_modules() if layer_kind(m) is not None]

    def count_weights(self) -> int:
        return count_weights(self)

    def first_layer_filters(self, units: torch.Tensor | None = None) -> torch.Tensor:
        """Each first-layer unit's incoming weights as an image, detached, ``(units, C, H', W')``.

        conv: ``(out, C, k, k)``; linear on the image: ``(out, C, H, W)`` (a view of the weight — do not
        modify); locally connected: every (position, out-channel) unit's filter embedded at its receptive
        field in a zero ``(C, H, W)`` image, unit ``u = position·out + channel`` — so S-LOCAL and S-FC units
        compare directly. ``units`` (1-d index) selects a subset, which avoids materialising every locally
        connected unit at paper scale.
        """
        first = self.weight_layers()[0]
        w = first.module.weight.detach()
        if first.kind == "local":
            return first.module.filters_as_images(units)
        if first.kind == "linear":
            w = w.reshape(w.shape[0], *self.input_shape)
        return w if units is None else w[units.to(w.device).long()]


def weight_layers(model: nn.Module) -> list[WeightLayer]:
    """The weight layers of any model, input -> output: ``model.weight_layers()`` when the model declares them
    (every convemerge model does, with the geometry each layer sees), else every module :func:`layer_kind` accepts, in registration order (geometry
    unknown: ``in_shape == ()``). The one answer to "which modules are weight layers": parameter counts,
    sparsity, AGOPs and optimizer parameter groups all ask here.

    >>> net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(8, 3))
    >>> [(layer.name, layer.kind) for layer in weight_layers(net)]
    [('0', 'conv'), ('3', 'linear')]
    """
    if callable(getattr(model, "weight_layers", None)):  # a convemerge model, or any model that declares them
        return list(model.weight_layers())
    out = []
    for name, module in model.named_modules():
        kind = layer_kind(module)
        if kind is None:
            continue
        if kind == "linear":
            out.append(WeightLayer(name, module, kind, (module.in_features,), None, None, None))
        elif kind == "local":
            size = module.in_size if isinstance(module.in_size, (tuple, list)) else (module.in_size,) * 2
            in_shape = (module.in_channels, *size) if hasattr(module, "in_channels") else ()
            out.append(WeightLayer(name, module, kind, tuple(in_shape), _square(module.kernel_size),
                                   _square(module.stride), _square(module.padding)))
        else:
            in_shape = getattr(module, _IN_SHAPE, ())
            out.append(WeightLayer(name, module, kind, tuple(in_shape), _square(module.kernel_size),
                                   _square(module.stride), _square(module.padding)))
    return out


def count_weights(model: nn.Module) -> int:
    """Number of conv / locally connected / linear weights (biases and norm parameters excluded).

    Works on models built on the meta device: ``with torch.device("meta"): m = create_model(...)``.
    """
    return sum(layer.module.weight.numel() for layer in weight_layers(model))


def weights_per_layer(model: nn.Module) -> dict[str, int]:
    """Number of weights of each weight layer, keyed by module name."""
    return {layer.name: layer.module.weight.numel() for layer in weight_layers(model)}


@torch.no_grad()
def nonzero_per_layer(model: nn.Module) -> dict[str, int]:
    """Number of non-zero weights of each weight layer (biases and norms excluded), keyed by module name."""
    return {layer.name: int(torch.count_nonzero(layer.module.weight).item()) for layer in weight_layers(model)}
