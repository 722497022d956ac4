"""Sparse export of a trained net (β-LASSO leaves most weights exactly zero) and a loader that serves it.

``export_sparse(run_dir, out)`` writes two files::

    <out>.safetensors   every weight layer's weight as a CSR matrix — ``<layer>.crow_indices``,
                        ``<layer>.col_indices``, ``<layer>.values`` — plus every other state tensor (biases,
                        BatchNorm) densely under its state-dict name
    <out>.json          format, the model's config and input geometry, and per layer its kind, dense shape,
                        2-d matrix shape and number of non-zeros

The 2-d matrix of a layer is its weight as used in a matrix product: linear ``(out, in)``; conv
``(out, C·k·k)``; locally connected ``(L·out, C·k·k)`` (one block of rows per output position).

``load_sparse(out)`` rebuilds the model and loads it; linear layers whose density is at most ``max_density``
become :class:`SparseLinear` (a torch sparse CSR matrix times the input), the rest stay dense. In eval mode the
outputs equal the dense net's (up to float summation order). Sparse-times-dense beats a dense matmul on the CPU
only when the matrix is quite sparse (the crossover is near 15 % density on one core), hence the default 0.1.

Example::

    >>> path = export_sparse("runs/s-fc-beta-lasso")          # doctest: +SKIP
    >>> net = load_sparse(path)                                # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convemerge.errors import ConfigError
from convemerge.layers.sparse import SparseLinear  # noqa: F401 (also importable from here, as before)

__all__ = ["SparseLinear", "export_sparse", "export_model_sparse", "load_sparse", "FORMAT"]

FORMAT = "convemerge-sparse/1"


@contextlib.contextmanager
def _quiet_csr():
    # torch marks CSR support "beta" with a UserWarning on every construction; it is what we want here
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        yield


def _matrix(kind: str, weight: torch.Tensor) -> torch.Tensor:
    if kind == "local":  # (L, out, C·k·k) -> (L·out, C·k·k)
        return weight.reshape(-1, weight.shape[-1])
    return weight.reshape(weight.shape[0], -1)


def export_model_sparse(model: nn.Module, out: str | Path, *, config: dict[str, Any],
                        geometry: dict[str, int]) -> Path:
    """Write ``model`` (a registered model) in the sparse format; ``config`` needs ``model``, ``alpha`` and
    ``model_options``; ``geometry`` ``image_size``, ``in_chans``, ``num_classes``. Returns the .safetensors path."""
    from safetensors.torch import save_file

    if not hasattr(model, "weight_layers"):
        raise ConfigError("sparse export needs a registered convemerge model (with weight_layers())")
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".safetensors", ".json") else out
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, Any] = {}
    weight_keys = set()
    with torch.no_grad(), _quiet_csr():
        for wl in model.weight_layers():
            w = wl.module.weight.detach().cpu().float()
            csr = _matrix(wl.kind, w).contiguous().to_sparse_csr()
            tensors[f"{wl.name}.crow_indices"] = csr.crow_indices().to(torch.int64).contiguous()
            tensors[f"{wl.name}.col_indices"] = csr.col_indices().to(torch.int64).contiguous()
            tensors[f"{wl.name}.values"] = csr.values().contiguous()
            nnz = int(csr.values().numel())
            layers[wl.name] = {"kind": wl.kind, "shape": list(w.shape), "matrix": list(csr.shape), "nnz": nnz,
                               "density": nnz / max(1, w.numel())}
            weight_keys.add(f"{wl.name}.weight" if wl.name else "weight")
    for key, value in model.state_dict().items():
        if key not in weight_keys:
            tensors[f"dense.{key}"] = value.detach().cpu().contiguous()
    meta = {"format": FORMAT, "config": {k: config.get(k) for k in ("model", "alpha", "model_options")},
            "geometry": {k: int(geometry[k]) for k in ("image_size", "in_chans", "num_classes")}, "layers": layers}
    save_file(tensors, str(stem.with_suffix(".safetensors")))
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return stem.with_suffix(".safetensors")


def export_sparse(run_dir: str | Path, out: str | Path | None = None, *, which: str = "best") -> Path:
    """Export a run's ``which`` checkpoint ("best", else "last" when there is no best) to ``out`` (default
    ``<run_dir>/export/sparse``); returns the .safetensors path."""
    from convemerge.runs import RunPaths, load_run_model, read_state

    paths = RunPaths(Path(run_dir))
    state = read_state(paths.root, which, fallback=True)
    model = load_run_model(paths.root, state["checkpoint"])
    out = Path(out) if out is not None else paths.export / "sparse"
    return export_model_sparse(model, out, config=state["config"], geometry=state["geometry"])


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def load_sparse(path: str | Path, *, max_density: float = 0.1) -> nn.Module:
    """Rebuild an exported net in eval mode; linear layers with density ≤ ``max_density`` run sparse."""
    from safetensors.torch import load_file

    from convemerge.models import create_model

    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
        tensors = load_file(str(stem.with_suffix(".safetensors")))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read sparse export {stem}.safetensors/.json ({type(exc).__name__}); "
                          f"export it again with `convemerge export RUN --sparse`") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{stem}.json is not a {FORMAT} export (format {meta.get('format')!r})")
    cfg, geo = meta["config"], meta["geometry"]
    model = create_model(cfg["model"], alpha=cfg.get("alpha"), image_size=geo["image_size"],
                         in_chans=geo["in_chans"], num_classes=geo["num_classes"], **(cfg.get("model_options") or {}))
    state = {k[len("dense."):]: v for k, v in tensors.items() if k.startswith("dense.")}
    sparse: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    with torch.no_grad(), _quiet_csr():
        for name, info in meta["layers"].items():
            try:  # a file is untrusted input: check the CSR invariants (bad indices would read out of bounds)
                csr = torch.sparse_csr_tensor(tensors[f"{name}.crow_indices"], tensors[f"{name}.col_indices"],
                                              tensors[f"{name}.values"], size=tuple(info["matrix"]),
                                              check_invariants=True)
            except (KeyError, RuntimeError) as exc:
                raise ConfigError(f"{stem}.safetensors: layer {name} is not a valid CSR matrix "
                                  f"({type(exc).__name__}); export it again") from None
            state[f"{name}.weight"] = csr.to_dense().reshape(info["shape"])
            if info["kind"] == "linear" and info["density"] <= max_density:
                sparse[name] = csr
        model.load_state_dict(state)
        for name, csr in sparse.items():
            dense = model.get_submodule(name)
            _set_module(model, name, SparseLinear(csr, dense.bias))
    return model.eval()
