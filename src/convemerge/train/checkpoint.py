"""Moved to :mod:`convemerge.runs.checkpoint` (the owner of run directories); kept so old imports work."""

from convemerge.runs.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from convemerge.runs.checkpoint import (
    atomic_save_tensors,
    find_checkpoint,
    flatten_optimizer_state,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer_state,
)

__all__ = ["atomic_save_tensors", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "find_checkpoint",
           "flatten_optimizer_state", "load_checkpoint", "save_checkpoint", "unflatten_optimizer_state"]
