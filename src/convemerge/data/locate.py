"""Where data files are looked for, and which on-disk form of a data set was found.

Search order: the explicit ``root`` (``--data-dir``), ``$CONVEMERGE_DATA``, the user cache folder, then known
system locations (Debian installs Fashion-MNIST under ``/usr/share/datasets/fashion-mnist``). Under each root the
data set's usual folder names are tried (``mnist/``, ``MNIST/raw/``, ``cifar-10-batches-bin/``, ...), and for CIFAR
also the official ``.tar.gz`` archives, read without extracting. An explicit root may also hold the files directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from .catalog import OFFICIAL, OfficialDataset, Variant

SYSTEM_ROOTS = (Path("/usr/share/datasets"), Path("/usr/local/share/datasets"))


def cache_root() -> Path:
    """The per-user folder where downloads go when neither ``root`` nor ``$CONVEMERGE_DATA`` is given."""
    return Path(platformdirs.user_cache_dir("convemerge")) / "datasets"


def search_roots(root: str | Path | None = None) -> list[Path]:
    """Folders searched, in order (duplicates removed)."""
    roots: list[Path] = []
    if root is not None:
        roots.append(Path(root).expanduser())
    env = os.environ.get("CONVEMERGE_DATA")
    if env:
        roots.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    roots.append(cache_root())
    roots.extend(SYSTEM_ROOTS)
    seen, out = set(), []
    for r in roots:
        key = os.path.abspath(r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def download_root(root: str | Path | None = None) -> Path:
    """Where a download is written: the explicit root, else the first ``$CONVEMERGE_DATA`` entry, else the cache."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("CONVEMERGE_DATA")
    if env and env.split(os.pathsep)[0]:
        return Path(env.split(os.pathsep)[0]).expanduser()
    return cache_root()


@dataclass(frozen=True)
class Located:
    """A found form of a data set: ``folder`` holds loose files (``paths``), or ``archive`` is the tar to read."""

    dataset: str
    variant: Variant
    folder: Path
    paths: dict[str, Path]          # official file name -> actual path (loose files only)
    archive: Path | None = None

    def describe(self) -> str:
        return str(self.archive) if self.archive else str(self.folder)


def _candidate_folders(ds: OfficialDataset, root: Path, variant: Variant, explicit: bool) -> list[Path]:
    bases = [root / f for f in ds.folders] + ([root] if explicit else [])
    out = []
    for base in bases:
        if variant.subdir and variant.archive is None:
            out.append(base / variant.subdir)
        out.append(base)
    if variant.subdir and variant.archive is None:
        out.append(root / variant.subdir)  # e.g. <root>/cifar-10-batches-bin, as the archive unpacks
    if variant.archive is not None:
        out.append(root)
    return list(dict.fromkeys(out))


def _find_files(folder: Path, specs) -> dict[str, Path] | None:
    paths = {}
    for spec in specs:
        for n in spec.names:
            p = folder / n
            if p.is_file():
                paths[spec.name] = p
                break
        else:
            return None
    return paths


def locate(name: str, splits: tuple[str, ...] = ("train", "test"), root: str | Path | None = None) -> Located | None:
    """The first form of ``name`` whose files for ``splits`` all exist, searching :func:`search_roots` in order."""
    ds = OFFICIAL[name]
    for i, r in enumerate(search_roots(root)):
        explicit = root is not None and i == 0
        for variant in ds.variants:
            for folder in _candidate_folders(ds, r, variant, explicit):
                if variant.archive is not None:
                    archive = folder / variant.archive.name
                    if archive.is_file():
                        return Located(name, variant, folder, {}, archive)
                    continue
                needed = [f for s in splits for f in variant.files(s)]
                paths = _find_files(folder, needed)
                if paths is not None:
                    for spec in variant.meta:
                        found = _find_files(folder, [spec])
                        if found:
                            paths.update(found)
                    return Located(name, variant, folder, paths)
    return None


def expected_files(name: str, splits: tuple[str, ...] = ("train", "test")) -> list[str]:
    """Official file names of the preferred form (used in 'not found' messages)."""
    ds = OFFICIAL[name]
    return [spec.name for spec in ds.download] if ds.download else [
        f.name for s in splits for f in ds.variants[0].files(s)]
