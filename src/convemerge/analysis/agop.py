"""AGOP of a model's outputs with respect to the input of a weight layer (linear, conv, locally connected).

For a weight layer with pre-activation output ``h = W x + b`` the gradient of an output ``f_o`` with respect
to the layer's input (for a conv or local layer: with respect to each input patch ``x_p`` taken as an
independent input) is ``W_pᵀ ∂f_o/∂h_p``. So the (patch-)AGOP

    G = (1/n) Σ_i Σ_p Σ_o ∇_{x_p} f_o(x_i) ∇_{x_p} f_o(x_i)ᵀ

needs only ``∂f/∂h``: one forward pass per chunk of images, one batched backward pass per chunk of outputs,
no unfolded copy of the input. For conv and linear layers W is shared by all positions, so we accumulate the
``k_out × k_out`` Gram of ``∂f/∂h`` and multiply by W once at the end (or project first when that is
cheaper); a locally connected layer has one ``W_p`` per position and is accumulated per position.

Example::

    G = layer_agop(model, "features.0", x)                 # (c·q·q, c·q·q) patch-AGOP of a conv layer
    all_g = agops(model, x, ["conv1", "fc"], power=0.5)     # several layers in one sweep
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from convemerge.errors import ConfigError
from convemerge.models.base import layer_kind, weight_layers

__all__ = [
    "AgopLayer",
    "agops",
    "filter_covariance",
    "find_weight_layers",
    "layer_agop",
    "layer_kind",
    "resolve_layer",
    "psd_power",
    "sym_matrix_power",
    "unsupported_reason",
    "weight_matrix",
]


@dataclass(frozen=True)
class AgopLayer:
    """A weight layer as the AGOP sees it: its name in ``model.named_modules()``, the module and its kind."""

    name: str
    module: nn.Module
    kind: str  # "conv" | "local" | "linear"

    @property
    def in_dim(self) -> int:
        """Size of the vector the AGOP is taken over: c·q·q for conv/local layers, in_features for linear."""
        return int(self.module.weight.shape[-1] if self.kind == "local" else self.module.weight[0].numel())

    @property
    def out_dim(self) -> int:
        return int(self.module.weight.shape[-2] if self.kind == "local" else self.module.weight.shape[0])


def find_weight_layers(model: nn.Module) -> list[AgopLayer]:
    """Weight layers ordered input → output, as :func:`convemerge.models.weight_layers` decides them."""
    return [AgopLayer(wl.name, wl.module, k) for wl in weight_layers(model) if (k := layer_kind(wl.module))]


def unsupported_reason(layer: AgopLayer) -> str | None:
    """Why the AGOP cannot be taken at this weight layer, or None."""
    groups = getattr(layer.module, "groups", 1)
    if layer.kind == "conv" and groups != 1:
        return f"groups={groups}; the patch-AGOP supports groups=1 convolutions only"
    return None


def resolve_layer(model: nn.Module, layer_name: str) -> AgopLayer:
    """The named weight layer, with a one-line ConfigError for an unknown or unsupported name."""
    modules = dict(model.named_modules())
    if layer_name not in modules:
        known = [layer.name for layer in find_weight_layers(model)]
        raise ConfigError(f"no layer named {layer_name!r} in the model; weight layers are: {', '.join(known)}")
    module = modules[layer_name]
    kind = layer_kind(module)
    if kind is None:
        raise ConfigError(
            f"layer {layer_name!r} is a {type(module).__name__}; the AGOP needs a Linear, Conv or locally "
            "connected layer"
        )
    layer = AgopLayer(layer_name, module, kind)
    reason = unsupported_reason(layer)
    if reason is not None:
        raise ConfigError(f"layer {layer_name!r} has {reason}")
    return layer


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The weight as the AGOP uses it: (out, in) for linear, (k_out, c·q·q) for conv (same order as
    ``F.unfold`` patches), (L, out, c·k·k) for locally connected layers."""
    w = module.weight
    return w if w.dim() == 3 and layer_kind(module) == "local" else w.reshape(w.shape[0], -1)


def filter_covariance(module: nn.Module, *, per_position: bool = False,
                      minus: nn.Module | None = None) -> torch.Tensor:
    """WᵀW (detached). Locally connected layers: Σ_p W_pᵀW_p pooled over positions, or (L, d, d) per position.
    ``minus``: a layer of the same shape (e.g. the same layer at initialisation) whose weight is subtracted first,
    giving ΔWᵀΔW with ΔW = W − W₀."""
    w = weight_matrix(module).detach()
    if minus is not None:
        w0 = weight_matrix(minus).detach()
        if w0.shape != w.shape:
            raise ConfigError(f"cannot subtract a weight of shape {tuple(w0.shape)} from one of shape {tuple(w.shape)}")
        w = w - w0.to(w)
    if w.dim() == 3:
        return w.transpose(1, 2) @ w if per_position else torch.einsum("lod,loe->de", w, w)
    return w.T @ w


def psd_power(m: torch.Tensor, power: float) -> torch.Tensor:
    """``m**power`` of a symmetric positive semi-definite matrix through ``eigh``, eigenvalues clamped at 0
    (batched over leading dims); a 1-d ``m`` is the diagonal of a diagonal matrix. ``m`` is symmetrised first
    (eigh reads one triangle), at power 1 too. The one PSD power of the package (AGOP^p here, RFM metrics in
    :mod:`convemerge.kernels`)."""
    if power < 0:
        raise ConfigError(f"power={power} is negative; use a power >= 0 (the AGOP is only positive semi-definite)")
    if m.ndim == 1:
        return m.clamp(min=0) ** power
    m = 0.5 * (m + m.transpose(-1, -2))  # symmetrise against round-off
    if power == 1.0:
        return m
    evals, evecs = torch.linalg.eigh(m)
    evals = evals.clamp(min=0.0)
    return (evecs * evals.pow(power).unsqueeze(-2)) @ evecs.transpose(-1, -2)


sym_matrix_power = psd_power  # the former name


_BLOCK_ROWS = 16384
# Default output chunk: hold at most this many bytes of ∂f/∂h at once (the batched backward needs some more).
GRAD_BYTES_PER_CHUNK = 512 * 2**20


def _blocks(n: int, dtype: torch.dtype, step: int | None = None) -> list[slice]:
    """Row blocks: one block in float64, blocks of ``step`` (default _BLOCK_ROWS) rows in lower precision."""
    step = max(n, 1) if dtype == torch.float64 else (step or _BLOCK_ROWS)
    return [slice(r, r + step) for r in range(0, n, step)]


class _Accumulator:
    """Running Σ ∇∇ᵀ for one layer from chunks of ∂f/∂h, in float64."""

    def __init__(self, layer: AgopLayer, h_shape: torch.Size, per_position: bool):
        self.layer = layer
        self.w = weight_matrix(layer.module).detach()
        self.per_position = per_position and layer.kind == "local"
        d, k = layer.in_dim, layer.out_dim
        # Gram of ∂f/∂h costs k² per row, projecting first k·d + d²: take the cheaper exact route.
        self.gram = k <= d
        if layer.kind == "local":
            n_pos = self.w.shape[0]
            if h_shape[1] != k or h_shape[2:].numel() != n_pos:
                raise ValueError(
                    f"local layer {layer.name!r}: output shape {tuple(h_shape)} does not match weight "
                    f"{tuple(self.w.shape)} (expected (B, out, H', W') with H'·W' = L)"
                )
            shape = (n_pos, k, k) if self.gram else ((n_pos, d, d) if self.per_position else (d, d))
        else:
            shape = (k, k) if self.gram else (d, d)
        self.acc = torch.zeros(shape, dtype=torch.float64, device=self.w.device)

    def add(self, g: torch.Tensor) -> None:
        """g: (n_outputs, B, *h.shape[1:]) gradients of outputs w.r.t. the layer's output h."""
        k = self.layer.out_dim
        kind = self.layer.kind
        if kind == "linear":
            rows = g.reshape(-1, k)
        elif kind == "conv":
            rows = g.movedim(2, -1).reshape(-1, k)
        else:  # local: (L, M, k), M = outputs × images
            rows = g.reshape(-1, k, self.w.shape[0]).permute(2, 0, 1)
        rows = rows.to(self.w.dtype)
        # Sum at most _BLOCK_ROWS rows per low-precision matmul and the partial sums in float64: one float32
        # matmul over ~10⁵–10⁶ rows (all outputs × images × positions of a chunk) loses about 1e-4.
        if kind != "local":
            for blk in _blocks(rows.shape[0], rows.dtype):
                v = rows[blk] if self.gram else rows[blk] @ self.w
                self.acc += (v.T @ v).double()
            return
        pooled_projection = not self.gram and not self.per_position
        step = max(1, _BLOCK_ROWS // rows.shape[0]) if pooled_projection else _BLOCK_ROWS
        for part in _blocks(rows.shape[1], rows.dtype, step):
            blk = rows[:, part]
            if self.gram:
                self.acc += torch.bmm(blk.transpose(1, 2), blk).double()
                continue
            v = torch.bmm(blk, self.w)  # (L, m, d): ∇ w.r.t. each position's patch
            if self.per_position:
                self.acc += torch.bmm(v.transpose(1, 2), v).double()
            else:
                v = v.reshape(-1, v.shape[-1])
                self.acc += (v.T @ v).double()

    def result(self) -> torch.Tensor:
        w = self.w.double()
        if not self.gram:
            return self.acc
        if self.layer.kind != "local":
            return w.T @ self.acc @ w
        if self.per_position:
            return w.transpose(1, 2) @ self.acc @ w
        # Σ_p W_pᵀ S_p W_p as one (L·k, d)ᵀ (L·k, d) product: never stores L d×d blocks.
        t = torch.bmm(self.acc, w)
        return w.reshape(-1, w.shape[-1]).T @ t.reshape(-1, w.shape[-1])


class _Capture:
    """Forward hooks that keep each target layer's output h as a node ∂f/∂h can be taken against."""

    def __init__(self, layers: Sequence[AgopLayer]):
        self.h: dict[str, torch.Tensor] = {}
        self.handles = [layer.module.register_forward_hook(self._hook(layer.name)) for layer in layers]

    def _hook(self, name: str) -> Callable:
        def hook(module, inputs, out):
            if not isinstance(out, torch.Tensor):
                raise ConfigError(f"layer {name!r} returned a {type(out).__name__}, not a tensor")
            if name in self.h:
                raise ConfigError(
                    f"layer {name!r} ran more than once in one forward pass; the AGOP needs a layer applied once"
                )
            if not out.requires_grad:  # frozen parameters and an input without grad: start the graph here
                out = out.detach().requires_grad_(True)
            self.h[name] = out
            # Return a copy so that an in-place op downstream (ReLU(inplace=True)) cannot overwrite h.
            return out.clone()

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _output_grads(f: torch.Tensor, hs: list[torch.Tensor], idx: Sequence[int], batched: bool):
    """Yield [(m, B, *h.shape[1:])] gradients of f[:, o] w.r.t. each h for the outputs o in idx: all of them
    in one backward pass batched over outputs (m = len(idx)), or one backward pass per output (m = 1)."""
    if batched:
        go = torch.zeros((len(idx),) + tuple(f.shape), dtype=f.dtype, device=f.device)
        go[torch.arange(len(idx)), :, torch.as_tensor(list(idx))] = 1.0
        grads = torch.autograd.grad(f, hs, go, retain_graph=True, is_grads_batched=True, allow_unused=True)
        yield [torch.zeros((len(idx),) + h.shape, dtype=h.dtype, device=h.device) if g is None else g
               for g, h in zip(grads, hs)]
        return
    for o in idx:
        grads = torch.autograd.grad(f[:, o].sum(), hs, retain_graph=True, allow_unused=True, materialize_grads=True)
        yield [g.unsqueeze(0) for g in grads]


def agops(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str] | None = None,
    *,
    power: float = 1.0,
    per_position: bool = False,
    reduction: str = "mean",
    outputs: Sequence[int] | None = None,
    output_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 64,
    output_chunk: int | None = None,
    batched: bool = True,
    eval_mode: bool = True,
) -> dict[str, torch.Tensor]:
    """(Patch-)AGOPs of several weight layers from one sweep over ``x``; see :func:`layer_agop`.

    ``layers`` defaults to every weight layer (:func:`find_weight_layers`). Returns ``{name: G}`` in the
    weight's dtype, accumulated in float64.
    """
    if reduction not in ("mean", "sum"):
        raise ConfigError(f"reduction={reduction!r} is not one of 'mean', 'sum'")
    if batch_size < 1 or (output_chunk is not None and output_chunk < 1):
        raise ConfigError(f"batch_size={batch_size}, output_chunk={output_chunk}: both must be >= 1")
    if x.shape[0] == 0:
        raise ConfigError("x holds no images; the AGOP needs at least one")
    if power < 0:
        raise ConfigError(f"power={power} is negative; use a power >= 0 (the AGOP is only positive semi-definite)")
    if layers is None:  # every supported layer; grouped convolutions are left out (named, they raise)
        names = [layer.name for layer in find_weight_layers(model) if unsupported_reason(layer) is None]
    else:
        names = list(layers)
    targets = [resolve_layer(model, name) for name in names]
    if not targets:
        return {}
    modes = {m: m.training for m in model.modules()}
    if eval_mode:  # batch norm in train mode would couple the images of a chunk
        model.eval()
    device = next((p.device for p in model.parameters()), x.device)
    capture = _Capture(targets)
    accs: dict[str, _Accumulator] = {}
    try:
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device)
            capture.h.clear()
            with torch.enable_grad():
                f = model(xb) if output_fn is None else output_fn(model, xb)
            if not isinstance(f, torch.Tensor):
                raise ConfigError(
                    f"the model returned a {type(f).__name__}; pass output_fn=lambda model, xb: ... returning the "
                    "(batch, outputs) tensor"
                )
            f = f.reshape(xb.shape[0], -1)
            missing = [layer.name for layer in targets if layer.name not in capture.h]
            if missing:
                raise ConfigError(f"layer {missing[0]!r} did not run in the model's forward pass")
            hs = [capture.h[layer.name] for layer in targets]
            for layer, h in zip(targets, hs):
                if layer.name not in accs:
                    accs[layer.name] = _Accumulator(layer, h.shape, per_position)
            idx_all = list(range(f.shape[1])) if outputs is None else list(outputs)
            chunk = output_chunk
            if chunk is None:  # as many outputs as keep the gradients held at once under the budget
                per_output = sum(h.numel() * h.element_size() for h in hs)
                chunk = max(1, min(len(idx_all), GRAD_BYTES_PER_CHUNK // max(per_output, 1)))
            for c0 in range(0, len(idx_all), chunk):
                idx = idx_all[c0 : c0 + chunk]
                try:
                    chunks = list(_output_grads(f, hs, idx, True)) if batched else _output_grads(f, hs, idx, False)
                except RuntimeError as exc:  # an op without a vmap rule (e.g. a custom backward): loop instead
                    warnings.warn(
                        f"batched backward over outputs failed ({str(exc).splitlines()[0][:120]}); "
                        "using one backward pass per output (pass batched=False to skip the attempt)",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    batched = False
                    chunks = _output_grads(f, hs, idx, False)
                for grads in chunks:
                    for layer, g in zip(targets, grads):
                        accs[layer.name].add(g)
                    del grads
                del chunks  # free this chunk's gradients before the next backward pass
            del f, hs
            capture.h.clear()
    finally:
        capture.remove()
        for m, mode in modes.items():
            m.training = mode
    out = {}
    for layer in targets:
        g = accs[layer.name].result()
        if reduction == "mean":
            g = g / x.shape[0]
        g = sym_matrix_power(g, power)
        out[layer.name] = g.to(layer.module.weight.dtype)
    return out


def layer_agop(
    model: nn.Module,
    layer_name: str,
    x: torch.Tensor,
    *,
    power: float = 1.0,
    per_position: bool = False,
    reduction: str = "mean",
    outputs: Sequence[int] | None = None,
    output_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 64,
    output_chunk: int | None = None,
    batched: bool = True,
    eval_mode: bool = True,
) -> torch.Tensor:
    """AGOP of the model's outputs with respect to the input of layer ``layer_name``.

    - linear layer: ``(in_features, in_features)``, the AGOP over the flat input of the layer;
    - conv layer (groups=1, any stride/padding/dilation): the patch-AGOP ``(c·q·q, c·q·q)``, summed over all
      positions the layer visits, entries ordered like ``weight.reshape(k_out, -1)`` (channel, row, column);
    - locally connected layer: pooled over positions ``(c·k·k, c·k·k)``, or ``(L, c·k·k, c·k·k)`` with
      ``per_position=True``.

    Normalisation: ``reduction="mean"`` divides by the number of images n (positions and outputs are summed),
    ``"sum"`` does not. ``power`` applies a symmetric matrix power (eigenvalues clamped at 0) to the result.
    ``outputs`` restricts the sum to some model outputs. ``output_fn(model, xb)`` maps a batch to the
    ``(B, c)`` outputs when ``model(xb)`` does not return them.

    Memory is bounded by ``batch_size`` images per forward pass times ``output_chunk`` outputs per backward
    pass, batched over outputs with vmap (default chunk: as many outputs as keep the gradients held at once
    under ``GRAD_BYTES_PER_CHUNK``, 512 MiB). ``batched=False`` runs one backward pass per output instead; that
    is also the automatic fallback, with a RuntimeWarning, when an op of the model has no vmap rule.
    ``eval_mode`` evaluates in eval mode (batch norm with running statistics, no dropout), restoring the
    modules' modes afterwards.
    """
    return agops(
        model,
        x,
        [layer_name],
        power=power,
        per_position=per_position,
        reduction=reduction,
        outputs=outputs,
        output_fn=output_fn,
        batch_size=batch_size,
        output_chunk=output_chunk,
        batched=batched,
        eval_mode=eval_mode,
    )[layer_name]
