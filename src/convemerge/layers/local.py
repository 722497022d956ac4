"""Locally connected 2-d layer: a convolution's geometry with a separate filter at every output position.

The layer is a patch gather followed by position-batched matrix products, done chunk by chunk of output
positions (row-major; whole output rows off CPU, where the input gradient is folded band by band).
The input is first turned batch-last, ``(C·H·W + 1, B)`` with a zero row for the padding, so that one
``index_select`` gathers a chunk's patches as ``(n, C·kh·kw, B)`` and each position's product is a plain
``(out, C·k²) @ (C·k², B)`` GEMM, all n of them in one ``torch.bmm``. A custom autograd function does the
backward pass the same way (autograd's own ``bmm`` backward, fed a permuted gradient, falls back to one small
copy and GEMM per position) and skips the input gradient for a first layer fed with data.

Memory: with one chunk the patch buffer ``B·C·k²·L`` is saved for the backward pass; with several, only the
batch-last input is saved and each chunk's patches are gathered again, so at most one chunk is alive at a
time (``max_patch_bytes``). On CPU small chunks are also the faster choice: they stay in cache between the
gather and the GEMM. The "broadcast-multiply" form found in public re-implementations materialises a
``B·out·C·L·k²`` tensor (about 4.8·10⁹ elements for S-LOCAL at α = 150 and batch 512).
See ``benchmarks/bench_local.py`` for both, side by side.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from convemerge.errors import ConfigError, GeometryError

__all__ = ["LocallyConnected2d", "locally_connected2d", "output_size"]

#: Patch bytes gathered at once on CPU by default: small enough to stay in cache between gather and GEMM.
CPU_CHUNK_BYTES = 1 << 20
#: The default cap on other devices (the patch buffer of S-LOCAL at batch 512 is 122 MiB).
DEFAULT_MAX_PATCH_BYTES = 16 << 20


def _pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        return (int(v[0]), int(v[1]))
    raise ConfigError(f"{what}={v!r} is invalid; give an int or a pair (h, w)")


def output_size(in_size, kernel_size, stride=1, padding=0) -> tuple[int, int]:
    """Output (H', W') of a convolution-shaped layer: ⌊(H + 2p − k)/s⌋ + 1 per side."""
    (h, w), (kh, kw) = _pair(in_size, "in_size"), _pair(kernel_size, "kernel_size")
    (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(padding, "padding")
    return ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


def _check_budget(max_patch_bytes):
    if max_patch_bytes is None or (isinstance(max_patch_bytes, (int, float)) and not isinstance(max_patch_bytes, bool)
                                   and max_patch_bytes > 0):
        return max_patch_bytes
    raise ConfigError(f"max_patch_bytes={max_patch_bytes!r} is invalid; give a positive number of bytes, "
                      "math.inf for no limit, or None for the automatic choice")


def positions_per_chunk(max_patch_bytes, device: torch.device, out_hw, patch_bytes_per_position: int, *,
                        whole_rows: bool = False) -> int:
    """Output positions whose patches are gathered at once: as many as fit ``max_patch_bytes``, at least one.

    ``None`` picks the default for the device: on CPU chunks of about ``CPU_CHUNK_BYTES`` (they stay in cache
    between the gather and the GEMM, which makes them faster than one large buffer as well as smaller), elsewhere
    at most ``DEFAULT_MAX_PATCH_BYTES``. ``math.inf`` gathers all positions at once. ``whole_rows`` rounds down
    to whole output rows (at least one), as the band-wise ``F.fold`` of the input gradient needs.
    """
    if max_patch_bytes is None:
        max_patch_bytes = CPU_CHUNK_BYTES if device.type == "cpu" else DEFAULT_MAX_PATCH_BYTES
    ho, wo = out_hw
    if math.isinf(max_patch_bytes):
        return ho * wo
    n = max(1, min(ho * wo, int(max_patch_bytes // max(1, patch_bytes_per_position))))
    return max(wo, n - n % wo) if whole_rows else n


@functools.lru_cache(maxsize=64)
def _patch_index(in_shape, kernel, stride, padding, out_hw, device: torch.device) -> torch.Tensor:
    """Row of a batch-last image ``(C·H·W + 1, B)`` for every patch entry, ordered (position, feature).

    The image's last row is zero: taps on the padding point at it, so no padded copy of the input is made.
    Returns ``(L·C·kh·kw,)`` int64; cached per geometry and device (it is small: L·C·k² entries).
    """
    (c, h, w), (kh, kw), (sh, sw), (ph, pw), (ho, wo) = in_shape, kernel, stride, padding, out_hw
    ar = lambda n: torch.arange(n, device=device)  # noqa: E731
    rows = (ar(ho) * sh - ph).view(ho, 1, 1, 1, 1) + ar(kh).view(1, 1, 1, kh, 1)
    cols = (ar(wo) * sw - pw).view(1, wo, 1, 1, 1) + ar(kw).view(1, 1, 1, 1, kw)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = ar(c).view(1, 1, c, 1, 1) * (h * w) + rows * w + cols
    return torch.where(inside, flat, c * h * w).expand(ho, wo, c, kh, kw).reshape(-1)


def _transpose_2d(a: torch.Tensor) -> torch.Tensor:
    """``a.t()`` as a new contiguous tensor: ``copy_`` from a transposed 2-d view takes its cache-blocked path
    (several times faster than the strided copy a 3-d permute gets)."""
    out = a.new_empty(a.shape[1], a.shape[0])
    return out.copy_(a.t())


def _batch_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (C·H·W + 1, B): one batch row per pixel, then a zero row that the padding points at."""
    b, n = x.shape[0], math.prod(x.shape[1:])
    xt = x.new_empty(n + 1, b)
    xt[:-1].copy_(x.reshape(b, n).t())
    xt[-1].zero_()
    return xt


def _gather(xt: torch.Tensor, index: torch.Tensor, p0: int, out: torch.Tensor) -> torch.Tensor:
    """Patches of positions ``p0 … p0 + n`` into ``out`` (n, F, B): one ``index_select`` of whole batch rows."""
    n, f, b = out.shape
    torch.index_select(xt, 0, index[p0 * f : (p0 + n) * f], out=out.view(n * f, b))
    return out


def _scatter_input_grad(device: torch.device) -> bool:
    """Sum patch gradients back into the image with ``index_add_`` (CPU) or ``F.fold`` per band (elsewhere:
    ``index_add_`` is not deterministic on CUDA)."""
    return device.type == "cpu"


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for this device type, or None (torch >= 2.4 API, older fallbacks)."""
    if device_type not in ("cpu", "cuda"):
        return None
    try:
        on = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: separate CPU / CUDA entry points
        on = torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()
    if not on:
        return None
    if hasattr(torch, "get_autocast_dtype"):
        return torch.get_autocast_dtype(device_type)
    return torch.get_autocast_cpu_dtype() if device_type == "cpu" else torch.get_autocast_gpu_dtype()


class _LocalFunction(torch.autograd.Function):
    """y[b, o, l] = Σ_f W[l, o, f] · patch[l, f, b] + bias[o, l], chunk by chunk of output positions.

    Layout: the input is turned batch-last, ``(C·H·W + 1, B)``, so that a chunk's patches are whole rows of B
    contiguous values gathered by one ``index_select`` into ``(n, F, B)``. One ``bmm`` runs the chunk's
    per-position products ``(out, F) @ (F, B)``; the chunk's ``(n, out, B)`` result is copied into an
    ``(out, L, B)`` buffer, which one 2-d transpose turns into the ``(B, out, H', W')`` output. The backward
    pass mirrors it: one 2-d transpose of the output gradient, then per chunk ∂W = ``bmm(g, patchesᵀ)`` and
    ∂patches = ``bmm(Wᵀ, g)`` summed into a batch-last image. With more than one chunk the patches are
    gathered again in the backward pass from the saved batch-last input, so at most one chunk of patches is
    alive at any time; with a single chunk they are saved.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, geometry, max_patch_bytes):
        in_shape, kernel, stride, padding, out_hw = geometry
        # Under autocast, cast once here and save the cast tensors, so that the backward pass (which runs
        # outside autocast) multiplies operands of one dtype; the engine casts the gradients back.
        dtype = _autocast_dtype(x.device.type)
        if dtype is not None:
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        ctx.dtype = dtype
        b, (n_pos, o, f) = x.shape[0], weight.shape
        n = positions_per_chunk(max_patch_bytes, x.device, out_hw, f * b * x.element_size(),
                                whole_rows=not _scatter_input_grad(x.device))
        chunks = [(p, min(p + n, n_pos)) for p in range(0, n_pos, n)]
        index = _patch_index(in_shape, kernel, stride, padding, out_hw, x.device)
        xt = _batch_last(x)
        cols = x.new_empty(n, f, b)
        y_t = x.new_empty(o, n_pos, b)  # (out, L, B): one 2-d transpose away from the (B, out, H', W') output
        # bmm into a strided (L, out, B) view of y_t would loop over positions; a contiguous chunk and a copy do not
        y_chunk = x.new_empty(n, o, b)
        bias_t = None if bias is None else bias.reshape(o, n_pos).t().unsqueeze(-1).expand(n_pos, o, b)
        for p0, p1 in chunks:
            c = _gather(xt, index, p0, cols[: p1 - p0])
            if bias_t is None:
                yc = torch.bmm(weight[p0:p1], c, out=y_chunk[: p1 - p0])
            else:  # the bias rides along in the GEMM (β = 1) instead of costing another pass over the output
                yc = torch.baddbmm(bias_t[p0:p1], weight[p0:p1], c, out=y_chunk[: p1 - p0])
            y_t[:, p0:p1].copy_(yc.transpose(0, 1))
        # Keep only what the backward pass will use: patches (or the input to rebuild them) for ∂W, weights for ∂x.
        keep = (cols if len(chunks) == 1 else xt) if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(keep, weight if ctx.needs_input_grad[0] else None)
        ctx.geometry, ctx.chunks = geometry, chunks
        return _transpose_2d(y_t.view(o * n_pos, b)).view(b, o, *out_hw)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        kept, weight = ctx.saved_tensors
        (c_in, h, w), kernel, stride, padding, out_hw = ctx.geometry
        b, o = grad_out.shape[:2]
        n_pos = out_hw[0] * out_hw[1]
        g = grad_out if ctx.dtype is None else grad_out.to(ctx.dtype)
        g_t = _transpose_2d(g.reshape(b, o * n_pos)).view(o, n_pos, b).transpose(0, 1)  # (L, out, B), strided
        grad_x = grad_w = grad_b = None
        f = c_in * kernel[0] * kernel[1]
        index = _patch_index((c_in, h, w), kernel, stride, padding, out_hw, g.device)
        scatter = _scatter_input_grad(g.device)
        if ctx.needs_input_grad[1]:
            grad_w = g.new_empty(n_pos, o, f)
            cols = kept if len(ctx.chunks) == 1 else g.new_empty(ctx.chunks[0][1], f, b)
        if ctx.needs_input_grad[0]:
            image = g.new_zeros(c_in * h * w + 1, b) if scatter else None
            padded = None if scatter else g.new_zeros(b, c_in, h + 2 * padding[0], w + 2 * padding[1])
            grad_cols = g.new_empty(ctx.chunks[0][1], f, b)
        for p0, p1 in ctx.chunks:
            if ctx.needs_input_grad[1]:
                if len(ctx.chunks) == 1:
                    c = cols
                else:  # rebuild this chunk's patches from the saved batch-last input
                    c = _gather(kept, index, p0, cols[: p1 - p0])
                torch.bmm(g_t[p0:p1], c.transpose(1, 2), out=grad_w[p0:p1])
            if ctx.needs_input_grad[0]:
                gc = torch.bmm(weight[p0:p1].transpose(1, 2), g_t[p0:p1], out=grad_cols[: p1 - p0])  # (n, F, B)
                if scatter:
                    image.index_add_(0, index[p0 * f : p1 * f], gc.view((p1 - p0) * f, b))
                else:
                    _fold_band(padded, gc, p0 // out_hw[1], out_hw[1], kernel, stride)
        if ctx.needs_input_grad[0]:
            if scatter:
                grad_x = _transpose_2d(image[:-1]).view(b, c_in, h, w)
            else:
                grad_x = padded[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w].contiguous()
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b, None, None


def _fold_band(padded: torch.Tensor, grad_cols: torch.Tensor, row0: int, wo: int, kernel, stride) -> None:
    """Add the patch gradients of output rows ``row0 …`` ((n, F, B), n a multiple of W') into the padded image."""
    (kh, kw), (sh, sw) = kernel, stride
    n_rows = grad_cols.shape[0] // wo
    band_h = (n_rows - 1) * sh + kh
    band = F.fold(grad_cols.permute(2, 1, 0), (band_h, padded.shape[3]), kernel, stride=stride)
    padded[:, :, row0 * sh : row0 * sh + band_h] += band


def locally_connected2d(x, weight, bias=None, *, kernel_size, stride=1, padding=0,
                        max_patch_bytes=None) -> torch.Tensor:
    """Functional form: ``x`` (B, C, H, W), ``weight`` (L, out, C·kh·kw), ``bias`` (out, H', W') or None.

    ``max_patch_bytes`` caps the patches gathered at once (see ``LocallyConnected2d``).
    """
    kernel, st, pad = _pair(kernel_size, "kernel_size"), _pair(stride, "stride"), _pair(padding, "padding")
    out_hw = output_size(tuple(x.shape[2:]), kernel, st, pad)
    if weight.shape[0] != out_hw[0] * out_hw[1] or weight.shape[2] != x.shape[1] * kernel[0] * kernel[1]:
        raise ConfigError(
            f"input of shape {tuple(x.shape)} does not fit weight {tuple(weight.shape)} with kernel {kernel}, "
            f"stride {st}, padding {pad}; build the layer for this input size"
        )
    geometry = (tuple(x.shape[1:]), kernel, st, pad, out_hw)
    return _LocalFunction.apply(x, weight, bias, geometry, _check_budget(max_patch_bytes))


class LocallyConnected2d(nn.Module):
    """A convolution without weight sharing: every output position has its own filter.

    ``weight`` has shape ``(L, out_channels, in_channels·kh·kw)`` with ``L = H'·W'`` output positions in
    row-major order and features in ``F.unfold`` order (channel, kernel row, kernel column); ``bias`` has
    shape ``(out_channels, H', W')`` (one per output unit). Both are initialised like ``nn.Conv2d``:
    uniform on ±1/√fan_in with fan_in = in_channels·kh·kw (kaiming-uniform with a = √5).

    ``max_patch_bytes`` caps the bytes of patches gathered at once (at least one position; whole output rows
    off CPU): ``None`` (default) picks ``CPU_CHUNK_BYTES`` on CPU (cache-sized chunks, the fastest there) and
    ``DEFAULT_MAX_PATCH_BYTES`` elsewhere; ``math.inf`` gathers every patch at once and keeps them for the
    backward pass. With several chunks the backward pass gathers each chunk again instead of keeping it.
    It is an attribute and may be changed after construction; results are the same in every mode.

    Example::

        >>> layer = LocallyConnected2d(3, 8, in_size=32, kernel_size=9, stride=2, padding=4)
        >>> layer(torch.randn(4, 3, 32, 32)).shape
        torch.Size([4, 8, 16, 16])
    """

    def __init__(self, in_channels: int, out_channels: int, in_size, kernel_size, stride=1, padding=0,
                 bias: bool = True, max_patch_bytes=None):
        super().__init__()
        self.max_patch_bytes = _check_budget(max_patch_bytes)
        for what, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{what}={v!r} is invalid; give a positive int")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size = _pair(in_size, "in_size")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        if min(self.in_size + self.kernel_size + self.stride) < 1 or min(self.padding) < 0:
            raise ConfigError(
                f"locally connected geometry in_size={self.in_size}, kernel={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding} is invalid; sizes must be positive, padding >= 0"
            )
        self.out_size = output_size(self.in_size, self.kernel_size, self.stride, self.padding)
        if min(self.out_size) < 1:
            raise GeometryError(
                f"kernel {self.kernel_size} with padding {self.padding} does not fit an input of size "
                f"{self.in_size}; use a smaller kernel or more padding"
            )
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        n_pos = self.out_size[0] * self.out_size[1]
        self.weight = nn.Parameter(torch.empty(n_pos, out_channels, fan_in))
        self.bias = nn.Parameter(torch.empty(out_channels, *self.out_size)) if bias else None
        self.reset_parameters()

    @property
    def fan_in(self) -> int:
        return self.weight.shape[-1]

    def reset_parameters(self) -> None:
        # nn.Conv2d's default: kaiming_uniform_(a=√5) gives bound 1/√fan_in; the bias uses the same bound.
        bound = 1.0 / math.sqrt(self.fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.in_size):
            raise ConfigError(
                f"LocallyConnected2d expects input (B, {self.in_channels}, {self.in_size[0]}, {self.in_size[1]}), "
                f"got {tuple(x.shape)}; build the layer for this input size"
            )
        geometry = ((self.in_channels, *self.in_size), self.kernel_size, self.stride, self.padding, self.out_size)
        return _LocalFunction.apply(x, self.weight, self.bias, geometry, _check_budget(self.max_patch_bytes))

    def filters_as_images(self, units: torch.Tensor | None = None) -> torch.Tensor:
        """Each unit's filter embedded at its receptive field in a zero ``(C, H, W)`` image.

        Units are ordered (position, out-channel): unit ``u = l·out_channels + o``. ``units`` selects a subset
        (a 1-d index tensor). Filter taps that fall on the zero padding are dropped, as they never meet input.
        Returns ``(units, C, H, W)``, detached.
        """
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        c, (h, w) = self.in_channels, self.in_size
        wt = self.weight.detach().reshape(-1, c, kh, kw)  # (L·out, C, kh, kw)
        idx = torch.arange(wt.shape[0], device=wt.device) if units is None else units.to(wt.device).long()
        wt = wt[idx]
        pos = idx // self.out_channels
        row0 = (pos // self.out_size[1]) * sh
        col0 = (pos % self.out_size[1]) * sw
        n = idx.numel()
        canvas = wt.new_zeros(n, c, h + 2 * ph, w + 2 * pw)
        u = torch.arange(n, device=wt.device).view(n, 1, 1, 1)
        ch = torch.arange(c, device=wt.device).view(1, c, 1, 1)
        rows = (row0.view(n, 1, 1, 1) + torch.arange(kh, device=wt.device).view(1, 1, kh, 1))
        cols = (col0.view(n, 1, 1, 1) + torch.arange(kw, device=wt.device).view(1, 1, 1, kw))
        canvas[u, ch, rows, cols] = wt
        return canvas[:, :, ph : ph + h, pw : pw + w]

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, in_size={self.in_size}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
            + ("" if self.max_patch_bytes is None else f", max_patch_bytes={self.max_patch_bytes}")
        )
