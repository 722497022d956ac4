"""Parameter groups: first-layer λ, layer weights vs biases / norms, every parameter in exactly one group."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from convemerge.errors import ConfigError
from convemerge.optim import BetaLasso, beta_lasso_param_groups, sgd_param_groups


def _assert_partition(model: nn.Module, groups: list[dict]) -> None:
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}, "a parameter is missing"
    assert all(g["params"] for g in groups), "empty group"


def _by_name(groups: list[dict]) -> dict[str, dict]:
    return {g["name"]: g for g in groups}


class _LocallyConnected(nn.Module):
    """Stand-in for a locally connected layer: 3-d ``weight`` (L, out, in·k²), 3-d ``bias`` (out, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 9))
        self.bias = nn.Parameter(torch.zeros(3, 2, 2))


@dataclass(frozen=True)
class _Layer:  # the part of convemerge.models.WeightLayer the factory reads
    name: str
    module: nn.Module


class _DeclaredModel(nn.Module):
    """Registers its head BEFORE its stem; ``weight_layers()`` says the stem comes first."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 2)
        self.norm = nn.LayerNorm([3, 2, 2])  # 3-d weight, but a norm: never L1-regularised
        self.local = _LocallyConnected()
        self.stem = nn.Conv2d(1, 3, 3, bias=False)
        self.scale = nn.Parameter(torch.ones(2, 2))  # a free ≥2-d parameter that is no layer weight

    def weight_layers(self) -> list[_Layer]:
        return [_Layer("stem", self.stem), _Layer("local", self.local), _Layer("head", self.head)]


def test_sequential_fallback_groups():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 5), nn.Linear(5, 2)
    )
    groups = beta_lasso_param_groups(net, lam=1e-5, lam_first=4e-5)
    _assert_partition(net, groups)
    g = _by_name(groups)
    assert [p is net[0].weight for p in g["first"]["params"]] == [True]
    assert g["first"]["lam"] == 4e-5
    assert g["weights"]["params"] == [net[4].weight, net[5].weight] and g["weights"]["lam"] == 1e-5
    assert g["bias_and_norm"]["params"] == [net[0].bias, net[1].weight, net[1].bias, net[4].bias, net[5].bias]
    assert g["bias_and_norm"]["lam"] == 0.0
    assert "beta" not in g["first"] and "lr" not in g["first"]  # they come from the optimizer's defaults


def test_declared_weight_layers_decide_the_first_layer():
    model = _DeclaredModel()
    groups = beta_lasso_param_groups(model, lam=1.0, lam_first=2.0)
    _assert_partition(model, groups)
    g = _by_name(groups)
    assert g["first"]["params"][0] is model.stem.weight  # not head.weight, which comes first in module order
    assert g["weights"]["params"] == [model.local.weight, model.head.weight]
    rest = g["bias_and_norm"]["params"]
    assert {id(p) for p in rest} == {
        id(p) for p in (model.head.bias, model.norm.weight, model.norm.bias, model.local.bias, model.scale)
    }


def test_fallback_finds_a_locally_connected_first_layer():
    net = nn.Sequential(_LocallyConnected(), nn.Flatten(), nn.Linear(12, 2))
    g = _by_name(beta_lasso_param_groups(net, lam=1e-3))
    assert g["first"]["params"][0] is net[0].weight and g["first"]["lam"] == 1e-3  # lam_first defaults to lam
    assert net[0].bias in g["bias_and_norm"]["params"]


def test_include_bias_and_norm_gives_them_lam():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    groups = beta_lasso_param_groups(net, lam=1e-3, lam_first=5e-3, include_bias_and_norm=True)
    _assert_partition(net, groups)
    assert [(g["name"], g["lam"]) for g in groups] == [("first", 5e-3), ("weights", 1e-3), ("bias_and_norm", 1e-3)]


def test_tied_weights_appear_once():
    shared = nn.Linear(4, 4)
    net = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 2))
    groups = beta_lasso_param_groups(net, lam=1e-3)
    _assert_partition(net, groups)
    assert _by_name(groups)["first"]["params"][0] is shared.weight
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about duplicate parameters in a group
        BetaLasso(groups, lr=0.1)


def test_single_layer_without_bias_leaves_out_empty_groups():
    net = nn.Linear(3, 2, bias=False)
    groups = beta_lasso_param_groups(net, lam=1e-3)
    assert [g["name"] for g in groups] == ["first"]


def test_sgd_param_groups():
    model = _DeclaredModel()
    groups = sgd_param_groups(model, 5e-4)
    _assert_partition(model, groups)
    assert [(g["name"], g["weight_decay"]) for g in groups] == [
        ("first", 5e-4),
        ("weights", 5e-4),
        ("bias_and_norm", 0.0),
    ]
    assert all(g["weight_decay"] == 5e-4 for g in sgd_param_groups(model, 5e-4, include_bias_and_norm=True))
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 5e-4, 0.0]


def test_sgd_weight_decay_skips_bias_and_norm():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = torch.optim.SGD(sgd_param_groups(net, weight_decay=0.5), lr=1.0)
    before = [p.detach().clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for (name, p), b in zip(net.named_parameters(), before):
        decayed = name in ("0.weight", "2.weight")
        assert torch.equal(p.detach(), b * 0.5 if decayed else b), name


def test_errors():
    with pytest.raises(ConfigError, match="no conv/local/linear weight"):
        beta_lasso_param_groups(nn.BatchNorm1d(3), lam=1e-3)
    assert [g["name"] for g in sgd_param_groups(nn.BatchNorm1d(3), 1e-4)] == ["bias_and_norm"]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="lam must"):
            beta_lasso_param_groups(nn.Linear(2, 2), lam=bad)
        with pytest.raises(ConfigError, match="lam_first must"):
            beta_lasso_param_groups(nn.Linear(2, 2), lam=1e-3, lam_first=bad)
        with pytest.raises(ValueError, match="weight_decay must"):
            sgd_param_groups(nn.Linear(2, 2), bad)


def test_registered_models_if_available():
    models = pytest.importorskip("convemerge.models", reason="convemerge.models not available")
    if not hasattr(models, "list_models"):
        pytest.skip("convemerge.models has no registry yet")
    for name in models.list_models():
        try:
            model = models.create_model(name, alpha=2, image_size=16, in_chans=1, num_classes=3)
        except ConfigError:
            continue  # geometry this model does not support
        groups = beta_lasso_param_groups(model, lam=1e-5, lam_first=2e-5)
        _assert_partition(model, groups)
        g = _by_name(groups)
        layers = model.weight_layers()
        assert g["first"]["params"][0] is layers[0].module.weight, name
        layer_weights = {id(layer.module.weight) for layer in layers[1:]}
        assert layer_weights <= {id(p) for p in g["weights"]["params"]}, name
        assert all(p.dim() >= 2 for p in g["weights"]["params"]), name
