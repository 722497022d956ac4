"""Sparse export: the loaded net computes what the dense one does; CSR files hold exactly the non-zeros."""

from __future__ import annotations

import json

import pytest
import torch

from convemerge.errors import ConfigError
from convemerge.models import create_model
from convemerge.train.export import SparseLinear, export_model_sparse, load_sparse

GEOMETRY = {"image_size": 28, "in_chans": 1, "num_classes": 10}


def _sparse_model(name: str, zeros: float = 0.95, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model(name, alpha=2, **GEOMETRY)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for wl in model.weight_layers()[:-1]:  # β-LASSO-like: hidden layers mostly zero, last layer dense
            wl.module.weight.mul_((torch.rand(wl.module.weight.shape, generator=g) > zeros).float())
        for m in model.modules():  # non-trivial BatchNorm statistics, so their export matters
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.data.uniform_(0.5, 1.5, generator=g)
                m.bias.data.normal_(generator=g)
    return model.eval()


@pytest.mark.parametrize("name", ["s-fc", "s-conv", "s-local"])
def test_roundtrip_matches_dense(name, tmp_path):
    model = _sparse_model(name)
    path = export_model_sparse(model, tmp_path / "net", config={"model": name, "alpha": 2}, geometry=GEOMETRY)
    meta = json.loads(path.with_suffix(".json").read_text())
    for wl in model.weight_layers():
        assert meta["layers"][wl.name]["nnz"] == int(torch.count_nonzero(wl.module.weight))
    loaded = load_sparse(path)
    assert not loaded.training
    x = torch.randn(37, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5, rtol=1e-4)
    kinds = {wl.name: wl.kind for wl in model.weight_layers()}
    sparse_layers = [n for n, m in loaded.named_modules() if isinstance(m, SparseLinear)]
    # hidden linear layers (5% dense) run sparse; the dense last layer and conv/local layers stay dense
    expected = [n for n, k in kinds.items() if k == "linear" and n != model.weight_layers()[-1].name]
    assert sparse_layers == expected


def test_csr_holds_only_nonzeros(tmp_path):
    from safetensors.torch import load_file

    model = _sparse_model("s-fc", zeros=0.99)
    path = export_model_sparse(model, tmp_path / "net.safetensors", config={"model": "s-fc", "alpha": 2},
                               geometry=GEOMETRY)
    t = load_file(str(path))
    w = model.weight_layers()[0].module.weight
    assert t["layer1.values"].numel() == int(torch.count_nonzero(w))
    assert t["layer1.crow_indices"].numel() == w.shape[0] + 1
    assert not any(k.startswith("dense.layer1.weight") for k in t)
    dense_size = w.numel() * 4
    sparse_size = sum(t[f"layer1.{k}"].numel() * t[f"layer1.{k}"].element_size()
                      for k in ("values", "col_indices", "crow_indices"))
    assert sparse_size < dense_size / 10


def test_max_density_keeps_layers_dense(tmp_path):
    model = _sparse_model("s-fc", zeros=0.5)
    path = export_model_sparse(model, tmp_path / "net", config={"model": "s-fc", "alpha": 2}, geometry=GEOMETRY)
    assert not any(isinstance(m, SparseLinear) for m in load_sparse(path).modules())
    assert any(isinstance(m, SparseLinear) for m in load_sparse(path, max_density=0.6).modules())


def test_bad_export_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read sparse export"):
        load_sparse(tmp_path / "missing")


def test_corrupt_indices_rejected(tmp_path):
    from safetensors.torch import load_file, save_file

    model = _sparse_model("s-fc")
    path = export_model_sparse(model, tmp_path / "net", config={"model": "s-fc", "alpha": 2}, geometry=GEOMETRY)
    t = load_file(str(path))
    t["layer1.col_indices"][0] = 10**6  # out of range
    save_file(t, str(path))
    with pytest.raises(ConfigError, match="not a valid CSR"):
        load_sparse(path)
