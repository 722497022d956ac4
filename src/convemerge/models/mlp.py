"""3-FC: two equal hidden linear layers (BatchNorm + ReLU), width chosen for a parameter budget.

Weights: c_in·HW·w + w² + w·c for width w. The width comes from exactly one of

* ``width``          — given directly;
* ``target_params``  — the integer w whose weight count is closest to the target (w² + (c_in·HW + c)·w = target);
* ``alpha``          — (default, α = 150) the target is S-FC's weight count at the same α and geometry, so a
                       3-FC at α is the parameter-matched fully connected baseline of S-FC at α (at α = 150,
                       s = 32, c = 10: w = 14,541 and 256.3M weights against S-FC's 256.2M; Table 1: 256M).
"""

from __future__ import annotations

import math

from convemerge.errors import ConfigError
from convemerge.models.registry import register_model
from convemerge.models.stack import LayerStack, StackBuilder, check_dropout

__all__ = ["mlp_width", "s_fc_weights", "three_fc"]

PAPER_ALPHA = 150


def s_fc_weights(alpha: int, image_size: tuple[int, int], in_chans: int, num_classes: int) -> int:
    """S-FC's weight count: c_in·HW²·α/4 + 6·HW·α² + 24·c·α (even sides)."""
    hw = image_size[0] * image_size[1]
    return in_chans * hw * (alpha * hw // 4) + (alpha * hw // 4) * 24 * alpha + 24 * alpha * num_classes


def mlp_width(target_params: int, in_features: int, num_classes: int) -> int:
    """The width w ≥ 1 whose 3-FC weight count w² + (in_features + c)·w is closest to ``target_params``."""
    lin = in_features + num_classes
    root = (-lin + math.sqrt(lin * lin + 4.0 * target_params)) / 2.0
    candidates = {max(1, math.floor(root) + d) for d in (-1, 0, 1, 2)}
    return min(candidates, key=lambda w: (abs(w * w + lin * w - target_params), w))


@register_model("3-fc")
def three_fc(*, alpha: int | None = None, image_size, in_chans, num_classes, width: int | None = None,
             target_params: int | None = None, dropout: float = 0.0, hidden_bias: bool = False,
             norm_affine: bool = True, out_bias: bool = True) -> LayerStack:
    """3-FC: linear → w, linear w → w, linear w → c. Give one of α (default 150), ``width``, ``target_params``.
    ``norm_affine`` / ``out_bias``: BatchNorm's learned scale and shift, the output layer's bias (as in S-FC)."""
    h, w_img = image_size
    in_features = in_chans * h * w_img
    if sum(v is not None for v in (alpha, width, target_params)) > 1:
        raise ConfigError("3-fc takes one of alpha, width, target_params; drop the others")
    if width is not None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ConfigError(f"3-fc width={width!r} is invalid; give a positive integer")
        hidden = width
    elif target_params is not None:
        if isinstance(target_params, bool) or not isinstance(target_params, int) or target_params < 1:
            raise ConfigError(f"3-fc target_params={target_params!r} is invalid; give a positive integer")
        hidden = mlp_width(target_params, in_features, num_classes)
    else:
        alpha = PAPER_ALPHA if alpha is None else alpha
        if h % 2 or w_img % 2:
            raise ConfigError(
                f"3-fc matches S-FC's count at alpha, which needs an even image side, got {h}x{w_img}; "
                "give width or target_params instead"
            )
        hidden = mlp_width(s_fc_weights(alpha, image_size, in_chans, num_classes), in_features, num_classes)
    rate = check_dropout(dropout)
    b = StackBuilder((in_chans, h, w_img), "3-fc")
    b.linear(hidden, bias=hidden_bias)
    b.norm_relu(affine=norm_affine)
    b.dropout(rate)
    b.linear(hidden, bias=hidden_bias)
    b.norm_relu(affine=norm_affine)
    b.dropout(rate)
    b.linear(num_classes, bias=out_bias)
    model = b.build(num_classes=num_classes, alpha=alpha, input_shape=(in_chans, h, w_img))
    model.width = hidden
    return model
