"""(C)NFA tables, convergence with n, report files, eigenvector filters and plots."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from convemerge.analysis.agop import filter_covariance, layer_agop, sym_matrix_power
from convemerge.analysis.cnfa import (
    cosine_similarity,
    matrix_correlations,
    nfa_convergence,
    nfa_table,
    pearson_correlation,
)
from convemerge.experiments.cnfa.report_writer import cnfa_report
from convemerge.analysis.filters import eigenfilters, input_agop_eigenimages, patch_shape, top_eigenvectors
from convemerge.analysis.plots_nfa import (
    filter_images,
    plot_agop_vs_wtw,
    plot_filter_grid,
    plot_nfa_convergence,
    plot_nfa_table,
)
from convemerge.errors import ConfigError
from test_agop import TinyLocal  # tests/ is on sys.path under pytest's default import mode

DT = torch.float64


def small_cnn(seed=0, width=6):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(width * 3 * 3, 8),
        nn.ReLU(),
        nn.Linear(8, 4),
    ).to(DT)


def test_correlations_match_numpy():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 7, generator=gen, dtype=DT), torch.randn(7, 7, generator=gen, dtype=DT)
    b = b + 0.5 * a
    assert pearson_correlation(a, b) == pytest.approx(np.corrcoef(a.flatten(), b.flatten())[0, 1], abs=1e-12)
    an, bn = a.flatten().numpy(), b.flatten().numpy()
    assert cosine_similarity(a, b) == pytest.approx(an @ bn / np.linalg.norm(an) / np.linalg.norm(bn), abs=1e-12)
    assert matrix_correlations(a, 3 * a + 1)["pearson"] == pytest.approx(1.0, abs=1e-12)  # shift/scale invariant
    assert math.isnan(cosine_similarity(a, torch.zeros_like(a)))


def test_last_linear_layer_agop_is_exactly_wtw():
    # f = W h + b: Σ_o ∇f_o∇f_oᵀ = Σ_o w_o w_oᵀ = WᵀW for every image — the NFA holds exactly at the top
    model = small_cnn()
    x = torch.randn(5, 3, 8, 8, dtype=DT)
    assert torch.allclose(layer_agop(model, "7", x), filter_covariance(model[7]), atol=1e-12)
    row = nfa_table(model, x, layers=["7"])[0]
    assert row["pearson"] == pytest.approx(1.0, abs=1e-12) and row["cosine"] == pytest.approx(1.0, abs=1e-12)


def test_nfa_table_values_and_baselines():
    model, init = small_cnn(0), small_cnn(1)
    x = torch.randn(9, 3, 8, 8, dtype=DT)
    rows = nfa_table(model, x, init_model=init, power=0.5, batch_size=4)
    assert [r["layer"] for r in rows] == ["0", "2", "5", "7"]
    assert [r["kind"] for r in rows] == ["conv", "conv", "linear", "linear"]
    assert [r["in_dim"] for r in rows] == [27, 54, 54, 8]
    for r in rows:
        m, m0 = dict(model.named_modules())[r["layer"]], dict(init.named_modules())[r["layer"]]
        g = sym_matrix_power(layer_agop(model, r["layer"], x), 0.5)
        g0 = sym_matrix_power(layer_agop(init, r["layer"], x), 0.5)
        wtw, w0tw0 = filter_covariance(m), filter_covariance(m0)
        assert r["pearson"] == pytest.approx(pearson_correlation(g, wtw), abs=1e-9)
        assert r["cosine"] == pytest.approx(cosine_similarity(g, wtw), abs=1e-9)
        assert r["init_pearson"] == pytest.approx(pearson_correlation(g0, w0tw0), abs=1e-9)
        assert r["w0_pearson"] == pytest.approx(pearson_correlation(w0tw0, wtw), abs=1e-9)
        assert r["n_images"] == 9 and r["power"] == 0.5 and r["skipped"] is None
    # without an init model the baselines are absent; the same model as its own init is a perfect match
    assert nfa_table(model, x)[0]["init_pearson"] is None
    same = nfa_table(model, x, init_model=copy.deepcopy(model))
    assert all(r["w0_pearson"] == pytest.approx(1.0) and r["init_pearson"] == pytest.approx(r["pearson"]) for r in same)


def test_every_baseline_and_the_centred_ansatz_by_hand():
    # a "trained" net = its initialisation plus a known change, so ΔW = W_T − W₀ is exact; every column is
    # recomputed here in numpy from the raw weights and an independently computed AGOP
    init = small_cnn(0)
    model = copy.deepcopy(init)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in (model[0], model[2]):
            m.weight.add_(0.3 * torch.randn(m.weight.shape, generator=gen, dtype=DT))
    x = torch.randn(7, 3, 8, 8, dtype=DT)
    rows = {r["layer"]: r for r in nfa_table(model, x, init_model=init)}

    def corr(a, b):
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    def cos(a, b):
        return float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b))

    for name, k in (("0", 0), ("2", 2)):
        w = model[k].weight.detach().numpy().reshape(model[k].out_channels, -1)
        w0 = init[k].weight.detach().numpy().reshape(init[k].out_channels, -1)
        dw = w - w0
        g, g0 = layer_agop(model, name, x).numpy(), layer_agop(init, name, x).numpy()
        r = rows[name]
        assert r["delta_pearson"] == pytest.approx(corr(g, dw.T @ dw), abs=1e-10)
        assert r["delta_cosine"] == pytest.approx(cos(g, dw.T @ dw), abs=1e-10)
        assert r["agop_w0_pearson"] == pytest.approx(corr(g, w0.T @ w0), abs=1e-10)
        assert r["agop_w0_cosine"] == pytest.approx(cos(g, w0.T @ w0), abs=1e-10)
        assert r["w0_pearson"] == pytest.approx(corr(w0.T @ w0, w.T @ w), abs=1e-10)
        assert r["init_pearson"] == pytest.approx(corr(g0, w0.T @ w0), abs=1e-10)
        assert r["pearson"] == pytest.approx(corr(g, w.T @ w), abs=1e-10)
        assert r["moved"] == pytest.approx(np.linalg.norm(dw) / np.linalg.norm(w0), abs=1e-12)
    # untouched layers did not move: ΔW = 0, so the centred correlation is undefined (None in JSON, NaN here)
    assert rows["7"]["moved"] == 0.0 and math.isnan(rows["7"]["delta_pearson"])
    # the centred ansatz differs from the plain one once W₀ is not negligible
    assert abs(rows["0"]["delta_pearson"] - rows["0"]["pearson"]) > 1e-3


def test_tables_for_both_powers_come_from_one_agop(tmp_path):
    model, init = small_cnn(0), small_cnn(1)
    x = torch.randn(6, 3, 8, 8, dtype=DT)
    rec = cnfa_report(model, x, init_model=init, out_dir=tmp_path, sizes=(), n_filters=2, plot_layers=[],
                      extra_powers=(0.5,))
    direct = nfa_table(model, x, init_model=init, power=0.5)
    half = rec["tables_by_power"]["0.5"]
    keys = ("pearson", "cosine", "agop_w0_pearson", "w0_pearson", "init_pearson", "delta_pearson", "delta_cosine")
    for got, want in zip(half, direct):
        assert [got[k] for k in keys] == pytest.approx([want[k] for k in keys], abs=1e-9)
    assert [r["pearson"] for r in rec["table"]] != pytest.approx([r["pearson"] for r in half], abs=1e-3)


def test_nfa_table_skips_large_layers_and_checks_init_architecture():
    model = small_cnn()
    x = torch.randn(3, 3, 8, 8, dtype=DT)
    rows = nfa_table(model, x, max_dim=30)
    skipped = {r["layer"]: r["skipped"] for r in rows}
    assert skipped["2"] == "input dimension 54 > max_dim 30" and skipped["0"] is None
    assert rows[1]["pearson"] is None
    grouped = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2))
    rows = nfa_table(grouped.to(DT), torch.randn(3, 2, 5, 5, dtype=DT))
    assert [r["skipped"] for r in rows] == [None, "groups=2; the patch-AGOP supports groups=1 convolutions only", None]
    with pytest.raises(ConfigError, match="weight shape"):
        nfa_table(model, x, init_model=small_cnn(width=5))


def test_local_layer_per_position_mean():
    torch.manual_seed(0)
    model = nn.Sequential(TinyLocal(1, 3, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(75, 2)).to(DT)
    x = torch.randn(4, 1, 5, 5, dtype=DT)
    row = nfa_table(model, x, local_per_position=True)[0]
    per = layer_agop(model, "0", x, per_position=True)
    wtw = filter_covariance(model[0], per_position=True)
    expect = np.mean([pearson_correlation(a, w) for a, w in zip(per, wtw)])
    assert row["kind"] == "local" and row["per_position_pearson_mean"] == pytest.approx(expect, abs=1e-9)
    assert row["pearson"] == pytest.approx(pearson_correlation(per.sum(0), filter_covariance(model[0])), abs=1e-9)


def test_nfa_convergence_nested_subsets():
    model = small_cnn()
    x = torch.randn(25, 3, 8, 8, dtype=DT)
    recs = nfa_convergence(model, x, sizes=(5, 10, 100), seed=3, layers=["0", "2"], batch_size=7)
    assert sorted({r["n"] for r in recs}) == [5, 10, 25]
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(3))
    for r in recs:
        g = layer_agop(model, r["layer"], x[perm[: r["n"]]])
        wtw = filter_covariance(dict(model.named_modules())[r["layer"]])
        assert r["pearson"] == pytest.approx(pearson_correlation(g, wtw), abs=1e-9)
        assert r["pearson_vs_all"] == pytest.approx(pearson_correlation(g, layer_agop(model, r["layer"], x)), abs=1e-9)
    last = [r for r in recs if r["n"] == 25]
    table = nfa_table(model, x, layers=["0", "2"])
    assert [r["pearson"] for r in last] == pytest.approx([r["pearson"] for r in table], abs=1e-9)
    assert all(r["pearson_vs_all"] == pytest.approx(1.0) for r in last)


def test_cnfa_report_writes_json_and_figures(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 6), nn.ReLU(), nn.Linear(6, 3))
    conv = small_cnn().float()
    x = torch.randn(12, 3, 8, 8)
    out = cnfa_report(conv, x, init_model=small_cnn(1).float(), out_dir=tmp_path / "rep", sizes=(4,), n_filters=4)
    saved = json.loads((tmp_path / "rep" / "cnfa.json").read_text())
    assert saved == out
    assert saved["settings"]["sizes"] == [4, 12] and len(saved["table"]) == 4 and len(saved["convergence"]) == 8
    table = nfa_table(conv, x, init_model=small_cnn(1).float())
    assert [r["pearson"] for r in saved["table"]] == pytest.approx([r["pearson"] for r in table], abs=1e-5)
    for rel in ["nfa_table.png", "nfa_convergence.png", "agop_vs_wtw/0.png", "filters/0.png", "filters/2.png"]:
        assert rel in saved["figures"] and (tmp_path / "rep" / rel).stat().st_size > 1000
    assert "filters/5.png" not in saved["figures"]  # a hidden linear layer has no picture
    # S-FC: the first linear layer sees the whole image, so its eigenvectors are pictured as images
    xs = torch.randn(6, 2, 5, 5)
    out = cnfa_report(model, xs, out_dir=tmp_path / "fc", sizes=(), plot_layers=["1"])
    assert out["figures"] == ["nfa_table.png", "nfa_convergence.png", "agop_vs_wtw/1.png", "filters/1.png"]
    assert out["table"][0]["init_pearson"] is None


def test_top_eigenvectors_and_filters():
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=DT))
    evals = torch.arange(12, dtype=DT)
    m = q @ torch.diag(evals) @ q.T
    lam, vecs = top_eigenvectors(m, 3)
    assert torch.allclose(lam, torch.tensor([11.0, 10.0, 9.0], dtype=DT))
    assert torch.allclose(vecs @ m, lam[:, None] * vecs, atol=1e-10)
    assert (vecs.gather(1, vecs.abs().argmax(1, keepdim=True)) > 0).all()  # sign convention
    _, f = eigenfilters(m, (3, 2, 2), 5)
    assert f.shape == (5, 3, 2, 2)
    with pytest.raises(ConfigError):
        eigenfilters(m, (3, 3, 3))
    assert patch_shape(nn.Conv2d(4, 2, (3, 5))) == (4, 3, 5) and patch_shape(nn.Linear(7, 2)) == (7,)


def test_input_agop_eigenimages_for_fc_first_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10), nn.ReLU(), nn.Linear(10, 2)).to(DT)
    x = torch.randn(8, 3, 4, 4, dtype=DT)
    out = input_agop_eigenimages(model, x, k=4)
    assert out["agop_images"].shape == (4, 3, 4, 4) and out["wtw_images"].shape == (4, 3, 4, 4)
    v = out["agop_images"].reshape(4, -1)
    assert torch.allclose(v @ out["agop"], out["agop_evals"][:, None] * v, atol=1e-10)
    assert torch.allclose(out["agop"], layer_agop(model, "1", x))
    with pytest.raises(ConfigError, match="not a linear layer over the flattened"):
        input_agop_eigenimages(model, x, layer_name="3")


def test_plots_return_figures(tmp_path):
    a = torch.randn(600, 600)
    fig = plot_agop_vs_wtw(a @ a.T, a.T @ a, title="x", max_size=100)  # block-averaged display
    assert isinstance(fig, Figure) and "Pearson r" in fig.get_suptitle()
    fig.savefig(tmp_path / "h.png")
    rgb = filter_images(torch.randn(4, 3, 5, 5))
    gray = filter_images(torch.randn(4, 1, 5, 5))
    deep = filter_images(torch.randn(4, 16, 3, 3))  # many channels: energy per position
    assert rgb.shape == (4, 5, 5, 3) and gray.shape == (4, 5, 5) and deep.shape == (4, 3, 3)
    assert rgb.min() >= 0 and rgb.max() <= 1 and np.allclose(deep.reshape(4, -1).max(1), 1)
    fig = plot_filter_grid({"A": torch.randn(3, 3, 5, 5), "B": torch.randn(2, 1, 5, 5)}, evals={"A": torch.ones(3)})
    fig.savefig(tmp_path / "f.png")
    rows = [{"layer": "0", "pearson": 0.9, "init_pearson": 0.5, "w0_pearson": None, "power": 1.0, "skipped": None}]
    plot_nfa_table(rows).savefig(tmp_path / "t.png")
    recs = [{"n": n, "layer": "0", "pearson": 0.5, "pearson_vs_all": 0.9} for n in (10, 20)]
    plot_nfa_convergence(recs).savefig(tmp_path / "c.png")
