"""Closed-form (patch-)AGOP == brute-force autograd through an explicitly unfolded network."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from convemerge.analysis.agop import (
    agops,
    filter_covariance,
    find_weight_layers,
    layer_agop,
    sym_matrix_power,
)
from convemerge.errors import ConfigError

DT = torch.float64


class TinyLocal(nn.Module):
    """A locally connected layer with the contract's layout: weight (L, out, C·k·k), output (B, out, H', W')."""

    def __init__(self, cin, cout, in_size, kernel_size, stride=1, padding=0):
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.in_size, self.kernel_size, self.stride, self.padding = in_size, kernel_size, stride, padding
        self.out_size = (in_size + 2 * padding - kernel_size) // stride + 1
        n_pos = self.out_size**2
        d = cin * kernel_size**2
        self.weight = nn.Parameter(torch.randn(n_pos, cout, d) / math.sqrt(d))
        self.bias = nn.Parameter(0.1 * torch.randn(cout, self.out_size, self.out_size))

    def forward(self, x):
        p = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # (B, d, L)
        h = torch.einsum("bdl,lod->bol", p, self.weight)
        return h.reshape(x.shape[0], self.out_channels, self.out_size, self.out_size) + self.bias


def _unfolded_forward(module, xin):
    """The layer as an explicit function of its input patches (a leaf): (patches, h)."""
    if isinstance(module, nn.Linear):
        p = xin.detach().requires_grad_(True)
        return p, F.linear(p, module.weight, module.bias)
    if isinstance(module, nn.Conv2d):
        p = F.unfold(
            xin, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride
        )
        p = p.detach().requires_grad_(True)  # (B, d, L): each patch an independent input
        h = torch.einsum("od,bdl->bol", module.weight.reshape(module.out_channels, -1), p)
        if module.bias is not None:
            h = h + module.bias[None, :, None]
        return p, h
    p = F.unfold(xin, module.kernel_size, padding=module.padding, stride=module.stride)
    p = p.detach().requires_grad_(True)
    h = torch.einsum("lod,bdl->bol", module.weight, p)
    return p, h


def brute_force_agop(model, layer_name, x, per_position=False):
    """Σ_i Σ_p Σ_o ∇_{x_p} f_o ∇_{x_p} f_oᵀ / n by autograd w.r.t. the unfolded patches."""
    module = dict(model.named_modules())[layer_name]
    store = {}

    def hook(mod, inputs, out):
        p, h = _unfolded_forward(mod, inputs[0])
        h = h.reshape(out.shape)
        if not isinstance(mod, (nn.Linear, nn.Conv2d)):
            h = h + mod.bias
        assert torch.allclose(h, out, atol=1e-12), "unfolded network differs from the model"
        store["p"] = p
        return h

    handle = module.register_forward_hook(hook)
    model.eval()
    try:
        f = model(x).reshape(x.shape[0], -1)
    finally:
        handle.remove()
    p = store["p"]
    total = 0.0
    for o in range(f.shape[1]):
        (gp,) = torch.autograd.grad(f[:, o].sum(), p, retain_graph=True)
        if gp.dim() == 2:  # linear: (B, d)
            total = total + gp.T @ gp
        elif per_position:  # (B, d, L) -> (L, d, d)
            total = total + torch.einsum("bdl,bel->lde", gp, gp)
        else:
            rows = gp.permute(0, 2, 1).reshape(-1, gp.shape[1])
            total = total + rows.T @ rows
    return total / x.shape[0]


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def conv_net():
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, stride=2, padding=1),  # first layer, stride + padding, Gram route (5 <= 27)
        nn.ReLU(),
        nn.Conv2d(5, 6, 3, padding=2, dilation=2),  # middle layer, dilation
        nn.Tanh(),
        nn.Conv2d(6, 60, 2, stride=2, bias=False),  # projection route (60 > 24)
        nn.Softplus(),
        nn.Flatten(),
        nn.Linear(60 * 2 * 2, 7),
        nn.ReLU(),
        nn.Linear(7, 3),
    ).to(DT)


@pytest.mark.parametrize("layer", ["0", "2", "4", "7", "9"])
def test_conv_and_linear_layers_match_brute_force(layer):
    model = conv_net()
    x = torch.randn(6, 3, 9, 9, dtype=DT)
    ref = brute_force_agop(model, layer, x)
    got = layer_agop(model, layer, x, batch_size=4, output_chunk=2)
    assert got.shape == ref.shape
    assert rel_err(got, ref) <= 1e-5


def test_linear_projection_route_on_flattened_image():
    # S-FC-like: the first layer sees the flattened image and is wider than its input (projection route)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 50), nn.ReLU(), nn.Linear(50, 4)).to(DT)
    x = torch.randn(5, 2, 4, 4, dtype=DT)
    ref = brute_force_agop(model, "1", x)
    assert rel_err(layer_agop(model, "1", x), ref) <= 1e-5
    # the AGOP w.r.t. the first layer's input is the AGOP w.r.t. the image itself
    xf = x.reshape(5, -1).requires_grad_(True)
    f = model(xf.reshape(x.shape))
    direct = sum((g := torch.autograd.grad(f[:, o].sum(), xf, retain_graph=True)[0]).T @ g for o in range(4)) / 5
    assert rel_err(layer_agop(model, "1", x), direct) <= 1e-10


def local_net():
    return nn.Sequential(
        TinyLocal(2, 4, 6, 3, stride=1, padding=1),  # Gram route (4 <= 18)
        nn.ReLU(),
        TinyLocal(4, 40, 6, 2, stride=2),  # projection route (40 > 16)
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(40 * 9, 3),
    ).to(DT)


@pytest.mark.parametrize("layer", ["0", "2"])
@pytest.mark.parametrize("per_position", [False, True])
def test_local_layers_match_brute_force(layer, per_position):
    model = local_net()
    x = torch.randn(5, 2, 6, 6, dtype=DT)
    ref = brute_force_agop(model, layer, x, per_position=per_position)
    got = layer_agop(model, layer, x, per_position=per_position, batch_size=3)
    assert got.shape == ref.shape
    assert rel_err(got, ref) <= 1e-5
    if per_position:
        assert rel_err(got.sum(0), layer_agop(model, layer, x)) <= 1e-10


def test_contract_locally_connected_layer_matches_brute_force():
    layers = pytest.importorskip("convemerge.layers")
    if not hasattr(layers, "LocallyConnected2d"):
        pytest.skip("convemerge.layers.LocallyConnected2d not available yet")
    model = nn.Sequential(
        layers.LocallyConnected2d(2, 3, 6, 3, stride=1, padding=1),
        nn.ReLU(),
        layers.LocallyConnected2d(3, 30, 6, 3, stride=2),  # middle layer; projection route (30 > 27)
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(30 * 4, 4),
    ).to(DT)
    x = torch.randn(4, 2, 6, 6, dtype=DT)
    for name in ("0", "2"):
        for per_position in (False, True):
            ref = brute_force_agop(model, name, x, per_position=per_position)
            for batched in (True, False):  # batched: vmap over the layer's custom backward, or the fallback
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    got = layer_agop(model, name, x, per_position=per_position, batched=batched)
                assert rel_err(got, ref) <= 1e-5


def test_options_chunking_loop_subset_sum_power(monkeypatch):
    import convemerge.analysis.agop as agop_mod

    model = conv_net()
    x = torch.randn(7, 3, 9, 9, dtype=DT)
    base = agops(model, x)
    assert list(base) == ["0", "2", "4", "7", "9"]
    for kw in ({"batch_size": 1, "output_chunk": 1}, {"batched": False}, {"batch_size": 100}):
        other = agops(model, x, **kw)
        for name in base:
            assert rel_err(other[name], base[name]) <= 1e-12
    monkeypatch.setattr(agop_mod, "GRAD_BYTES_PER_CHUNK", 1)  # automatic output chunk of 1
    small = agops(model, x)
    assert all(rel_err(small[name], base[name]) <= 1e-12 for name in base)
    summed = layer_agop(model, "2", x, reduction="sum")
    assert rel_err(summed, 7 * base["2"]) <= 1e-12
    parts = sum(layer_agop(model, "2", x, outputs=[o]) for o in range(3))
    assert rel_err(parts, base["2"]) <= 1e-12
    root = layer_agop(model, "2", x, power=0.5)
    assert rel_err(root @ root, base["2"]) <= 1e-8
    assert torch.allclose(root, root.T)


def test_batchnorm_eval_mode_restored_and_frozen_inplace_model():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 16, 2)
    ).to(DT)
    model.train()
    model(torch.randn(8, 1, 6, 6, dtype=DT))  # give BN non-trivial running stats
    x = torch.randn(5, 1, 6, 6, dtype=DT)
    got = layer_agop(model, "0", x, batch_size=2)
    assert model.training and model[1].training  # modes restored
    for p in model.parameters():
        p.requires_grad_(False)
    ref = brute_force_agop(nn.Sequential(*[m if not isinstance(m, nn.ReLU) else nn.ReLU() for m in model]), "0", x)
    assert rel_err(got, ref) <= 1e-5
    assert rel_err(layer_agop(model, "0", x), ref) <= 1e-5  # frozen parameters work too


def test_filter_covariance_and_power():
    conv = nn.Conv2d(3, 4, 3).to(DT)
    w = conv.weight.reshape(4, -1)
    assert torch.allclose(filter_covariance(conv), w.T @ w)
    loc = TinyLocal(2, 3, 5, 3).to(DT)
    per = filter_covariance(loc, per_position=True)
    assert per.shape == (9, 18, 18) and torch.allclose(per.sum(0), filter_covariance(loc))
    m = torch.randn(6, 3, dtype=DT)
    psd = m @ m.T  # rank 3: eigenvalues ~0 may come out slightly negative; the clamp keeps the root real
    assert rel_err(sym_matrix_power(psd, 0.5) @ sym_matrix_power(psd, 0.5), psd) <= 1e-6
    with pytest.raises(ConfigError):
        sym_matrix_power(psd, -1.0)


def test_errors_are_one_line_config_errors():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(2, 4, 5, 5)
    model(x)
    with pytest.raises(ConfigError, match="groups=2"):
        layer_agop(model, "0", x)
    with pytest.raises(ConfigError, match="no layer named 'nope'"):
        layer_agop(model, "nope", x)
    with pytest.raises(ConfigError, match="ReLU"):
        layer_agop(model, "1", x)
    shared = nn.Linear(3, 3)
    twice = nn.Sequential(shared, nn.Tanh(), shared)
    with pytest.raises(ConfigError, match="more than once"):
        layer_agop(twice, "0", torch.randn(2, 3))
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x), x

    with pytest.raises(ConfigError, match="returned a tuple; pass output_fn"):
        layer_agop(Pair(), "lin", torch.randn(2, 3))
    got = layer_agop(Pair(), "lin", torch.randn(2, 3), output_fn=lambda m, xb: m(xb)[0])
    assert got.shape == (3, 3)
    with pytest.raises(ConfigError, match="negative"):
        layer_agop(nn.Sequential(nn.Linear(3, 2)), "0", torch.randn(2, 3), power=-0.5)


def test_find_weight_layers_prefers_model_weight_layers():
    class WithList(nn.Sequential):
        def weight_layers(self):
            from types import SimpleNamespace

            return [SimpleNamespace(name="2", module=self[2]), SimpleNamespace(name="0", module=self[0])]

    model = WithList(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    assert [layer.name for layer in find_weight_layers(model)] == ["2", "0"]
    assert [layer.kind for layer in find_weight_layers(conv_net())] == ["conv"] * 3 + ["linear"] * 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_blocks_in_low_precision(monkeypatch, dtype):
    import copy

    import convemerge.analysis.agop as agop_mod

    cnet, lnet = conv_net(), local_net()
    x, xl = torch.randn(6, 3, 9, 9, dtype=DT), torch.randn(5, 2, 6, 6, dtype=DT)
    ref = {**agops(cnet, x), **{f"l{k}": v for k, v in agops(lnet, xl).items()}}
    per_ref = agops(lnet, xl, per_position=True)
    monkeypatch.setattr(agop_mod, "_BLOCK_ROWS", 7)  # many small blocks (float32) / still one (float64)
    cnet, lnet = copy.deepcopy(cnet).to(dtype), copy.deepcopy(lnet).to(dtype)
    got = {**agops(cnet, x.to(dtype)), **{f"l{k}": v for k, v in agops(lnet, xl.to(dtype)).items()}}
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for name in ref:
        assert got[name].dtype == dtype
        assert rel_err(got[name].double(), ref[name]) <= tol
    per = agops(lnet, xl.to(dtype), per_position=True)
    assert all(rel_err(per[k].double(), per_ref[k]) <= tol for k in per)


def test_float32_many_rows_stays_accurate():
    # 3 outputs × 48 images × 256 positions = 36864 rows per chunk: more than one block of rows
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 256, 3))
    x = torch.randn(48, 1, 16, 16)
    ref = layer_agop(model.to(DT), "0", x.to(DT), batch_size=64)
    got = layer_agop(model.float(), "0", x, batch_size=64)
    assert rel_err(got.double(), ref) <= 1e-5


def test_registered_models_batched_equals_loop():
    models = pytest.importorskip("convemerge.models")
    if not hasattr(models, "create_model"):
        pytest.skip("convemerge.models.create_model not available yet")
    for name in ("s-local", "d-local", "d-conv", "s-fc"):
        torch.manual_seed(0)
        model = models.create_model(name, alpha=2, image_size=16, in_chans=1, num_classes=3).to(DT)
        x = torch.randn(3, 1, 16, 16, dtype=DT)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            a = agops(model, x)
        b = agops(model, x, batched=False, batch_size=2)
        assert list(a) == [layer.name for layer in model.weight_layers()]
        assert all(rel_err(a[k], b[k]) <= 1e-10 for k in a)


def test_fallback_to_loop_when_an_op_has_no_vmap_rule():
    class NoVmap(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            if bool(g.abs().sum() >= 0):  # data-dependent control flow: no vmap rule (aten::is_nonzero)
                return 2 * g
            return 2 * g

    class Wrap(nn.Module):
        def forward(self, x):
            return NoVmap.apply(x)

    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), Wrap(), nn.Linear(5, 3)).to(DT)
    x = torch.randn(6, 4, dtype=DT)
    ref = brute_force_agop(model, "0", x)
    with pytest.warns(RuntimeWarning, match="one backward pass per output"):
        got = layer_agop(model, "0", x, batch_size=2)
    assert rel_err(got, ref) <= 1e-10
