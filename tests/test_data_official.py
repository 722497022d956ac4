"""Official data sets: the real files (shapes, counts, label histograms, pixel statistics, checksums), every
accepted layout built small in tmp_path, search order, offline messages and download-and-verify against a local
HTTP server. Nothing here reaches the internet."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from convemerge.cli import main
from convemerge.data import channel_stats, clear_stats_cache, load_dataset
from convemerge.data import catalog, digests, locate
from convemerge.data.digests import FileSpec
from convemerge.errors import ChecksumError, DataError

from test_data_helpers import cifar_batch_pickle, cifar_records, gz, idx_bytes, py2_pickle, strip_gzip_header, \
    write_tar_gz

MNIST_NAMES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz"]
CIFAR_BINS = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    """No network, no user cache, no system folders: only what each test puts in place."""
    monkeypatch.setenv("CONVEMERGE_OFFLINE", "1")
    monkeypatch.delenv("CONVEMERGE_DATA", raising=False)
    monkeypatch.delenv("CONVEMERGE_DATA_URL", raising=False)
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setattr(locate, "cache_root", lambda: cache)
    monkeypatch.setattr(locate, "SYSTEM_ROOTS", ())
    digests.clear_cache()
    clear_stats_cache()


def _link_tree(src: Path, dst: Path, names) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        os.symlink(src / n, dst / n)
    return dst


def _corrupt_copy(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x01
    dst.write_bytes(bytes(data))
    return dst


# ------------------------------------------------------------------------------------------------ real files
@pytest.mark.parametrize("name, train_hist", [
    ("mnist", [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]),
    ("fashion-mnist", [6000] * 10),
])
def test_real_mnist_likes(shared_datasets, name, train_hist):
    train = load_dataset(name, "train", shared_datasets, download=False)
    test = load_dataset(name, "test", shared_datasets, download=False)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28) and test.labels.dtype == torch.int64
    assert train.labels.bincount().tolist() == train_hist
    assert len(test.labels.bincount()) == 10 and not train.augment
    stats = channel_stats(train.images)
    assert test.mean == train.mean and test.std == train.std
    np.testing.assert_allclose(train.mean + train.std, stats[0] + stats[1], rtol=0, atol=1e-12)
    # the recorded statistics of the release equal the ones computed from the files
    np.testing.assert_allclose(catalog.OFFICIAL[name].known_stats[0] + catalog.OFFICIAL[name].known_stats[1],
                               stats[0] + stats[1], rtol=0, atol=1e-12)
    if name == "mnist":
        assert abs(stats[0][0] - 0.1307) < 1e-4 and abs(stats[1][0] - 0.3081) < 1e-4
        assert test.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_cifar10(shared_datasets):
    train = load_dataset("cifar10", "train", shared_datasets, download=False)
    test = load_dataset("cifar10", "test", shared_datasets, download=False)
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.labels.bincount().tolist() == [5000] * 10 and test.labels.bincount().tolist() == [1000] * 10
    assert train.classes[0] == "airplane" and train.classes[-1] == "truck" and train.augment
    mean, std = train.mean, train.std  # computed from the train split by load_dataset
    np.testing.assert_allclose(mean, (0.4914, 0.4822, 0.4465), atol=5e-5)
    np.testing.assert_allclose(std, (0.2470, 0.2435, 0.2616), atol=5e-5)
    np.testing.assert_allclose(catalog.OFFICIAL["cifar10"].known_stats, (mean, std), rtol=0, atol=1e-12)
    # an independent reading of the first record: label byte, then R, G, B planes
    raw = np.fromfile(shared_datasets / "cifar-10-batches-bin" / "test_batch.bin", np.uint8, count=3073)
    assert test.labels[0] == raw[0]
    np.testing.assert_array_equal(test.images[0].numpy().reshape(-1), raw[1:])


def test_check_cli_real_files(shared_datasets, capsys):
    assert main(["data", "check", "mnist", "fashion-mnist", "cifar10", "--data-dir", str(shared_datasets)]) == 0
    out = capsys.readouterr().out
    assert out.count("ok (sha256)") == 14


def test_header_rewritten_gzip_verifies_by_payload(shared_datasets, tmp_path, monkeypatch):
    src = shared_datasets / "fashion-mnist"
    debian = tmp_path / "usr-share-datasets" / "fashion-mnist"
    debian.mkdir(parents=True)
    for n in MNIST_NAMES:
        rewritten = strip_gzip_header(src.joinpath(n).read_bytes())
        assert rewritten != src.joinpath(n).read_bytes()
        debian.joinpath(n).write_bytes(rewritten)
    monkeypatch.setattr(locate, "SYSTEM_ROOTS", (tmp_path / "usr-share-datasets",))
    spec = catalog.OFFICIAL["fashion-mnist"].variants[0].files("test")[1]
    assert digests.verify_file(debian / spec.name, spec, dataset="fashion-mnist") == "payload sha256"
    test = load_dataset("fashion-mnist", "test", download=False)  # found in the system location
    assert test.mean == catalog.OFFICIAL["fashion-mnist"].known_stats[0]
    official = load_dataset("fashion-mnist", "test", shared_datasets, download=False)
    assert torch.equal(test.images, official.images) and torch.equal(test.labels, official.labels)


def test_uncompressed_files_in_torchvision_layout(shared_datasets, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    _link_tree(shared_datasets / "mnist", raw, MNIST_NAMES[:2])
    for n in MNIST_NAMES[2:]:
        raw.joinpath(n[:-3]).write_bytes(gzip_decompress(shared_datasets / "mnist" / n))
    test = load_dataset("mnist", "test", tmp_path, download=False)
    official = load_dataset("mnist", "test", shared_datasets, download=False)
    assert torch.equal(test.images, official.images)


def test_digests_stream_and_cache_per_process(shared_datasets, tmp_path, monkeypatch):
    src = shared_datasets / "mnist" / MNIST_NAMES[3]
    copy = tmp_path / MNIST_NAMES[3]
    copy.write_bytes(src.read_bytes())
    spec = catalog.OFFICIAL["mnist"].variants[0].files("test")[1]
    assert digests.verify_file(copy, spec, dataset="mnist") == "sha256"
    assert digests.file_digest(copy, "md5") == hashlib.md5(src.read_bytes()).hexdigest()

    def no_hashing(*a, **k):
        raise AssertionError("hashed again")
    monkeypatch.setattr(digests.hashlib, "new", no_hashing)
    assert digests.verify_file(copy, spec, dataset="mnist") == "sha256"  # served from the cache
    _corrupt_copy(src, copy)  # a changed file (size or mtime) misses the cache and is hashed again
    with pytest.raises(AssertionError, match="hashed again"):
        digests.verify_file(copy, spec, dataset="mnist")


def gzip_decompress(path: Path) -> bytes:
    import gzip
    return gzip.decompress(path.read_bytes())


@pytest.mark.parametrize("name, folder, victim", [
    ("mnist", "mnist", "t10k-labels-idx1-ubyte.gz"),
    ("fashion-mnist", "fashion-mnist", "t10k-labels-idx1-ubyte.gz"),
    ("cifar10", "cifar-10-batches-bin", "test_batch.bin"),
])
def test_corrupted_copy_fails_with_one_line(shared_datasets, tmp_path, capsys, name, folder, victim):
    src = shared_datasets / folder
    names = CIFAR_BINS if name == "cifar10" else MNIST_NAMES
    dst = _link_tree(src, tmp_path / folder, [n for n in names if n != victim])
    _corrupt_copy(src / victim, dst / victim)
    with pytest.raises(ChecksumError) as info:
        load_dataset(name, "test", tmp_path, download=False)
    assert "\n" not in str(info.value) and victim in str(info.value) and "expected sha256" in str(info.value)
    capsys.readouterr()
    assert main(["data", "check", name, "--data-dir", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and victim in err
    if name == "cifar10":  # a flipped pixel still parses when checksums are skipped
        assert len(load_dataset(name, "test", tmp_path, download=False, verify=False)) == 10000
    else:  # a flipped bit inside a gzip stream is caught by its CRC even then
        with pytest.raises(DataError, match="not a valid gzip file"):
            load_dataset(name, "test", tmp_path, download=False, verify=False)


# ------------------------------------------------------------------------------- small files, official layouts
RNG = np.random.default_rng(1)


def _fake_cifar(n_train: int = 10, n_test: int = 4, classes: int = 10):
    xs = RNG.integers(0, 256, (n_train + n_test, 3, 32, 32), dtype=np.uint8)
    ys = RNG.integers(0, classes, n_train + n_test)
    return (xs[:n_train], ys[:n_train]), (xs[n_train:], ys[n_train:])


def _cifar10_members(kind: str, train, test) -> dict[str, bytes]:
    (xt, yt), (xe, ye) = train, test
    chunks = np.array_split(np.arange(len(yt)), 5)
    if kind == "bin":
        files = {f"data_batch_{i + 1}.bin": cifar_records(xt[c], yt[c]) for i, c in enumerate(chunks)}
        files["test_batch.bin"] = cifar_records(xe, ye)
        files["batches.meta.txt"] = ("\n".join(f"class{i}" for i in range(10)) + "\n\n").encode()
    else:
        files = {f"data_batch_{i + 1}": cifar_batch_pickle(xt[c], {"labels": yt[c]}) for i, c in enumerate(chunks)}
        files["test_batch"] = cifar_batch_pickle(xe, {"labels": ye})
        files["batches.meta"] = py2_pickle({b"label_names": [b"c%d" % i for i in range(10)], b"num_cases_per_batch": 2})
    return files


@pytest.mark.parametrize("kind", ["bin", "py"])
@pytest.mark.parametrize("form", ["folder", "nested", "archive"])
def test_cifar10_layouts(tmp_path, kind, form):
    train, test = _fake_cifar()
    members = _cifar10_members(kind, train, test)
    subdir = f"cifar-10-batches-{kind}"
    if form == "archive":
        archive = "cifar-10-binary.tar.gz" if kind == "bin" else "cifar-10-python.tar.gz"
        write_tar_gz(tmp_path / archive, {f"{subdir}/{k}": v for k, v in members.items()})
    else:
        folder = tmp_path / subdir if form == "folder" else tmp_path / "cifar10" / subdir
        folder.mkdir(parents=True)
        for k, v in members.items():
            folder.joinpath(k).write_bytes(v)
    with pytest.raises(ChecksumError):  # small files are not the official ones
        load_dataset("cifar10", "train", tmp_path, download=False)
    tr = load_dataset("cifar10", "train", tmp_path, download=False, verify=False)
    te = load_dataset("cifar10", "test", tmp_path, download=False, verify=False)
    np.testing.assert_array_equal(tr.images.numpy(), train[0])
    np.testing.assert_array_equal(tr.labels.numpy(), train[1])
    np.testing.assert_array_equal(te.images.numpy(), test[0])
    assert tr.classes == ([f"class{i}" for i in range(10)] if kind == "bin" else [f"c{i}" for i in range(10)])
    # statistics come from this (unofficial) train split, not from the recorded official values
    np.testing.assert_allclose(te.mean, channel_stats(torch.from_numpy(train[0]))[0])
    if form == "archive":
        assert sorted(p.name for p in tmp_path.iterdir()) == [archive]  # nothing extracted


@pytest.mark.parametrize("kind", ["bin", "py"])
@pytest.mark.parametrize("archive", [False, True])
def test_cifar100_layouts(tmp_path, kind, archive):
    (xt, fine_t), (xe, fine_e) = _fake_cifar(classes=100)
    coarse_t, coarse_e = fine_t // 5, fine_e // 5
    subdir = "cifar-100-binary" if kind == "bin" else "cifar-100-python"
    if kind == "bin":
        members = {"train.bin": cifar_records(xt, coarse_t, fine_t), "test.bin": cifar_records(xe, coarse_e, fine_e),
                   "fine_label_names.txt": "\n".join(catalog.CIFAR100_CLASSES).encode(),
                   "coarse_label_names.txt": "\n".join(catalog.CIFAR100_COARSE_CLASSES).encode()}
    else:
        members = {"train": cifar_batch_pickle(xt, {"fine_labels": fine_t, "coarse_labels": coarse_t}),
                   "test": cifar_batch_pickle(xe, {"fine_labels": fine_e, "coarse_labels": coarse_e}),
                   "meta": py2_pickle({b"fine_label_names": [c.encode() for c in catalog.CIFAR100_CLASSES],
                                       b"coarse_label_names": [c.encode() for c in catalog.CIFAR100_COARSE_CLASSES]})}
    if archive:
        name = "cifar-100-binary.tar.gz" if kind == "bin" else "cifar-100-python.tar.gz"
        write_tar_gz(tmp_path / "cifar100" / name if _mk(tmp_path / "cifar100") else None,
                     {f"{subdir}/{k}": v for k, v in members.items()})
    else:
        (tmp_path / subdir).mkdir()
        for k, v in members.items():
            (tmp_path / subdir / k).write_bytes(v)
    fine = load_dataset("cifar100", "train", tmp_path, download=False, verify=False)
    coarse = load_dataset("cifar100", "test", tmp_path, download=False, verify=False, coarse=True)
    np.testing.assert_array_equal(fine.images.numpy(), xt)
    np.testing.assert_array_equal(fine.labels.numpy(), fine_t)
    np.testing.assert_array_equal(coarse.labels.numpy(), coarse_e)
    assert fine.num_classes == 100 and coarse.num_classes == 20 and coarse.classes[0] == "aquatic_mammals"


def _mk(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return True


@pytest.mark.parametrize("compress", [False, True])
def test_svhn_mat_files(tmp_path, compress):
    folder = tmp_path / "svhn"
    folder.mkdir()
    data = {}
    for split, n in (("train", 7), ("test", 3), ("extra", 2)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = RNG.integers(1, 11, (n, 1)).astype(np.float64)
        y[0] = 10
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y}, do_compression=compress)
        data[split] = (x, y)
    train = load_dataset("svhn", "train", tmp_path, download=False, verify=False)
    x, y = data["train"]
    assert train.images.shape == (7, 3, 32, 32)
    np.testing.assert_array_equal(train.images[2].numpy(), x[:, :, :, 2].transpose(2, 0, 1))
    np.testing.assert_array_equal(train.labels.numpy(), y.ravel().astype(int) % 10)
    assert train.labels[0] == 0 and train.classes[0] == "0" and not train.augment
    both = load_dataset("svhn", "train", tmp_path, download=False, verify=False, extra=True)
    assert len(both) == 9
    with pytest.raises(ChecksumError, match="expected md5"):
        load_dataset("svhn", "test", tmp_path, download=False)


# ------------------------------------------------------------------------------------ search order, messages
def _write_fake_mnist(folder: Path, n_train: int = 12, n_test: int = 5, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        files[f"{prefix}-images-idx3-ubyte.gz"] = gz(idx_bytes(rng.integers(0, 256, (n, 28, 28))))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gz(idx_bytes(rng.integers(0, 10, n)))
    for k, v in files.items():
        folder.joinpath(k).write_bytes(v)
    return files


def test_search_order_root_then_env_then_cache(tmp_path, monkeypatch):
    _write_fake_mnist(tmp_path / "explicit" / "mnist", n_train=11)
    _write_fake_mnist(tmp_path / "env" / "MNIST" / "raw", n_train=12)
    _write_fake_mnist(locate.cache_root() / "mnist", n_train=13)
    monkeypatch.setenv("CONVEMERGE_DATA", str(tmp_path / "env"))
    load = functools.partial(load_dataset, "mnist", "train", download=False, verify=False)
    assert len(load(tmp_path / "explicit")) == 11
    assert len(load(tmp_path / "nothing-here")) == 12
    assert len(load()) == 12
    monkeypatch.delenv("CONVEMERGE_DATA")
    assert len(load()) == 13


def test_offline_missing_is_one_line(tmp_path, capsys):
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", "train", tmp_path, download=False)
    msg = str(info.value)
    assert "\n" not in msg and "cifar-10-binary.tar.gz" in msg and str(tmp_path / "cifar10") in msg
    assert main(["data", "check", "svhn", "--data-dir", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train_32x32.mat" in err[0]


# ------------------------------------------------------------------------------------------------- download
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _patch_mnist_digests(monkeypatch, files: dict[str, bytes]):
    """Make the catalogue expect these small files instead of the official ones."""
    import gzip

    def spec(name):
        return FileSpec(names=(name, name[:-3]), sha256=hashlib.sha256(files[name]).hexdigest(),
                        payload_sha256=hashlib.sha256(gzip.decompress(files[name])).hexdigest())
    splits = {"train": (spec(MNIST_NAMES[0]), spec(MNIST_NAMES[1])),
              "test": (spec(MNIST_NAMES[2]), spec(MNIST_NAMES[3]))}
    ds = catalog.OFFICIAL["mnist"]
    monkeypatch.setitem(catalog.OFFICIAL, "mnist", replace(
        ds, variants=(catalog.Variant("idx", splits),), download=splits["train"] + splits["test"], known_stats=None))


def test_download_verify_rename(tmp_path, monkeypatch, http_root):
    served, url = http_root
    files = _write_fake_mnist(served / "mnist")
    _patch_mnist_digests(monkeypatch, files)
    monkeypatch.delenv("CONVEMERGE_OFFLINE")
    monkeypatch.setenv("CONVEMERGE_DATA_URL", url)
    dest = tmp_path / "data"
    train = load_dataset("mnist", "train", dest)  # download=None: try, since nothing is found
    assert len(train) == 12
    assert sorted(p.name for p in (dest / "mnist").iterdir()) == sorted(MNIST_NAMES)  # no temporary files left
    for n in MNIST_NAMES:
        assert (dest / "mnist" / n).read_bytes() == files[n]
    # a corrupt file on the server: ChecksumError, nothing written
    (served / "mnist" / MNIST_NAMES[2]).write_bytes(files[MNIST_NAMES[2]][:-3] + b"xyz")
    dest2 = tmp_path / "data2"
    with pytest.raises(ChecksumError, match="download of .* is corrupt") as info:
        load_dataset("mnist", "test", dest2)
    assert "\n" not in str(info.value)
    assert not any(p.name.startswith(MNIST_NAMES[2]) or p.name.endswith(".part")
                   for p in (dest2 / "mnist").iterdir())


def test_download_failure_is_one_offline_line(tmp_path, monkeypatch, http_root):
    served, url = http_root
    monkeypatch.delenv("CONVEMERGE_OFFLINE")
    monkeypatch.setenv("CONVEMERGE_DATA_URL", url)  # a server without the files: 404
    with pytest.raises(DataError, match="could not download .*HTTP 404.*put") as info:
        load_dataset("mnist", "train", tmp_path)
    assert "\n" not in str(info.value)
    monkeypatch.setenv("CONVEMERGE_DATA_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(DataError, match="you seem to be offline"):
        load_dataset("mnist", "train", tmp_path)


def test_download_false_never_touches_network(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVEMERGE_OFFLINE")

    def boom(*a, **k):
        raise AssertionError("network used")
    monkeypatch.setattr("urllib.request.urlopen", boom)
    with pytest.raises(DataError, match="not found"):
        load_dataset("mnist", "train", tmp_path, download=False)
