"""What is known and what is found where: the library side of ``convemerge data list`` and ``data check``."""

from __future__ import annotations

from pathlib import Path

from convemerge.errors import DataError

from .catalog import OFFICIAL
from .embedded import load_digits_split, mnist_5k_all, mnist_5k_path
from .locate import locate
from .official import check_official
from .registry import dataset_entry, list_datasets


def where(name: str, root: str | Path | None = None) -> str | None:
    """Where ``name`` would be loaded from (a folder, an archive, a package file, or 'generated'); None if absent."""
    entry = dataset_entry(name)
    if entry.kind == "synthetic":
        return "generated on demand (seeded)"
    if name == "digits":
        return "inside scikit-learn (sklearn.datasets.load_digits)"
    if name == "mnist-5k":
        try:
            path = mnist_5k_path()
        except DataError:
            return None
        return str(path) if path.is_file() else None
    found = locate(name, ("train", "test"), root)
    return found.describe() if found else None


def inventory(root: str | Path | None = None) -> list[dict]:
    """One row per known data set: name, kind, description, where found (or None)."""
    return [{"name": n, "kind": dataset_entry(n).kind, "description": dataset_entry(n).description,
             "where": where(n, root)} for n in list_datasets()]


def check_dataset(name: str, root: str | Path | None = None) -> list[tuple[str, str]]:
    """Verify every file of ``name``: (file, how it verified) rows. Missing files or a mismatch raise one
    :class:`DataError` line; the network is never used."""
    entry = dataset_entry(name)
    if name in OFFICIAL:
        return check_official(name, root)
    if name == "mnist-5k":
        mnist_5k_all(verify=True)
        return [(str(mnist_5k_path()), "payload sha256")]
    if name == "digits":
        load_digits_split("train")
        return [("scikit-learn load_digits", "structure (1797 x 8 x 8, values 0..16)")]
    if entry.kind == "synthetic":
        return [("(generated)", "nothing to verify")]
    return [("(registered loader)", "no digest known")]  # pragma: no cover - third-party registrations
