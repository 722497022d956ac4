"""Atomic writes of run records, and the one conversion of values to standard JSON.

Every file of a run directory is written under a temporary name in the same directory, flushed, fsync'ed and
``os.replace``'d, so a reader never sees a torn file. JSON has no NaN or infinity: :func:`json_safe` stores them
as ``null`` (a diverged loss, an empty split's accuracy), so every record stays standard JSON.

>>> json_safe({"loss": float("nan"), "acc": 0.5, "shape": (2, 3)})
{'loss': None, 'acc': 0.5, 'shape': [2, 3]}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "json_safe", "read_json", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after a rename) where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data: non-finite floats -> None, tuples/sets -> lists, tensors and numpy values
    -> Python numbers or lists, paths -> strings, dict keys -> strings. Anything else is a TypeError (our bug)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and numpy scalars
        return json_safe(value.tolist())
    if hasattr(value, "item"):
        return json_safe(value.item())
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def atomic_write_json(path: str | Path, record: Any, *, indent: int = 1) -> None:
    """``record`` (through :func:`json_safe`) as JSON at ``path``, atomically."""
    atomic_write_text(path, json.dumps(json_safe(record), indent=indent, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON value at ``path``, or None when the file is absent, unreadable or torn."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
