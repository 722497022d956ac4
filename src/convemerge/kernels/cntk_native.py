"""The fused CPU recursion of ``cntk_native.c``: built once with the system C compiler, loaded with ctypes.

The C file computes exactly :func:`convemerge.kernels.cntk_fast.pair_forward` / ``pair_backward`` (float32 with
a vectorised polynomial arccos, |error| ≤ 2·10⁻⁸; float64 with libm's), one pass per layer over chunks of pairs
that stay in cache, threads over chunks. No compiler, or a failed build: :func:`available` is False and the
kernels run the same recursion as torch operations. The shared library is cached under
``$CONVEMERGE_CACHE`` (default ``~/.cache/convemerge``), keyed by the source, the flags and the CPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("cntk_native.c")
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC"]
#: pairs per chunk inside the C code: one map is positions × CHUNK numbers (784 × 128 × 4 B = 400 KB for MNIST)
CHUNK = 128
_LIB = None
_TRIED = False


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line for line in fh if line.startswith("model name")), platform.machine())
    except OSError:
        return platform.machine()


def _cache_dir() -> Path:
    return Path(os.environ.get("CONVEMERGE_CACHE") or Path.home() / ".cache" / "convemerge")


def _build() -> ctypes.CDLL | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src = _SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join(_FLAGS).encode() + _cpu_id().encode() + cc.encode()).hexdigest()[:16]
    target = _cache_dir() / f"cntk_native_{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
        os.close(fd)
        try:
            subprocess.run([cc, *_FLAGS, str(_SOURCE), "-o", tmp, "-lm"], check=True, capture_output=True,
                           timeout=300)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    for name in ("cntk_block_float", "cntk_block_double"):
        fn = getattr(lib, name)
        fn.restype = None
        fn.argtypes = [ctypes.c_int] * 8 + [ctypes.c_double] * 2 + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 9
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded library, building it on first use; None when no C compiler works here."""
    global _LIB, _TRIED
    if not _TRIED:
        _TRIED = True
        if os.environ.get("CONVEMERGE_NATIVE", "1") == "0":
            return None
        try:
            _LIB = _build()
        except (OSError, subprocess.SubprocessError) as exc:
            warnings.warn(f"the fused CNTK could not be built ({type(exc).__name__}); using torch operations",
                          RuntimeWarning, stacklevel=2)
            _LIB = None
    return _LIB


def available(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64) and library() is not None


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _pack(maps: list[torch.Tensor], dtype) -> torch.Tensor:
    return torch.cat([m.to(dtype).contiguous().reshape(-1) for m in maps])


def native_block(S: torch.Tensor, ra: list, rb: list, ia: list | None, *, q: int, scale: float, padding: str,
                 ntk: bool, in_dim: int, grad: bool, map_shape: tuple[int, int], ib: list | None = None):
    """Kernel values (A, B) of a block from ``S`` (P, A, B) = c/(c·q·q); with ``grad`` also ∂K/∂c and ∂K/∂s_a,
    both (P, A, B), and with ``ib`` (the columns' adjoint factors) ∂K/∂s_b as well — what the columns' own
    gradients need, since ∂K/∂c is the same for (a, b) and (b, a). ``ra``/``ia``: per-layer (h, w, A) maps of the
    rows, ``rb``/``ib``: (h, w, B) of the columns."""
    lib = library()
    S = S.contiguous()
    P, A, B = S.shape
    dt = S.dtype
    K = torch.empty(A, B, dtype=dt)
    gc = torch.empty(P, A, B, dtype=dt) if grad else None
    gs = torch.empty(P, A, B, dtype=dt) if grad else None
    gsb = torch.empty(P, A, B, dtype=dt) if grad and ib is not None else None
    pa, pb = _pack(ra, dt), _pack(rb, dt)
    pi = _pack(ia, dt) if grad else None
    pib = _pack(ib, dt) if grad and ib is not None else None
    fn = lib.cntk_block_float if dt == torch.float32 else lib.cntk_block_double
    fn(len(ra), q, int(padding == "same"), int(ntk), map_shape[0], map_shape[1], A, B, float(scale),
       float(in_dim), CHUNK, torch.get_num_threads(), _ptr(S), _ptr(pa), _ptr(pb), _ptr(pi), _ptr(pib), _ptr(K),
       _ptr(gc), _ptr(gs), _ptr(gsb))
    if not grad:
        return K
    return (K, gc, gs, gsb) if ib is not None else (K, gc, gs)
