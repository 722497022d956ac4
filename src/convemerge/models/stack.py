"""A plain feed-forward model assembled layer by layer while tracking the activation shape.

The S-, D-, FC and vanilla families are all stacks: ``layer{i}`` weight layers, each but the last followed
by ``norm{i}`` (BatchNorm) and ``relu{i}``, optional ``drop{i}`` before a linear layer, and one ``flatten``.
Names are fixed so that parameter groups, checkpoints and per-layer plots read the same in every family.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from convemerge.errors import ConfigError, GeometryError
from convemerge.layers import LocallyConnected2d
from convemerge.layers.local import output_size
from convemerge.models.base import ConvemergeModel, set_input_shape

__all__ = ["LayerStack", "StackBuilder", "check_dropout", "normal_init_"]


def check_dropout(rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ConfigError(f"dropout={rate!r} is invalid; give a rate in [0, 1)")
    return float(rate)


def normal_init_(model: ConvemergeModel, std, *, what: str = "init_std") -> ConvemergeModel:
    """Draw every weight of ``model``'s weight layers from N(0, std²) and zero their biases (in place; uses torch's
    global RNG like PyTorch's own initialisation, so the same seed gives the same net). ``std`` may arrive as text
    from the command line (``--opt init_std=5e-3`` is read as a string by YAML 1.1)."""
    try:
        value = float(std) if not isinstance(std, bool) else float("nan")
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{what}={std!r} is invalid; give a positive number (e.g. 0.005) or leave it unset")
    with torch.no_grad():
        for layer in model.weight_layers():
            nn.init.normal_(layer.module.weight, mean=0.0, std=value)
            if getattr(layer.module, "bias", None) is not None:
                nn.init.zeros_(layer.module.bias)
    return model


class LayerStack(ConvemergeModel):
    """Runs its children in registration order."""

    def __init__(self, layers: list[tuple[str, nn.Module]], *, input_shape, num_classes: int, alpha: int | None):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.alpha = alpha
        for name, module in layers:
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


class StackBuilder:
    """Appends layers to a list while tracking the activation shape (C, H, W) or (F,)."""

    def __init__(self, input_shape: tuple[int, int, int], model: str):
        self.shape: tuple[int, ...] = tuple(input_shape)
        self.model = model
        self.layers: list[tuple[str, nn.Module]] = []
        self.n = 0  # weight layers so far

    def _spatial(self, kind: str, out: int, k: int, stride: int, padding: int) -> tuple[int, int]:
        if len(self.shape) != 3:
            raise RuntimeError(f"{kind} layer after flatten in {self.model}")  # builder bug
        hw = output_size(self.shape[1:], k, stride, padding)
        if min(hw) < 1:
            raise GeometryError(
                f"{self.model}: a {k}x{k} {kind} layer does not fit a {self.shape[1]}x{self.shape[2]} map; "
                "use larger images or a smaller kernel"
            )
        return hw

    def conv(self, out: int, k: int, stride: int = 1, padding: int = 0, *, bias: bool) -> None:
        hw = self._spatial("conv", out, k, stride, padding)
        conv = nn.Conv2d(self.shape[0], out, k, stride=stride, padding=padding, bias=bias)
        self._add(set_input_shape(conv, self.shape), (out, *hw))

    def local(self, out: int, k: int, stride: int = 1, padding: int = 0, *, bias: bool) -> None:
        hw = self._spatial("local", out, k, stride, padding)
        self._add(LocallyConnected2d(self.shape[0], out, self.shape[1:], k, stride, padding, bias=bias), (out, *hw))

    def linear(self, out: int, *, bias: bool) -> None:
        if len(self.shape) != 1:
            self.flatten()
        self._add(nn.Linear(self.shape[0], out, bias=bias), (out,))

    def _add(self, module: nn.Module, shape: tuple[int, ...]) -> None:
        self.n += 1
        self.layers.append((f"layer{self.n}", module))
        self.shape = shape

    def flatten(self) -> None:
        self.layers.append(("flatten", nn.Flatten()))
        self.shape = (math.prod(self.shape),)

    def norm_relu(self, *, affine: bool = True) -> None:
        """BatchNorm (with a learned scale and shift unless ``affine=False``), then ReLU."""
        bn = nn.BatchNorm2d if len(self.shape) == 3 else nn.BatchNorm1d
        norm = bn(self.shape[0], affine=affine)
        self.layers += [(f"norm{self.n}", norm), (f"relu{self.n}", nn.ReLU())]

    def relu(self) -> None:
        self.layers.append((f"relu{self.n}", nn.ReLU()))

    def dropout(self, rate: float) -> None:
        """Dropout in front of the next weight layer (named after it); a rate of 0 adds nothing."""
        if rate > 0:
            if len(self.shape) != 1:
                self.flatten()
            self.layers.append((f"drop{self.n + 1}", nn.Dropout(rate)))

    def build(self, *, num_classes: int, alpha: int | None, input_shape) -> LayerStack:
        return LayerStack(self.layers, input_shape=input_shape, num_classes=num_classes, alpha=alpha)
