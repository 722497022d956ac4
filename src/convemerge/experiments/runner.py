"""Execute jobs: skip finished runs, resume interrupted ones, in N local worker processes or as Ray tasks.

- A job is *finished* when its run directory holds a summary with a final status (:class:`convemerge.runs.RunStatus`:
  ``failed`` is not final); it is then skipped.
  A directory with a checkpoint but no summary is an interrupted run and is resumed (``train(..., resume=True)``).
- The same run id in several experiments (identical configs) runs once; the other experiment directories get a
  relative symbolic link to it.
- ``workers`` local processes (spawned, so no thread pools are inherited) each set ``torch.set_num_threads(
  cores // workers)``. With ``ray_address`` the same jobs become Ray tasks (``num_cpus`` = threads per job); the
  run directories must then be on a filesystem every Ray node sees. ``ray_address="local"`` starts a local Ray.
- A job that raises is recorded (an error file in its run directory) and the others go on; the returned
  :class:`RunReport` lists failures.
- A job naming other run ids in ``after`` (an analysis of a training run) starts only once they are done: jobs
  run in waves, each wave holding the jobs whose dependencies are finished; a job whose dependency failed fails
  without running.
- After a completed train job, the job's ``analyses`` (the recipe's, by default
  :func:`convemerge.experiments.postprocess.analyse_run`) write the run's analysis record next to it, so the
  report only reads files. The runner knows no experiment and no analysis by name.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from convemerge.errors import ConfigError
from convemerge.experiments.recipe import Job
from convemerge.runs import clear_error, has_analysis, has_checkpoints, is_finished, run_status, write_error

__all__ = ["RunReport", "run_jobs", "execute_job", "is_finished", "run_status", "available_cores"]

def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _needs_analysis(job: Job | dict, analyse: bool) -> bool:
    """A completed training run with analyses to run and no analysis record yet (diverged runs have no weights
    worth analysing)."""
    kind, out, analyses = ((job.kind, job.out, job.analyses) if isinstance(job, Job)
                           else (job["kind"], job["out"], job.get("analyses") or ()))
    return (analyse and kind == "train" and bool(analyses) and run_status(out) == "completed"
            and not has_analysis(out))


@dataclass
class RunReport:
    """What :func:`run_jobs` did."""

    ran: list[str] = field(default_factory=list)  # run ids trained (or resumed) now
    skipped: list[str] = field(default_factory=list)  # already finished
    linked: list[str] = field(default_factory=list)  # "<experiment>/<run id>" pointing at an identical run
    failed: dict[str, str] = field(default_factory=dict)  # run id -> one-line error
    seconds: dict[str, float] = field(default_factory=dict)  # run id -> wall time of its job
    wall_time: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        return (f"{len(self.ran)} ran, {len(self.skipped)} already finished, {len(self.linked)} linked, "
                f"{len(self.failed)} failed in {self.wall_time:.1f} s")


# ----------------------------------------------------------------------------- one job (runs in a worker)
def _die_with_parent() -> None:
    """Ask Linux to send this worker SIGTERM when the runner that spawned it dies, so a killed ``reproduce`` leaves
    no orphan still training into (and racing a later runner for) the same run directory. Checkpoints are written
    atomically, so the last complete one survives and the next runner resumes from it. Elsewhere a no-op.
    (SIGINT would not do: a pool worker turns KeyboardInterrupt into a result for a parent that is gone.)"""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: keep the old behaviour
        return
    if os.getppid() == 1:  # the parent died before the request was in place
        raise SystemExit(1)


def _init_worker(threads: int) -> None:
    import torch

    _die_with_parent()

    torch.set_num_threads(max(1, threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def _call(target: str, **kwargs: Any) -> Any:
    from convemerge.experiments.registry import resolve_job

    return resolve_job(target)(**kwargs)


def execute_job(job: dict[str, Any], threads: int | None = None, analyse: bool = True,
                command: str | None = None, set_threads: bool = True) -> dict[str, Any]:
    """Run one job (a :meth:`Job.to_dict`) to completion in this process; returns ``{"run_id", "status",
    "seconds", "cpu_seconds", "error"}``. Never raises for the job's own errors (they are returned and written to
    its error file). ``threads`` is the run's torch thread count; ``set_threads`` also makes it this process's default
    (right in a worker, not in the caller's own process)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = Path(job["out"])
    try:
        if threads and set_threads:
            _init_worker(threads)
        out.mkdir(parents=True, exist_ok=True)
        clear_error(out)
        if job["kind"] == "train":
            if not is_finished(out):
                from convemerge.train import TrainConfig, train

                fields = {**job["config"], "out": str(out)}
                if threads:
                    fields["num_threads"] = threads
                cfg = TrainConfig.from_dict(fields, source=f"job {job['run_id']}")
                # an interrupted run (a config and a checkpoint are there) continues where it stopped
                resume = has_checkpoints(out)
                train(cfg, resume=resume, progress=False, verbose=False, command=command)
            if _needs_analysis(job, analyse):
                for target in job["analyses"]:
                    _call(target, run_dir=out)
        elif job["kind"] == "callable":
            if not is_finished(out):
                _call(job["target"], out=str(out), **job["config"])
                if not is_finished(out):
                    raise RuntimeError(f"callable {job['target']} returned without writing summary.json")
        else:
            raise ConfigError(f"unknown job kind {job['kind']!r}; use 'train' or 'callable'")
        return {"run_id": job["run_id"], "status": "ok", "seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu, "error": None}
    except BaseException as exc:  # noqa: BLE001 - a worker must report, not die
        if isinstance(exc, KeyboardInterrupt):
            raise
        line = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        try:
            write_error(out, line + "\n\n" + traceback.format_exc())
        except OSError:
            pass
        return {"run_id": job["run_id"], "status": "failed", "seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu, "error": line}


# ----------------------------------------------------------------------------- many jobs
def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)


def _existing_twin(job: Job) -> Path | None:
    """A finished run with the same id in a sibling experiment directory (from an earlier invocation)."""
    root = Path(job.out).parent.parent
    for cand in sorted(root.glob(f"*/{job.run_id}")):
        if cand != Path(job.out) and not cand.is_symlink() and is_finished(cand):
            return cand
    return None


def run_jobs(jobs: Sequence[Job], *, workers: int = 1, ray_address: str | None = None, threads: int | None = None,
             analyse: bool = True, command: str | None = None,
             log: Callable[[str], None] | None = print) -> RunReport:
    """Run every job not yet finished (see the module docstring) and return what happened. ``command`` is
    recorded in each run's summary (how to reproduce it)."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    log = log or (lambda _msg: None)
    report = RunReport()
    start = time.perf_counter()
    primary: dict[str, Job] = {}
    twins: list[Job] = []
    todo: list[Job] = []
    for job in jobs:
        if job.run_id in primary:  # identical config in another experiment: link after it has run
            if Path(job.out) != Path(primary[job.run_id].out):
                twins.append(job)
            continue
        primary[job.run_id] = job
        out = Path(job.out)
        if is_finished(out) and not _needs_analysis(job, analyse):
            report.skipped.append(job.run_id)
            continue
        twin = None if out.exists() else _existing_twin(job)
        if twin is not None:
            _link(twin, out)
            report.linked.append(f"{job.experiment}/{job.run_id}")
            continue
        todo.append(job)

    threads = threads or max(1, available_cores() // workers)
    total = len(todo)
    if total:
        where = f"Ray at {ray_address}" if ray_address else f"{workers} worker(s) × {threads} thread(s)"
        log(f"running {total} job(s) on {where} ({len(report.skipped)} already finished)")
    done = 0

    def record(result: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        rid = result["run_id"]
        report.seconds[rid] = result["seconds"]
        job = primary[rid]
        if result["status"] == "ok":
            report.ran.append(rid)
            log(f"[{done}/{total}] {job.experiment}/{rid} done in {result['seconds']:.1f} s "
                f"({result.get('cpu_seconds', 0.0):.1f} s CPU)")
        else:
            report.failed[rid] = result["error"]
            log(f"[{done}/{total}] {job.experiment}/{rid} FAILED: {result['error']} (see the error file in {job.out})")

    def link_twins() -> None:
        for job in list(twins):
            src = Path(primary[job.run_id].out)
            if Path(job.out).exists() or not is_finished(src):
                continue
            _link(src, Path(job.out))
            report.linked.append(f"{job.experiment}/{job.run_id}")
            twins.remove(job)

    def waves():
        """Payloads wave by wave; computed lazily, so each wave sees the failures of the ones before."""
        remaining = list(todo)
        while remaining:
            link_twins()  # an analysis may read a run through its twin folder
            waiting = {j.run_id for j in remaining}
            wave = [j for j in remaining if not set(j.after) & waiting]
            if not wave:  # a dependency cycle: nothing can start
                wave, remaining = remaining, []
            else:
                remaining = [j for j in remaining if set(j.after) & waiting]
            ready = []
            for j in wave:
                bad = [r for r in j.after if r in report.failed or r in waiting]
                if bad:
                    line = f"DependencyError: needs run {bad[0]}, which failed or cannot run"
                    write_error(j.out, line + "\n")
                    record({"run_id": j.run_id, "status": "failed", "seconds": 0.0, "error": line})
                else:
                    ready.append(j.to_dict())
            if ready:
                yield ready

    if ray_address:
        _run_ray(waves(), ray_address, threads, workers, analyse, command, record)
    elif workers == 1 or total <= 1:
        # in-process: no spawn cost
        for wave in waves():
            for p in wave:
                record(execute_job(p, threads, analyse, command, set_threads=False))
    else:
        ctx = get_context("spawn")  # fresh interpreters: no forked OpenMP pools, no shared torch state
        with ProcessPoolExecutor(max_workers=min(workers, total), mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            for wave in waves():
                futures = [pool.submit(execute_job, p, threads, analyse, command) for p in wave]
                for fut in as_completed(futures):
                    record(fut.result())

    link_twins()
    report.wall_time = time.perf_counter() - start
    return report


def _run_ray(waves, address: str, threads: int, workers: int, analyse: bool, command: str | None,
             record) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray-address needs Ray; install it with: pip install 'convemerge[ray]'") from None
    started = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=threads, max_retries=0)(execute_job)
        for payloads in waves:
            pending = [remote.remote(p, threads, analyse, command) for p in payloads]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                record(ray.get(ready[0]))
    finally:
        if started:
            ray.shutdown()
