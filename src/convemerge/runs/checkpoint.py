"""Checkpoints: tensors in safetensors, everything else in JSON, written so a torn write is never loaded.

A checkpoint is a directory::

    model.safetensors       the model's state_dict
    optimizer.safetensors   every tensor of the optimizer's state_dict, keyed "state.<param>.<name>"
    optimizer.json          the rest of the optimizer's state_dict (param_groups, non-tensor state)
    state.json              config, epoch, step, RNG states, best metric, history: whatever resuming needs
    manifest.json           written last: the files above with their sizes

Every file is written under a temporary name in the same directory, flushed, fsync'ed and ``os.replace``'d.
The whole directory is first built as ``<name>.tmp`` and then swapped in (``name`` -> ``name.old``,
``name.tmp`` -> ``name``, remove ``name.old``); :func:`find_checkpoint` accepts only a directory whose
manifest lists files of the recorded sizes, and falls back to ``name.old`` if a crash hit mid-swap.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from convemerge.errors import ConfigError
from convemerge.runs.atomic import atomic_write_json, fsync_dir

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- tensors
def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """``safetensors.save_file`` to a temp name, then ``os.replace`` (tensors moved to CPU, made contiguous)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(_storable(tensors), str(tmp), metadata=metadata)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no two sharing storage (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen or (ptr != -1 and t.untyped_storage().nbytes() != t.numel() * t.element_size()):
            t = t.clone()  # shares a buffer with another entry, or is a view of a larger one
            ptr = t.untyped_storage().data_ptr()
        if ptr != -1:
            seen.add(ptr)
        out[key] = t
    return out


# ----------------------------------------------------------------------------- optimizer state
def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into (tensors for safetensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    rest_state: dict[str, dict[str, Any]] = {}
    for pid, pstate in state_dict["state"].items():
        rest_state[str(pid)] = {}
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value
            else:
                rest_state[str(pid)][name] = value
    meta = {"state": rest_state, "param_groups": state_dict["param_groups"], "pid_type": _pid_type(state_dict)}
    return tensors, meta


def _pid_type(state_dict: dict[str, Any]) -> str:
    keys = [p for g in state_dict["param_groups"] for p in g["params"]]
    return "str" if keys and isinstance(keys[0], str) else "int"


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    conv = str if meta.get("pid_type") == "str" else int
    state: dict[Any, dict[str, Any]] = {conv(pid): dict(rest) for pid, rest in meta["state"].items()}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(conv(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------- checkpoint directories
def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    *,
    link_from: str | Path | None = None,
) -> Path:
    """Write a checkpoint directory atomically (see the module docstring) and return its path.

    ``link_from``: an existing complete checkpoint with the same content (e.g. ``last`` when it is also the
    best) whose files are hard-linked instead of written again; files are never modified in place, so
    sharing them is safe.
    """
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    old = final.with_name(final.name + ".old")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)

    if link_from is not None:
        src = Path(link_from)
        manifest = _read_manifest(src)
        if manifest is None:
            raise RuntimeError(f"cannot link from incomplete checkpoint {src}")
        for name in manifest["files"]:
            try:
                os.link(src / name, tmp / name)
            except OSError:
                shutil.copy2(src / name, tmp / name)
        manifest = {**manifest}
    else:
        atomic_save_tensors(tmp / "model.safetensors", model.state_dict())
        files = ["model.safetensors"]
        if optimizer is not None:
            opt_tensors, opt_meta = flatten_optimizer_state(optimizer.state_dict())
            atomic_save_tensors(tmp / "optimizer.safetensors", opt_tensors)
            atomic_write_json(tmp / "optimizer.json", opt_meta)
            files += ["optimizer.safetensors", "optimizer.json"]
        atomic_write_json(tmp / "state.json", state)
        files.append("state.json")
        manifest = {
            "format": FORMAT_VERSION,
            "epoch": state.get("epoch"),
            "step": state.get("step"),
            "files": {name: (tmp / name).stat().st_size for name in files},
        }
    atomic_write_json(tmp / MANIFEST, manifest)
    fsync_dir(tmp)

    # swap in: a crash between the renames leaves `old` complete, which find_checkpoint falls back to
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)
    return final


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a complete checkpoint directory, or None if absent, torn or inconsistent."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        for name, size in manifest["files"].items():
            if (directory / name).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return manifest


def find_checkpoint(directory: str | Path) -> Path | None:
    """The complete checkpoint at ``directory`` (or its ``.old`` sibling after an interrupted swap), else None."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if candidate.is_dir() and _read_manifest(candidate) is not None:
            return candidate
    return None


def load_checkpoint(
    directory: str | Path,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load a checkpoint into ``model`` / ``optimizer`` (when given) and return its ``state.json`` dict.

    Tensors are read to the CPU; ``load_state_dict`` moves them to the parameters' device (and keeps
    optimizer step counters where the optimizer wants them).

    Raises ConfigError (one line) if no complete checkpoint is found there.
    """
    found = find_checkpoint(directory)
    if found is None:
        raise ConfigError(f"no complete checkpoint at {directory}; it is missing or was interrupted while written")
    if model is not None:
        model.load_state_dict(load_file(str(found / "model.safetensors")))
    if optimizer is not None:
        if not (found / "optimizer.safetensors").exists():
            raise ConfigError(f"checkpoint {found} holds no optimizer state; it cannot be resumed")
        tensors = load_file(str(found / "optimizer.safetensors"))
        meta = json.loads((found / "optimizer.json").read_text())
        optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta))
    return read_checkpoint_state(found)


def read_checkpoint_state(directory: str | Path) -> dict[str, Any]:
    """The ``state.json`` of a complete checkpoint directory (see :func:`find_checkpoint`)."""
    return json.loads((Path(directory) / "state.json").read_text())
