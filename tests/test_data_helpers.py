"""Builders of small files in the exact official layouts, shared by the data tests (no tests here)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX payload (uint8) of ``array``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def strip_gzip_header(data: bytes) -> bytes:
    """What Debian's packaging does to a .gz: same deflate stream, header without file name and time stamp."""
    assert data[:2] == b"\x1f\x8b"
    flags = data[3]
    pos = 10
    if flags & 0x04:  # FEXTRA
        pos += 2 + int.from_bytes(data[pos:pos + 2], "little")
    if flags & 0x08:  # FNAME
        pos = data.index(b"\x00", pos) + 1
    if flags & 0x10:  # FCOMMENT
        pos = data.index(b"\x00", pos) + 1
    if flags & 0x02:  # FHCRC
        pos += 2
    return data[:3] + b"\x00" + b"\x00\x00\x00\x00" + data[8:10] + data[pos:]


def cifar_records(images: np.ndarray, *labels: np.ndarray) -> bytes:
    """Binary-version records: the label byte(s), then 3072 pixel bytes (R, G, B planes)."""
    n = images.shape[0]
    cols = [np.asarray(lab, dtype=np.uint8).reshape(n, 1) for lab in labels]
    return np.concatenate(cols + [images.reshape(n, -1)], axis=1).astype(np.uint8).tobytes()


class _Py2Pickler(pickle._Pickler):
    """Writes ``str`` and ``bytes`` as python-2 byte strings (opcodes U/T), as the official CIFAR pickles do."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2str
    dispatch[bytes] = save_py2str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_batch_pickle(images: np.ndarray, labels: dict[str, list[int]], *, py2: bool = True) -> bytes:
    d = {b"batch_label": b"testing batch 1 of 1", b"data": images.reshape(images.shape[0], -1).astype(np.uint8),
         b"filenames": [b"x_%d.png" % i for i in range(images.shape[0])]}
    d.update({k.encode(): list(map(int, v)) for k, v in labels.items()})
    return py2_pickle(d) if py2 else pickle.dumps(d, protocol=2)


def write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)
