"""A small, strict reader for MATLAB level-5 MAT files (the format of SVHN's ``*_32x32.mat``).

Only real numeric arrays are returned (that is all SVHN holds: ``X`` uint8 (32, 32, 3, N) and ``y`` (N, 1));
other variables are skipped after their sizes are checked. Every declared size is checked against the bytes
actually present before anything is allocated, and compressed variables are inflated in bounded chunks, so a
corrupt or hostile file gives one :class:`DataError` line, never a giant allocation. (MATLAB v7.3 files are HDF5
and not supported; the SVHN files are level 5.)
"""

from __future__ import annotations

import zlib

import numpy as np

from convemerge.errors import DataError

_MI = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MX = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
MI_MATRIX, MI_COMPRESSED = 14, 15
_COMPLEX_FLAG = 0x0800
MAX_VARIABLE_BYTES = 1 << 31  # 2 GiB: SVHN's largest variable (extra X) is 1.6 GB
_OUT_CHUNK = 1 << 24


def _tag(buf: memoryview, pos: int, order: str, source: str) -> tuple[int, int, int, int]:
    """Read the data-element tag at ``pos``: (type, nbytes, data start, next element position)."""
    if pos + 8 > len(buf):
        raise DataError(f"{source} is truncated inside a MAT element tag; replace it with the official file")
    word = int.from_bytes(buf[pos:pos + 4], "little" if order == "<" else "big")
    if word >> 16:  # "small data element": size and type share one word, data in the next 4 bytes
        mtype, nbytes = word & 0xFFFF, word >> 16
        if nbytes > 4:
            raise DataError(f"{source} has a malformed small MAT element; replace it with the official file")
        return mtype, nbytes, pos + 4, pos + 8
    mtype = word
    nbytes = int.from_bytes(buf[pos + 4:pos + 8], "little" if order == "<" else "big")
    start = pos + 8
    if start + nbytes > len(buf):
        raise DataError(f"{source} declares a {nbytes}-byte MAT element but only {len(buf) - start} bytes follow; "
                        f"the file is truncated or corrupt: replace it with the official file")
    end = start + nbytes
    if mtype != MI_COMPRESSED:
        end += (-nbytes) % 8  # elements are padded to 8 bytes (compressed ones are not)
    return mtype, nbytes, start, min(end, len(buf))


def _inflate(data: memoryview, *, source: str, max_bytes: int) -> bytearray:
    d = zlib.decompressobj()
    out, tail = bytearray(), data  # grown in place: SVHN's extra X is 1.6 GB, so no list-then-join copy
    try:
        while True:
            piece = d.decompress(tail, _OUT_CHUNK)
            if len(out) + len(piece) > max_bytes:
                raise DataError(f"{source} holds a compressed variable of more than {max_bytes} bytes, which no "
                                f"official file does; replace it with the official file")
            out += piece
            tail = d.unconsumed_tail
            if d.eof or (not piece and not tail):
                break
    except zlib.error as exc:
        raise DataError(f"{source} has a corrupt compressed variable ({exc}); "
                        f"replace it with the official file") from None
    if not d.eof:
        raise DataError(f"{source} has a truncated compressed variable; replace it with the official file")
    return out


def _matrix(buf: memoryview, start: int, end: int, order: str, source: str) -> tuple[str, np.ndarray | None]:
    """Parse the sub-elements of one miMATRIX (flags, dims, name, real part): (name, array or None if skipped)."""
    sub = buf[:end]
    t, n, s, pos = _tag(sub, start, order, source)
    if t != 6 or n != 8:
        raise DataError(f"{source} has a MAT array without valid array flags; replace it with the official file")
    flags = int.from_bytes(sub[s:s + 4], "little" if order == "<" else "big")
    mx_class = flags & 0xFF
    t, n, s, pos = _tag(sub, pos, order, source)
    if t != 5 or n % 4 or not 8 <= n <= 4 * 32:
        raise DataError(f"{source} has a MAT array with malformed dimensions; replace it with the official file")
    dims = tuple(int(v) for v in np.frombuffer(sub[s:s + n], dtype=order + "i4"))
    if any(v < 0 for v in dims):
        raise DataError(f"{source} has a MAT array with a negative dimension; replace it with the official file")
    t, n, s, pos = _tag(sub, pos, order, source)
    if t != 1:
        raise DataError(f"{source} has a MAT array without a valid name; replace it with the official file")
    name = bytes(sub[s:s + n]).decode("ascii", "replace")
    if mx_class not in _MX or flags & _COMPLEX_FLAG:
        return name, None  # cells, structs, chars, sparse, complex: not used by any data set here
    t, n, s, pos = _tag(sub, pos, order, source)
    if t not in _MI:
        raise DataError(f"{source} variable {name!r} has an unknown MAT data type {t}; "
                        f"replace it with the official file")
    stored = np.dtype(order + _MI[t]) if _MI[t][1] != "1" else np.dtype(_MI[t])
    count = 1
    for v in dims:
        count *= v
    if count * stored.itemsize != n:
        raise DataError(f"{source} variable {name!r} declares shape {dims} but holds {n} bytes of {stored.name}; "
                        f"the file is corrupt: replace it with the official file")
    values = np.frombuffer(sub[s:s + n], dtype=stored)
    if stored != np.dtype(_MX[mx_class]):  # MATLAB may store e.g. a double array in the smallest fitting type
        values = values.astype(_MX[mx_class])
    return name, values.reshape(dims, order="F")


def parse_mat(data: bytes | memoryview, *, source: str, names: set[str] | None = None,
              max_bytes: int = MAX_VARIABLE_BYTES) -> dict[str, np.ndarray]:
    """Numeric variables of a level-5 MAT file (all, or those in ``names``), as numpy arrays in MATLAB's shape."""
    buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
    if len(buf) < 128:
        raise DataError(f"{source} is too short to be a MAT file ({len(buf)} bytes); replace it with the official file")
    if bytes(buf[:19]) == b"MATLAB 7.3 MAT-file":
        raise DataError(f"{source} is a MATLAB v7.3 (HDF5) file; re-save it as a level-5 MAT file "
                        f"(save -v7) or use the official file")
    indicator = bytes(buf[126:128])
    if indicator not in (b"IM", b"MI") or not bytes(buf[:6]) == b"MATLAB":
        raise DataError(f"{source} is not a level-5 MAT file (bad header); replace it with the official file")
    order = "<" if indicator == b"IM" else ">"
    out: dict[str, np.ndarray] = {}
    pos = 128
    while pos < len(buf):
        if len(buf) - pos < 8 and not any(buf[pos:]):
            break  # zero padding at the end
        mtype, nbytes, start, nxt = _tag(buf, pos, order, source)
        if mtype == MI_COMPRESSED:
            inner = memoryview(_inflate(buf[start:start + nbytes], source=source, max_bytes=max_bytes))
            itype, _, istart, iend = _tag(inner, 0, order, source)
            if itype != MI_MATRIX:
                raise DataError(f"{source} has a compressed element that is not an array; "
                                f"replace it with the official file")
            name, arr = _matrix(inner, istart, iend, order, source)
        elif mtype == MI_MATRIX:
            name, arr = _matrix(buf, start, start + nbytes, order, source)
        else:
            raise DataError(f"{source} has an unexpected top-level MAT element of type {mtype}; "
                            f"replace it with the official file")
        if arr is not None and (names is None or name in names):
            out[name] = arr
        pos = nxt
    return out
