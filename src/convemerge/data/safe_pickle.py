"""A restricted unpickler for the CIFAR "python version" batches.

Those batches are pickles, and ``pickle.load`` on a file from the internet runs whatever code the file names.
:func:`safe_loads` resolves globals only from a short allow-list — numpy's array reconstruction and plain dtypes,
and latin-1 ``_codecs.encode`` (how protocol-2 pickles spell ``bytes``) — each wrapped so that it only builds
numbers, bytes and numeric arrays. Containers, strings and numbers need no globals at all. Anything else
(``os.system``, ``builtins.exec``, arbitrary classes) is refused with one :class:`DataError` line.
"""

from __future__ import annotations

import io
import pickle
import re

import numpy as np

from convemerge.errors import DataError

try:  # numpy >= 2 keeps these in numpy._core; pickles name either spelling
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.multiarray import scalar as _np_scalar

_PLAIN_DTYPE = re.compile(r"^[<>|=]?[biuf][1248]$")


class _ReadOnly:
    """Base of the objects a pickle may reach: no ``__dict__`` and no attribute writes, so a pickle's BUILD
    opcode cannot alter them (and through them, later loads)."""

    __slots__ = ()

    def __setattr__(self, name, value):
        raise pickle.UnpicklingError("allow-listed objects are read-only")


class _NDArrayToken(_ReadOnly):
    """Stands in for ``numpy.ndarray`` in the pickle: usable only as the first argument of ``_reconstruct``, so a
    pickle cannot call ``numpy.ndarray(shape=<huge>)`` directly."""

    __slots__ = ()


class _Guarded(_ReadOnly):
    """A read-only wrapper around one allow-listed function."""

    __slots__ = ("_fn",)

    def __init__(self, fn):
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)


_NDARRAY = _NDArrayToken()


def _plain_dtype(obj, align=False, copy=False) -> np.dtype:
    if isinstance(obj, bytes):
        obj = obj.decode("ascii", "replace")
    if not isinstance(obj, str) or not _PLAIN_DTYPE.match(obj):
        raise pickle.UnpicklingError(f"dtype {obj!r} is not a plain numeric dtype")
    # always a fresh copy: the pickle's BUILD step then calls __setstate__ on it, never on numpy's shared singleton
    return np.dtype(obj, align=False, copy=True)


def _reconstruct(subtype, shape, typecode):
    # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') followed by __setstate__ with the real data,
    # which checks the data length against shape * itemsize before it allocates anything.
    if subtype is not _NDARRAY or tuple(shape) != (0,):
        raise pickle.UnpicklingError("unexpected arguments to numpy's array reconstruction")
    return _np_reconstruct(np.ndarray, (0,), b"b")


def _frombuffer(buf, dtype, shape, order="C"):
    # protocol-5 form of an array: the data buffer, a dtype and a shape
    if not isinstance(dtype, np.dtype) or not isinstance(buf, (bytes, bytearray)):
        raise pickle.UnpicklingError("unexpected arguments to numpy's frombuffer")
    shape = tuple(int(s) for s in shape)
    count = 1
    for s in shape:
        if s < 0:
            raise pickle.UnpicklingError("negative array dimension")
        count *= s
    if count * dtype.itemsize != len(buf):
        raise pickle.UnpicklingError(f"array of shape {shape} does not match its {len(buf)} data bytes")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if order == "F" else "C")


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("unexpected arguments to numpy's scalar")
    return _np_scalar(dtype, data)


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    # protocol <= 2 pickles written by Python 3 store bytes as _codecs.encode(latin-1 text, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only latin-1 _codecs.encode is allowed")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Guarded(_plain_dtype),
    ("_codecs", "encode"): _Guarded(_codecs_encode),
}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_mod}.multiarray", "_reconstruct")] = _Guarded(_reconstruct)
    _ALLOWED[(f"{_mod}.multiarray", "scalar")] = _Guarded(_scalar)
    _ALLOWED[(f"{_mod}.numeric", "_frombuffer")] = _Guarded(_frombuffer)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only the allow-list above."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def safe_loads(data: bytes, *, source: str):
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (py2 ``str`` become ``bytes``, as in the CIFAR
    documentation); any failure becomes one :class:`DataError` line naming ``source``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (Exception, RecursionError) as exc:  # noqa: BLE001 - every malformed input must become one line
        raise DataError(f"{source} is not a valid pickle of plain data ({type(exc).__name__}: {_one_line(exc)}); "
                        f"replace it with the official file") from None
