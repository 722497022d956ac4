"""Checkpoint I/O: exact round trip of model + optimizer state, atomic swap, torn checkpoints ignored."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from convemerge.errors import ConfigError
from convemerge.train.checkpoint import (
    find_checkpoint,
    flatten_optimizer_state,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer_state,
)
from convemerge.train.metrics import MetricsLog, read_metrics
from convemerge.train.rng import capture_rng, restore_rng


def _net():
    return nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))


def _trained(opt_cls, **kw):
    torch.manual_seed(0)
    net = _net()
    opt = opt_cls(net.parameters(), **kw)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 6)).square().mean().backward()
        opt.step()
    return net, opt


@pytest.mark.parametrize("opt_cls, kw", [(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
                                         (torch.optim.Adam, {"lr": 1e-3})])
def test_round_trip_continues_identically(tmp_path, opt_cls, kw):
    net, opt = _trained(opt_cls, **kw)
    save_checkpoint(tmp_path / "ck", net, opt, {"epoch": 3, "step": 3, "note": "x"})
    net2 = _net()
    opt2 = opt_cls(net2.parameters(), **kw)
    state = load_checkpoint(tmp_path / "ck", net2, opt2)
    assert state["note"] == "x"
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.randn(8, 6)
    for n, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        n(x).square().mean().backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)


def test_flatten_unflatten_optimizer_state():
    _, opt = _trained(torch.optim.Adam, lr=1e-3)
    sd = opt.state_dict()
    tensors, meta = flatten_optimizer_state(sd)
    json.dumps(meta)  # the rest must be JSON-able
    back = unflatten_optimizer_state(tensors, json.loads(json.dumps(meta)))
    assert back["param_groups"] == json.loads(json.dumps(sd["param_groups"]))
    assert set(back["state"]) == set(sd["state"])
    for pid, st in sd["state"].items():
        for name, v in st.items():
            assert torch.equal(back["state"][pid][name], v)


def test_overwrite_swaps_and_leaves_no_temp(tmp_path):
    net, opt = _trained(torch.optim.SGD, lr=0.1)
    save_checkpoint(tmp_path / "last", net, opt, {"epoch": 1})
    save_checkpoint(tmp_path / "last", net, opt, {"epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert load_checkpoint(tmp_path / "last")["epoch"] == 2
    assert not [p for p in (tmp_path / "last").iterdir() if p.name.startswith(".")]


def test_link_from_shares_files(tmp_path):
    net, opt = _trained(torch.optim.SGD, lr=0.1)
    save_checkpoint(tmp_path / "last", net, opt, {"epoch": 4})
    save_checkpoint(tmp_path / "best", net, opt, {"epoch": 4}, link_from=tmp_path / "last")
    assert load_checkpoint(tmp_path / "best")["epoch"] == 4
    save_checkpoint(tmp_path / "last", net, opt, {"epoch": 5})  # rewriting last must not touch best
    assert load_checkpoint(tmp_path / "best")["epoch"] == 4


def test_torn_checkpoints_are_never_loaded(tmp_path):
    net, opt = _trained(torch.optim.SGD, lr=0.1)
    save_checkpoint(tmp_path / "last", net, opt, {"epoch": 1})
    # a crash while writing the next one: the .tmp directory is never a candidate
    shutil.copytree(tmp_path / "last", tmp_path / "last.tmp")
    (tmp_path / "last.tmp" / "manifest.json").unlink()
    assert find_checkpoint(tmp_path / "last") == tmp_path / "last"
    # a crash mid-swap: only last.old exists -> it is used
    (tmp_path / "last").rename(tmp_path / "last.old")
    assert find_checkpoint(tmp_path / "last") == tmp_path / "last.old"
    assert load_checkpoint(tmp_path / "last")["epoch"] == 1
    # a file of the wrong size (truncated) invalidates the checkpoint
    p = tmp_path / "last.old" / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-10])
    assert find_checkpoint(tmp_path / "last") is None
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        load_checkpoint(tmp_path / "last")


def test_shared_and_view_tensors_are_storable(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4, bias=False)
            self.b = nn.Linear(4, 4, bias=False)
            self.b.weight = self.a.weight

    net = Tied()
    save_checkpoint(tmp_path / "ck", net, None, {"epoch": 0})
    net2 = Tied()
    load_checkpoint(tmp_path / "ck", net2)
    assert torch.equal(net2.a.weight, net.a.weight)


def test_rng_capture_restore_reproduces_every_stream():
    import random

    import numpy as np

    g = torch.Generator().manual_seed(5)
    state = json.loads(json.dumps(capture_rng(g)))
    first = (torch.rand(3), torch.rand(3, generator=g), np.random.rand(3), random.random())
    restore_rng(state, g)
    second = (torch.rand(3), torch.rand(3, generator=g), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert np.array_equal(first[2], second[2]) and first[3] == second[3]


def test_metrics_log_appends_and_skips_torn_line(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    log.append({"epoch": 1, "val_acc": 0.5, "x": float("nan")})
    log.append({"epoch": 2, "val_acc": 0.6})
    with open(log.path, "a") as fh:
        fh.write('{"epoch": 3, "val')  # a writer killed mid-line
    recs = read_metrics(log.path)
    assert [r["epoch"] for r in recs] == [1, 2] and recs[0]["x"] is None
    log.rewrite(recs[:1])
    assert [r["epoch"] for r in log.read()] == [1]
