"""The shallow family (Neyshabur 2020, Table 3): S-CONV, S-LOCAL, S-FC.

    S-CONV   conv 9×9, α ch, stride 2, pad 4 → flatten (α·s²/4) → linear 24α → linear c
    S-LOCAL  the same with a locally connected first layer (one 9×9 filter per output position)
    S-FC     linear c_in·s² → α·s²/4 → linear 24α → linear c

BatchNorm then ReLU after every layer but the last; optional dropout before the two linear layers. Hidden layers
have no bias by default (BatchNorm's shift plays its part); the output layer has one. ``norm_affine=False`` and
``out_bias=False`` give the student reproduction's nets (gojkoc54/convolutions_from_scratch, ``src/models.py``):
BatchNorm without a learned scale or shift and no bias anywhere.
Weights (H×W images, HW = H·W; the paper's s² with c_in = 3):

    S-CONV   81·c_in·α + 6·HW·α² + 24·c·α
    S-LOCAL  81·c_in·α·HW/4 + 6·HW·α² + 24·c·α
    S-FC     c_in·HW²·α/4 + 6·HW·α² + 24·c·α
"""

from __future__ import annotations

from convemerge.errors import ConfigError, GeometryError
from convemerge.models.registry import register_model
from convemerge.models.stack import LayerStack, StackBuilder, check_dropout

__all__ = ["s_conv", "s_fc", "s_local", "shallow_model"]

PAPER_ALPHA = 150  # Table 1: 138M / 147M / 256M weights at s = 32, c = 10


def shallow_model(kind: str, *, alpha: int, image_size: tuple[int, int], in_chans: int, num_classes: int,
                  dropout: float = 0.0, hidden_bias: bool = False, norm_affine: bool = True,
                  out_bias: bool = True) -> LayerStack:
    """Build S-CONV (``kind="conv"``), S-LOCAL (``"local"``) or S-FC (``"fc"``)."""
    name = f"s-{kind}"
    h, w = image_size
    if h % 2 or w % 2:
        raise GeometryError(f"{name} needs an even image side (stride 2 halves it), got {h}x{w}; pad the images")
    rate = check_dropout(dropout)
    b = StackBuilder((in_chans, h, w), name)
    if kind == "conv":
        b.conv(alpha, 9, stride=2, padding=4, bias=hidden_bias)
    elif kind == "local":
        b.local(alpha, 9, stride=2, padding=4, bias=hidden_bias)
    else:
        b.linear(alpha * h * w // 4, bias=hidden_bias)
    b.norm_relu(affine=norm_affine)
    b.dropout(rate)
    b.linear(24 * alpha, bias=hidden_bias)
    b.norm_relu(affine=norm_affine)
    b.dropout(rate)
    b.linear(num_classes, bias=out_bias)
    return b.build(num_classes=num_classes, alpha=alpha, input_shape=(in_chans, h, w))


@register_model
def s_conv(*, alpha: int = PAPER_ALPHA, image_size, in_chans, num_classes, dropout: float = 0.0,
           hidden_bias: bool = False, norm_affine: bool = True, out_bias: bool = True) -> LayerStack:
    """S-CONV: one 9×9 stride-2 convolution, then two linear layers."""
    return shallow_model("conv", alpha=alpha, image_size=image_size, in_chans=in_chans, num_classes=num_classes,
                         dropout=dropout, hidden_bias=hidden_bias, norm_affine=norm_affine,
                         out_bias=out_bias)


@register_model
def s_local(*, alpha: int = PAPER_ALPHA, image_size, in_chans, num_classes, dropout: float = 0.0,
            hidden_bias: bool = False, norm_affine: bool = True, out_bias: bool = True) -> LayerStack:
    """S-LOCAL: S-CONV with a locally connected first layer."""
    return shallow_model("local", alpha=alpha, image_size=image_size, in_chans=in_chans, num_classes=num_classes,
                         dropout=dropout, hidden_bias=hidden_bias, norm_affine=norm_affine,
                         out_bias=out_bias)


@register_model
def s_fc(*, alpha: int = PAPER_ALPHA, image_size, in_chans, num_classes, dropout: float = 0.0,
         hidden_bias: bool = False, norm_affine: bool = True, out_bias: bool = True) -> LayerStack:
    """S-FC: S-CONV with a fully connected first layer of the same width α·s²/4."""
    return shallow_model("fc", alpha=alpha, image_size=image_size, in_chans=in_chans, num_classes=num_classes,
                         dropout=dropout, hidden_bias=hidden_bias, norm_affine=norm_affine,
                         out_bias=out_bias)
