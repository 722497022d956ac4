"""The training loop and its pieces: data preparation, schedule, padding, metrics, checkpoints, precision."""

from __future__ import annotations

import json
import math

import pytest
import torch

from convemerge.errors import ConfigError
from convemerge.train import TrainConfig, load_run_model, read_metrics, train
from convemerge.train.setup import lr_factor, pad_batch, prepare_data, stratified_subset


def _cfg(out, **kw) -> TrainConfig:
    base = dict(model="s-fc", alpha=2, dataset="digits", epochs=2, batch_size=64, lr=0.05, num_threads=1,
                out=str(out))
    base.update(kw)
    return TrainConfig(**base)


def test_stratified_subset_exact_count_proportions_and_seed():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([50, 30, 20])])
    idx = stratified_subset(labels, 10, seed=1)
    assert idx.numel() == 10 and torch.equal(idx, idx.sort().values) and idx.unique().numel() == 10
    assert torch.bincount(labels[idx]).tolist() == [5, 3, 2]
    assert torch.equal(idx, stratified_subset(labels, 10, seed=1))
    assert not torch.equal(idx, stratified_subset(labels, 10, seed=2))
    # largest remainders: quotas 7*[.5,.3,.2] = 3.5, 2.1, 1.4 -> 3+1, 2, 1
    assert torch.bincount(labels[stratified_subset(labels, 7, seed=0)]).tolist() == [4, 2, 1]
    with pytest.raises(ConfigError, match="exceeds"):
        stratified_subset(labels, 101, seed=0)


def test_prepare_data_split_sizes_and_disjointness():
    data = prepare_data(TrainConfig(dataset="digits", val_fraction=0.1, n_train=300, seed=3))
    assert len(data.train) == 300 and 140 <= len(data.val) <= 150 and len(data.test) == 359
    assert data.image_size == (8, 8) and data.in_chans == 1 and data.num_classes == 10
    counts = torch.bincount(data.train.labels, minlength=10)
    assert int(counts.max() - counts.min()) <= 3  # stratified
    flat = lambda d: {bytes(img.numpy().tobytes()) for img in d.images}  # noqa: E731
    # no validation image is in the training subset (digits has a handful of exact duplicates; allow them)
    assert len(flat(data.train) & flat(data.val)) <= 2


def test_pad_batch_centres_and_fills():
    x = torch.randn(2, 3, 28, 28)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    out = pad_batch(x, (32, 32), fill)
    assert out.shape == (2, 3, 32, 32)
    assert torch.equal(out[:, :, 2:30, 2:30], x)
    border = out.clone()
    border[:, :, 2:30, 2:30] = float("nan")
    for c in range(3):
        vals = border[:, c][~border[:, c].isnan()]
        assert vals.numel() == 2 * (32 * 32 - 28 * 28) and bool((vals == fill[c]).all())
    assert pad_batch(x, (28, 28), fill) is x


def test_lr_schedule_closed_form():
    total, warm = 100, 10
    assert lr_factor(0, total, warm, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, total, warm, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, total, warm, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, total, warm, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, total, warm, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert lr_factor(50, total, 0, "constant") == 1.0


def test_cosine_epoch_schedule_is_torchs_cosine_annealing_stepped_once_an_epoch():
    epochs, spe = 12, 7
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for e in range(epochs):
        for i in range(spe):  # the lr held through the epoch, then one scheduler step
            ours = 0.1 * lr_factor(e * spe + i, epochs * spe, 0, "cosine-epoch", spe)
            assert ours == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
        opt.step()
        sched.step()
    # per step it differs inside an epoch
    assert lr_factor(3, epochs * spe, 0, "cosine", spe) < lr_factor(3, epochs * spe, 0, "cosine-epoch", spe) == 1.0


def test_run_writes_consistent_records(tmp_path):
    cfg = _cfg(tmp_path / "run", epochs=3, optimizer="beta-lasso", lam=1e-3, lam_first=2e-3, beta=2.0)
    result = train(cfg, verbose=False, command="convemerge train ...")
    run = result.run_dir
    assert TrainConfig.from_yaml(run / "config.yaml") == cfg
    hist = read_metrics(run / "metrics.jsonl")
    assert hist == json.loads(json.dumps(result.history))
    keys = {"epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "epoch_time",
            "wall_time", "nonzero", "nonzero_total", "first_layer_pr_median"}
    assert keys <= set(hist[0])
    assert [r["step"] for r in hist] == [21, 42, 63]  # ceil(1294 / 64) steps per epoch
    model = result.model
    nz = {layer.name: int((layer.module.weight != 0).sum()) for layer in model.weight_layers()}
    assert hist[-1]["nonzero"] == nz and hist[-1]["nonzero_total"] == sum(nz.values())
    assert nz["layer1"] < 64 * 32  # beta-LASSO zeroed weights of the first layer
    summary = json.loads((run / "summary.json").read_text())
    best = max(hist, key=lambda r: (r["val_acc"], -r["epoch"]))
    assert summary["best_epoch"] == best["epoch"] and summary["best_val_acc"] == best["val_acc"]
    assert summary["test_acc_at_best"] == best["test_acc"]
    assert summary["status"] == "completed" and summary["command"] == "convemerge train ..."
    best_state = json.loads((run / "checkpoints/best/state.json").read_text())
    assert best_state["epoch"] == best["epoch"]
    # the best checkpoint rebuilds a model with those weights, without the dataset
    m = load_run_model(run, "best")
    assert not m.training
    last = load_run_model(run, "last")
    for a, b in zip(last.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b.cpu())


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a = train(_cfg(tmp_path / "a", epochs=1), verbose=False).model.state_dict()
    b = train(_cfg(tmp_path / "b", epochs=1), verbose=False).model.state_dict()
    c = train(_cfg(tmp_path / "c", epochs=1, seed=1), verbose=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_cached_standardised_splits_train_the_same_bits(tmp_path, monkeypatch):
    from convemerge.train import loop

    cached = train(_cfg(tmp_path / "a", epochs=1), verbose=False)
    assert cached.history and loop._cache_fits(prepare_data(_cfg(tmp_path / "a")).train)
    monkeypatch.setattr(loop, "CACHE_STANDARDISED_BYTES", 0)  # every batch standardised as it is cut
    plain = train(_cfg(tmp_path / "b", epochs=1), verbose=False)
    a, b = cached.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["val_acc"] for r in cached.history] == [r["val_acc"] for r in plain.history]


@pytest.mark.parametrize("extra", [dict(loss="mse"), dict(optimizer="adam", lr=1e-3, weight_decay=1e-4),
                                   dict(amp="bf16"), dict(amp="fp16"), dict(val_fraction=0.0),
                                   dict(schedule="constant", warmup_epochs=1.0)])
def test_variants_run(tmp_path, extra):
    result = train(_cfg(tmp_path / "v", **extra), verbose=False)
    last = result.history[-1]
    assert math.isfinite(last["train_loss"]) and last["train_acc"] > 0.2
    if extra.get("val_fraction") == 0.0:
        assert last["val_acc"] is None and result.best_val_acc is None
        assert not (result.run_dir / "checkpoints/best").exists()
    if extra.get("amp") == "fp16":  # the GradScaler's state is checkpointed for resume
        state = json.loads((result.run_dir / "checkpoints/last/state.json").read_text())
        assert state["scaler"]["scale"] > 0


def test_pad_to_lets_deep_models_fit(tmp_path):
    with pytest.raises(ConfigError, match="--pad-to"):
        train(_cfg(tmp_path / "d", model="d-conv", alpha=1, epochs=1), verbose=False)
    assert not (tmp_path / "d").exists()  # refused at setup: nothing written
    result = train(_cfg(tmp_path / "d", model="d-conv", alpha=1, epochs=1, pad_to=16, n_train=200), verbose=False)
    assert result.summary["geometry"]["image_size"] == 16
    with pytest.raises(ConfigError, match="smaller than"):
        train(_cfg(tmp_path / "e", pad_to=4), verbose=False)


def test_checkpoint_every_still_resumes(tmp_path):
    result = train(_cfg(tmp_path / "k", epochs=3, checkpoint_every=2), verbose=False)
    state = json.loads((result.run_dir / "checkpoints/last/state.json").read_text())
    assert state["epoch"] == 3  # the final epoch is always saved


def test_non_square_images_keep_their_shape(tmp_path):
    result = train(_cfg(tmp_path / "ns", dataset="noise-row", epochs=1), verbose=False)
    assert result.summary["geometry"]["image_size"] == [16, 32]
    model = load_run_model(result.run_dir, "last")
    assert model.first_layer_filters().shape[-2:] == (16, 32)


def test_stop_train_loss_stops_early_and_says_why(tmp_path):
    # digits with S-FC fits its training set within a few epochs: a loose threshold stops the run well before
    # its budget, the last checkpoint is that epoch, and a resume of the stopped run trains nothing more
    cfg = _cfg(tmp_path / "s", epochs=40, stop_train_loss=0.5, val_fraction=0.0)
    result = train(cfg, verbose=False)
    hist = result.history
    assert len(hist) < 40 and hist[-1]["train_loss"] < 0.5
    assert all(r["train_loss"] >= 0.5 for r in hist[:-1])  # the first epoch under the threshold is the last
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == len(hist)
    assert "stop_train_loss" in summary["stopped_early"] and f"epoch {len(hist)}" in summary["stopped_early"]
    state = json.loads((result.run_dir / "checkpoints/last/state.json").read_text())
    assert state["epoch"] == len(hist) and state["config"]["stop_train_loss"] == 0.5
    assert TrainConfig.from_yaml(result.run_dir / "config.yaml").stop_train_loss == 0.5
    again = train(cfg, resume=True, verbose=False)
    assert len(again.history) == len(hist)
    # the stopping epoch is a last epoch like the budget's: checkpointed and tested whatever the cadences
    sparse = train(cfg.replace(out=str(tmp_path / "c"), checkpoint_every=100, test_every=100), verbose=False)
    assert len(sparse.history) == len(hist) and sparse.history[-1]["test_acc"] is not None
    state = json.loads((sparse.run_dir / "checkpoints/last/state.json").read_text())
    assert state["epoch"] == len(hist) and sparse.summary["test_acc_last"] == sparse.history[-1]["test_acc"]
    # without the threshold the same run uses its whole budget
    assert "stopped_early" not in train(_cfg(tmp_path / "f", epochs=2), verbose=False).summary


def test_stop_train_loss_must_be_positive():
    with pytest.raises(ConfigError, match="stop_train_loss"):
        TrainConfig(stop_train_loss=0.0).validate()
