"""Loading the official data sets (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN) from whatever form was found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from convemerge.errors import ConfigError, DataError

from .catalog import CIFAR100_COARSE_CLASSES, OFFICIAL, Variant
from .cifar import (parse_cifar_binary, parse_cifar_pickle, parse_label_names_pickle, parse_label_names_text,
                    read_tar_members)
from .digests import verify_file
from .download import download_dataset, offline
from .idx import maybe_gunzip, parse_idx
from .imagedata import RawSplit
from .locate import Located, download_root, locate, search_roots
from .matfile import parse_mat

VERIFIED = ("sha256", "payload sha256", "md5")
_DATA_MEMBER_MAX = 1 << 28   # bytes accepted for one archive member holding images (CIFAR-100 train: 155 MB)
_META_MEMBER_MAX = 1 << 20


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror}); check the file and its permissions") from None


def find(name: str, splits: tuple[str, ...], root: str | Path | None, download: bool | None) -> Located:
    """Locate ``name`` for ``splits``; download it when allowed and absent; else one line on what to put where."""
    found = locate(name, splits, root)
    if found is not None:
        return found
    dest = download_root(root)
    ds = OFFICIAL[name]
    files = ds.variants[0].files("extra") if "extra" in splits else ds.download
    if download is False or offline():
        where = ", ".join(str(r) for r in search_roots(root))
        also = f" (or the extracted {ds.variants[0].subdir}/ folder)" if ds.variants[0].subdir else ""
        raise DataError(f"{name}: {', '.join(f.name for f in files)}{also} not found (searched {where}); put them in "
                        f"{dest / ds.folders[0]} or pass --data-dir (root=), or allow downloading")
    download_dataset(name, dest, files=files)
    found = locate(name, splits, dest)
    if found is None:  # pragma: no cover - the download put the files exactly where locate looks
        raise DataError(f"{name}: downloaded into {dest / ds.folders[0]} but the files are still incomplete; "
                        f"delete that folder and try again")
    return found


def _verify_paths(loc: Located, names: list[str], verify: bool) -> bool:
    if not verify:
        return False
    specs = {s.name: s for s in [*loc.variant.splits.get("train", ()), *loc.variant.splits.get("test", ()),
                                 *loc.variant.splits.get("extra", ()), *loc.variant.meta]}
    results = [verify_file(loc.paths[n], specs[n], dataset=loc.dataset) for n in names]
    return all(r in VERIFIED for r in results)


def _load_idx(loc: Located, split: str, verify: bool) -> RawSplit:
    img_spec, lab_spec = loc.variant.files(split)
    verified = _verify_paths(loc, [img_spec.name, lab_spec.name], verify)
    ip, lp = loc.paths[img_spec.name], loc.paths[lab_spec.name]
    images = parse_idx(maybe_gunzip(_read(ip), source=str(ip)), source=str(ip))
    labels = parse_idx(maybe_gunzip(_read(lp), source=str(lp)), source=str(lp))
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{ip} / {lp}: expected uint8 images (N, H, W) and uint8 labels (N,), got shapes "
                        f"{images.shape} / {labels.shape}; replace them with the official files")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{ip} holds {images.shape[0]} images but {lp} holds {labels.shape[0]} labels; "
                        f"the files do not belong together: replace them with the official files")
    if labels.size and labels.max() >= 10:
        raise DataError(f"{lp} holds label {int(labels.max())}, but there are only 10 classes; "
                        f"replace it with the official file")
    return RawSplit(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                    list(OFFICIAL[loc.dataset].classes), verified, str(loc.folder))


def _cifar_members(loc: Located, split: str, verify: bool) -> tuple[dict[str, bytes], bool, dict[str, str]]:
    """The split's files (and meta files, if present) as bytes; whether all verified; name -> source label."""
    v: Variant = loc.variant
    names = [f.name for f in v.files(split)]
    meta = [f.name for f in v.meta]
    if loc.archive is None:
        verified = _verify_paths(loc, names, verify)
        data = {n: _read(loc.paths[n]) for n in names + [m for m in meta if m in loc.paths]}
        return data, verified, {n: str(loc.paths.get(n, loc.folder / n)) for n in names + meta}
    verified = verify and verify_file(loc.archive, v.archive, dataset=loc.dataset) in VERIFIED
    wanted = {f"{v.subdir}/{n}": _DATA_MEMBER_MAX for n in names} | {f"{v.subdir}/{m}": _META_MEMBER_MAX for m in meta}
    members = read_tar_members(loc.archive, wanted, source=str(loc.archive),
                               required={f"{v.subdir}/{n}" for n in names})
    data = {key.split("/", 1)[1]: value for key, value in members.items()}
    return data, verified, {n: f"{loc.archive}:{v.subdir}/{n}" for n in names + meta}


def _load_cifar(loc: Located, split: str, verify: bool, coarse: bool) -> RawSplit:
    is100 = loc.dataset == "cifar100"
    data, verified, src = _cifar_members(loc, split, verify)
    images, labels = [], []
    for spec in loc.variant.files(split):
        raw = data[spec.name]
        if loc.variant.kind == "cifar-bin":
            x, y = parse_cifar_binary(raw, label_bytes=2 if is100 else 1,
                                      num_classes=(20, 100) if is100 else (10,), source=src[spec.name])
            y = y[:, 0] if (not is100 or coarse) else y[:, 1]
        else:
            key = ("coarse_labels" if coarse else "fine_labels") if is100 else "labels"
            x, y = parse_cifar_pickle(raw, label_key=key, num_classes=(20 if coarse else 100) if is100 else 10,
                                      source=src[spec.name])
        images.append(x)
        labels.append(y)
    classes = list(CIFAR100_COARSE_CLASSES if coarse else OFFICIAL[loc.dataset].classes)
    meta_name = {("cifar-bin", False): "batches.meta.txt", ("cifar-py", False): "batches.meta",
                 ("cifar-bin", True): "coarse_label_names.txt" if coarse else "fine_label_names.txt",
                 ("cifar-py", True): "meta"}[(loc.variant.kind, is100)]
    if meta_name in data:
        if loc.variant.kind == "cifar-bin":
            classes = parse_label_names_text(data[meta_name], count=len(classes), source=src[meta_name])
        else:
            key = ("coarse_label_names" if coarse else "fine_label_names") if is100 else "label_names"
            classes = parse_label_names_pickle(data[meta_name], key=key, count=len(classes), source=src[meta_name])
    return RawSplit(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)),
                    classes, verified, loc.describe())


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,) with digit 0 as 0) from an SVHN ``*_32x32.mat``."""
    arrays = parse_mat(_read(path), source=str(path), names={"X", "y"})
    x, y = arrays.get("X"), arrays.get("y")
    if x is None or y is None:
        raise DataError(f"{path} lacks the variables X and y of an SVHN file; replace it with the official file")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X has shape {x.shape} ({x.dtype}), expected uint8 (32, 32, 3, N); "
                        f"replace it with the official file")
    y = y.reshape(-1)
    if y.shape[0] != x.shape[3]:
        raise DataError(f"{path} holds {x.shape[3]} images but {y.shape[0]} labels; replace it with the official file")
    if y.size and (not np.all(np.isfinite(y)) or np.any(y != np.round(y)) or y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: labels must be the integers 1..10 (10 means digit 0); "
                        f"replace it with the official file")
    labels = y.astype(np.int64) % 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels


def _load_svhn(loc: Located, split: str, verify: bool) -> RawSplit:
    (spec,) = loc.variant.files(split)
    verified = _verify_paths(loc, [spec.name], verify)
    x, y = read_svhn_mat(loc.paths[spec.name])
    return RawSplit(torch.from_numpy(x), torch.from_numpy(y), list(OFFICIAL["svhn"].classes), verified, str(loc.folder))


def load_official(name: str, split: str, root: str | Path | None, *, download: bool | None, verify: bool,
                  coarse: bool = False, extra: bool = False) -> RawSplit:
    """One split of an official data set (see :func:`convemerge.data.load_dataset`)."""
    if coarse and name != "cifar100":
        raise ConfigError(f"option coarse applies to cifar100 only, not {name}")
    if extra and (name != "svhn" or split != "train"):
        raise ConfigError("option extra (add SVHN's extra_32x32.mat) applies to the svhn train split only")
    loc = find(name, (split,), root, download)
    kind = loc.variant.kind
    if kind == "idx":
        raw = _load_idx(loc, split, verify)
    elif kind == "mat":
        raw = _load_svhn(loc, split, verify)
        if extra:
            more = _load_svhn(find(name, ("extra",), root, download), "extra", verify)
            raw = RawSplit(torch.cat([raw.images, more.images]), torch.cat([raw.labels, more.labels]), raw.classes,
                           raw.verified and more.verified, f"{raw.source} (+ extra)")
    else:
        raw = _load_cifar(loc, split, verify, coarse)
    return raw


def check_official(name: str, root: str | Path | None) -> list[tuple[str, str]]:
    """Verify every file of ``name`` that is present (train, test, and optional splits if found); return
    (file, how it verified) rows. Missing data or a mismatch raises one :class:`DataError` line."""
    ds = OFFICIAL[name]
    loc = find(name, ("train", "test"), root, download=False)
    rows = []
    if loc.archive is not None:
        rows.append((str(loc.archive), verify_file(loc.archive, loc.variant.archive, dataset=name)))
        return rows
    for s in ("train", "test"):
        for spec in loc.variant.files(s):
            rows.append((str(loc.paths[spec.name]), verify_file(loc.paths[spec.name], spec, dataset=name)))
    for s in ds.optional_splits:
        extra = locate(name, (s,), root)
        if extra is not None:
            for spec in extra.variant.files(s):
                rows.append((str(extra.paths[spec.name]), verify_file(extra.paths[spec.name], spec, dataset=name)))
    return rows


def train_files_verified(name: str, root: str | Path | None) -> bool:
    """Whether the train files of ``name`` that ``load_dataset`` would use match the official release."""
    loc = locate(name, ("train",), root)
    if loc is None:
        return False
    try:
        if loc.archive is not None:
            return verify_file(loc.archive, loc.variant.archive, dataset=name) in VERIFIED
        return all(verify_file(loc.paths[s.name], s, dataset=name) in VERIFIED for s in loc.variant.files("train"))
    except DataError:
        return False
