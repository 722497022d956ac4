"""ImageNet VGG11 and ResNet18 with torchvision's parameter names and shapes, and an image-folder loader.

The modules mirror ``torchvision.models.vgg11`` and ``torchvision.models.resnet18`` key for key, so a
user-supplied pretrained state dict (``.safetensors`` or a ``torch.save``-d dict) loads with ``strict=True``
without torchvision installed. Used for the convolutional neural feature ansatz on pretrained networks.

Example::

    model = load_imagenet_model("vgg11", "vgg11.safetensors")
    x = load_image_folder("images/", limit=20)          # (N, 3, 224, 224), ImageNet-normalised
    rows = nfa_table(model, x)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from convemerge.errors import ConfigError, DataError
from convemerge.models.resnet import BasicBlock

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "ResNet18",
    "VGG11",
    "build_imagenet_model",
    "load_image_folder",
    "load_imagenet_model",
    "load_state_dict_file",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# torchvision's configuration "A": numbers are conv widths (3×3, padding 1), "M" a 2×2 max pool.
_VGG11_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG11 without batch norm: ``features.{0,3,6,8,11,13,16,18}`` convs, 7×7 adaptive average pool,
    ``classifier.{0,3,6}`` linear layers (25088 → 4096 → 4096 → num_classes) with dropout."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG11_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        # torchvision's initialisation, so that "random weights" mean the same thing as there
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class ResNet18(nn.Module):
    """torchvision's ResNet18: 7×7/2 stem + 3×3/2 max pool, four stages of two BasicBlocks
    (64, 128, 256, 512 channels), global average pool, ``fc``."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        widths, inplanes = (64, 128, 256, 512), 64
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(BasicBlock(inplanes, planes, stride, shortcut="downsample"),
                                  BasicBlock(planes, planes, shortcut="downsample"))
            self.add_module(f"layer{i + 1}", stage)
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        # torchvision's initialisation, so that "random weights" mean the same thing as there
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


_BUILDERS = {"vgg11": VGG11, "resnet18": ResNet18}


def build_imagenet_model(name: str, num_classes: int = 1000) -> nn.Module:
    """A randomly initialised ``"vgg11"`` or ``"resnet18"``."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _BUILDERS:
        raise ConfigError(f"unknown ImageNet model {name!r}; choose one of: {', '.join(_BUILDERS)}")
    return _BUILDERS[key](num_classes=num_classes)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save``-d file (read with ``weights_only=True``).

    A checkpoint dict holding the weights under ``"state_dict"`` or ``"model"`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file {path} not found; pass the path of a .safetensors or .pth state dict")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure is a bad file, reported in one line
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise DataError(f"cannot read weights file {path} ({type(exc).__name__}: {reason})") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"weights file {path} does not hold a state dict of tensors")
    return state


def load_imagenet_model(name: str, weights_path: str | Path, *, num_classes: int | None = None) -> nn.Module:
    """Build ``name`` ("vgg11" | "resnet18") and load a torchvision-format state dict with strict=True.

    Returns the model in eval mode. Missing / unexpected keys or a shape mismatch raise a one-line DataError
    naming the first offending keys. ``num_classes`` defaults to the classifier size found in the file.
    """
    build_imagenet_model(name)  # validate the name before touching the file
    state = load_state_dict_file(weights_path)
    if num_classes is None:
        head = state.get("fc.weight", state.get("classifier.6.weight"))
        num_classes = int(head.shape[0]) if head is not None else 1000
    with torch.device("meta"):  # no time spent initialising weights that are about to be replaced
        model = build_imagenet_model(name, num_classes)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        raise DataError(
            f"weights file {weights_path} does not match torchvision's {name}: keys {'; '.join(parts)}; "
            "pass a state dict saved from that architecture"
        )
    bad = [k for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        k = bad[0]
        raise DataError(
            f"weights file {weights_path}: {k} has shape {tuple(state[k].shape)}, {name} needs "
            f"{tuple(expected[k].shape)} ({len(bad)} mismatched tensors); pass weights of that architecture"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


def _load_rgb(path: Path, size: int, resize: int) -> torch.Tensor:
    """torchvision's eval transform: shorter side → ``resize`` (bilinear, antialiased), centre crop ``size``."""
    from PIL import Image  # pillow ships with matplotlib

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            if w <= h:
                new_w, new_h = resize, int(resize * h / w)
            else:
                new_w, new_h = int(resize * w / h), resize
            img = img.resize((new_w, new_h), Image.BILINEAR)
            top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
            img = img.crop((left, top, left + size, top + size))
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except Exception as exc:
        raise DataError(f"cannot read image {path} ({type(exc).__name__}); remove or replace the file") from exc
    return data.reshape(size, size, 3).permute(2, 0, 1)


def load_image_folder(
    path: str | Path, size: int = 224, limit: int | None = None, *, resize: int | None = None
) -> torch.Tensor:
    """JPEG/PNG files of a folder (sorted by name, first ``limit``) as a float tensor (N, 3, size, size).

    Each image: shorter side resized to ``resize`` (default 256·size/224), centre crop ``size``×``size``,
    scaled to [0, 1] and normalised with the ImageNet mean / std — torchvision's evaluation transform.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} not found; pass a folder of .jpg/.jpeg/.png files")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit={limit}; pass a positive number of images (or None for all)")
        files = files[:limit]
    if not files:
        raise DataError(f"image folder {folder} holds no .jpg/.jpeg/.png files; add some images")
    resize = resize if resize is not None else int(round(size * 256 / 224))
    if resize < size:
        raise ConfigError(f"resize={resize} is smaller than the crop size={size}")
    images = torch.stack([_load_rgb(f, size, resize) for f in files]).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std
