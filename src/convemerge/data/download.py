"""Download-and-verify for the official data sets.

Each file is streamed to a temporary name beside its destination (with a rich progress bar), verified against its
published digest, then renamed into place, so an interrupted or corrupt download never looks like a real file.
Whether we are online is decided by trying: a short connection timeout, and any network failure becomes one
:class:`DataError` line saying which files to put where. ``$CONVEMERGE_DATA_URL`` (or ``base_url``) replaces the
official addresses, e.g. with a local mirror laid out as ``<url>/<dataset>/<file>``; ``$CONVEMERGE_OFFLINE=1``
forbids the network altogether.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from convemerge.errors import ChecksumError, DataError

from .catalog import OFFICIAL
from .digests import FileSpec, verify_file

DEFAULT_TIMEOUT = 10.0  # seconds to wait for a connection (and between received chunks)
_CHUNK = 1 << 20


def offline() -> bool:
    """True when ``$CONVEMERGE_OFFLINE`` forbids network access."""
    return os.environ.get("CONVEMERGE_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _base_urls(name: str, base_url: str | None) -> list[str]:
    if base_url:
        return [base_url.rstrip("/") + "/"]
    mirror = os.environ.get("CONVEMERGE_DATA_URL")
    if mirror:
        return [f"{mirror.rstrip('/')}/{name}/"]
    return list(OFFICIAL[name].urls)


def _fetch(url: str, dest: Path, spec: FileSpec, *, dataset: str, timeout: float, progress: bool) -> None:
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = response.headers.get("Content-Length")
            with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                          TimeRemainingColumn(), disable=not progress, transient=True) as bar:
                task = bar.add_task(f"{dataset}: {dest.name}", total=int(total) if total else None)
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.advance(task, len(chunk))
        verify_file(tmp, spec, dataset=dataset)
        os.replace(tmp, dest)
    except ChecksumError as exc:
        raise ChecksumError(f"{dataset}: the download of {url} is corrupt: {exc.detail}; "
                            f"try again later or fetch the file by hand") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def download_dataset(name: str, dest_root: str | Path, *, files: tuple[FileSpec, ...] | None = None,
                     base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                     progress: bool | None = None) -> Path:
    """Fetch the official files of ``name`` into ``dest_root/<folder>/`` (skipping files already there and
    verified); return that folder. A network failure raises one :class:`DataError` line."""
    ds = OFFICIAL[name]
    folder = Path(dest_root) / ds.folders[0]
    files = ds.download if files is None else files
    progress = sys.stderr.isatty() if progress is None else progress
    if offline():
        raise DataError(f"{name}: network access is disabled (CONVEMERGE_OFFLINE); put "
                        f"{', '.join(f.name for f in files)} in {folder}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{name}: cannot create {folder} ({exc.strerror}); pass another --data-dir") from None
    for spec in files:
        dest = folder / spec.name
        if dest.is_file():
            try:
                verify_file(dest, spec, dataset=name)
                continue
            except ChecksumError:
                pass  # a stale or partial copy: fetch it again
        reasons = []
        for base in _base_urls(name, base_url):
            url = base + spec.name
            try:
                _fetch(url, dest, spec, dataset=name, timeout=timeout, progress=progress)
                break
            except urllib.error.HTTPError as exc:
                reasons.append(f"{url}: HTTP {exc.code}")
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                reasons.append(f"{url}: {' '.join(str(reason).split())}")
        else:
            raise DataError(f"{name}: could not download {spec.name} ({'; '.join(reasons)}); you seem to be "
                            f"offline: put {', '.join(f.name for f in files)} in {folder} or pass --data-dir")
    return folder
