"""ResNet18, the paper's CIFAR variant: a k×k stride-1 stem, no max-pool, four stages of two BasicBlocks with
widths α·(1, 2, 4, 8) and strides (1, 2, 2, 2), global average pool, linear readout.

``kernel_size`` (odd, default 3; padding k//2) sets the kernel of the stem AND of every 3×3 convolution in
the residual blocks; the 1×1 shortcut projections stay 1×1. Fig. 5 asks whether β-LASSO can find small local
filters inside large kernels; enlarging the stem alone would change under 0.1% of the weights, so every
spatial kernel grows (see docs/models.md).

Weights: 298·k²·α² + 42·α² + k²·c_in·α + 8·c·α (α = 64, k = 3, c_in = 3, c = 10: 11,164,352).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from convemerge.errors import ConfigError
from convemerge.layers.local import output_size
from convemerge.models.base import ConvemergeModel, set_input_shape
from convemerge.models.registry import register_model
from convemerge.models.stack import check_dropout

__all__ = ["BasicBlock", "ResNet18", "resnet18"]


def _conv(in_shape, out: int, k: int, stride: int) -> tuple[nn.Conv2d, tuple[int, int, int] | int]:
    """A bias-free k×k conv with "same" padding and what it outputs: (C, H, W) when ``in_shape`` is one (recorded
    on the conv), else just the channel count."""
    if isinstance(in_shape, int):
        return nn.Conv2d(in_shape, out, k, stride=stride, padding=k // 2, bias=False), out
    conv = set_input_shape(nn.Conv2d(in_shape[0], out, k, stride=stride, padding=k // 2, bias=False), in_shape)
    return conv, (out, *output_size(in_shape[1:], k, stride, k // 2))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity (or a 1×1 conv + BN projection), then ReLU: the one residual block
    of the package (the paper's ResNet18 here, torchvision's layout in :mod:`convemerge.models.imagenet`).

    ``in_shape``: the (C, H, W) the block sees (its convs then record their input geometry), or just C.
    ``shortcut``: the attribute holding the projection — ``"shortcut"`` (an empty ``nn.Sequential`` when there is
    none; this package's checkpoints) or ``"downsample"`` (None when there is none; torchvision's weights).
    """

    def __init__(self, in_shape: tuple[int, int, int] | int, planes: int, stride: int = 1, k: int = 3, *,
                 shortcut: str = "shortcut"):
        super().__init__()
        if shortcut not in ("shortcut", "downsample"):
            raise ValueError(f"shortcut={shortcut!r}: choose 'shortcut' or 'downsample'")
        self._shortcut = shortcut
        in_chans = in_shape if isinstance(in_shape, int) else in_shape[0]
        self.conv1, mid = _conv(in_shape, planes, k, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2, self.out_shape = _conv(mid, planes, k, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        proj = None
        if stride != 1 or in_chans != planes:
            proj = nn.Sequential(_conv(in_shape, planes, 1, stride)[0], nn.BatchNorm2d(planes))
        setattr(self, shortcut, proj if proj is not None or shortcut == "downsample" else nn.Sequential())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = getattr(self, self._shortcut)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if proj is None else proj(x)))


class ResNet18(ConvemergeModel):
    """See the module docstring."""

    def __init__(self, *, alpha: int, image_size: tuple[int, int], in_chans: int, num_classes: int,
                 kernel_size: int = 3, dropout: float = 0.0):
        super().__init__()
        self.input_shape, self.num_classes, self.alpha = (in_chans, *image_size), num_classes, alpha
        self.kernel_size = kernel_size
        self.conv1, shape = _conv(self.input_shape, alpha, kernel_size, 1)
        self.bn1 = nn.BatchNorm2d(alpha)
        for i, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2)), start=1):
            first = BasicBlock(shape, mult * alpha, stride, kernel_size)
            second = BasicBlock(first.out_shape, mult * alpha, 1, kernel_size)
            shape = second.out_shape
            self.add_module(f"layer{i}", nn.Sequential(first, second))
        rate = check_dropout(dropout)
        self.drop = nn.Dropout(rate) if rate > 0 else nn.Identity()
        self.fc = nn.Linear(8 * alpha, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.drop(x))


@register_model
def resnet18(*, alpha: int = 64, image_size, in_chans, num_classes, kernel_size: int = 3,
             dropout: float = 0.0) -> ResNet18:
    """ResNet18 (paper variant): α = 64 is the standard width; ``kernel_size`` for Fig. 5 (3, 7, 11, 15)."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"resnet18 kernel_size={kernel_size!r} is invalid; give an odd positive integer (3, 7, 11, 15)")
    return ResNet18(alpha=alpha, image_size=image_size, in_chans=in_chans, num_classes=num_classes,
                    kernel_size=kernel_size, dropout=dropout)
