"""Parsers of the official formats: round trips through independent writers, restricted unpickling, and fuzzing
(only a one-line DataError, never another exception, a hang or a giant allocation)."""

from __future__ import annotations

import builtins
import gzip
import io
import os
import pickle
import struct
import tarfile
import tracemalloc

import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convemerge.data.cifar import (parse_cifar_binary, parse_cifar_pickle, parse_label_names_pickle,
                                   parse_label_names_text, read_tar_members)
from convemerge.data.idx import gunzip, maybe_gunzip, parse_idx
from convemerge.data.matfile import parse_mat
from convemerge.data.safe_pickle import safe_loads
from convemerge.errors import DataError

from test_data_helpers import cifar_batch_pickle, cifar_records, idx_bytes, py2_pickle, write_tar_gz

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
LABELS = np.array([0, 9, 3, 3, 7, 1])


def one_line(exc: BaseException) -> bool:
    return "\n" not in str(exc) and len(str(exc)) > 0


# ---------------------------------------------------------------------------------------------------- IDX / gzip
def test_idx_round_trip_and_gzip():
    imgs = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    payload = idx_bytes(imgs)
    np.testing.assert_array_equal(parse_idx(payload, source="x"), imgs)
    np.testing.assert_array_equal(parse_idx(maybe_gunzip(gzip.compress(payload), source="x"), source="x"), imgs)
    two_members = gzip.compress(payload[:100]) + gzip.compress(payload[100:]) + b"\x00" * 16
    assert gunzip(two_members, source="x") == payload


@pytest.mark.parametrize("data, fragment", [
    (b"", "too short"),
    (b"\x00\x00\x08\x03" + struct.pack(">III", 10, 28, 28) + b"\x00" * 100, "declares shape"),
    (b"\x12\x34\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad IDX magic"),
    (b"\x00\x00\x08\x03" + struct.pack(">II", 1, 2), "truncated inside its IDX header"),
])
def test_idx_errors_are_one_line(data, fragment):
    with pytest.raises(DataError, match=fragment) as info:
        parse_idx(data, source="f.idx")
    assert one_line(info.value)


def test_huge_declared_sizes_allocate_nothing():
    tracemalloc.start()
    try:
        huge_idx = b"\x00\x00\x08\x04" + struct.pack(">IIII", 2**32 - 1, 2**32 - 1, 2**32 - 1, 2**32 - 1) + b"\x00" * 64
        with pytest.raises(DataError):
            parse_idx(huge_idx, source="x")
        with pytest.raises(DataError):
            parse_cifar_binary(b"\x00" * 3074, label_bytes=1, num_classes=(10,), source="x")
        with pytest.raises(DataError, match="more than"):  # a gzip bomb: 4 MiB of zeros, cap 1 MiB
            gunzip(gzip.compress(b"\x00" * (1 << 22)), source="x", max_size=1 << 20)
        mat = _mat_bytes({"X": np.zeros((2, 2), np.uint8)})
        tag = mat.index(struct.pack("<I", 14), 128)
        with pytest.raises(DataError, match="declares"):
            parse_mat(mat[:tag + 4] + struct.pack("<I", 0xFFFFFFF0) + mat[tag + 8:], source="x")
        with pytest.raises(DataError):  # pickle opcode BINBYTES8 declaring 2**60 bytes
            safe_loads(b"\x80\x04\x8e" + struct.pack("<Q", 2**60) + b"abc", source="x")
        with pytest.raises(DataError):  # numpy.ndarray called directly with a huge shape
            safe_loads(pickle.dumps(_Reduce(np.ndarray, ((2**40,),)), protocol=2), source="x")
        member = _tar_bytes({"a/b": b"x" * 10})
        with pytest.raises(DataError, match="declares"):
            read_tar_members(member, {"a/b": 5}, source="x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"peak traced allocation {peak} bytes"


# ------------------------------------------------------------------------------------------------------- CIFAR
def test_cifar_binary_records_cifar10_and_cifar100():
    x, y = parse_cifar_binary(cifar_records(IMAGES, LABELS), label_bytes=1, num_classes=(10,), source="b")
    np.testing.assert_array_equal(x, IMAGES)
    np.testing.assert_array_equal(y[:, 0], LABELS)
    coarse, fine = LABELS * 2, LABELS * 11
    x, y = parse_cifar_binary(cifar_records(IMAGES, coarse, fine), label_bytes=2, num_classes=(20, 100), source="b")
    np.testing.assert_array_equal(y, np.stack([coarse, fine], 1))
    with pytest.raises(DataError, match="only 10 classes"):
        parse_cifar_binary(cifar_records(IMAGES, LABELS + 1), label_bytes=1, num_classes=(10,), source="b")


@pytest.mark.parametrize("py2", [True, False])
def test_cifar_pickle_batches(py2):
    data = cifar_batch_pickle(IMAGES, {"labels": LABELS}, py2=py2)
    x, y = parse_cifar_pickle(data, label_key="labels", num_classes=10, source="p")
    np.testing.assert_array_equal(x, IMAGES)
    np.testing.assert_array_equal(y, LABELS)
    data = cifar_batch_pickle(IMAGES, {"fine_labels": LABELS * 11, "coarse_labels": LABELS}, py2=py2)
    _, fine = parse_cifar_pickle(data, label_key="fine_labels", num_classes=100, source="p")
    np.testing.assert_array_equal(fine, LABELS * 11)
    meta = py2_pickle({b"label_names": [b"a", b"b"], b"num_vis": 3072}) if py2 else \
        pickle.dumps({"label_names": ["a", "b"]}, protocol=4)
    assert parse_label_names_pickle(meta, key="label_names", count=2, source="m") == ["a", "b"]
    assert parse_label_names_text(b"cat\ndog\n\n", count=2, source="t") == ["cat", "dog"]


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def test_crafted_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "marker"
    code = f"open({str(marker)!r}, 'w').close()"
    via_exec = pickle.dumps({b"data": _Reduce(builtins.exec, (code,)), b"labels": [0]}, protocol=2)
    via_system = pickle.dumps({b"data": _Reduce(os.system, (f"touch '{marker}'",)), b"labels": [0]}, protocol=2)
    for crafted in (via_exec, via_system):
        with pytest.raises(DataError) as info:
            parse_cifar_pickle(crafted, label_key="labels", num_classes=10, source="evil")
        assert one_line(info.value)
        assert not marker.exists()
    # the same bytes really do run code when unpickled without restriction
    pickle.loads(via_exec)
    assert marker.exists()


def test_pickle_cannot_mutate_allow_listed_objects():
    # GLOBAL numpy.dtype, then BUILD with a state dict: must fail, and later loads still work
    crafted = b"\x80\x02cnumpy\ndtype\n}q\x00X\x01\x00\x00\x00aK\x01sb."
    with pytest.raises(DataError):
        safe_loads(crafted, source="x")
    good = cifar_batch_pickle(IMAGES, {"labels": LABELS})
    assert parse_cifar_pickle(good, label_key="labels", num_classes=10, source="p")[0].shape == (6, 3, 32, 32)
    assert np.dtype("u1").byteorder == "|"


def test_cifar_pickle_structure_errors():
    bad = [pickle.dumps([1, 2]), pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}),
           pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}),
           pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),
           pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}),
           pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]})]
    for data in bad:
        with pytest.raises(DataError) as info:
            parse_cifar_pickle(data, label_key="labels", num_classes=10, source="p")
        assert one_line(info.value)


def _tar_bytes(members: dict[str, bytes], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_members_read_without_extracting(tmp_path):
    members = {"cifar-10-batches-bin/data_batch_1.bin": b"abc", "cifar-10-batches-bin/other": b"zz"}
    path = write_tar_gz(tmp_path / "a.tar.gz", members)
    got = read_tar_members(path, {"cifar-10-batches-bin/data_batch_1.bin": 10}, source="a")
    assert got == {"cifar-10-batches-bin/data_batch_1.bin": b"abc"}
    assert read_tar_members(_tar_bytes(members, compress=False), {"cifar-10-batches-bin/other": 10},
                            source="a") == {"cifar-10-batches-bin/other": b"zz"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]
    with pytest.raises(DataError, match="lacks"):
        read_tar_members(path, {"cifar-10-batches-bin/test_batch.bin": 10}, source="a")


# -------------------------------------------------------------------------------------------------------- MAT
def _mat_bytes(variables: dict, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=compress)
    return buf.getvalue()


@pytest.mark.parametrize("compress", [False, True])
def test_mat_round_trip_against_scipy_writer(compress):
    x = RNG.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [2], [9], [10]], dtype=np.float64)
    out = parse_mat(_mat_bytes({"X": x, "y": y, "note": "text", "c": np.array([1 + 1j])}, compress), source="m")
    assert sorted(out) == ["X", "y"]
    np.testing.assert_array_equal(out["X"], x)
    np.testing.assert_array_equal(out["y"], y)
    small = parse_mat(_mat_bytes({"y": np.array([[3], [4]], np.uint8)}, compress), source="m")["y"]
    assert small.dtype == np.uint8 and small.ravel().tolist() == [3, 4]


def test_mat_rejects_v73_and_garbage():
    with pytest.raises(DataError, match="v7.3"):
        parse_mat(b"MATLAB 7.3 MAT-file" + b"\x00" * 200, source="m")
    with pytest.raises(DataError, match="not a level-5"):
        parse_mat(b"\x00" * 200, source="m")


# ---------------------------------------------------------------------------------------------------- fuzzing
def _mutations(valid: bytes):
    """Truncations, bit flips, overwritten spans (e.g. magic numbers or declared sizes) and random bytes."""
    n = len(valid)
    truncated = st.integers(0, n).map(lambda k: valid[:k])
    flipped = st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 7)), min_size=1, max_size=4).map(
        lambda flips: _flip(valid, flips))
    overwritten = st.tuples(st.integers(0, max(0, n - 1)), st.binary(min_size=1, max_size=8)).map(
        lambda t: valid[:t[0]] + t[1] + valid[t[0] + len(t[1]):])
    huge = st.integers(0, max(0, n - 4)).map(lambda k: valid[:k] + b"\xff\xff\xff\x7f" + valid[k + 4:])
    return st.one_of(truncated, flipped, overwritten, huge, st.binary(max_size=300), st.just(b""))


def _flip(data: bytes, flips) -> bytes:
    out = bytearray(data)
    for pos, bit in flips:
        out[pos] ^= 1 << bit
    return bytes(out)


def _only_data_error(fn, data):
    try:
        fn(data)
    except DataError as exc:
        assert one_line(exc)


_IDX_VALID = gzip.compress(idx_bytes(RNG.integers(0, 256, (3, 4, 5), dtype=np.uint8)))
_CIFAR_BIN_VALID = cifar_records(IMAGES[:2], LABELS[:2])
_CIFAR_PY_VALID = cifar_batch_pickle(IMAGES[:1], {"labels": LABELS[:1]})
_MAT_VALID = _mat_bytes({"X": RNG.integers(0, 256, (2, 2, 3, 2), dtype=np.uint8), "y": np.array([[1.0], [10.0]])})
_MAT_VALID_Z = _mat_bytes({"X": RNG.integers(0, 256, (2, 2, 3, 2), dtype=np.uint8), "y": np.array([[1.0]])}, True)
_TAR_VALID = _tar_bytes({"d/a": b"0123456789" * 3, "d/b": b"xy"})


@FUZZ
@given(_mutations(_IDX_VALID))
def test_fuzz_idx_gzip(data):
    _only_data_error(lambda d: parse_idx(maybe_gunzip(d, source="f"), source="f"), data)


@FUZZ
@given(_mutations(_CIFAR_BIN_VALID[:3073 * 2]))
def test_fuzz_cifar_binary(data):
    _only_data_error(lambda d: parse_cifar_binary(d, label_bytes=1, num_classes=(10,), source="f"), data)


@FUZZ
@given(_mutations(_CIFAR_PY_VALID))
def test_fuzz_cifar_pickle(data):
    _only_data_error(lambda d: parse_cifar_pickle(d, label_key="labels", num_classes=10, source="f"), data)


@FUZZ
@given(st.one_of(_mutations(_MAT_VALID), _mutations(_MAT_VALID_Z)))
def test_fuzz_mat(data):
    _only_data_error(lambda d: parse_mat(d, source="f"), data)


@FUZZ
@given(_mutations(_TAR_VALID))
def test_fuzz_tar(data):
    _only_data_error(lambda d: read_tar_members(d, {"d/a": 100, "d/b": 100}, source="f"), data)
