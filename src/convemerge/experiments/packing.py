"""Opt-in for the runner: train the compatible training jobs of a sweep as packed runs before the ordinary waves.

Jobs whose configurations differ only in what a packed run may vary per run (seed, lr, λ, λ_first, β, momentum,
weight decay; see :mod:`convemerge.train.packed`) are trained together, up to ``max_pack`` at a time, in this
process. Each job still gets its ordinary run directory, so the runner then finds it finished and only runs what
follows it (analyses). Only fresh jobs are packed (an interrupted run resumes alone); a group that cannot be packed
(dropout, fp16) is left to the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from convemerge.errors import ConfigError
from convemerge.experiments.recipe import Job

#: what a packed run may vary per run
PER_RUN = frozenset({"seed", "lr", "lam", "lam_first", "beta", "momentum", "weight_decay", "out"})


def _key(config) -> str:
    import json

    return json.dumps({k: v for k, v in sorted(config.items()) if k not in PER_RUN}, sort_keys=True, default=str)


def packable_groups(jobs: Sequence[Job], max_pack: int = 16) -> list[list[Job]]:
    """Fresh training jobs grouped by everything a packed run must share, in chunks of at most ``max_pack``;
    groups of one are left out (nothing to pack)."""
    groups: dict[str, list[Job]] = {}
    seen: set[str] = set()
    for job in jobs:
        if job.kind != "train" or job.run_id in seen or Path(job.out).exists():
            continue
        seen.add(job.run_id)
        groups.setdefault(_key(job.config), []).append(job)
    out = []
    for group in groups.values():
        for i in range(0, len(group), max_pack):
            chunk = group[i:i + max_pack]
            if len(chunk) > 1:
                out.append(chunk)
    return out


def runs_on_cuda(jobs: Sequence[Job]) -> bool:
    """Whether the training jobs would run on a CUDA device (their ``device`` field, ``auto`` included), which is
    when packing pays: on a CPU one single-threaded process per core is as fast."""
    import torch

    if not torch.cuda.is_available():
        return False
    return any(j.kind == "train" and j.config.get("device", "auto") in ("auto", "cuda") for j in jobs)


def train_packs(jobs: Sequence[Job], *, max_pack: int = 16, command: str | None = None,
                log: Callable[[str], None] | None = print) -> list[str]:
    """Train every packable group of ``jobs``; returns the run ids trained."""
    from convemerge.train import TrainConfig
    from convemerge.train.packed import check_packable, train_packed

    done: list[str] = []
    for group in packable_groups(jobs, max_pack):
        configs = [TrainConfig.from_dict({**job.config, "out": job.out}, source=f"job {job.run_id}") for job in group]
        try:
            check_packable(configs)
        except ConfigError as exc:
            if log:
                log(f"not packed ({len(group)} jobs of {group[0].experiment}/{group[0].arm}): {exc}")
            continue
        if log:
            log(f"packing {len(group)} runs of {group[0].experiment}/{group[0].arm} ({group[0].dataset})")
        train_packed(configs, verbose=False, command=command)
        done.extend(job.run_id for job in group)
    return done
