"""The vanilla convolutional network of the feature-learning experiments: depth × [conv q×q, ReLU], no pooling,
no normalisation, then a linear readout on the flattened last map.

Options: ``depth`` (conv layers, default 3), ``width`` (channels, default 64; ``alpha`` is accepted as its
synonym), ``kernel_size`` q (default 3), ``padding`` (default q//2, i.e. "same" for odd q; 0 gives "valid"),
``bias`` (conv and readout biases, default True as in PyTorch), ``init_std`` (every conv and readout weight drawn
N(0, init_std²) and biases set to 0, as in the authors' CNFA nets: ``init_std=0.005``; None keeps PyTorch's default
initialisation). Weights: q²·c_in·w + (depth−1)·q²·w² + w·H'W'·c.
"""

from __future__ import annotations

from convemerge.errors import ConfigError
from convemerge.models.registry import register_model
from convemerge.models.stack import LayerStack, StackBuilder, check_dropout, normal_init_

__all__ = ["vanilla_cnn"]


def _positive(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"vanilla-cnn {what}={value!r} is invalid; give an integer >= {minimum}")
    return value


@register_model
def vanilla_cnn(*, alpha: int | None = None, image_size, in_chans, num_classes, depth: int = 3,
                width: int | None = None, kernel_size: int = 3, padding: int | None = None, bias: bool = True,
                init_std: float | None = None, dropout: float = 0.0) -> LayerStack:
    """depth × [conv, ReLU] → flatten → linear. ``alpha`` (if given) is the width; give it or ``width``."""
    if alpha is not None and width is not None:
        raise ConfigError("vanilla-cnn takes alpha or width (the same thing), not both; drop one")
    width = _positive(alpha if alpha is not None else (64 if width is None else width), "width")
    depth = _positive(depth, "depth")
    k = _positive(kernel_size, "kernel_size")
    pad = k // 2 if padding is None else _positive(padding, "padding", 0)
    rate = check_dropout(dropout)
    if not isinstance(bias, bool):
        raise ConfigError(f"vanilla-cnn bias={bias!r} is invalid; give true or false")
    b = StackBuilder((in_chans, *image_size), "vanilla-cnn")
    for _ in range(depth):
        b.conv(width, k, stride=1, padding=pad, bias=bias)
        b.relu()
    b.dropout(rate)
    b.linear(num_classes, bias=bias)
    model = b.build(num_classes=num_classes, alpha=alpha, input_shape=(in_chans, *image_size))
    if init_std is not None:
        normal_init_(model, init_std, what="vanilla-cnn init_std")
    return model
