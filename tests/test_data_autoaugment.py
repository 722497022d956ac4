"""Automatic augmentation policies: the ops agree with PIL's (the papers' implementations), preserve shape, dtype and
range, a fixed seed gives a fixed batch, and the policy is drawn per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convemerge.data import autoaugment as A
from convemerge.data.imagedata import ImageData
from convemerge.data.loader import ImageLoader

PIL = pytest.importorskip("PIL", reason="Pillow (a matplotlib dependency) is the reference for the ops")
from PIL import Image, ImageEnhance, ImageOps  # noqa: E402


def _images(n=6, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    x[n // 2] = (x[n // 2].float() * 0.5 + 40).to(torch.uint8)  # low contrast: auto-contrast and equalize have work to do
    return x


def _ours(x: torch.Tensor, name: str, v: float) -> torch.Tensor:
    out = A._OP_FN[name](x.float() / 255, torch.full((x.shape[0],), float(v)), torch.rand(x.shape[0], 2), 0.0)
    return (out * 255).round().clamp(0, 255).to(torch.uint8)


def _pil(x: torch.Tensor, fn) -> torch.Tensor:
    outs = []
    for img in x:
        im = Image.fromarray(np.ascontiguousarray(img.permute(1, 2, 0).numpy()))
        outs.append(torch.from_numpy(np.asarray(fn(im)).copy()).permute(2, 0, 1))
    return torch.stack(outs)


# (op, value, PIL reference, least share of pixels exactly equal)
PIL_OPS = [
    ("Equalize", 0, lambda im, v: ImageOps.equalize(im), 1.0),
    ("AutoContrast", 0, lambda im, v: ImageOps.autocontrast(im), 1.0),
    ("Invert", 0, lambda im, v: ImageOps.invert(im), 1.0),
    ("Solarize", 100, lambda im, v: ImageOps.solarize(im, v), 1.0),
    ("Posterize", 5, lambda im, v: ImageOps.posterize(im, v), 1.0),
    ("Contrast", 1.5, lambda im, v: ImageEnhance.Contrast(im).enhance(v), 1.0),
    ("Color", 0.4, lambda im, v: ImageEnhance.Color(im).enhance(v), 0.999),  # PIL's own luma rounding: ±1
    ("Brightness", 1.3, lambda im, v: ImageEnhance.Brightness(im).enhance(v), 1.0),
    ("Sharpness", 1.7, lambda im, v: ImageEnhance.Sharpness(im).enhance(v), 1.0),
    ("TranslateX", 3 / 32, lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, v * 32, 0, 1, 0)), 1.0),
    ("TranslateY", -5 / 32, lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v * 32)), 1.0),
    ("ShearX", -0.2, lambda im, v: im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0)), 1.0),
    # shear 0.2 puts many sampling positions exactly on pixel edges, where float32 and PIL's float64 round apart
    ("ShearY", 0.2, lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0)), 0.85),
    ("Rotate", 20, lambda im, v: im.rotate(v), 0.99),
]


@pytest.mark.parametrize("name, value, reference, share", PIL_OPS, ids=[p[0] for p in PIL_OPS])
def test_op_matches_pil(name, value, reference, share):
    x = _images()
    ours, ref = _ours(x, name, value), _pil(x, lambda im: reference(im, value))
    equal = float((ours == ref).float().mean())
    assert equal >= share, (name, equal)
    assert int((ours.int() - ref.int()).abs().max()) <= (1 if share >= 0.999 else 255)


@pytest.mark.parametrize("name", A.OPS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_every_op_preserves_shape_dtype_and_range(name, dtype):
    low, high = A.RANGES[name]
    x = _images(5)
    img = x if dtype == torch.uint8 else x.float() / 255
    values = torch.linspace(low, high, 5)
    policy = A.Policy(name, torch.full((1, 2), A.OPS.index(name)), torch.tensor([[1.0, 0.0]], dtype=torch.float64),
                      values.double().abs().view(5, 1)[:1].expand(1, 2).clone())
    u = torch.rand(5, A.DRAWS_PER_IMAGE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = A.apply_policy(img, policy, u)
    assert out.shape == img.shape and out.dtype == img.dtype
    if dtype == torch.float32:
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        assert torch.equal(out, (out * 255).round() / 255)  # still on the 8-bit grid
    for v in values:  # every value of the op's range, signed ops both ways
        raw = A._OP_FN[name](x.float() / 255, torch.full((5,), float(v)), torch.rand(5, 2), 0.5)
        assert raw.shape == x.shape and float(raw.min()) >= 0 and float(raw.max()) <= 1, (name, float(v))


@pytest.fixture
def faa_format(tmp_path):
    """A policy file in Fast AutoAugment's published format (continuous levels in [0, 1]), every op used."""
    g = torch.Generator().manual_seed(0)
    steps = [[[op, 0.8, float(torch.rand(1, generator=g))], [A.OPS[(i + 5) % len(A.OPS)], 0.6, 0.3]]
             for i, op in enumerate(A.OPS)]
    path = tmp_path / "faa_style.json"
    path.write_text(__import__("json").dumps({"policy": steps}))
    return str(path)


@pytest.fixture(params=["autoaugment", "fast-autoaugment", "faa-format-file"])
def policy_name(request, faa_format):
    return faa_format if request.param == "faa-format-file" else request.param


def test_policy_is_drawn_per_image(policy_name):
    policy = A.load_policy(policy_name)
    x = _images(1).expand(64, -1, -1, -1).contiguous()  # 64 copies of one image
    u = A.draw(policy, 64, torch.Generator().manual_seed(0))
    out = A.apply_policy(x, policy, u)
    distinct = {bytes(img.numpy()) for img in out}
    assert len(distinct) > 20  # different images got different sub-policies / coins / signs
    # image i depends on its own draws only: the batch equals the images done one at a time
    one_by_one = torch.cat([A.apply_policy(x[i:i + 1], policy, u[i:i + 1]) for i in range(64)])
    assert torch.equal(out, one_by_one)


def test_policy_files_are_checked(tmp_path, faa_format, monkeypatch):
    from convemerge.errors import ConfigError

    with monkeypatch.context() as m:  # an installation that lost the bundled file says where it goes
        m.setattr(A, "FAST_AUTOAUGMENT_FILE", tmp_path / "missing" / A.FAST_AUTOAUGMENT_FILE.name)
        with pytest.raises(ConfigError, match="fa_reduced_cifar10"):
            A.load_policy("fast-autoaugment")
    with pytest.raises(ConfigError, match="unknown augmentation policy 'randaugment'"):
        A.load_policy("randaugment")
    bad = tmp_path / "bad.json"
    bad.write_text('{"policy": [[["Rotate", 0.5, 3], ["Invert", 0.1, 0]]]}')  # an AutoAugment level, not [0, 1]
    with pytest.raises(ConfigError, match="level in"):
        A.load_policy(str(bad))
    p = A.load_policy(faa_format)
    rotate = A.OPS.index("Rotate")
    row = int(torch.nonzero(p.op[:, 0] == rotate)[0])
    level = __import__("json").loads(open(faa_format).read())["policy"][row][0][2]
    assert float(p.value[row, 0]) == pytest.approx(abs(-30 + 60 * level))  # FAA: low + level·(high − low)


def test_autoaugment_policy_is_the_published_one():
    p = A.load_policy("autoaugment")
    assert p.op.shape == (25, 2)
    assert A.AUTOAUGMENT_CIFAR10[1] == [("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)]
    assert p.value[1].tolist() == [6.0, 9 / 32]  # 30°·0.2, ⌊10 px·0.9⌋ of 32


# Fast AutoAugment's published CIFAR-10 policy (fa_reduced_cifar10): sub-policies, and the first and last as published
FAA_SUBPOLICIES = 493
FAA_FIRST = [["Contrast", 0.8320659688593578, 0.49884310562180767],
             ["TranslateX", 0.41849883971249136, 0.394023086494538]]
FAA_LAST = [["Cutout", 0.7550520024859294, 0.08982367300605598], ["ShearX", 0.5844942417320858, 0.36051195083380105]]


def test_fast_autoaugment_policy_is_bundled_as_published():
    import json

    data = json.loads(A.FAST_AUTOAUGMENT_FILE.read_text())
    steps = data["policy"]
    for cites in ("Fast AutoAugment", "arXiv:1905.00397", "kakaobrain/fast-autoaugment",
                  "FastAutoAugment/archive.py", "fa_reduced_cifar10"):
        assert cites in data["source"], cites
    assert len(steps) == FAA_SUBPOLICIES and steps[0] == FAA_FIRST and steps[-1] == FAA_LAST
    for sub in steps:
        assert len(sub) == 2
        for op, prob, level in sub:
            assert op in A.OPS and 0 <= prob <= 1 and 0 <= level <= 1, (op, prob, level)
    assert {op for sub in steps for op, _, _ in sub} == set(A.OPS)  # every op of the search space is used

    p = A.load_policy("fast-autoaugment")
    assert p.name == "fast-autoaugment" and p.fill == A.FAST_AUTOAUGMENT_FILL
    assert p.op.shape == p.prob.shape == p.value.shape == (FAA_SUBPOLICIES, 2)
    assert [A.OPS[int(k)] for k in p.op[0]] == ["Contrast", "TranslateX"]
    assert p.prob[0].tolist() == [FAA_FIRST[0][1], FAA_FIRST[1][1]]
    # level -> low + level·(high − low): contrast factor in [0.1, 1.9]; translate |value| of [-0.45, 0.45]
    assert float(p.value[0, 0]) == pytest.approx(0.1 + 1.8 * FAA_FIRST[0][2])
    assert float(p.value[0, 1]) == pytest.approx(abs(-0.45 + 0.9 * FAA_FIRST[1][2]))


def test_fast_autoaugment_policy_is_package_data():
    """The wheel carries the policy: pyproject's package-data globs match the bundled file."""
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["convemerge"]
    rel = A.FAST_AUTOAUGMENT_FILE.resolve().relative_to(Path(A.__file__).resolve().parents[1])
    assert any(rel.match(g) for g in globs), (rel, globs)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_fast_autoaugment_preserves_shape_dtype_and_range(dtype):
    policy = A.load_policy("fast-autoaugment")
    x = _images(64, seed=2)
    img = x if dtype == torch.uint8 else x.float() / 255
    u = A.draw(policy, 64, torch.Generator().manual_seed(4))
    out = A.apply_policy(img.clone(), policy, u)
    assert out.shape == img.shape and out.dtype == img.dtype
    if dtype == torch.float32:
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        assert torch.equal(out, (out * 255).round() / 255)  # still on the 8-bit grid
    else:  # the same images as the float path
        assert torch.equal(out, (A.apply_policy(x.float() / 255, policy, u) * 255).round().to(torch.uint8))
    assert not torch.equal(out, img)  # something fired
    again = A.apply_policy(img.clone(), policy, A.draw(policy, 64, torch.Generator().manual_seed(4)))
    assert torch.equal(out, again)  # a fixed seed gives a fixed batch


def _data(n=40) -> ImageData:
    g = torch.Generator().manual_seed(3)
    return ImageData(images=torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                     labels=torch.arange(n) % 10, name="toy", split="train", classes=[str(i) for i in range(10)],
                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augment=True)


def test_fixed_seed_gives_a_fixed_batch(policy_name):
    policy = A.load_policy(policy_name)

    def first_batch(seed):
        loader = ImageLoader(_data(), 16, shuffle=True, augment=True, policy=policy,
                             generator=torch.Generator().manual_seed(seed))
        return next(iter(loader))[0]

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = next(iter(ImageLoader(_data(), 16, shuffle=True, augment=True,
                                  generator=torch.Generator().manual_seed(0))))[0]
    assert a.shape == plain.shape and a.dtype == plain.dtype == torch.float32
    assert (a == 0).flatten(1).sum(1).min() >= 1  # cutout: every image has a 16x16 hole at the mean (16x16/2 min)


def test_sharded_loader_is_the_global_batch_cut_in_two():
    policy = A.load_policy("autoaugment")
    full = ImageLoader(_data(), 16, shuffle=True, augment=True, policy=policy, generator=torch.Generator().manual_seed(5))
    halves = [ImageLoader(_data(), 16, shuffle=True, augment=True, policy=policy, shard=(r, 2),
                          generator=torch.Generator().manual_seed(5)) for r in range(2)]
    for (x, y), (x0, y0), (x1, y1) in zip(full, *halves):
        assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))


def test_training_with_a_policy_is_reproducible(tmp_path):
    from safetensors.torch import load_file

    from convemerge.errors import ConfigError
    from convemerge.train import TrainConfig, train

    def run(name, **kw):
        cfg = TrainConfig(model="s-fc", alpha=1, dataset="digits", epochs=1, batch_size=128, num_threads=1,
                          out=str(tmp_path / name), **kw)
        train(cfg, verbose=False)
        return load_file(str(tmp_path / name / "checkpoints/last/model.safetensors"))["layer1.weight"]

    a, b = run("a", augment_policy="autoaugment"), run("b", augment_policy="autoaugment")
    plain = run("plain", augment=True)
    assert torch.equal(a, b) and not torch.equal(a, plain)
    with pytest.raises(ConfigError, match="noise-row: augmentation policies work on 8-bit images"):
        train(TrainConfig(model="s-fc", alpha=1, dataset="noise-row", epochs=1, augment_policy="autoaugment",
                          out=str(tmp_path / "float")), verbose=False)
    with pytest.raises(ConfigError, match="augment_policy needs augmentation on"):
        TrainConfig(augment=False, augment_policy="autoaugment").validate()
    with pytest.raises(ConfigError, match="augment_policy='randaug' is invalid"):
        TrainConfig(augment_policy="randaug").validate()
