"""LocallyConnected2d against a per-position loop, nn.Conv2d with shared filters, and autograd."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from convemerge.errors import ConfigError
from convemerge.layers import LocallyConnected2d, locally_connected2d, output_size
from convemerge.layers import local as local_mod

# max_patch_bytes: every patch at once (saved for the backward pass), the smallest chunks (one position, or one
# output row where ∂x is folded; gathered again in the backward pass), and the automatic choice.
MODES = {"whole": math.inf, "tiny-chunks": 1, "auto": None}
mode_param = pytest.mark.parametrize("budget", list(MODES.values()), ids=list(MODES))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine every parallel region can stall."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def loop_reference(x, weight, bias, k, stride, padding):
    """The definition, one output position at a time (float64, no unfold)."""
    (kh, kw), (sh, sw), (ph, pw) = k, stride, padding
    xp = F.pad(x, (pw, pw, ph, ph))
    ho = (x.shape[2] + 2 * ph - kh) // sh + 1
    wo = (x.shape[3] + 2 * pw - kw) // sw + 1
    out = x.new_zeros(x.shape[0], weight.shape[1], ho, wo)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw].reshape(x.shape[0], -1)
            out[:, :, i, j] = patch @ weight[i * wo + j].T
    return out if bias is None else out + bias


GEOMETRIES = [
    # in_channels, out_channels, in_size, kernel, stride, padding
    (3, 4, 8, 3, 1, 0),
    (3, 4, 8, 3, 1, 1),
    (2, 5, 9, 3, 2, 1),
    (1, 3, 10, 9, 2, 4),
    (2, 3, (6, 9), (3, 2), (2, 1), (1, 0)),
    (3, 2, 7, 5, 3, 2),
    (2, 2, 4, 1, 1, 0),
]


def _pairs(*vals):
    return [v if isinstance(v, tuple) else (v, v) for v in vals]


@mode_param
@pytest.mark.parametrize("cin,cout,size,k,s,p", GEOMETRIES)
def test_matches_loop_reference(cin, cout, size, k, s, p, budget):
    layer = LocallyConnected2d(cin, cout, size, k, stride=s, padding=p, max_patch_bytes=budget).double()
    hw, kk, ss, pp = _pairs(size, k, s, p)
    x = torch.randn(3, cin, *hw, dtype=torch.float64)
    ref = loop_reference(x, layer.weight, layer.bias, kk, ss, pp)
    torch.testing.assert_close(layer(x), ref, rtol=1e-12, atol=1e-12)
    assert layer(x).shape[2:] == output_size(hw, kk, ss, pp) == layer.out_size
    assert layer.weight.shape == (math.prod(layer.out_size), cout, cin * kk[0] * kk[1])
    assert layer.bias.shape == (cout, *layer.out_size)


@pytest.mark.parametrize("scatter", [True, False], ids=["index_add", "fold"])
@pytest.mark.parametrize("budget", [*MODES.values(), "3-positions"], ids=[*MODES, "3-positions"])
@pytest.mark.parametrize("cin,cout,size,k,s,p", GEOMETRIES)
def test_gradients_match_loop_reference(cin, cout, size, k, s, p, budget, scatter, monkeypatch):
    """All gradients, with ∂x summed by index_add_ (CPU) and by F.fold band by band (other devices)."""
    monkeypatch.setattr(local_mod, "_scatter_input_grad", lambda device: scatter)
    hw, kk, ss, pp = _pairs(size, k, s, p)
    if budget == "3-positions":  # chunks across row ends, a shorter last one (fold: whole rows instead)
        budget = 3 * cin * kk[0] * kk[1] * 2 * 8
    layer = LocallyConnected2d(cin, cout, size, k, stride=s, padding=p, max_patch_bytes=budget).double()
    x = torch.randn(2, cin, *hw, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, layer.weight, layer.bias), g)
    ref = loop_reference(x, layer.weight, layer.bias, kk, ss, pp)
    want = torch.autograd.grad(ref, (x, layer.weight, layer.bias), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@mode_param
def test_gradcheck_float64(budget):
    layer = LocallyConnected2d(2, 3, (5, 6), 3, stride=(1, 2), padding=1).double()
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()

    def fn(x, w, b):
        return locally_connected2d(x, w, b, kernel_size=3, stride=(1, 2), padding=1, max_patch_bytes=budget)

    assert torch.autograd.gradcheck(fn, (x, w, b))


@mode_param
def test_input_without_grad_gives_weight_grad_only(budget):
    layer = LocallyConnected2d(3, 4, 8, 3, stride=2, padding=1, max_patch_bytes=budget)
    x = torch.randn(4, 3, 8, 8)
    layer(x).square().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert x.grad is None
    # frozen weights, input gradient only
    layer.weight.requires_grad_(False)
    x.requires_grad_(True)
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@mode_param
@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (9, 2, 4), (5, 2, 0), (1, 1, 0)])
def test_equals_conv_when_filters_are_shared(k, s, p, budget):
    conv = nn.Conv2d(3, 5, k, stride=s, padding=p).double()
    layer = LocallyConnected2d(3, 5, 12, k, stride=s, padding=p, max_patch_bytes=budget).double()
    with torch.no_grad():
        layer.weight.copy_(conv.weight.reshape(1, 5, -1).expand_as(layer.weight))
        layer.bias.copy_(conv.bias.view(5, 1, 1).expand_as(layer.bias))
    x = torch.randn(4, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-12, atol=1e-12)
    # ∂x of shared filters is conv's ∂x; ∂W summed over positions is conv's ∂W
    g = torch.randn_like(conv(x))
    gx, gw = torch.autograd.grad(layer(x), (x, layer.weight), g)
    cx, cw = torch.autograd.grad(conv(x), (x, conv.weight), g)
    torch.testing.assert_close(gx, cx, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gw.sum(0).view_as(cw), cw, rtol=1e-10, atol=1e-10)


def test_init_like_conv2d():
    layer = LocallyConnected2d(3, 64, 32, 9, stride=2, padding=4)
    conv = nn.Conv2d(3, 64, 9, stride=2, padding=4)
    bound = 1 / math.sqrt(3 * 81)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    # same distribution: uniform on ±bound, std bound/√3
    assert abs(layer.weight.std().item() - conv.weight.std().item()) < 0.05 * bound
    assert abs(layer.weight.std().item() - bound / math.sqrt(3)) < 0.01 * bound


@mode_param
def test_no_bias_and_meta_device(budget):
    with torch.device("meta"):
        layer = LocallyConnected2d(3, 150, 32, 9, stride=2, padding=4, bias=False, max_patch_bytes=budget)
        y = layer(torch.empty(2, 3, 32, 32))
    assert layer.bias is None and layer.weight.is_meta
    assert y.shape == (2, 150, 16, 16)
    assert layer.weight.numel() == 243 * 32 * 32 * 150 // 4


def test_filters_as_images_reproduce_the_layer():
    """Unit u = l·out + o: ⟨image_u, x⟩ + bias is the layer's output at (o, position l)."""
    layer = LocallyConnected2d(2, 3, (7, 6), 3, stride=2, padding=1).double()
    x = torch.randn(5, 2, 7, 6, dtype=torch.float64)
    imgs = layer.filters_as_images()
    n_pos = math.prod(layer.out_size)
    assert imgs.shape == (n_pos * 3, 2, 7, 6)
    pre = (x.reshape(5, -1) @ imgs.reshape(len(imgs), -1).T).reshape(5, n_pos, 3).permute(0, 2, 1)
    want = (layer(x) - layer.bias).reshape(5, 3, n_pos)
    torch.testing.assert_close(pre, want)
    sub = torch.tensor([0, 4, len(imgs) - 1])
    torch.testing.assert_close(layer.filters_as_images(sub), imgs[sub])


def test_bad_geometry_and_input_raise_config_error():
    with pytest.raises(ConfigError, match="does not fit"):
        LocallyConnected2d(3, 4, 4, 7)
    with pytest.raises(ConfigError, match="in_channels"):
        LocallyConnected2d(0, 4, 8, 3)
    with pytest.raises(ConfigError, match="kernel_size"):
        LocallyConnected2d(3, 4, 8, (3, 3, 3))
    layer = LocallyConnected2d(3, 4, 8, 3)
    with pytest.raises(ConfigError, match="expects input"):
        layer(torch.randn(2, 3, 9, 9))


@mode_param
def test_autocast_bfloat16_on_cpu(budget):
    """Under autocast the layer computes in the low precision and returns float32 gradients."""
    layer = LocallyConnected2d(3, 4, 8, 3, stride=2, padding=1, max_patch_bytes=budget)
    x = torch.randn(5, 3, 8, 8, requires_grad=True)
    layer(x).square().sum().backward()
    want = (layer.weight.grad.clone(), layer.bias.grad.clone(), x.grad.clone())
    layer.zero_grad()
    x.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    for got, ref in zip((layer.weight.grad, layer.bias.grad, x.grad), want):
        assert got.dtype == torch.float32
        assert (got - ref).norm() <= 0.03 * ref.norm()


def _saved_numels(fn):
    """Sizes of the tensors autograd saves while ``fn`` runs."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sizes


def test_chunked_mode_saves_the_input_not_the_patches():
    """Several chunks: only the (batch-last) input is kept for ∂W; one chunk: the patch buffer is kept instead."""
    b, c, side, k, s, p, out = 6, 2, 12, 5, 2, 2, 3
    x = torch.randn(b, c, side, side)
    n_pos, feats = output_size(side, k, s, p)[0] ** 2, c * k * k
    for budget, want in ((1, (c * side * side + 1) * b), (math.inf, n_pos * feats * b)):
        layer = LocallyConnected2d(c, out, side, k, stride=s, padding=p, max_patch_bytes=budget)
        y, sizes = _saved_numels(lambda: layer(x))
        assert sizes == [want]  # and no weight: the input needs no gradient
        y.sum().backward()
        assert layer.weight.grad is not None


def test_positions_per_chunk():
    cpu, meta = torch.device("cpu"), torch.device("meta")
    per_pos = 243 * 32 * 4  # S-LOCAL's first layer at batch 32, fp32: 31 KiB a position, 0.47 MiB a row
    chunk = local_mod.positions_per_chunk
    assert chunk(math.inf, cpu, (16, 16), per_pos) == 256
    assert chunk(1, cpu, (16, 16), per_pos) == 1  # at least one position
    assert chunk(1, cpu, (16, 16), per_pos, whole_rows=True) == 16  # at least one row
    assert chunk(37.5 * per_pos, cpu, (16, 16), per_pos) == 37
    assert chunk(37.5 * per_pos, cpu, (16, 16), per_pos, whole_rows=True) == 32
    assert chunk(1000 * per_pos, cpu, (16, 16), per_pos) == 256
    assert chunk(None, cpu, (16, 16), per_pos) == local_mod.CPU_CHUNK_BYTES // per_pos
    assert chunk(None, meta, (16, 16), per_pos) == 256  # 7.6 MiB in all: one chunk
    assert chunk(None, meta, (16, 16), 4 * per_pos) == local_mod.DEFAULT_MAX_PATCH_BYTES // (4 * per_pos)


@pytest.mark.parametrize("bad", [0, -5, "1MB", True])
def test_bad_budget_raises_config_error(bad):
    with pytest.raises(ConfigError, match="max_patch_bytes"):
        LocallyConnected2d(3, 4, 8, 3, max_patch_bytes=bad)
    with pytest.raises(ConfigError, match="max_patch_bytes"):
        locally_connected2d(torch.randn(1, 3, 8, 8), torch.randn(36, 4, 27), kernel_size=3, max_patch_bytes=bad)


@pytest.mark.parametrize("scatter", [True, False], ids=["index_add", "fold"])
@mode_param
def test_strided_input_and_gradient_and_empty_batch(budget, scatter, monkeypatch):
    """A channels-last input and a strided output gradient give the same results as contiguous ones."""
    monkeypatch.setattr(local_mod, "_scatter_input_grad", lambda device: scatter)
    layer = LocallyConnected2d(3, 4, 9, 3, stride=2, padding=1, max_patch_bytes=budget).double()
    x0 = torch.randn(5, 3, 9, 9, dtype=torch.float64)
    x = x0.to(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(5, 4, 5, 10, dtype=torch.float64)[..., ::2]
    got = torch.autograd.grad(layer(x), (x, layer.weight), g)
    x1 = x0.clone().requires_grad_()
    want = torch.autograd.grad(layer(x1), (x1, layer.weight), g.contiguous())
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    empty = torch.randn(0, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    layer(empty).sum().backward()
    assert empty.grad.shape == empty.shape and not layer.weight.grad.any()
