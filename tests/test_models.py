"""Every registered model: builds, runs forward + backward, and describes itself consistently."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from convemerge.errors import ConfigError
from convemerge.layers import LocallyConnected2d
from convemerge.models import (ConvemergeModel, count_weights, create_model, list_models, model_defaults,
                               model_options, register_model)

PAPER_MODELS = ["s-conv", "s-local", "s-fc", "d-conv", "d-local", "d-fc", "3-fc", "resnet18", "vanilla-cnn"]

# small instances per model (a model registered later gets a 32-pixel default build)
SMALL = {
    "s-conv": dict(alpha=2, image_size=8),
    "s-local": dict(alpha=2, image_size=8),
    "s-fc": dict(alpha=2, image_size=8),
    "d-conv": dict(alpha=1, image_size=16),
    "d-local": dict(alpha=1, image_size=16),
    "d-fc": dict(alpha=1, image_size=16),
    "3-fc": dict(width=12, image_size=8),
    "resnet18": dict(alpha=2, image_size=8, kernel_size=5),
    "vanilla-cnn": dict(width=4, depth=2, image_size=(6, 10)),
}


def small(name, in_chans=3, num_classes=7, **extra):
    kw = {"image_size": 32, **SMALL.get(name, {}), **extra}
    return create_model(name, in_chans=in_chans, num_classes=num_classes, **kw)


def test_registry_lists_the_paper_models():
    assert PAPER_MODELS == [n for n in list_models() if n in PAPER_MODELS]
    assert set(PAPER_MODELS) <= set(list_models())


def test_default_alphas():
    d = {n: model_defaults(n)["alpha"] for n in PAPER_MODELS}
    assert d == {"s-conv": 150, "s-local": 150, "s-fc": 150, "d-conv": 15, "d-local": 15, "d-fc": 15,
                 "3-fc": None, "resnet18": 64, "vanilla-cnn": None}  # 3-fc: None means α = 150 unless width given
    assert {"dropout", "hidden_bias"} <= set(model_options("s-fc"))


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("in_chans", [1, 3])
def test_forward_backward(name, in_chans):
    model = small(name, in_chans=in_chans)
    assert isinstance(model, ConvemergeModel)
    c, h, w = model.input_shape
    assert c == in_chans
    x = torch.randn(4, c, h, w)
    y = model(x)
    assert y.shape == (4, 7) and torch.isfinite(y).all()
    F.cross_entropy(y, torch.arange(4) % 7).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    for layer in model.weight_layers():
        assert layer.module.weight.grad.abs().sum() > 0, layer.name
    model.eval()
    torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize("name", list_models())
def test_weight_layers_match_the_module_tree(name):
    model = small(name)
    layers = model.weight_layers()
    modules = dict(model.named_modules())
    assert len({wl.name for wl in layers}) == len(layers)
    for wl in layers:
        assert modules[wl.name] is wl.module
    # every conv / local / linear module is listed, and their weights are what count_weights counts
    kinds = {nn.Conv2d: "conv", LocallyConnected2d: "local", nn.Linear: "linear"}
    expected = [n for n, m in model.named_modules() if type(m) in kinds]
    assert [wl.name for wl in layers] == expected
    assert count_weights(model) == sum(wl.module.weight.numel() for wl in layers) == model.count_weights()
    # geometry and order against what a forward pass actually feeds each layer
    seen: list[tuple[str, tuple]] = []
    hooks = [wl.module.register_forward_hook(lambda m, inp, out, n=wl.name: seen.append((n, tuple(inp[0].shape[1:]))))
             for wl in layers]
    model(torch.randn(2, *model.input_shape))
    for h in hooks:
        h.remove()
    assert sorted(seen) == sorted((wl.name, wl.in_shape) for wl in layers)
    for wl in layers:
        assert wl.kind == kinds[type(wl.module)]
        if wl.kind == "linear":
            assert wl.kernel_size is wl.stride is wl.padding is None
            assert wl.in_shape == (wl.module.in_features,)
        else:
            assert (wl.kernel_size, wl.kernel_size) == tuple(wl.module.kernel_size)
            assert (wl.stride, wl.stride) == tuple(wl.module.stride)
            assert (wl.padding, wl.padding) == tuple(wl.module.padding)
    if name not in ("resnet18",):  # a plain stack runs its layers in registration order
        assert [n for n, _ in seen] == [wl.name for wl in layers]


@pytest.mark.parametrize("name", list_models())
def test_first_layer_filters_reproduce_the_first_layer(name):
    """Each unit's image, dotted with the input, gives that unit's pre-activation (bias aside)."""
    model = small(name).double()
    first = model.weight_layers()[0]
    x = torch.randn(3, *model.input_shape, dtype=torch.float64)
    filters = model.first_layer_filters()
    c, h, w = model.input_shape
    out = {}
    first.module.register_forward_hook(lambda m, inp, o: out.setdefault("h", o))
    model(x)
    bias = first.module.bias
    if bias is not None:
        bias = bias.view(-1, 1, 1) if first.kind == "conv" else bias
    pre = out["h"] if bias is None else out["h"] - bias
    if first.kind == "conv":
        assert filters.shape == first.module.weight.shape
        k = first.kernel_size
        assert filters.shape[1:] == (c, k, k)
        got = F.conv2d(x, filters, stride=first.stride, padding=first.padding)
    else:
        assert filters.shape[1:] == (c, h, w)
        got = x.reshape(3, -1) @ filters.reshape(len(filters), -1).T
        if first.kind == "local":  # unit = position·out + channel; the layer's output is (B, out, positions)
            out_ch = first.module.out_channels
            assert len(filters) == math.prod(first.module.out_size) * out_ch
            got = got.reshape(3, -1, out_ch).transpose(1, 2).reshape(pre.shape)
        else:
            assert len(filters) == first.module.out_features
    torch.testing.assert_close(got, pre)
    sub = torch.tensor([0, len(filters) - 1])
    torch.testing.assert_close(model.first_layer_filters(sub), filters[sub])


def test_s_fc_filters_are_weight_rows():
    model = create_model("s-fc", alpha=3, image_size=8, in_chans=3, num_classes=10)
    f = model.first_layer_filters()
    w = model.layer1.weight
    assert f.shape == (3 * 16, 3, 8, 8)
    for u in (0, 5, 47):
        assert torch.equal(f[u], w[u].reshape(3, 8, 8))


def test_s_local_and_s_fc_units_are_comparable():
    loc = create_model("s-local", alpha=2, image_size=8, in_chans=1, num_classes=10)
    fc = create_model("s-fc", alpha=2, image_size=8, in_chans=1, num_classes=10)
    fl, ff = loc.first_layer_filters(), fc.first_layer_filters()
    assert fl.shape == ff.shape == (2 * 16, 1, 8, 8)
    # a local unit's support is its (clipped) 9×9 receptive field
    assert (fl[0, 0] != 0).sum() == 5 * 5  # position (0, 0): rows/cols -4..4 clipped to 0..4


def test_layer_structure_s_conv():
    m = create_model("s-conv", alpha=4, image_size=32, in_chans=3, num_classes=10, dropout=0.25)
    names = [n for n, _ in m.named_children()]
    assert names == ["layer1", "norm1", "relu1", "flatten", "drop2", "layer2", "norm2", "relu2", "drop3", "layer3"]
    assert isinstance(m.norm1, nn.BatchNorm2d) and isinstance(m.norm2, nn.BatchNorm1d)
    assert m.layer1.bias is None and m.layer2.bias is None and m.layer3.bias is not None
    assert m.layer2.in_features == 4 * 16 * 16 and m.layer2.out_features == 96
    assert m.drop2.p == m.drop3.p == 0.25


def test_dropout_sits_before_the_last_two_linear_layers():
    for name, opts in [("d-conv", dict(alpha=1, image_size=16)), ("d-fc", dict(alpha=1, image_size=16)),
                       ("3-fc", dict(width=5, image_size=8)), ("s-fc", dict(alpha=1, image_size=8))]:
        m = create_model(name, in_chans=1, num_classes=3, dropout=0.5, **opts)
        children = list(m.named_children())
        linear = [i for i, (_, mod) in enumerate(children) if isinstance(mod, nn.Linear)][-2:]
        assert all(isinstance(children[i - 1][1], nn.Dropout) for i in linear), name
        assert sum(isinstance(mod, nn.Dropout) for _, mod in children) == 2
    assert not any(isinstance(mod, nn.Dropout) for mod in create_model("d-conv", alpha=1, image_size=16, in_chans=1,
                                                                       num_classes=3).modules())


def test_deep_geometry():
    m = create_model("d-local", alpha=1, image_size=32, in_chans=3, num_classes=10)
    convs = [wl for wl in m.weight_layers() if wl.kind == "local"]
    assert [wl.in_shape for wl in convs] == [(3, 32, 32), (1, 32, 32), (2, 16, 16), (2, 16, 16), (4, 8, 8),
                                             (4, 8, 8), (8, 4, 4), (8, 4, 4)]
    assert [wl.stride for wl in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert m.layer9.in_features == 16 * 2 * 2 and m.layer9.out_features == 64
    fc = create_model("d-fc", alpha=1, image_size=16, in_chans=1, num_classes=10)
    widths = [wl.module.out_features for wl in fc.weight_layers()]
    assert widths == [256, 128, 128, 64, 64, 32, 32, 16, 64, 10]


def test_resnet18_variant():
    m = create_model("resnet18", alpha=4, image_size=32, in_chans=3, num_classes=10, kernel_size=7)
    layers = m.weight_layers()
    assert layers[0].name == "conv1" and layers[0].kernel_size == 7 and layers[0].stride == 1
    assert not any(isinstance(mod, nn.MaxPool2d) for mod in m.modules())
    spatial = [wl for wl in layers if wl.kind == "conv" and wl.kernel_size != 1]
    assert len(spatial) == 17 and all(wl.kernel_size == 7 and wl.padding == 3 for wl in spatial)
    assert [wl.module.out_channels for wl in layers if "shortcut" in wl.name] == [8, 16, 32]
    assert m.layer4[1].conv2.out_channels == 32 and m.fc.in_features == 32
    assert layers[-1].in_shape == (32,)
    assert m.layer4[0].conv1.__dict__["_convemerge_in_shape"] == (16, 8, 8)


def test_vanilla_cnn_structure():
    m = create_model("vanilla-cnn", image_size=(16, 32), in_chans=1, num_classes=2, depth=3, width=8, bias=False)
    assert not any(isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d)) for mod in m.modules())
    assert [type(mod).__name__ for _, mod in m.named_children()] == ["Conv2d", "ReLU"] * 3 + ["Flatten", "Linear"]
    assert m.layer4.in_features == 8 * 16 * 32 and all(wl.module.bias is None for wl in m.weight_layers())
    assert create_model("vanilla-cnn", alpha=5, image_size=8, in_chans=1, num_classes=2).layer1.out_channels == 5


def test_vanilla_cnn_bias_off_has_no_bias_parameters():
    m = create_model("vanilla-cnn", image_size=8, in_chans=3, num_classes=10, depth=4, width=8, bias=False)
    assert [n for n, _ in m.named_parameters() if "bias" in n] == []
    assert sum(p.numel() for p in m.parameters()) == count_weights(m) == 27 * 8 + 3 * 72 * 8 + 8 * 64 * 10
    with_bias = create_model("vanilla-cnn", image_size=8, in_chans=3, num_classes=10, depth=4, width=8)
    assert sum(p.numel() for p in with_bias.parameters()) - count_weights(with_bias) == 4 * 8 + 10


def test_vanilla_cnn_init_std_draws_the_stated_normal():
    # the authors' CNFA nets: every weight N(0, 0.005²). Per layer: sample std within 2 % (+3 standard errors) of
    # 0.005 and mean within 4 standard errors of 0; the 36,864 draws of a 64×64×3×3 layer pin the std to 1e-4
    # (≈ 5 standard errors of 1.8e-5)
    torch.manual_seed(0)
    m = create_model("vanilla-cnn", image_size=8, in_chans=3, num_classes=10, depth=4, width=64, init_std=0.005)
    for wl in m.weight_layers():
        w = wl.module.weight.detach().double().flatten()
        assert abs(float(w.std()) - 0.005) < 0.02 * 0.005 + 3 * 0.005 / w.numel() ** 0.5, wl.name
        assert abs(float(w.mean())) < 4 * 0.005 / w.numel() ** 0.5, wl.name
        assert bool((wl.module.bias == 0).all())  # biases zeroed: the init scale is the weights' alone
    big = m.layer2.weight.detach().double()
    assert abs(float(big.std()) - 0.005) < 1e-4
    # PyTorch's default (kaiming-uniform, a = √5) for the same layer: std = 1/√(3·fan_in) = 1/√1728 ≈ 0.024
    torch.manual_seed(0)
    default = create_model("vanilla-cnn", image_size=8, in_chans=3, num_classes=10, depth=4, width=64)
    assert abs(float(default.layer2.weight.detach().std()) - 1728 ** -0.5) < 1e-3
    # the same seed gives the same net; the option as the command line passes it (YAML reads 5e-3 as text)
    torch.manual_seed(0)
    again = create_model("vanilla-cnn", image_size=8, in_chans=3, num_classes=10, depth=4, width=64, init_std="5e-3")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("vgg", dict(image_size=32), "unknown model 'vgg'"),
        ("s-conv", dict(image_size=31), "even image side"),
        ("s-fc", dict(image_size=(32, 30), alpha=1), None),  # even sides are fine, square or not
        ("d-conv", dict(image_size=28), "divisible by 16"),
        ("d-fc", dict(image_size=24), "divisible by 16"),
        ("s-conv", dict(image_size=32, widht=3), "no option widht"),
        ("s-conv", dict(image_size=32, alpha=0), "alpha=0"),
        ("s-conv", dict(image_size=32, alpha=2.5), "alpha=2.5"),
        ("s-conv", dict(image_size=0), "image_size=0"),
        ("s-conv", dict(image_size=32, dropout=1.0), "dropout"),
        ("resnet18", dict(image_size=32, kernel_size=4), "odd"),
        ("3-fc", dict(image_size=32, alpha=2, width=10), "one of alpha, width, target_params"),
        ("3-fc", dict(image_size=31), "even image side"),
        ("vanilla-cnn", dict(image_size=4, kernel_size=5, padding=0), "does not fit"),
        ("vanilla-cnn", dict(image_size=8, alpha=4, width=4), "not both"),
        ("vanilla-cnn", dict(image_size=8, init_std=0), "init_std=0"),
        ("vanilla-cnn", dict(image_size=8, init_std="small"), "init_std='small'"),
        ("vanilla-cnn", dict(image_size=8, bias="no"), "bias='no'"),
    ],
)
def test_config_errors(name, kwargs, match):
    kw = dict(in_chans=3, num_classes=10, **kwargs)
    if match is None:
        with torch.device("meta"):
            create_model(name, **kw)
        return
    with pytest.raises(ConfigError, match=match) as info:
        with torch.device("meta"):
            create_model(name, **kw)
    assert "\n" not in str(info.value)


def test_register_model_names_and_duplicates():
    assert "s-conv" in list_models()
    with pytest.raises(ValueError, match="already registered"):
        register_model("s-conv")(lambda **kw: None)


def test_meta_and_seeded_builds():
    with torch.device("meta"):
        m = create_model("s-fc", image_size=32, in_chans=3, num_classes=10)
    assert m.layer1.weight.is_meta and count_weights(m) == 256_240_800
    torch.manual_seed(1)
    a = create_model("s-local", alpha=2, image_size=8, in_chans=3, num_classes=10)
    torch.manual_seed(1)
    b = create_model("s-local", alpha=2, image_size=8, in_chans=3, num_classes=10)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
