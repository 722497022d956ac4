"""The per-epoch metrics log: ``metrics.jsonl``, one JSON object per line, appended and flushed per epoch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from convemerge.runs.atomic import atomic_write_text, json_safe


class MetricsLog:
    """Append-only JSON-lines log. Each :meth:`append` writes one line, flushes and fsyncs it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(json_safe(record), allow_nan=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the whole log atomically (used on resume, from the checkpoint's history)."""
        text = "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in records)
        atomic_write_text(self.path, text)

    def read(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every complete line of a metrics log (a torn last line from a killed writer is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
