"""The deep family (Neyshabur 2020, Table 3): D-CONV, D-LOCAL, D-FC.

    D-CONV   8 conv 3×3 (pad 1), (channels, stride): (α,1) (2α,2) (2α,1) (4α,2) (4α,1) (8α,2) (8α,1) (16α,2)
             → flatten 16α·HW/256 → linear 64α → linear c
    D-LOCAL  the same with every conv locally connected (a separate 3×3 filter per output position)
    D-FC     linear widths HW·α, HW·α/2, HW·α/2, HW·α/4, HW·α/4, HW·α/8, HW·α/8, HW·α/16, 64α, c — the
             fully connected twin of D-CONV's activation sizes

BatchNorm then ReLU after every layer but the last; optional dropout before the last two linear layers.
Weights (HW = H·W, the paper's s²):

    D-CONV   2286·α² + 4·HW·α² + (9·c_in + 64·c)·α
    D-LOCAL  49·HW·α² + (9·c_in·HW + 64·c)·α       (the paper's Table 3 prints ≈ 13·s²α²; see docs/models.md)
    D-FC     (127/128)·HW²·α² + 4·HW·α² + (c_in·HW² + 64·c)·α
"""

from __future__ import annotations

from convemerge.errors import ConfigError, GeometryError
from convemerge.models.registry import register_model
from convemerge.models.stack import LayerStack, StackBuilder, check_dropout

__all__ = ["D_STAGES", "d_conv", "d_fc", "d_local", "deep_model"]

PAPER_ALPHA = 15  # Table 1: D-CONV 1.45M weights at s = 32, c = 10
D_STAGES = ((1, 1), (2, 2), (2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2))  # (channels / α, stride)


def deep_model(kind: str, *, alpha: int, image_size: tuple[int, int], in_chans: int, num_classes: int,
               dropout: float = 0.0, hidden_bias: bool = False) -> LayerStack:
    """Build D-CONV (``kind="conv"``), D-LOCAL (``"local"``) or D-FC (``"fc"``)."""
    name = f"d-{kind}"
    h, w = image_size
    if h % 16 or w % 16:
        raise GeometryError(
            f"{name} needs an image side divisible by 16 (four stride-2 layers), got {h}x{w}; pad the images"
        )
    rate = check_dropout(dropout)
    b = StackBuilder((in_chans, h, w), name)
    scale = 1  # how much the side has shrunk so far
    for mult, stride in D_STAGES:
        scale *= stride
        if kind == "conv":
            b.conv(mult * alpha, 3, stride=stride, padding=1, bias=hidden_bias)
        elif kind == "local":
            b.local(mult * alpha, 3, stride=stride, padding=1, bias=hidden_bias)
        else:  # as many units as D-CONV has activations here
            b.linear(mult * alpha * (h // scale) * (w // scale), bias=hidden_bias)
        b.norm_relu()
    b.dropout(rate)
    b.linear(64 * alpha, bias=hidden_bias)
    b.norm_relu()
    b.dropout(rate)
    b.linear(num_classes, bias=True)
    return b.build(num_classes=num_classes, alpha=alpha, input_shape=(in_chans, h, w))


@register_model
def d_conv(*, alpha: int = PAPER_ALPHA, image_size, in_chans, num_classes, dropout: float = 0.0,
           hidden_bias: bool = False) -> LayerStack:
    """D-CONV: eight 3×3 convolutions (four of stride 2), then two linear layers."""
    return deep_model("conv", alpha=alpha, image_size=image_size, in_chans=in_chans, num_classes=num_classes,
                      dropout=dropout, hidden_bias=hidden_bias)


@register_model
def d_local(*, alpha: int = PAPER_ALPHA, image_size, in_chans, num_classes, dropout: float = 0.0,
            hidden_bias: bool = False) -> LayerStack:
    """D-LOCAL: D-CONV with every convolution locally connected."""
    return deep_model("local", alpha=alpha, image_size=image_size, in_chans=in_chans, num_classes=num_classes,
                      dropout=dropout, hidden_bias=hidden_bias)


@register_model
def d_fc(*, alpha: int = PAPER_ALPHA, image_size, in_chans, num_classes, dropout: float = 0.0,
         hidden_bias: bool = False) -> LayerStack:
    """D-FC: ten linear layers whose widths follow D-CONV's activation sizes."""
    return deep_model("fc", alpha=alpha, image_size=image_size, in_chans=in_chans, num_classes=num_classes,
                      dropout=dropout, hidden_bias=hidden_bias)
