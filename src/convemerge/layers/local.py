"""Locally connected 2-d layer: a convolution's geometry with a separate filter at every output position.

The layer is computed as an unfold followed by one position-batched matrix product. Patches are gathered
straight into a ``(L, B, C·kh·kw)`` buffer (L output positions), so each position's product is a plain
``(B, C·k²) @ (C·k², out)`` GEMM and ``torch.bmm`` runs all L of them in one call. A custom autograd
function keeps every backward GEMM on contiguous operands too (autograd's own ``bmm`` backward, fed a
permuted gradient, falls back to one small copy and GEMM per position), and skips the input gradient for a
first layer fed with data.

The "broadcast-multiply" form found in public re-implementations materialises a ``B·out·C·L·k²`` tensor
(about 4.8·10⁹ elements for S-LOCAL at α = 150 and batch 512); this one never holds more than the patch buffer
``B·C·k²·L`` and the output. See ``benchmarks/bench_local.py`` for both, side by side.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from convemerge.errors import ConfigError

__all__ = ["LocallyConnected2d", "locally_connected2d", "output_size"]


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


def _patches(x: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """(B, C, H, W) -> (L, B, C·kh·kw), features in ``F.unfold`` order, positions row-major."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    p = x.unfold(2, kh, sh).unfold(3, kw, sw)  # (B, C, H', W', kh, kw): a view
    b, c, ho, wo = p.shape[:4]
    return p.permute(2, 3, 0, 1, 4, 5).reshape(ho * wo, b, c * kh * kw)  # the one gather copy


def _patch_index(c: int, padded_hw, kernel, stride, out_hw, device) -> torch.Tensor:
    """Flat index into a (C·Hp·Wp) padded image of every patch entry, ordered (position, feature): (L·C·kh·kw,)."""
    (hp, wp), (kh, kw), (sh, sw), (ho, wo) = padded_hw, kernel, stride, out_hw
    ar = lambda n: torch.arange(n, device=device)  # noqa: E731
    rows = (ar(ho) * sh).view(ho, 1, 1, 1, 1) + ar(kh).view(1, 1, 1, kh, 1)
    cols = (ar(wo) * sw).view(1, wo, 1, 1, 1) + ar(kw).view(1, 1, 1, 1, kw)
    return (ar(c).view(1, 1, c, 1, 1) * (hp * wp) + rows * wp + cols).reshape(-1)


def _input_grad(g: torch.Tensor, weight: torch.Tensor, in_shape, kernel, stride, padding, *, scatter: bool):
    """∂x from g (L, B, out): per-position products, then overlapping patches summed back into the image.

    ``scatter=True`` computes the products transposed, (L, F, B), and adds rows of B contiguous values into a
    (C·Hp·Wp, B) image with ``index_add_`` — on CPU about twice as fast as ``F.fold``, which first needs a
    costly (L, B, F) → (B, F, L) transpose. ``index_add_`` is not deterministic on CUDA, so other devices fold.
    """
    c, h, w = in_shape
    (ph, pw), b = padding, g.shape[1]
    if not scatter:
        grad_cols = torch.bmm(g, weight)  # (L, B, F)
        return F.fold(grad_cols.permute(1, 2, 0), (h, w), kernel, padding=padding, stride=stride)
    hp, wp = h + 2 * ph, w + 2 * pw
    out_hw = ((hp - kernel[0]) // stride[0] + 1, (wp - kernel[1]) // stride[1] + 1)
    grad_cols_t = torch.bmm(weight.transpose(1, 2), g.transpose(1, 2))  # (L, F, B)
    image = g.new_zeros(c * hp * wp, b)
    image.index_add_(0, _patch_index(c, (hp, wp), kernel, stride, out_hw, g.device), grad_cols_t.reshape(-1, b))
    return image.view(c, hp, wp, b)[:, ph : ph + h, pw : pw + w].permute(3, 0, 1, 2).contiguous()


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
    """y[b, o, l] = Σ_f W[l, o, f] · patch[l, b, f] + bias[o, l], with contiguous GEMMs in both passes."""

    @staticmethod
    def forward(ctx, x, weight, bias, kernel, stride, padding, out_hw):
        # Under autocast, cast once here and save the cast tensors, so that the backward pass (which runs
        # outside autocast) multiplies operands of one dtype; the engine casts the gradients back.
        dtype = _autocast_dtype(x.device.type)
        if dtype is not None:
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        ctx.dtype = dtype
        cols = _patches(x, kernel, stride, padding)  # (L, B, F)
        if bias is None:
            out = torch.bmm(cols, weight.transpose(1, 2))  # (L, B, out)
        else:  # the bias rides along in the GEMM (β = 1) instead of costing another pass over the output
            out = torch.baddbmm(bias.reshape(bias.shape[0], -1).t().unsqueeze(1), cols, weight.transpose(1, 2))
        # Keep only what the backward pass will use: patches for ∂W, weights for ∂x.
        ctx.save_for_backward(cols if ctx.needs_input_grad[1] else None, weight if ctx.needs_input_grad[0] else None)
        ctx.geometry = (tuple(x.shape[1:]), kernel, stride, padding)
        b = x.shape[0]
        return out.permute(1, 2, 0).reshape(b, weight.shape[1], *out_hw)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        cols, weight = ctx.saved_tensors
        in_shape, kernel, stride, padding = ctx.geometry
        b, o = grad_out.shape[:2]
        g = grad_out.reshape(b, o, -1).permute(2, 0, 1)
        g = (g if ctx.dtype is None else g.to(ctx.dtype)).contiguous()  # (L, B, out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _input_grad(g, weight, in_shape, kernel, stride, padding, scatter=g.device.type == "cpu")
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(g.transpose(1, 2), cols)  # (L, out, F)
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(1).t().reshape(o, *grad_out.shape[2:])
        return grad_x, grad_w, grad_b, None, None, None, None


def locally_connected2d(x, weight, bias=None, *, kernel_size, stride=1, padding=0) -> torch.Tensor:
    """Functional form: ``x`` (B, C, H, W), ``weight`` (L, out, C·kh·kw), ``bias`` (out, H', W') or None."""
    kernel, st, pad = _pair(kernel_size, "kernel_size"), _pair(stride, "stride"), _pair(padding, "padding")
    out_hw = output_size(tuple(x.shape[2:]), kernel, st, pad)
    if weight.shape[0] != out_hw[0] * out_hw[1] or weight.shape[2] != x.shape[1] * kernel[0] * kernel[1]:
        raise ConfigError(
            f"input of shape {tuple(x.shape)} does not fit weight {tuple(weight.shape)} with kernel {kernel}, "
            f"stride {st}, padding {pad}; build the layer for this input size"
        )
    return _LocalFunction.apply(x, weight, bias, kernel, st, pad, out_hw)


class LocallyConnected2d(nn.Module):
    """A convolution without weight sharing: every output position has its own filter.

    ``weight`` has shape ``(L, out_channels, in_channels·kh·kw)`` with ``L = H'·W'`` output positions in
    row-major order and features in ``F.unfold`` order (channel, kernel row, kernel column); ``bias`` has
    shape ``(out_channels, H', W')`` (one per output unit). Both are initialised like ``nn.Conv2d``:
    uniform on ±1/√fan_in with fan_in = in_channels·kh·kw (kaiming-uniform with a = √5).

    Example::

        >>> layer = LocallyConnected2d(3, 8, in_size=32, kernel_size=9, stride=2, padding=4)
        >>> layer(torch.randn(4, 3, 32, 32)).shape
        torch.Size([4, 8, 16, 16])
    """

    def __init__(self, in_channels: int, out_channels: int, in_size, kernel_size, stride=1, padding=0,
                 bias: bool = True):
        super().__init__()
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
            raise ConfigError(
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
        return _LocalFunction.apply(x, self.weight, self.bias, self.kernel_size, self.stride, self.padding,
                                    self.out_size)

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
        )
