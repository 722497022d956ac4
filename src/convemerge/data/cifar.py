"""CIFAR-10 / CIFAR-100 file formats: binary records, python-pickle batches, label-name files, tar archives.

Binary version: fixed records of ``label_bytes`` label bytes (CIFAR-10: 1; CIFAR-100: 2, coarse then fine) and
3072 pixel bytes (1024 red, 1024 green, 1024 blue, each row-major 32x32). Python version: pickled dicts with
``b'data'`` (N x 3072 uint8) and ``b'labels'`` (CIFAR-10) or ``b'fine_labels'``/``b'coarse_labels'``
(CIFAR-100), read through :mod:`convemerge.data.safe_pickle` only. Archives are read member by member without
extracting anything to disk.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from pathlib import Path

import numpy as np

from convemerge.errors import DataError

from .safe_pickle import safe_loads

PIXELS = 3 * 32 * 32
_READ_CHUNK = 1 << 20


def parse_cifar_binary(data: bytes, *, label_bytes: int, num_classes: tuple[int, ...], source: str
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Records -> (images uint8 (N, 3, 32, 32), labels int64 (N, label_bytes)); labels checked against
    ``num_classes`` (one bound per label byte)."""
    record = label_bytes + PIXELS
    if len(data) == 0 or len(data) % record:
        raise DataError(f"{source} has {len(data)} bytes, not a positive multiple of the {record}-byte CIFAR record; "
                        f"the file is truncated or corrupt: replace it with the official file")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, :label_bytes].astype(np.int64)
    for j, bound in enumerate(num_classes):
        if labels.shape[0] and int(labels[:, j].max()) >= bound:
            raise DataError(f"{source} holds label {int(labels[:, j].max())} but there are only {bound} classes; "
                            f"the file is corrupt or of another data set: replace it with the official file")
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32)
    return images, labels


def _get(d: dict, key: str):
    """Look up a key stored as bytes (python-2 pickles read with encoding='bytes') or as str."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def parse_cifar_pickle(data: bytes, *, label_key: str, num_classes: int, source: str
                       ) -> tuple[np.ndarray, np.ndarray]:
    """A python-version batch -> (images uint8 (N, 3, 32, 32), labels int64 (N,))."""
    obj = safe_loads(data, source=source)
    bad = f"{source} is not a CIFAR python batch"
    if not isinstance(obj, dict):
        raise DataError(f"{bad} (the pickle holds a {type(obj).__name__}, not a dict); "
                        f"replace it with the official file")
    pixels, labels = _get(obj, "data"), _get(obj, label_key)
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.dtype.subdtype is not None \
            or pixels.ndim != 2 or pixels.shape[1] != PIXELS or pixels.shape[0] == 0:
        raise DataError(f"{bad} (no 'data' array of uint8 with {PIXELS} columns); replace it with the official file")
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu" or labels.dtype.subdtype is not None:
            raise DataError(f"{bad} ('{label_key}' is not an integer array); replace it with the official file")
        labels = labels.astype(np.int64).reshape(-1)
    elif isinstance(labels, list) and all(type(v) is int or isinstance(v, np.integer) for v in labels):
        try:
            labels = np.asarray(labels, dtype=np.int64)
        except OverflowError:
            labels = None
    else:
        labels = None
    if labels is None:
        raise DataError(f"{bad} (no integer list '{label_key}'); replace it with the official file")
    if labels.shape[0] != pixels.shape[0]:
        raise DataError(f"{bad} ({pixels.shape[0]} images but {labels.shape[0]} labels); "
                        f"replace it with the official file")
    if labels.min() < 0 or labels.max() >= num_classes:
        worst = int(labels.max()) if labels.max() >= num_classes else int(labels.min())
        raise DataError(f"{source} holds label {worst} outside 0..{num_classes - 1}; replace it with the official file")
    return pixels.reshape(-1, 3, 32, 32), labels


def parse_label_names_pickle(data: bytes, *, key: str, count: int, source: str) -> list[str]:
    """Class names from a python-version meta file (``batches.meta`` / ``meta``)."""
    obj = safe_loads(data, source=source)
    names = _get(obj, key) if isinstance(obj, dict) else None
    if not isinstance(names, list) or len(names) != count or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{source} has no list of {count} names under '{key}'; replace it with the official file")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def parse_label_names_text(data: bytes, *, count: int, source: str) -> list[str]:
    """Class names from a binary-version text file: one per line, blank lines ignored."""
    names = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    if len(names) != count:
        raise DataError(f"{source} lists {len(names)} class names, expected {count}; replace it with the official file")
    return names


class _BoundedReads(io.RawIOBase):
    """File wrapper whose ``read(n)`` reads at most 1 MiB at a time and stops at end of data, so a size declared
    in a corrupt tar header never turns into one allocation of that size."""

    def __init__(self, raw):
        self._raw = raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def read(self, n: int = -1) -> bytes:
        parts, left = [], (n if n is not None and n >= 0 else None)
        while left is None or left > 0:
            piece = self._raw.read(_READ_CHUNK if left is None else min(left, _READ_CHUNK))
            if not piece:
                break
            parts.append(piece)
            if left is not None:
                left -= len(piece)
        return b"".join(parts)


def read_tar_members(archive: str | Path | bytes, wanted: dict[str, int], *, source: str,
                     required: set[str] | None = None) -> dict[str, bytes]:
    """Read the regular-file members named in ``wanted`` (name -> largest size accepted) from a .tar or .tar.gz.

    Nothing is extracted to disk. A member larger than its bound, a missing ``required`` member or a corrupt
    archive give one :class:`DataError` line.
    """
    required = set(wanted) if required is None else required
    found: dict[str, bytes] = {}
    try:
        raw = io.BytesIO(archive) if isinstance(archive, (bytes, bytearray)) else open(archive, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {source} ({exc.strerror}); check the path and its permissions") from None
    try:
        with raw:
            head = raw.read(2)
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if head == b"\x1f\x8b" else raw
            with tarfile.open(fileobj=_BoundedReads(stream), mode="r:") as tar:
                for member in tar:
                    name = member.name[2:] if member.name.startswith("./") else member.name
                    if name not in wanted or not member.isreg():
                        continue
                    if member.size > wanted[name]:
                        raise DataError(f"{source} member {name} declares {member.size} bytes, more than the "
                                        f"{wanted[name]} of the official file; replace the archive")
                    fobj = tar.extractfile(member)
                    parts, left = [], member.size
                    while left > 0:
                        piece = fobj.read(min(left, _READ_CHUNK))
                        if not piece:
                            break
                        parts.append(piece)
                        left -= len(piece)
                    if left:
                        raise DataError(f"{source} is truncated inside member {name}; replace the archive")
                    found[name] = b"".join(parts)
                    if len(found) == len(wanted):
                        break
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, OverflowError) as exc:
        raise DataError(f"{source} is not a readable tar archive ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:120]}); replace it with the official archive") from None
    missing = sorted(required - set(found))
    if missing:
        raise DataError(f"{source} lacks {', '.join(missing)}; it is not the official archive: replace it")
    return found
