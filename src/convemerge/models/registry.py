"""Model registry in timm's manner: ``@register_model`` on a builder, ``create_model(name, ...)``, ``list_models()``.

A builder is a function ``fn(*, alpha, image_size, in_chans, num_classes, **options) -> ConvemergeModel``;
its keyword defaults are the model's defaults (``alpha``'s default is the paper's width for that family) and
its keyword-only parameters are the options ``create_model`` accepts. ``image_size`` reaches the builder as
an ``(H, W)`` pair.

``alpha`` has one meaning for every family: the paper's size parameter α, the number of channels of the
family's first layer (S-CONV / S-LOCAL / D-* / ResNet18: base channel count; S-FC: the same α, read as the
channels of the S-CONV it mimics; vanilla-cnn: its channel count, also spelled ``width``). 3-FC has no channels:
at α it gets the hidden width whose weight count matches S-FC at the same α (``width`` / ``target_params`` set
the size directly instead). ``alpha=None`` is the family's paper default; families without α ignore it.

Example::

    >>> from convemerge.models import create_model, count_weights
    >>> m = create_model("s-conv", alpha=4, image_size=32, in_chans=3, num_classes=10)
    >>> count_weights(m)
    100236
"""

from __future__ import annotations

import inspect
from typing import Callable

from convemerge.errors import ConfigError

__all__ = ["create_model", "list_models", "model_defaults", "model_options", "register_model"]

_REGISTRY: dict[str, Callable] = {}
_FIXED = ("alpha", "image_size", "in_chans", "num_classes")


def register_model(fn_or_name: Callable | str):
    """Register a builder under its function name with ``_`` → ``-`` or, as ``@register_model("3-fc")``,
    under an explicit name."""

    def add(fn: Callable, name: str) -> Callable:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    if isinstance(fn_or_name, str):
        return lambda fn: add(fn, fn_or_name)
    return add(fn_or_name, fn_or_name.__name__.replace("_", "-"))


def list_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def _builder(name: str) -> Callable:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def model_options(name: str) -> dict[str, object]:
    """The options a model accepts besides alpha/geometry, with their defaults."""
    params = inspect.signature(_builder(name)).parameters
    return {k: p.default for k, p in params.items() if k not in _FIXED}


def model_defaults(name: str) -> dict[str, object]:
    """Every keyword default of a model's builder, ``alpha`` included (None: the family has no α)."""
    params = inspect.signature(_builder(name)).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what}={value!r} is invalid; give a positive integer")
    return int(value)


def _image_size(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (_positive_int(value[0], "image_size"), _positive_int(value[1], "image_size"))
    side = _positive_int(value, "image_size")
    return (side, side)


def create_model(name: str, *, alpha: int | None = None, image_size=None, in_chans: int | None = None,
                 num_classes: int | None = None, **options):
    """Build a registered model on the current default device.

    ``alpha=None`` takes the model's default width; ``image_size`` is a side or an ``(H, W)`` pair. Unknown
    names, options and impossible geometry raise a one-line :class:`~convemerge.errors.ConfigError`. Build
    on the meta device to count weights without memory: ``with torch.device("meta"): create_model(...)``.
    """
    fn = _builder(name)
    missing = [k for k, v in (("image_size", image_size), ("in_chans", in_chans), ("num_classes", num_classes))
               if v is None]
    if missing:
        raise ConfigError(f"create_model({name!r}) needs {', '.join(missing)} (the input geometry), e.g. "
                          f"create_model({name!r}, image_size=28, in_chans=1, num_classes=10)")
    allowed = model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) or "none"
        raise ConfigError(f"model {name!r} has no option {', '.join(unknown)}; valid options: {valid}")
    kwargs = dict(image_size=_image_size(image_size), in_chans=_positive_int(in_chans, "in_chans"),
                  num_classes=_positive_int(num_classes, "num_classes"), **options)
    if alpha is not None:
        kwargs["alpha"] = _positive_int(alpha, "alpha")
    return fn(**kwargs)
