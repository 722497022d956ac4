"""Model zoo: a registry (``create_model`` / ``list_models``) over one file per family.

``s-conv s-local s-fc`` (shallow.py), ``d-conv d-local d-fc`` (deep.py), ``3-fc`` (mlp.py), ``resnet18``
(resnet.py) and ``vanilla-cnn`` (vanilla.py). Every model is a :class:`ConvemergeModel` with
``weight_layers()``, ``first_layer_filters()`` and ``count_weights()``. See docs/models.md.
"""

from convemerge.models.base import (
    ConvemergeModel,
    WeightLayer,
    count_weights,
    layer_kind,
    nonzero_per_layer,
    weight_layers,
    weights_per_layer,
)
from convemerge.models.registry import create_model, list_models, model_defaults, model_options, register_model

# Importing the family modules registers their builders, in this order.
from convemerge.models import shallow, deep, mlp, resnet, vanilla  # noqa: E402,F401  isort: skip

__all__ = [
    "ConvemergeModel",
    "WeightLayer",
    "count_weights",
    "create_model",
    "layer_kind",
    "list_models",
    "model_defaults",
    "model_options",
    "nonzero_per_layer",
    "register_model",
    "weight_layers",
    "weights_per_layer",
]
