"""β-LASSO: fast paths == the plain reference, closed-form steps, SGD equivalence at β = 0, state and schedulers."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from convemerge.errors import ConfigError
from convemerge.optim import BetaLasso, BetaLassoReference

# (name, kwargs) of every implementation that must agree with the reference
FAST = [("foreach", {"foreach": True}), ("loop", {"foreach": False}), ("default", {})]


def _clone_params(params: list[torch.Tensor]) -> list[nn.Parameter]:
    return [nn.Parameter(p.detach().clone()) for p in params]


def _make_groups(params: list[nn.Parameter]) -> list[dict]:
    """Three groups with different lr / lam / beta; the last has lam = 0 (plain SGD, no threshold)."""
    return [
        {"params": params[0:3], "lr": 0.1, "lam": 1e-2, "beta": 2.0},  # threshold 0.02
        {"params": params[3:6], "lr": 0.05, "lam": 3e-3, "beta": 5.0},  # threshold 0.015
        {"params": params[6:], "lr": 0.2, "lam": 0.0},
    ]


def _random_params(gen: torch.Generator, dtypes: tuple[torch.dtype, torch.dtype]) -> list[torch.Tensor]:
    shapes = [(7, 5), (13,), (3, 4, 5), (), (6, 2), (2, 3, 3, 3), (9,), (4, 4), (5,)]
    out = []
    for i, shape in enumerate(shapes):
        p = (torch.randn(shape, generator=gen, dtype=torch.float64) * 0.05).to(dtypes[i % 2])
        if p.dim() >= 1:
            p.view(-1)[::4] = 0.0  # exact zeros: sign(0) = 0 must agree too
        out.append(p)
    return out


@pytest.mark.parametrize(
    "dtypes",
    [(torch.float32, torch.float32), (torch.float32, torch.float64), (torch.float16, torch.bfloat16)],
    ids=["f32", "f32+f64", "f16+bf16"],
)
@pytest.mark.parametrize("l1_sign", ["pre", "post"])
def test_fast_paths_equal_reference_over_many_steps(dtypes, l1_sign):
    gen = torch.Generator().manual_seed(1)
    init = _random_params(gen, dtypes)
    sets = {name: _clone_params(init) for name, _ in FAST}
    ref_params = _clone_params(init)
    opts = {name: BetaLasso(_make_groups(sets[name]), lr=0.1, l1_sign=l1_sign, **kw) for name, kw in FAST}
    ref = BetaLassoReference(_make_groups(ref_params), lr=0.1, l1_sign=l1_sign)
    for step in range(40):
        grads = [(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.05).to(p.dtype) for p in init]
        for params in [ref_params, *sets.values()]:
            for i, (p, g) in enumerate(zip(params, grads)):
                # parameter 4 has no gradient on odd steps: it must then be left alone by every path
                p.grad = None if (i == 4 and step % 2) else g.clone()
        ref.step()
        for name, opt in opts.items():
            opt.step()
            for i, (p, r) in enumerate(zip(sets[name], ref_params)):
                assert torch.equal(p, r), f"{name} differs from the reference at step {step}, parameter {i}"
    # not vacuous: the thresholded groups hold exact zeros AND survivors; the lam = 0 group is dense
    thresholded = torch.cat([p.detach().double().flatten() for p in ref_params[:6]])
    assert 0.1 < (thresholded == 0).double().mean() < 0.9
    assert all((p != 0).all() for p in ref_params[6:])


def test_hand_computed_step():
    # lr = 0.5, λ = 0.25, β = 0.5 → threshold βλ = 0.125; all numbers are dyadic, so the result is exact.
    theta = [1.0, -0.5, 0.0, 0.25, -0.125, 0.4375]
    grad = [0.5, -0.25, 0.5, 0.0, -0.25, 0.5]
    # sign θ          = [ 1,    -1,    0,     1,     -1,    1     ]
    # d = g + λ·sign  = [ 0.75, -0.5,  0.5,   0.25,  -0.5,  0.75  ]
    # θ − lr·d        = [ 0.625,-0.25, -0.25, 0.125,  0.125, 0.0625]
    # keep |·| ≥ 0.125: 0.125 sits exactly on the threshold and stays; 0.0625 becomes an exact 0
    expected = torch.tensor([0.625, -0.25, -0.25, 0.125, 0.125, 0.0])
    for cls, kw in [(BetaLassoReference, {})] + [(BetaLasso, kw) for _, kw in FAST]:
        for dtype in (torch.float32, torch.float64):
            p = nn.Parameter(torch.tensor(theta, dtype=dtype))
            p.grad = torch.tensor(grad, dtype=dtype)
            cls([p], lr=0.5, lam=0.25, beta=0.5, **kw).step()
            assert torch.equal(p.detach(), expected.to(dtype)), (cls.__name__, kw, dtype)
            assert p.count_nonzero() == 5


@pytest.mark.parametrize("cls,kw", [(BetaLassoReference, {})] + [(BetaLasso, kw) for _, kw in FAST])
def test_l1_sign_post_takes_the_sign_after_the_gradient_step(cls, kw):
    # by hand, lr = 0.1, λ = 0.01, β = 0 (no threshold): θ' = θ − lr·g, then θ' − lr·λ·sign θ' (post) against
    # θ − lr·(g + λ·sign θ) (pre, Algorithm 1); the two differ where the gradient step crosses or leaves zero
    theta, g = [0.5, 0.0, 0.001, -0.004], [1.0, 0.3, 0.02, -0.05]
    expected = {"post": [0.399, -0.029, 0.0, 0.0], "pre": [0.399, -0.03, -0.002, 0.002]}
    for sign, want in expected.items():
        w = nn.Parameter(torch.tensor(theta, dtype=torch.float64))
        w.grad = torch.tensor(g, dtype=torch.float64)
        cls([w], lr=0.1, lam=0.01, beta=0.0, l1_sign=sign, **kw).step()
        assert w.detach().tolist() == pytest.approx(want, abs=1e-12)
    # a zeroed weight regrows by lr·(|g| − λ) under post and survives the threshold βλ only beyond it
    w = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    w.grad = torch.tensor([-0.0205, -0.0195], dtype=torch.float64)  # lr·|g| − lr·λ = 0.00105 / 0.00095
    cls([w], lr=0.1, lam=0.01, beta=0.1, l1_sign="post", **kw).step()  # threshold 0.001
    assert w.detach().tolist() == pytest.approx([0.00105, 0.0], abs=1e-12)
    with pytest.raises(ConfigError, match="l1_sign"):
        cls([nn.Parameter(torch.zeros(1))], lr=0.1, lam=0.01, l1_sign="after")


@pytest.mark.parametrize("cls,kw", [(BetaLassoReference, {})] + [(BetaLasso, kw) for _, kw in FAST])
def test_threshold_is_not_scaled_by_lr(cls, kw):
    # βλ = 0.1. A tiny lr barely moves θ, yet 0.05 < βλ is zeroed (an lr-scaled threshold 1e-7 would keep it).
    p = nn.Parameter(torch.tensor([0.05, -0.05, 0.2, 0.1], dtype=torch.float64))
    p.grad = torch.zeros(4, dtype=torch.float64)
    cls([p], lr=1e-6, lam=0.01, beta=10.0, **kw).step()
    assert p[0] == 0 and p[1] == 0
    assert p[2].item() == pytest.approx(0.2 - 1e-8, rel=0, abs=1e-16)  # a survivor moves by lr·λ only
    assert p[3] == 0  # 0.1 − 1e-8 is just below βλ


def _mlp(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)
    with torch.no_grad():
        net[0].weight.view(-1)[::3] = 0.0  # exact zeros: autograd's d|θ|/dθ at 0 is 0, like sign(0)
    return net


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sgd_foreach", [False, True])
@pytest.mark.parametrize("kw", [{"foreach": True}, {"foreach": False}], ids=["foreach", "loop"])
def test_beta_zero_is_sgd_on_the_l1_penalised_loss(dtype, sgd_foreach, kw):
    lam, lr = 1e-2, 0.1
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(16, 6, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (16,), generator=gen)
    net_bl, net_sgd = _mlp(dtype), _mlp(dtype)
    bl = BetaLasso(net_bl.parameters(), lr=lr, lam=lam, beta=0.0, **kw)
    sgd = torch.optim.SGD(net_sgd.parameters(), lr=lr, foreach=sgd_foreach)
    for _ in range(6):
        bl.zero_grad()
        nn.functional.cross_entropy(net_bl(x), y).backward()
        bl.step()
        sgd.zero_grad()
        loss = nn.functional.cross_entropy(net_sgd(x), y) + lam * sum(p.abs().sum() for p in net_sgd.parameters())
        loss.backward()
        sgd.step()
        for a, b in zip(net_bl.parameters(), net_sgd.parameters()):
            assert torch.equal(a, b)


def test_lam_zero_is_plain_sgd():
    net_bl, net_sgd = _mlp(torch.float32), _mlp(torch.float32)
    x = torch.randn(8, 6)
    bl = BetaLasso(net_bl.parameters(), lr=0.3, lam=0.0, beta=50.0)
    sgd = torch.optim.SGD(net_sgd.parameters(), lr=0.3)
    for net, opt in ((net_bl, bl), (net_sgd, sgd)):
        for _ in range(3):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(net_bl.parameters(), net_sgd.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls,kw", [(BetaLassoReference, {})] + [(BetaLasso, kw) for _, kw in FAST])
def test_excluded_and_gradless_parameters_are_never_thresholded(cls, kw):
    from convemerge.optim import beta_lasso_param_groups

    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    frozen = nn.Parameter(torch.full((5,), 1e-4))  # in the L1 group but never gets a gradient
    with torch.no_grad():
        for name, p in net.named_parameters():
            if not name.endswith("weight") or p.dim() == 1:  # biases and BN: tiny values far below βλ = 1
                p.copy_(torch.linspace(-1e-4, 1e-4, p.numel()).view_as(p) + 1e-6)
    groups = beta_lasso_param_groups(net, lam=0.1)
    groups[1]["params"].append(frozen)
    excluded = groups[-1]["params"]
    assert groups[-1]["name"] == "bias_and_norm" and groups[-1]["lam"] == 0.0
    before = [p.detach().clone() for p in excluded]
    opt = cls(groups, lr=0.01, beta=10.0, **kw)
    net(torch.randn(6, 4)).square().mean().backward()
    opt.step()
    assert net[0].weight.count_nonzero() == 0 and net[3].weight.count_nonzero() == 0  # all |w| < βλ = 1
    for p, b in zip(excluded, before):
        assert torch.equal(p.detach(), b - 0.01 * p.grad)  # plain SGD
        assert p.count_nonzero() == p.numel()
    assert torch.equal(frozen.detach(), torch.full((5,), 1e-4))


def test_including_bias_and_norm_thresholds_them():
    from convemerge.optim import beta_lasso_param_groups

    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    opt = BetaLasso(beta_lasso_param_groups(net, lam=0.1, include_bias_and_norm=True), lr=0.01, beta=100.0)
    net(torch.randn(6, 4)).square().mean().backward()
    opt.step()
    assert all(p.count_nonzero() == 0 for p in net.parameters())  # BN weight 1 − lr·(g + λ) < βλ = 10


@pytest.mark.parametrize("name", ["lr", "lam", "beta"])
@pytest.mark.parametrize("bad", [-1e-3, float("nan"), float("inf"), -float("inf"), True, "0.1", None])
@pytest.mark.parametrize("cls", [BetaLasso, BetaLassoReference])
def test_bad_hyperparameters_raise_value_error(cls, name, bad):
    p = nn.Parameter(torch.zeros(3))
    kwargs = {"lr": 0.1, "lam": 1e-3, "beta": 1.0}
    with pytest.raises(ValueError, match=name):
        cls([p], **{**kwargs, name: bad})
    with pytest.raises(ConfigError, match=name):  # a group's own value is checked too
        cls([{"params": [p], name: bad}], **kwargs)
    opt = cls([p], **kwargs)
    with pytest.raises(ConfigError, match=name):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))], name: bad})
    assert len(opt.param_groups) == 1


def test_other_bad_inputs():
    with pytest.raises(ConfigError, match="foreach"):
        BetaLasso([nn.Parameter(torch.zeros(2))], lr=0.1, foreach="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="foreach"):
        BetaLasso([{"params": [nn.Parameter(torch.zeros(2))], "foreach": 1}], lr=0.1)
    with pytest.raises(ConfigError, match="floating-point"):
        BetaLasso([torch.zeros(2, dtype=torch.int64)], lr=0.1)
    with pytest.raises(ConfigError, match="floating-point"):
        BetaLasso([nn.Parameter(torch.zeros(2, dtype=torch.complex64))], lr=0.1)
    emb = nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ConfigError, match="sparse"):
        BetaLasso(emb.parameters(), lr=0.1, lam=1e-3).step()
    assert BetaLasso([nn.Parameter(torch.zeros(2))], lr=0).defaults == {
        "lr": 0,
        "lam": 0.0,
        "beta": 0.0,
        "foreach": None,
        "l1_sign": "pre",
    }
    with pytest.raises(ConfigError, match="l1_sign"):
        BetaLasso([{"params": [nn.Parameter(torch.zeros(2))], "l1_sign": "before"}], lr=0.1)


def test_named_parameters_are_accepted():
    net = nn.Linear(3, 2)
    opt = BetaLasso(net.named_parameters(), lr=0.1, lam=0.5, beta=10.0)  # threshold 5 > every weight
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    assert net.weight.count_nonzero() == 0 and net.bias.count_nonzero() == 0


def test_closure_loss_is_returned_and_computed_with_grad():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = BetaLasso([p], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 5.0
    assert torch.equal(p.detach(), torch.tensor([0.0, 0.0]))  # θ − 0.5·2θ


def _train(net: nn.Module, opt: torch.optim.Optimizer, sched, steps: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    trajectory = []
    for _ in range(steps):
        x = torch.randn(32, 10, generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), x[:, :3].argmax(1)).backward()
        opt.step()
        sched.step()
        trajectory.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    return trajectory


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("resume_cls", [BetaLasso, BetaLassoReference])
def test_state_dict_round_trip_continues_identically(resume_cls):
    from convemerge.optim import beta_lasso_param_groups

    def build(cls, net):
        opt = cls(beta_lasso_param_groups(net, lam=2e-3, lam_first=5e-3), lr=0.2, beta=3.0)
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)

    net = _net()
    opt, sched = build(BetaLasso, net)
    _train(net, opt, sched, 4, seed=0)
    saved = copy.deepcopy((net.state_dict(), opt.state_dict(), sched.state_dict()))
    json.dumps(saved[1]["param_groups"])  # checkpoints store the groups as JSON
    uninterrupted = _train(net, opt, sched, 5, seed=1)

    net2 = _net()
    net2.load_state_dict(saved[0])
    opt2, sched2 = build(resume_cls, net2)
    for g in opt2.param_groups:
        g.update(lr=9.0, lam=0.0, beta=0.0)  # wrong values: load_state_dict must restore them
    opt2.load_state_dict(saved[1])
    sched2.load_state_dict(saved[2])
    resumed = _train(net2, opt2, sched2, 5, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted, resumed))
    assert (uninterrupted[-1] == 0).any()  # the threshold fired: the comparison covers it


@pytest.mark.parametrize("cls,kw", [(BetaLassoReference, {})] + [(BetaLasso, kw) for _, kw in FAST])
def test_lambda_lr_scales_the_whole_step(cls, kw):
    # constant gradient 1, λ = 0.25 → d = 1.25 each step; lr 1, 0.5, 0.25: Δθ = −1.25, −0.625, −0.3125
    p = nn.Parameter(torch.tensor([8.0]))
    opt = cls([p], lr=1.0, lam=0.25, beta=1.0, **kw)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5**epoch)
    values = []
    for _ in range(3):
        p.grad = torch.ones(1)
        opt.step()
        sched.step()
        values.append(p.item())
    assert values == [6.75, 6.125, 5.8125]
    assert opt.param_groups[0]["lr"] == 0.125


def test_cosine_annealing_changes_the_step():
    p = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = BetaLasso([p], lr=0.1, lam=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    steps, lrs = [], []
    for _ in range(4):
        before = p.detach().clone()
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(4, dtype=torch.float64)
        opt.step()
        sched.step()
        steps.append((before - p.detach())[0].item())
    assert steps == pytest.approx(lrs, rel=1e-12)
    assert lrs[0] == 0.1 and lrs[1] < lrs[0] and lrs[3] < lrs[2]


_INT = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.floats(-1.0, 1.0, allow_subnormal=True, width=32), min_size=1, max_size=20),
    lam=st.floats(0.0, 1.0, width=64),
    beta=st.sampled_from([0.0, 1.0, 0.5, 3.0, 50.0, 1e-3]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
)
def test_threshold_boundary_property(values, lam, beta, dtype):
    # lr = 0 isolates the threshold: the result must be x·1[|x| ≥ βλ] with the comparison in the tensor's dtype,
    # including values lying exactly on βλ (rounded to the dtype).
    t = torch.tensor(beta * lam, dtype=dtype)
    x = torch.tensor(values, dtype=dtype)
    below = (t.view(_INT[dtype]) - 1).view(dtype) if t > 0 else t  # the dtype's next value below βλ
    x = torch.cat([x, t.view(1), -t.view(1), below.view(1), -below.view(1)])
    expected = x * (x.abs() >= beta * lam)
    for cls, kw in [(BetaLassoReference, {})] + [(BetaLasso, kw) for _, kw in FAST]:
        p = nn.Parameter(x.clone())
        p.grad = torch.zeros_like(x)
        cls([p], lr=0.0, lam=lam, beta=beta, **kw).step()
        assert torch.equal(p.detach(), expected), (cls.__name__, kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_foreach_matches_cpu_reference():
    gen = torch.Generator().manual_seed(5)
    init = _random_params(gen, (torch.float32, torch.float64))
    cpu = _clone_params(init)
    gpu = [nn.Parameter(p.detach().cuda()) for p in init]
    ref = BetaLassoReference(_make_groups(cpu), lr=0.1)
    fast = BetaLasso(_make_groups(gpu), lr=0.1)  # foreach by default on CUDA
    for _ in range(10):
        grads = [(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.05).to(p.dtype) for p in init]
        for p, q, g in zip(cpu, gpu, grads):
            p.grad, q.grad = g.clone(), g.cuda()
        ref.step()
        fast.step()
    for p, q in zip(cpu, gpu):
        # the zero pattern may differ only where a value lands within rounding of the threshold
        torch.testing.assert_close(q.detach().cpu(), p.detach(), rtol=1e-5, atol=1e-6)


def test_docs_and_docstring_examples_run():
    import doctest
    import re
    from pathlib import Path

    import convemerge.optim.beta_lasso as beta_lasso_module
    import convemerge.optim.param_groups as param_groups_module

    for module in (beta_lasso_module, param_groups_module):
        assert doctest.testmod(module).failed == 0
    doc = (Path(__file__).resolve().parents[1] / "docs" / "optim.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "docs/optim.md", "exec"), {})
