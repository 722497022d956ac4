"""ImageNet VGG11 / ResNet18 with torchvision's state-dict layout; weights files; image folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from convemerge.analysis.agop import find_weight_layers, layer_agop
from convemerge.errors import ConfigError, DataError
from convemerge.models.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_imagenet_model,
    load_image_folder,
    load_imagenet_model,
)
from test_agop import brute_force_agop, rel_err  # tests/ is on sys.path under pytest's default import mode

# torchvision.models.vgg11().state_dict() keys, in order
VGG11_KEYS = """
features.0.weight features.0.bias features.3.weight features.3.bias features.6.weight features.6.bias
features.8.weight features.8.bias features.11.weight features.11.bias features.13.weight features.13.bias
features.16.weight features.16.bias features.18.weight features.18.bias
classifier.0.weight classifier.0.bias classifier.3.weight classifier.3.bias classifier.6.weight classifier.6.bias
""".split()

_BN = "weight bias running_mean running_var num_batches_tracked".split()

# torchvision.models.resnet18().state_dict() keys, in order (written out; BN = the 5 entries above)
RESNET18_KEYS_COMPACT = """
conv1.weight bn1.BN
layer1.0.conv1.weight layer1.0.bn1.BN layer1.0.conv2.weight layer1.0.bn2.BN
layer1.1.conv1.weight layer1.1.bn1.BN layer1.1.conv2.weight layer1.1.bn2.BN
layer2.0.conv1.weight layer2.0.bn1.BN layer2.0.conv2.weight layer2.0.bn2.BN
layer2.0.downsample.0.weight layer2.0.downsample.1.BN
layer2.1.conv1.weight layer2.1.bn1.BN layer2.1.conv2.weight layer2.1.bn2.BN
layer3.0.conv1.weight layer3.0.bn1.BN layer3.0.conv2.weight layer3.0.bn2.BN
layer3.0.downsample.0.weight layer3.0.downsample.1.BN
layer3.1.conv1.weight layer3.1.bn1.BN layer3.1.conv2.weight layer3.1.bn2.BN
layer4.0.conv1.weight layer4.0.bn1.BN layer4.0.conv2.weight layer4.0.bn2.BN
layer4.0.downsample.0.weight layer4.0.downsample.1.BN
layer4.1.conv1.weight layer4.1.bn1.BN layer4.1.conv2.weight layer4.1.bn2.BN
fc.weight fc.bias
""".split()
RESNET18_KEYS = [
    k2 for k in RESNET18_KEYS_COMPACT for k2 in ([k[:-2] + b for b in _BN] if k.endswith(".BN") else [k])
]

SHAPES = {
    "vgg11": {
        "features.0.weight": (64, 3, 3, 3),
        "features.18.weight": (512, 512, 3, 3),
        "classifier.0.weight": (4096, 25088),
        "classifier.6.weight": (1000, 4096),
    },
    "resnet18": {
        "conv1.weight": (64, 3, 7, 7),
        "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer4.1.conv2.weight": (512, 512, 3, 3),
        "layer3.0.downsample.1.num_batches_tracked": (),
        "fc.weight": (1000, 512),
    },
}


@pytest.mark.parametrize(
    "name, keys, n_params", [("vgg11", VGG11_KEYS, 132_863_336), ("resnet18", RESNET18_KEYS, 11_689_512)]
)
def test_state_dict_layout_matches_torchvision(name, keys, n_params):
    with torch.device("meta"):
        model = build_imagenet_model(name)
    sd = model.state_dict()
    assert list(sd) == keys
    assert len(sd) == {"vgg11": 22, "resnet18": 122}[name]
    assert sum(p.numel() for p in model.parameters()) == n_params
    for key, shape in SHAPES[name].items():
        assert tuple(sd[key].shape) == shape


def _randomised(model):
    """Random values everywhere, BN buffers included, so a load that skips anything shows up."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if "running_var" in k:
                v.copy_(torch.rand(v.shape, generator=gen) + 0.5)
            elif v.dtype.is_floating_point:
                v.copy_(torch.randn(v.shape, generator=gen) * 0.05)
            else:
                v.fill_(7)
    return model


def _roundtrip(name, tmp_path, fmt, num_classes=1000):
    model = _randomised(build_imagenet_model(name, num_classes)).eval()
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "safetensors":
        save_file(model.state_dict(), str(path))
    else:
        torch.save({"state_dict": model.state_dict()}, path)  # checkpoint wrapper is unwrapped
    loaded = load_imagenet_model(name, path)
    assert not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x))
    return path


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_resnet18_weights_roundtrip(tmp_path, fmt):
    _roundtrip("resnet18", tmp_path, fmt)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_vgg11_weights_roundtrip(tmp_path, fmt):
    _roundtrip("vgg11", tmp_path, fmt)


def test_num_classes_read_from_file(tmp_path):
    path = tmp_path / "r.safetensors"
    save_file(build_imagenet_model("resnet18", num_classes=10).state_dict(), str(path))
    assert load_imagenet_model("resnet18", path).fc.out_features == 10


def test_weight_file_errors(tmp_path):
    sd = build_imagenet_model("resnet18").state_dict()
    with pytest.raises(ConfigError, match="unknown ImageNet model 'alexnet'"):
        load_imagenet_model("alexnet", tmp_path / "x.pth")
    with pytest.raises(DataError, match="not found"):
        load_imagenet_model("resnet18", tmp_path / "missing.safetensors")
    bad = dict(sd)
    del bad["layer3.1.bn2.running_var"]
    bad["layer5.0.conv1.weight"] = torch.zeros(1)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(DataError, match=r"1 missing \(first: layer3.1.bn2.running_var\).*1 unexpected \(first: layer5"):
        load_imagenet_model("resnet18", tmp_path / "bad.safetensors")
    shaped = dict(sd)
    shaped["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(shaped, tmp_path / "shape.pth")
    with pytest.raises(DataError, match=r"conv1.weight has shape \(64, 3, 5, 5\)"):
        load_imagenet_model("resnet18", tmp_path / "shape.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read weights file"):
        load_imagenet_model("resnet18", tmp_path / "junk.pth")
    with pytest.raises(DataError, match="does not match torchvision's vgg11"):
        save_file(sd, str(tmp_path / "r.safetensors"))
        load_imagenet_model("vgg11", tmp_path / "r.safetensors")


def _normalise(rgb_uint8: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(rgb_uint8).permute(2, 0, 1).float() / 255
    return (t - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def test_load_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (256, 512, 3), dtype=np.uint8)  # shorter side already 256: crop only
    Image.fromarray(wide).save(tmp_path / "a_wide.png")
    Image.fromarray(rng.integers(0, 256, (300, 280), dtype=np.uint8)).save(tmp_path / "b_gray.png")
    Image.fromarray(np.full((240, 320, 3), (200, 30, 90), dtype=np.uint8)).save(tmp_path / "c_flat.jpg", quality=100)
    Image.fromarray(rng.integers(0, 256, (500, 260, 4), dtype=np.uint8), "RGBA").save(tmp_path / "d_rgba.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    x = load_image_folder(tmp_path)
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    # centre crop of an image that needs no resize: rows 16..240, columns 144..368, exactly
    assert torch.allclose(x[0], _normalise(wide[16:240, 144:368]), atol=1e-6)
    raw = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(raw[1][0], raw[1][1], atol=1e-6) and torch.allclose(raw[1][1], raw[1][2], atol=1e-6)
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    flat = _normalise(np.full((1, 1, 3), (200, 30, 90), dtype=np.uint8)).view(3)
    assert (x[2].mean((1, 2)) - flat).abs().max() < 0.03  # JPEG of a flat colour stays (almost) flat
    assert load_image_folder(tmp_path, limit=2).shape[0] == 2
    assert load_image_folder(tmp_path, size=32).shape == (4, 3, 32, 32)


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .jpg"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_image_folder(tmp_path)


def test_agop_runs_on_resnet18_and_vgg11_layers():
    model = _randomised(build_imagenet_model("resnet18", num_classes=3)).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    names = [layer.name for layer in find_weight_layers(model)]
    assert len(names) == 21 and names[0] == "conv1" and "layer2.0.downsample.0" in names and names[-1] == "fc"
    for name in ("conv1", "layer2.0.conv1", "layer3.0.downsample.0"):  # stem, middle (stride 2), shortcut
        ref = brute_force_agop(model, name, x)
        assert rel_err(layer_agop(model, name, x, batch_size=1), ref) <= 1e-5
    vgg = build_imagenet_model("vgg11", num_classes=2)
    g = layer_agop(vgg, "features.3", torch.randn(1, 3, 32, 32))
    assert g.shape == (576, 576) and torch.isfinite(g).all()
