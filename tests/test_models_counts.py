"""Weight counts of every model against the spec's closed forms, written out here independently of the code.

Models are built on the meta device, so paper-scale instances (hundreds of millions of weights) cost nothing.
The spec writes its formulas for c_in = 3 (243 = 3·81, 27 = 3·9, 3·s⁴); here c_in is general.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from convemerge.models import count_weights, create_model


def build(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


# -- the spec's exact formulas, c_in-general (s = side, a = α, c = classes, ci = input channels) ----------
def s_conv(s, a, ci, c):
    return 81 * ci * a + 6 * s**2 * a**2 + 24 * c * a


def s_local(s, a, ci, c):
    return 81 * ci * s**2 * a // 4 + 6 * s**2 * a**2 + 24 * c * a


def s_fc(s, a, ci, c):
    return ci * s**4 * a // 4 + 6 * s**2 * a**2 + 24 * c * a


def d_conv(s, a, ci, c):
    return (2286 + 4 * s**2) * a**2 + (9 * ci + 64 * c) * a


def d_local(s, a, ci, c):
    return 49 * s**2 * a**2 + (9 * ci * s**2 + 64 * c) * a


def d_fc(s, a, ci, c):
    return 127 * s**4 * a**2 // 128 + 4 * s**2 * a**2 + (ci * s**4 + 64 * c) * a


FORMULAS = {"s-conv": s_conv, "s-local": s_local, "s-fc": s_fc, "d-conv": d_conv, "d-local": d_local, "d-fc": d_fc}
ALPHAS = (1, 2, 3, 5, 8)


@pytest.mark.parametrize("name", ["s-conv", "s-local", "s-fc"])
@pytest.mark.parametrize("side", [8, 16, 28, 32])
def test_shallow_counts(name, side):
    for a, ci, c in itertools.product(ALPHAS, (1, 3), (10, 100)):
        m = build(name, alpha=a, image_size=side, in_chans=ci, num_classes=c)
        assert count_weights(m) == FORMULAS[name](side, a, ci, c), (name, side, a, ci, c)


@pytest.mark.parametrize("name", ["d-conv", "d-local", "d-fc"])
@pytest.mark.parametrize("side", [16, 32])
def test_deep_counts(name, side):
    for a, ci, c in itertools.product(ALPHAS, (1, 3), (10, 100)):
        m = build(name, alpha=a, image_size=side, in_chans=ci, num_classes=c)
        assert count_weights(m) == FORMULAS[name](side, a, ci, c), (name, side, a, ci, c)


@pytest.mark.parametrize(
    "name,alpha,exact,paper_millions",
    [
        ("s-conv", 150, 138_312_450, 138.3),
        ("s-local", 150, 147_607_200, 147.6),
        ("s-fc", 150, 256_240_800, 256.2),
        ("d-conv", 15, 1_445_955, 1.446),
        ("d-local", 15, 11_713_920, 11.71),
        ("d-fc", 15, 282_203_520, 282.2),
    ],
)
def test_reference_points(name, alpha, exact, paper_millions):
    m = build(name, alpha=alpha, image_size=32, in_chans=3, num_classes=10)
    assert count_weights(m) == exact == FORMULAS[name](32, alpha, 3, 10)
    digits = len(str(paper_millions).split(".")[1])
    assert round(exact / 1e6, digits) == paper_millions
    # the default α is the paper's
    assert count_weights(build(name, image_size=32, in_chans=3, num_classes=10)) == exact


def test_d_local_against_the_papers_table_3():
    """Table 3's halving rows (9s²α²/2, /4, …) undercount: the faithful layers alternate 4.5·s²α² and 9·s²α²."""
    s, a = 32, 15
    m = build("d-local", alpha=a, image_size=s, in_chans=3, num_classes=10)
    per_layer = [layer.module.weight.numel() for layer in m.weight_layers()]
    assert per_layer[1:8] == [int(f * s * s * a * a) for f in (4.5, 9, 4.5, 9, 4.5, 9, 4.5)]
    paper = 13 * s**2 * a**2 + (27 * s**2 + 64 * 10) * a  # Table 3's approximation
    assert 3.3e6 < paper < 3.6e6  # ≈ Table 1's 3.42M
    assert count_weights(m) > 3 * paper


def mlp(s, w, ci, c):
    return ci * s * s * w + w * w + w * c


@pytest.mark.parametrize("side,ci,c", [(8, 1, 10), (28, 1, 10), (32, 3, 10), (32, 3, 100)])
def test_three_fc_width_rules(side, ci, c):
    m = build("3-fc", width=37, image_size=side, in_chans=ci, num_classes=c)
    assert count_weights(m) == mlp(side, 37, ci, c)
    for target in (10_000, 123_457, 5_000_000):
        m = build("3-fc", target_params=target, image_size=side, in_chans=ci, num_classes=c)
        w = m.width
        assert count_weights(m) == mlp(side, w, ci, c)
        # nearest integer width: neither neighbour is closer to the target
        assert all(abs(mlp(side, w, ci, c) - target) <= abs(mlp(side, v, ci, c) - target) for v in (w - 1, w + 1) if v)
    for a in (1, 4, 150):  # α: the budget of S-FC at the same α
        m = build("3-fc", alpha=a, image_size=side, in_chans=ci, num_classes=c)
        target = s_fc(side, a, ci, c)
        assert abs(count_weights(m) - target) <= ci * side * side + 2 * m.width + c


def test_three_fc_paper_point():
    m = build("3-fc", image_size=32, in_chans=3, num_classes=10)
    assert m.width == 14_541
    assert round(count_weights(m) / 1e6) == 256


def resnet(k, a, ci, c):
    convs = k * k * ci * a + 4 * k * k * a * a  # stem, stage 1
    for cin, cout in ((a, 2 * a), (2 * a, 4 * a), (4 * a, 8 * a)):
        convs += k * k * cin * cout + 3 * k * k * cout * cout + cin * cout  # + 1×1 projection
    return convs + 8 * a * c


@pytest.mark.parametrize("k", [3, 7, 11, 15])
def test_resnet18_counts(k):
    for a, ci, c in itertools.product((1, 4, 64), (1, 3), (10, 100)):
        m = build("resnet18", alpha=a, image_size=32, in_chans=ci, num_classes=c, kernel_size=k)
        assert count_weights(m) == resnet(k, a, ci, c) == 298 * k * k * a * a + 42 * a * a + k * k * ci * a + 8 * c * a
    assert count_weights(build("resnet18", image_size=32, in_chans=3, num_classes=10)) == 11_164_352


@pytest.mark.parametrize("depth,width,k,pad", [(1, 8, 3, None), (3, 16, 5, None), (2, 4, 3, 0), (4, 64, 7, 3)])
def test_vanilla_cnn_counts(depth, width, k, pad):
    side, ci, c = 16, 3, 10
    m = build("vanilla-cnn", image_size=side, in_chans=ci, num_classes=c, depth=depth, width=width,
              kernel_size=k, **({} if pad is None else {"padding": pad}))
    p = k // 2 if pad is None else pad
    out = side
    for _ in range(depth):
        out = out + 2 * p - k + 1
    assert count_weights(m) == k * k * ci * width + (depth - 1) * k * k * width * width + width * out * out * c


# The student reproduction's own parameter formula (gojkoc54/convolutions_from_scratch, src/utils.py,
# get_true_parameters_count) at s = 32, c = 10: every parameter of its nets, which have no biases and BatchNorm
# without a learned scale or shift.
REPRODUCTION_COUNT = {
    "s-conv": lambda a, s, c: 6 * s**2 * a**2 + (243 + 24 * c) * a,
    "s-local": lambda a, s, c: 6 * s**2 * a**2 + (243 * s**2 // 4 + 24 * c) * a,
    "s-fc": lambda a, s, c: 6 * s**2 * a**2 + (3 * s**4 // 4 + 24 * c) * a,
}


@pytest.mark.parametrize("name", sorted(REPRODUCTION_COUNT))
@pytest.mark.parametrize("alpha", [1, 2])
def test_reproduction_nets_have_exactly_the_reproductions_parameters(name, alpha):
    kw = dict(alpha=alpha, image_size=32, in_chans=3, num_classes=10)
    plain = create_model(name, **kw, norm_affine=False, out_bias=False)
    total = sum(p.numel() for p in plain.parameters())
    assert total == REPRODUCTION_COUNT[name](alpha, 32, 10) == count_weights(plain)
    norms = [m for m in plain.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 2 and all(m.weight is None and m.bias is None for m in norms)
    # the default keeps BatchNorm's scale and shift and the output bias: 2 per hidden unit + c more parameters
    default = create_model(name, **kw)
    hidden = sum(m.num_features for m in norms)
    assert sum(p.numel() for p in default.parameters()) == total + 2 * hidden + 10
    x = torch.randn(4, 3, 32, 32)
    assert plain(x).shape == (4, 10)


def test_three_fc_takes_the_reproduction_options():
    m = create_model("3-fc", alpha=1, image_size=32, in_chans=3, num_classes=10, norm_affine=False, out_bias=False)
    assert sum(p.numel() for p in m.parameters()) == count_weights(m)
