"""What every convemerge model shares: its weight layers with their input geometry, first-layer filters as
images, and the weight count the paper's tables use (conv / local / linear weights; no biases, no norms)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from convemerge.layers import LocallyConnected2d

__all__ = ["ConvemergeModel", "WeightLayer", "count_weights", "layer_kind", "set_input_shape"]

_IN_SHAPE = "_convemerge_in_shape"  # attribute the model builders set on each nn.Conv2d


@dataclass(frozen=True)
class WeightLayer:
    """A conv / locally connected / linear layer of a model, with the geometry of what it sees."""

    name: str  # as in model.named_modules()
    module: nn.Module
    kind: str  # "conv" | "local" | "linear"
    in_shape: tuple[int, ...]  # (C, H, W) for conv/local, (F,) for linear
    kernel_size: int | None  # None for linear
    stride: int | None
    padding: int | None


def layer_kind(module: nn.Module) -> str | None:
    """"conv", "local" or "linear" for a weight layer this package counts, else None."""
    if isinstance(module, LocallyConnected2d):
        return "local"
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    return None


def set_input_shape(conv: nn.Conv2d, in_shape: tuple[int, int, int]) -> nn.Conv2d:
    """Record the (C, H, W) a conv layer sees; builders call this so ``weight_layers()`` needs no forward pass."""
    setattr(conv, _IN_SHAPE, tuple(int(v) for v in in_shape))
    return conv


def _square(v) -> int:
    v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return int(v[0]) if v[0] == v[1] else v  # type: ignore[return-value]


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


def count_weights(model: nn.Module) -> int:
    """Number of conv / locally connected / linear weights (biases and norm parameters excluded).

    Works on models built on the meta device: ``with torch.device("meta"): m = create_model(...)``.
    """
    if isinstance(model, ConvemergeModel):
        return sum(layer.module.weight.numel() for layer in model.weight_layers())
    return sum(m.weight.numel() for m in model.modules() if layer_kind(m) is not None)
