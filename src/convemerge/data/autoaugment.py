"""Automatic augmentation policies (AutoAugment, Fast AutoAugment) applied per image to whole batches on the device.

A policy is a list of sub-policies; a sub-policy is two ``(op, probability, magnitude)`` steps. Every image of a
batch draws its own sub-policy, then each step fires with its probability, and geometric steps draw a random sign
(the policies' "random mirror"). All random numbers are drawn on the CPU from the loader's ``torch.Generator``, a
fixed number per image whatever was drawn, then moved to the device — so a fixed seed gives a fixed batch, on CPU
and CUDA alike, and resuming restores them with the generator's state.

The ops follow the definitions of the PIL operations both papers used (``ImageOps`` / ``ImageEnhance``), on images
held as float in [0, 1] and rounded back to the 8-bit grid after every op, as PIL's uint8 images are:
shear / translate / rotate (nearest neighbour, grey 128 fill), auto-contrast, invert, equalize, solarize, posterize,
contrast, color (saturation), brightness, sharpness and cutout. Each op runs once per batch on the images that
drew it (one vectorised call, no per-image Python loop).

Policies and their magnitude conventions:

- ``autoaugment``: the CIFAR-10 policy of Cubuk et al., "AutoAugment: Learning Augmentation Policies from Data",
  CVPR 2019 (arXiv:1805.09501), appendix table of the 25 CIFAR-10 sub-policies. Magnitude levels 0–9 map
  linearly onto each op's range at level/10 (shear 0.3, translate 10 px of 32, rotate 30°, enhance factor
  0.1–1.9, solarize threshold 256 − ⌊25.6·level⌋, posterize keeps 8 − ⌊0.4·level⌋ bits: the ranges of the
  paper's search-space table).
- ``fast-autoaugment``: the CIFAR-10 policy of Lim et al., "Fast AutoAugment", NeurIPS 2019 (arXiv:1905.00397),
  as published with the paper (kakaobrain/fast-autoaugment, ``FastAutoAugment/archive.py``,
  ``fa_reduced_cifar10``: 493 sub-policies searched on reduced CIFAR-10, every op one of :data:`OPS` under the
  same name), bundled as ``policies/fast_autoaugment_cifar10.json`` (package data; its ``source`` field names the
  paper and the file), or any policy file in that format; levels in [0, 1] map linearly onto each op's
  [low, high] (:data:`RANGES`, the ranges of that code's ``augment_list``), and shear / translate / rotate take a
  random sign. The ``paper`` scale trains CIFAR-10 and CIFAR-100 with it; Fast AutoAugment's separate SVHN policy
  (``fa_reduced_svhn``) is not bundled, so SVHN keeps its default (no augmentation).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from convemerge.errors import ConfigError

POLICY_DIR = Path(__file__).with_name("policies")
# what geometric ops write where the image moved away: AutoAugment's implementation filled grey (128), Fast
# AutoAugment's (PIL's transform/rotate defaults) black
AUTOAUGMENT_FILL, FAST_AUTOAUGMENT_FILL = 128 / 255, 0.0
CUTOUT_FILL = (125 / 255, 123 / 255, 114 / 255)  # Fast AutoAugment's cutout fill (≈ the CIFAR-10 mean colour)

# op name -> (low, high) of its value; signed ops draw a random sign, so their range is |value| in [0, high]
RANGES = {
    "ShearX": (-0.3, 0.3), "ShearY": (-0.3, 0.3),  # shear factor
    "TranslateX": (-0.45, 0.45), "TranslateY": (-0.45, 0.45),  # fraction of the image side
    "Rotate": (-30.0, 30.0),  # degrees
    "AutoContrast": (0.0, 1.0), "Invert": (0.0, 1.0), "Equalize": (0.0, 1.0),  # no magnitude
    "Solarize": (0.0, 256.0),  # threshold on the 0..255 scale
    "Posterize": (4.0, 8.0),  # bits kept
    "Contrast": (0.1, 1.9), "Color": (0.1, 1.9), "Brightness": (0.1, 1.9), "Sharpness": (0.1, 1.9),  # factors
    "Cutout": (0.0, 0.2),  # side as a fraction of the image side
}
SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
OPS = tuple(RANGES)

# AutoAugment, CIFAR-10 (Cubuk et al. 2019, appendix): (op, probability, level 0..9); ops without magnitude
# carry level 0.
AUTOAUGMENT_CIFAR10 = [
    [("Invert", 0.1, 0), ("Contrast", 0.2, 6)],
    [("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)],
    [("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)],
    [("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)],
    [("AutoContrast", 0.5, 0), ("Equalize", 0.9, 0)],
    [("ShearY", 0.2, 7), ("Posterize", 0.3, 7)],
    [("Color", 0.4, 3), ("Brightness", 0.6, 7)],
    [("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)],
    [("Equalize", 0.6, 0), ("Equalize", 0.5, 0)],
    [("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)],
    [("Color", 0.7, 7), ("TranslateX", 0.5, 8)],
    [("Equalize", 0.3, 0), ("AutoContrast", 0.4, 0)],
    [("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)],
    [("Brightness", 0.9, 6), ("Color", 0.2, 8)],
    [("Solarize", 0.5, 2), ("Invert", 0.0, 0)],
    [("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)],
    [("Equalize", 0.2, 0), ("Equalize", 0.6, 0)],
    [("Color", 0.9, 9), ("Equalize", 0.6, 0)],
    [("AutoContrast", 0.8, 0), ("Solarize", 0.2, 8)],
    [("Brightness", 0.1, 3), ("Color", 0.7, 0)],
    [("Solarize", 0.4, 5), ("AutoContrast", 0.9, 0)],
    [("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)],
    [("AutoContrast", 0.9, 0), ("Solarize", 0.8, 3)],
    [("Equalize", 0.8, 0), ("Invert", 0.1, 0)],
    [("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 0)],
]


def _autoaugment_value(op: str, level: int) -> float:
    """The AutoAugment paper's level -> value (level/10 of the range; 10 px translate on 32-px CIFAR images,
    i.e. 10/32 of the side; solarize threshold falls and posterize removes bits as the level rises)."""
    m = level / 10
    if op in ("ShearX", "ShearY"):
        return 0.3 * m
    if op in ("TranslateX", "TranslateY"):
        return int(10 * m) / 32
    if op == "Rotate":
        return float(int(30 * m))
    if op == "Solarize":
        return float(256 - int(256 * m))
    if op == "Posterize":
        return float(8 - int(4 * m))
    if op in ("Contrast", "Color", "Brightness", "Sharpness"):
        return 0.1 + 1.8 * m
    return 0.0


@dataclass(frozen=True)
class Policy:
    """A policy as tensors: ``op`` (S, 2) op indices into :data:`OPS`, ``prob`` (S, 2), ``value`` (S, 2) in op
    units (for signed ops the magnitude, signed per image at random)."""

    name: str
    op: torch.Tensor
    prob: torch.Tensor
    value: torch.Tensor
    fill: float = 0.0  # geometric ops' fill, on the [0, 1] scale

    @classmethod
    def from_steps(cls, name: str, subpolicies, value_of, fill: float = 0.0) -> Policy:
        ops, probs, values = [], [], []
        for sub in subpolicies:
            if len(sub) != 2:
                raise ConfigError(f"policy {name}: every sub-policy needs two steps, got {sub!r}")
            for op, p, mag in sub:
                if op not in RANGES:
                    raise ConfigError(f"policy {name}: unknown op {op!r}; known: {', '.join(OPS)}")
            ops.append([OPS.index(op) for op, _, _ in sub])
            probs.append([float(p) for _, p, _ in sub])
            values.append([value_of(op, mag) for op, _, mag in sub])
        return cls(name, torch.tensor(ops), torch.tensor(probs, dtype=torch.float64),
                   torch.tensor(values, dtype=torch.float64), fill)


def _fast_autoaugment_value(op: str, level: float) -> float:
    """Fast AutoAugment: level in [0, 1] -> low + level·(high − low); signed ops give the magnitude |value|
    (their sign is drawn per image)."""
    low, high = RANGES[op]
    v = low + float(level) * (high - low)
    return abs(v) if op in SIGNED else v


POLICIES = ("autoaugment", "fast-autoaugment")
FAST_AUTOAUGMENT_FILE = POLICY_DIR / "fast_autoaugment_cifar10.json"


def load_policy(name: str) -> Policy:
    """``autoaugment``, ``fast-autoaugment`` (CIFAR-10 policies, see the module docstring), or the path of a JSON
    file ``{"policy": [[[op, probability, level], [op, probability, level]], ...]}`` in Fast AutoAugment's
    format (levels in [0, 1]; op names as in :data:`OPS`)."""
    if name == "autoaugment":
        return Policy.from_steps(name, AUTOAUGMENT_CIFAR10, _autoaugment_value, AUTOAUGMENT_FILL)
    path = FAST_AUTOAUGMENT_FILE if name == "fast-autoaugment" else Path(name)
    if name == "fast-autoaugment" and not path.exists():
        raise ConfigError(f"the Fast AutoAugment CIFAR-10 policy file {path.name} is not installed; save the published "
                          f"fa_reduced_cifar10 policy (kakaobrain/fast-autoaugment, archive.py) there as JSON "
                          f'{{"policy": [...]}}, or pass its path as --augment-policy')
    if name != "fast-autoaugment" and not (path.suffix == ".json" and path.exists()):
        raise ConfigError(f"unknown augmentation policy {name!r}; choose {', '.join(POLICIES)} or give a policy "
                          f".json file")
    try:
        steps = json.loads(path.read_text())["policy"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"policy file {path} is not JSON of the form {{\"policy\": [...]}}; fix the file") from None
    for sub in steps:
        for step in sub:
            if not (len(step) == 3 and 0 <= float(step[2]) <= 1 and 0 <= float(step[1]) <= 1):
                raise ConfigError(f"policy file {path}: step {step!r} needs [op, probability, level] with "
                                  f"probability and level in [0, 1]")
    return Policy.from_steps(path.stem if name != "fast-autoaugment" else name, steps, _fast_autoaugment_value,
                             FAST_AUTOAUGMENT_FILL)


# ----------------------------------------------------------------------------- drawing the random numbers
#: uniform numbers drawn per image and batch: sub-policy, 2 coins, 2 signs, 2 cutout centres (row, col)
DRAWS_PER_IMAGE = 1 + 2 + 2 + 4


def draw(policy: Policy, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, DRAWS_PER_IMAGE) uniform numbers in [0, 1) for ``n`` images, from ``generator`` (CPU)."""
    return torch.rand(n, DRAWS_PER_IMAGE, generator=generator, dtype=torch.float64)


def apply_policy(x: torch.Tensor, policy: Policy, u: torch.Tensor) -> torch.Tensor:
    """Augment ``x`` (B, C, H, W) uint8 or float in [0, 1] with ``policy``, image i using the draws ``u[i]``.

    Returns the same dtype and shape (uint8 stays uint8; float stays on the 8-bit grid in [0, 1])."""
    if x.shape[0] == 0:
        return x
    was_uint8 = x.dtype == torch.uint8
    img = x.to(torch.float32) / 255 if was_uint8 else x.to(torch.float32)
    s = torch.minimum((u[:, 0] * policy.op.shape[0]).long(), torch.tensor(policy.op.shape[0] - 1))
    for j in range(2):
        op = policy.op[s, j]
        fire = u[:, 1 + j] < policy.prob[s, j]
        sign = torch.where(u[:, 3 + j] < 0.5, -1.0, 1.0).to(torch.float64)
        value = policy.value[s, j]
        centre = u[:, 5 + 2 * j:7 + 2 * j]
        for k in torch.unique(op[fire]).tolist():  # on the CPU: no device synchronisation
            rows = torch.nonzero(fire & (op == k)).flatten()
            name = OPS[k]
            v = value[rows] * (sign[rows] if name in SIGNED else 1.0)
            rows_d = rows.to(img.device)
            img[rows_d] = _OP_FN[name](img[rows_d], v.to(img.device, torch.float32), centre[rows].to(img.device),
                                       policy.fill)
    if was_uint8:
        return (img * 255).round_().clamp_(0, 255).to(torch.uint8)
    return _quantise(img).to(x.dtype)


# ----------------------------------------------------------------------------- the ops (per-image values v: (n,))
def _quantise(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255) / 255


def _affine(x: torch.Tensor, mats: torch.Tensor, fill: float) -> torch.Tensor:
    """Sample ``x`` at ``mats`` (n, 2, 3): output pixel (col, row) about the centre, in pixels -> input position;
    nearest neighbour, ``fill`` outside."""
    n, _, h, w = x.shape
    # pixel units -> the normalised [-1, 1] units of affine_grid (align_corners=False)
    to_norm = torch.tensor([[2 / w, 0, 0], [0, 2 / h, 0]], dtype=mats.dtype, device=x.device)
    from_norm = torch.tensor([[w / 2, 0, 0], [0, h / 2, 0], [0, 0, 1]], dtype=mats.dtype, device=x.device)
    full = torch.cat([mats, torch.tensor([0, 0, 1.0], device=x.device).expand(n, 1, 3)], dim=1)
    # PIL takes the pixel at floor(position), grid_sample rounds half to even: a 1e-3 pixel nudge makes a position
    # exactly on a pixel edge (frequent for shears) land where PIL's does
    full = full + torch.tensor([[0, 0, 1e-3], [0, 0, 1e-3], [0, 0, 0]], device=x.device)
    theta = to_norm @ full @ from_norm
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, mode="nearest", padding_mode="zeros", align_corners=False) + fill


def _eye(v: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(v.shape[0], 2, 3, device=v.device)
    m[:, 0, 0] = 1
    m[:, 1, 1] = 1
    return m


def _shear_x(x, v, c, fill):
    m = _eye(v)
    m[:, 0, 1] = v  # input col = col + v·row, rows counted from the top (PIL shears about the top-left corner)
    m[:, 0, 2] = v * x.shape[2] / 2
    return _affine(x, m, fill)


def _shear_y(x, v, c, fill):
    m = _eye(v)
    m[:, 1, 0] = v
    m[:, 1, 2] = v * x.shape[3] / 2
    return _affine(x, m, fill)


def _translate_x(x, v, c, fill):
    m = _eye(v)
    m[:, 0, 2] = v * x.shape[3]
    return _affine(x, m, fill)


def _translate_y(x, v, c, fill):
    m = _eye(v)
    m[:, 1, 2] = v * x.shape[2]
    return _affine(x, m, fill)


def _rotate(x, v, c, fill):
    a = v * (math.pi / 180)
    m = _eye(v)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    return _affine(x, m, fill)


def _auto_contrast(x, v, c, fill):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = 255 / ((hi - lo) * 255).round().clamp(min=1)
    scaled = (((x - lo) * 255).round() * scale).trunc().clamp(0, 255) / 255  # PIL's lookup table truncates
    return torch.where(hi > lo, scaled, x)


def _invert(x, v, c, fill):
    return 1 - x


def _equalize(x, v, c, fill):
    """PIL's ``ImageOps.equalize`` per image and channel: a lookup table from the histogram, with the step
    (count of all pixels but those of the highest level present) // 255 (Pillow's rule); identity when 0."""
    n, ch, h, w = x.shape
    q = (x * 255).round().long().reshape(n * ch, h * w)
    hist = torch.zeros(n * ch, 256, dtype=torch.long, device=x.device).scatter_add_(1, q, torch.ones_like(q))
    top = 255 - torch.flip(hist > 0, dims=[1]).long().argmax(dim=1, keepdim=True)  # highest level present
    step = (h * w - hist.gather(1, top)) // 255
    lut = (step // 2 + torch.cumsum(hist, dim=1) - hist) // step.clamp(min=1)
    out = lut.clamp(max=255).gather(1, q)
    out = torch.where(step > 0, out, q)
    return out.reshape(n, ch, h, w).to(x.dtype) / 255


def _solarize(x, v, c, fill):
    return torch.where(x * 255 >= v.view(-1, 1, 1, 1), 1 - x, x)


def _posterize(x, v, c, fill):
    shift = (2.0 ** (8 - v.floor())).view(-1, 1, 1, 1)
    return torch.floor((x * 255).round() / shift) * shift / 255  # shift from floor(v) bits, as PIL callers did


def _grey(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L conversion (ITU-R 601-2 luma), kept as (n, 1, H, W); grey images are their own luma."""
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return _quantise(r * 0.299 + g * 0.587 + b * 0.114)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageEnhance``: degenerate + f·(image − degenerate) on the 0..255 scale, truncated to an integer
    (PIL's blend casts to int) and clipped."""
    d255, x255 = (degenerate * 255).round(), (x * 255).round()
    return (d255 + f.view(-1, 1, 1, 1) * (x255 - d255)).trunc().clamp(0, 255) / 255


def _contrast(x, v, c, fill):
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(((mean * 255).round() / 255).expand_as(x), x, v)


def _color(x, v, c, fill):
    return _blend(_grey(x).expand_as(x), x, v)


def _brightness(x, v, c, fill):
    return _blend(torch.zeros_like(x), x, v)


def _sharpness(x, v, c, fill):
    """Blend with PIL's SMOOTH filter (3x3, centre weight 5, total 13); the one-pixel border stays as it is."""
    ch = x.shape[1]
    k = torch.ones(3, 3, device=x.device)
    k[1, 1] = 5
    k = (k / 13).expand(ch, 1, 3, 3)
    smooth = _quantise(F.conv2d(x, k, groups=ch))
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, v)


def _cutout(x, v, c, fill):
    """A square of side v·W centred at a random pixel (clipped at the borders), filled with the mean colour."""
    n, ch, h, w = x.shape
    side = v * w
    cy, cx = c[:, 0] * h, c[:, 1] * w
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    y0, x0 = (cy - side / 2).clamp(min=0).floor(), (cx - side / 2).clamp(min=0).floor()
    y1, x1 = (cy + side / 2).clamp(max=h).floor(), (cx + side / 2).clamp(max=w).floor()
    inside = ((rows >= y0.view(-1, 1, 1)) & (rows < y1.view(-1, 1, 1))
              & (cols >= x0.view(-1, 1, 1)) & (cols < x1.view(-1, 1, 1)))
    fill = torch.tensor(CUTOUT_FILL[:ch] if ch == 3 else [sum(CUTOUT_FILL) / 3] * ch, device=x.device)
    return torch.where(inside[:, None], _quantise(fill.view(1, ch, 1, 1)).expand_as(x), x)


_OP_FN = {
    "ShearX": _shear_x, "ShearY": _shear_y, "TranslateX": _translate_x, "TranslateY": _translate_y,
    "Rotate": _rotate, "AutoContrast": _auto_contrast, "Invert": _invert, "Equalize": _equalize,
    "Solarize": _solarize, "Posterize": _posterize, "Contrast": _contrast, "Color": _color,
    "Brightness": _brightness, "Sharpness": _sharpness, "Cutout": _cutout,
}


def cutout(x: torch.Tensor, centres: torch.Tensor, side: int = 16, fill: float = 0.0) -> torch.Tensor:
    """Both papers' CIFAR pipelines end with Cutout (DeVries & Taylor 2017) of a ``side``-pixel square at a random
    centre (clipped at the borders), on the standardised image (fill 0 = the mean): ``centres`` (B, 2) in [0, 1)."""
    b, _, h, w = x.shape
    cy, cx = (centres[:, 0] * h).floor(), (centres[:, 1] * w).floor()
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows >= (cy - side // 2).view(-1, 1, 1)) & (rows < (cy + side // 2).view(-1, 1, 1))
              & (cols >= (cx - side // 2).view(-1, 1, 1)) & (cols < (cx + side // 2).view(-1, 1, 1)))
    return x.masked_fill(inside[:, None], fill)
