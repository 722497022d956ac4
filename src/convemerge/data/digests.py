"""File integrity: published digests, streamed hashing, and a per-process cache of results.

Each official file carries the SHA-256 of the file as published AND of its decompressed payload. A ``.gz`` whose
header was rewritten (Debian's ``dataset-fashion-mnist`` drops the file name and time stamp) has a different file
digest but the same payload digest, so it verifies; an uncompressed copy verifies by the payload digest too.
Files we have never seen ourselves are checked against their publisher's MD5 only (the SHA-256 is not
published); MD5 guards against corruption, not against tampering.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from convemerge.errors import ChecksumError

CHUNK = 1 << 20  # hash in 1 MiB pieces: constant memory, near-peak hashing speed


@dataclass(frozen=True)
class FileSpec:
    """One official file: its published name and what it must hash to.

    ``names`` lists accepted spellings, the official one first (e.g. the ``.gz`` and its uncompressed form).
    """

    names: tuple[str, ...]
    sha256: str | None = None          # of the file as published
    payload_sha256: str | None = None  # of the decompressed payload (== sha256 for files that are not gzip)
    md5: str | None = None             # the publisher's MD5, used only where no SHA-256 is recorded
    size: int | None = None            # bytes of the payload, when known (a cheap first check)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def has_digest(self) -> bool:
        return bool(self.sha256 or self.payload_sha256 or self.md5)


# (real path, size, mtime_ns, kind) -> hex digest. A changed file changes size or mtime, so stale entries miss.
_CACHE: dict[tuple[str, int, int, str], str] = {}


def _key(path: Path, kind: str) -> tuple[str, int, int, str]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, kind)


def clear_cache() -> None:
    """Forget every digest computed in this process (tests use it to force re-hashing)."""
    _CACHE.clear()


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of the file's bytes, streamed in chunks and cached per process."""
    path = Path(path)
    key = _key(path, algorithm)
    if key not in _CACHE:
        h = hashlib.new(algorithm)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        _CACHE[key] = h.hexdigest()
    return _CACHE[key]


def payload_digest(path: str | Path) -> str:
    """SHA-256 of the decompressed content of a gzip file (of the file itself otherwise); ``"unreadable"`` if the
    gzip stream is corrupt. Streamed and cached like :func:`file_digest`."""
    path = Path(path)
    with open(path, "rb") as f:
        is_gzip = f.read(2) == b"\x1f\x8b"
    if not is_gzip:
        return file_digest(path, "sha256")
    key = _key(path, "payload-sha256")
    if key not in _CACHE:
        h = hashlib.sha256()
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
            _CACHE[key] = h.hexdigest()
        except (OSError, EOFError, zlib.error):
            _CACHE[key] = "unreadable"
    return _CACHE[key]


def verify_file(path: str | Path, spec: FileSpec, *, dataset: str) -> str:
    """Check ``path`` against ``spec``; return how it verified (``"sha256"``, ``"payload sha256"``, ``"md5"``)
    or ``"no published digest"``. Raises :class:`ChecksumError` (one line) on a mismatch."""
    path = Path(path)
    if spec.sha256 or spec.payload_sha256:
        actual = file_digest(path, "sha256")
        if spec.sha256 and actual == spec.sha256:
            return "sha256"
        if spec.payload_sha256:
            actual_payload = payload_digest(path)
            if actual_payload == spec.payload_sha256:
                return "payload sha256"
            detail = (f"expected sha256 {spec.sha256 or '-'} (payload {spec.payload_sha256}), got {actual} "
                      f"(payload {actual_payload})")
            raise ChecksumError(
                f"{dataset}: {path} does not match the official file: {detail}; "
                f"delete it and download it again, or pass verify=False (--no-verify) to use it anyway", detail=detail)
        detail = f"expected sha256 {spec.sha256}, got {actual}"
        raise ChecksumError(
            f"{dataset}: {path} does not match the official file: {detail}; "
            f"delete it and download it again, or pass verify=False (--no-verify) to use it anyway", detail=detail)
    if spec.md5:
        actual = file_digest(path, "md5")
        if actual == spec.md5:
            return "md5"
        detail = f"expected md5 {spec.md5}, got {actual}"
        raise ChecksumError(
            f"{dataset}: {path} does not match the official file: {detail}; "
            f"delete it and download it again, or pass verify=False (--no-verify) to use it anyway", detail=detail)
    return "no published digest"
