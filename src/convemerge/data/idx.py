"""IDX files (MNIST, Fashion-MNIST) and bounded gzip decompression.

IDX layout: two zero bytes, a type code, the number of dimensions ``d``, then ``d`` big-endian uint32 sizes and
the values in C order. Declared sizes are checked against the bytes actually present before anything is
allocated, so a corrupt header gives one :class:`DataError` line instead of a giant allocation.
"""

from __future__ import annotations

import zlib

import numpy as np

from convemerge.errors import DataError

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_OUT_CHUNK = 1 << 24  # decompress at most 16 MiB at a time, so the size cap is enforced as we go

MAX_GZIP_PAYLOAD = 1 << 28  # 256 MiB: four times MNIST's largest payload; beyond that it is not an image set


def gunzip(data: bytes | memoryview, *, source: str, max_size: int = MAX_GZIP_PAYLOAD) -> bytes:
    """Decompress a (possibly multi-member) gzip stream, refusing payloads above ``max_size`` bytes."""
    view = memoryview(data)
    parts: list[bytes] = []
    total = 0
    members = 0
    while len(view):
        if members and not any(view):  # zero padding after the last member is tolerated, as by gzip(1)
            break
        if bytes(view[:2]) != b"\x1f\x8b":
            what = "is not gzip data" if not members else "has trailing garbage after the gzip data"
            raise DataError(f"{source} {what}; replace it with the official file")
        d = zlib.decompressobj(wbits=31)
        tail = view
        try:
            while True:
                piece = d.decompress(tail, _OUT_CHUNK)
                total += len(piece)
                if total > max_size:
                    raise DataError(f"{source} decompresses to more than {max_size} bytes, which no official file "
                                    f"does; replace it with the official file")
                parts.append(piece)
                tail = d.unconsumed_tail
                if d.eof or (not piece and not tail):
                    break
        except zlib.error as exc:
            raise DataError(f"{source} is not a valid gzip file ({exc}); replace it with the official file") from None
        if not d.eof:
            raise DataError(f"{source} is truncated (gzip stream ends early); replace it with the official file")
        members += 1
        view = memoryview(d.unused_data)
    return b"".join(parts)


def maybe_gunzip(data: bytes, *, source: str, max_size: int = MAX_GZIP_PAYLOAD) -> bytes:
    """Decompress ``data`` if it starts with the gzip magic, else return it unchanged."""
    return gunzip(data, source=source, max_size=max_size) if data[:2] == b"\x1f\x8b" else data


def parse_idx(data: bytes, *, source: str) -> np.ndarray:
    """Parse an (uncompressed) IDX payload into a read-only numpy array of the declared shape and type."""
    if len(data) < 4:
        raise DataError(f"{source} is too short to be an IDX file ({len(data)} bytes); "
                        f"replace it with the official file")
    zero, code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in _IDX_TYPES or not 1 <= ndim <= 4:
        raise DataError(f"{source} has a bad IDX magic number {data[:4].hex()}; replace it with the official file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source} is truncated inside its IDX header; replace it with the official file")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[code]
    expected = dtype.itemsize
    for d in dims:
        expected *= d
    actual = len(data) - header
    if expected != actual:
        raise DataError(f"{source} declares shape {dims} ({expected} bytes of data) but holds {actual} bytes; "
                        f"the file is truncated or corrupt: replace it with the official file")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
