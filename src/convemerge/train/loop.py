"""``train(config) -> RunResult``: the training loop, with per-epoch metrics, checkpoints and resume.

>>> from convemerge.train import TrainConfig, train
>>> cfg = TrainConfig(model="s-fc", alpha=2, dataset="digits", epochs=2, batch_size=64, out="runs/demo")
>>> result = train(cfg)                                       # doctest: +SKIP
>>> result.best_val_acc, result.test_acc_at_best              # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convemerge.errors import ConfigError, DivergenceError
from convemerge.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from convemerge.train.config import RESUME_MUTABLE, TrainConfig
from convemerge.train.distributed import from_environment, process_device
from convemerge.train.engine import evaluate, make_loss, model_measurements, train_step
from convemerge.train.metrics import MetricsLog, read_metrics
from convemerge.train.progress import RunProgress, epoch_line
from convemerge.train.rng import capture_rng, restore_rng
from convemerge.train.rundir import RunPaths, best_record, build_summary, write_summary
from convemerge.train.setup import (
    build_model,
    build_optimizer,
    derived_seed,
    lr_factor,
    pad_batch,
    prepare_data,
    resolve_device,
    resolve_precision,
    seed_everything,
)

# Test hook: seconds to sleep after every optimizer step, so a test can kill a run in the middle of an epoch.
STEP_SLEEP_ENV = "CONVEMERGE_TEST_STEP_SLEEP"

# A run's loaders hold their split standardised (float32) when it takes at most this many bytes, so an epoch cuts
# batches instead of converting and scaling every image again (unaugmented training and every evaluation)
CACHE_STANDARDISED_BYTES = 2 * 1024**3


def _cache_fits(data) -> bool:
    return data.images.numel() * 4 <= CACHE_STANDARDISED_BYTES


@dataclass
class RunResult:
    """What ``train`` returns: the run directory, its epoch history and summary, and the model (last weights)."""

    run_dir: Path
    config: TrainConfig
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    model: nn.Module = field(repr=False)

    @property
    def best_val_acc(self) -> float | None:
        return self.summary.get("best_val_acc")

    @property
    def best_epoch(self) -> int | None:
        return self.summary.get("best_epoch")

    @property
    def test_acc_at_best(self) -> float | None:
        return self.summary.get("test_acc_at_best")

    @property
    def wall_time(self) -> float:
        return float(self.summary.get("wall_time", 0.0))


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool | None = None,
    verbose: bool = True,
    command: str | None = None,
) -> RunResult:
    """Train ``config.model`` on ``config.dataset`` and write the run directory ``config.run_dir()``.

    resume: continue the run in that directory from its last complete checkpoint (bit-identical on CPU
        with the same thread count); its config.yaml must match ``config`` except for runtime-only options.
    progress: draw a progress bar (None: only when stderr is a terminal). verbose: print epoch lines.
    command: the command line to record in summary.json.
    Raises ConfigError for unusable options, DivergenceError when the loss becomes NaN/inf.
    """
    config.validate()
    paths = RunPaths(config.run_dir())
    _check_run_dir(config, paths, resume)
    dist = from_environment(config.device)  # None unless launched by torchrun with several processes
    try:
        device = process_device(dist, resolve_device(config.device))
        with _runtime(config, device):
            run = _Run(config, paths, device, progress=progress, verbose=verbose, command=command, dist=dist)
            # written only once data and model are built, so a run refused at setup leaves no directory behind
            if run.is_main:
                paths.root.mkdir(parents=True, exist_ok=True)
                config.to_yaml(paths.config)
            result = run.run(resume)
    except BaseException:
        if dist is not None:
            dist.close(finished=False)  # no barrier: the other ranks may never reach it
        raise
    if dist is not None:
        dist.close()
    return result


def _check_run_dir(cfg: TrainConfig, paths: RunPaths, resume: bool) -> None:
    if resume:
        if not paths.config.exists():
            raise ConfigError(f"nothing to resume in {paths.root}: it has no config.yaml; start the run without --resume")
        saved = TrainConfig.from_yaml(paths.config).to_dict()
        given = cfg.to_dict()
        diffs = [k for k in given if k not in RESUME_MUTABLE and given[k] != saved.get(k)]
        if diffs:
            detail = ", ".join(f"{k}: run has {saved.get(k)!r}, given {given[k]!r}" for k in diffs)
            raise ConfigError(f"cannot resume {paths.root} with changed options ({detail}); drop them or start a new run")
    elif _has_progress(paths):
        raise ConfigError(f"run directory {paths.root} already holds a run; pass --resume to continue it or choose another --out")


def _has_progress(paths: RunPaths) -> bool:
    """Whether a run directory holds results worth protecting: a logged epoch or a checkpoint. (A run that
    stopped before finishing its first epoch has none, and simply starts again.)"""
    return bool(read_metrics(paths.metrics)) or any(
        find_checkpoint(d) is not None for d in (paths.last, paths.best))


@contextlib.contextmanager
def _runtime(cfg: TrainConfig, device: torch.device) -> Iterator[None]:
    """Thread count and determinism for the run, restored afterwards (a library call leaves no trace)."""
    threads = torch.get_num_threads()
    det, det_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    bench = torch.backends.cudnn.benchmark
    deterministic = cfg.deterministic if cfg.deterministic is not None else device.type == "cpu"
    try:
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        # warn_only: an op without a deterministic kernel warns instead of aborting a long run
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = not deterministic
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=det_warn)
        torch.backends.cudnn.benchmark = bench


class _Run:
    """The state of one run while it trains (built from a config, optionally from a checkpoint)."""

    def __init__(self, cfg: TrainConfig, paths: RunPaths, device: torch.device, *, progress, verbose, command,
                 dist=None):
        from convemerge.data import ImageLoader
        from convemerge.data.autoaugment import load_policy

        self.session_start = time.perf_counter()  # wall time counts setup too
        self.cfg, self.paths, self.device = cfg, paths, device
        # several processes (torchrun): only rank 0 writes the run directory and prints
        self.dist, self.is_main = dist, dist is None or dist.is_main
        self.progress_enabled = progress if self.is_main else False
        self.verbose, self.command = verbose and self.is_main, command
        self.precision = resolve_precision(cfg.amp, device)
        self.metrics = MetricsLog(paths.metrics) if self.is_main else _NoLog()

        seed_everything(cfg.seed)
        self.data = data = prepare_data(cfg)
        # build_model seeds the init itself (runs.init_model): it does not depend on what data preparation drew
        self.model = build_model(cfg, data).to(device)
        self.step_model = self.model
        if dist is not None:
            dist.check_batch_size(cfg.batch_size, len(data.train))
            self.model, self.step_model = dist.wrap(self.model, device)
        self.step_model = torch.compile(self.step_model) if cfg.compile else self.step_model
        self.optimizer = build_optimizer(cfg, self.model)
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])  # the schedule scales this peak value
        self.scaler = torch.amp.GradScaler(device.type) if self.precision.scaler else None
        self.loss_fn = make_loss(cfg.loss, data.num_classes)

        self.generator = torch.Generator().manual_seed(derived_seed(cfg.seed, 1))
        # BatchNorm cannot train on a final batch of one sample: drop it in that single case
        # (and, over several processes, a final batch too small to give every process a sample)
        remainder, world = len(data.train) % cfg.batch_size, dist.world_size if dist else 1
        drop_last = (remainder == 1 and len(data.train) > 1) or 0 < remainder < world
        shard = (dist.rank, dist.world_size) if dist else None
        policy = load_policy(cfg.augment_policy) if cfg.augment_policy else None
        self.train_loader = ImageLoader(data.train, cfg.batch_size, shuffle=True, augment=data.augment,
                                        generator=self.generator, device=device, drop_last=drop_last, shard=shard,
                                        policy=policy, cache=_cache_fits(data.train))
        self.val_loader = (ImageLoader(data.val, cfg.eval_batch_size, device=device, shard=shard,
                                       cache=_cache_fits(data.val))
                           if data.val is not None else None)
        self.test_loader = ImageLoader(data.test, cfg.eval_batch_size, device=device, shard=shard,
                                       cache=_cache_fits(data.test))
        self._evaluate = dist.evaluate if dist else evaluate
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.pad_fill = data.pad_fill.to(device)

        self.epoch, self.step, self.history, self.prior_wall = 0, 0, [], 0.0

    # ------------------------------------------------------------------ helpers
    def _batches(self, loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in loader:
            yield pad_batch(x, self.data.image_size, self.pad_fill), y

    def _wall(self) -> float:
        return self.prior_wall + (time.perf_counter() - self.session_start)

    def _set_lr(self) -> float:
        factor = lr_factor(self.step, self.total_steps, self.warmup_steps, self.cfg.schedule, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return self.optimizer.param_groups[0]["lr"]

    def _geometry(self) -> dict[str, int]:
        h, w = self.data.image_size  # a side when square (what create_model and readers expect), else [H, W]
        return {"image_size": h if h == w else [h, w], "in_chans": self.data.in_chans,
                "num_classes": self.data.num_classes}

    def _summary(self, status: str, **extra: Any) -> dict[str, Any]:
        if self.dist is not None:
            extra = {"distributed": {**self.dist.describe(), **extra.pop("distributed", {})}, **extra}
        summary = build_summary(self.history, config=self.cfg.to_dict(), status=status, wall_time=self._wall(),
                                command=self.command, extra={"geometry": self._geometry(), **extra})
        if self.is_main:
            write_summary(self.paths, summary)
        return summary

    def _say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    # ------------------------------------------------------------------ resume
    def _restore(self) -> None:
        found = find_checkpoint(self.paths.last)
        if found is None:
            self._say(f"no complete checkpoint in {self.paths.checkpoints}; starting from epoch 1")
            self.metrics.rewrite([])
            return
        state = load_checkpoint(found, self.model, self.optimizer)
        restore_rng(state["rng"], self.generator)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history, self.prior_wall = list(state["history"]), float(state["wall_time"])
        self.metrics.rewrite(self.history)  # drop epochs logged after that checkpoint: they are replayed
        self._say(f"resuming {self.paths.root} after epoch {self.epoch} (step {self.step})")

    def _checkpoint_state(self) -> dict[str, Any]:
        best = best_record(self.history)
        return {
            "format": 1,
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng": capture_rng(self.generator),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "best_val_acc": best["val_acc"] if best else None,
            "best_epoch": best["epoch"] if best else None,
            "history": self.history,
            "wall_time": self._wall(),
            "geometry": self._geometry(),
        }

    # ------------------------------------------------------------------ the loop
    def run(self, resume: bool) -> RunResult:
        cfg = self.cfg
        if resume:
            self._restore()
        else:
            self.metrics.rewrite([])  # a fresh start (possibly over a run that never finished an epoch)
        n_weights = sum(p.numel() for p in self.model.parameters())
        self._say(f"{cfg.model} on {cfg.dataset}: {len(self.data.train)} train / "
                  f"{len(self.data.val) if self.data.val is not None else 0} val / "
                  f"{len(self.data.test)} test, "
                  f"{n_weights:,} parameters, {cfg.optimizer}, {self.device.type} {self.precision.name}, "
                  f"{self.steps_per_epoch} steps/epoch -> {self.paths.root}")
        sleep = float(os.environ.get(STEP_SLEEP_ENV, "0") or 0)
        try:
            with RunProgress(self.total_steps, self.step, enabled=self.progress_enabled, verbose=self.verbose) as bar:
                while self.epoch < cfg.epochs and self._stop_reason() is None:
                    self._train_epoch(bar, sleep)
                    self._end_epoch(bar)
        except KeyboardInterrupt:
            self._summary("interrupted")
            raise
        extra = dict(self._stopped())
        if self.dist is not None:
            self.dist.check_replicas(self.model)  # raises unless every rank holds rank 0's weights bit for bit
            extra["distributed"] = {"replicas_identical": True}
        summary = self._summary("completed", **extra)
        if "stopped_early" in summary:
            self._say(f"stopped early: {summary['stopped_early']}")
        return RunResult(self.paths.root, cfg, self.history, summary, self.model)

    def _stop_reason(self) -> str | None:
        """Why training stops before its epoch budget (None: it goes on): the last epoch's mean training loss
        fell below ``stop_train_loss``. Read from the history, so a resumed run that had stopped stays stopped."""
        limit = self.cfg.stop_train_loss
        if limit is None or not self.history:
            return None
        loss = self.history[-1].get("train_loss")
        if loss is not None and loss < limit:
            return f"train_loss {loss:.3g} < stop_train_loss {limit:g} after epoch {self.history[-1]['epoch']}"
        return None

    def _stopped(self) -> dict[str, Any]:
        reason = self._stop_reason()
        return {"stopped_early": reason} if reason is not None else {}

    def _train_epoch(self, bar: RunProgress, sleep: float) -> None:
        epoch = self.epoch + 1
        self.epoch_start = time.perf_counter()
        self.model.train()
        sync_every = 1 if self.device.type == "cpu" else self.cfg.log_every  # CPU: checking is free
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen, window, first_step = 0, [], self.step
        last = self.steps_per_epoch - 1
        step_fn = train_step if self.dist is None else self.dist.weighted_step(
            train_step, lambda: self.train_loader.global_batch)
        for i, (x, y) in enumerate(self._batches(self.train_loader)):
            self.lr = self._set_lr()
            loss, n_correct = step_fn(self.step_model, x, y, self.loss_fn, self.optimizer, self.precision,
                                      self.scaler)
            self.step += 1
            loss_sum += loss * y.numel()
            correct += n_correct
            seen += y.numel()
            window.append(loss)
            if len(window) >= sync_every or i == last:
                losses = torch.stack(window).float()
                losses = (losses if self.dist is None else self.dist.mean(losses)).cpu()  # every rank stops together
                bad = torch.nonzero(~torch.isfinite(losses)).flatten()
                if bad.numel():
                    at = self.step - len(window) + int(bad[0]) + 1  # global step number (1-based)
                    self._diverged(epoch, at - first_step, at, float(losses[bad[0]]))
                window = []
                if (i + 1) % self.cfg.log_every == 0 or i == last:
                    bar.update(self.step, epoch, self.cfg.epochs, float(losses[-1]))
            if sleep:
                time.sleep(sleep)
        self.epoch = epoch
        if self.dist is not None:  # totals over every rank's shards
            loss_sum, correct, seen_t = self.dist.sum(loss_sum, correct, torch.tensor(float(seen), device=self.device))
            seen = int(seen_t.item())
        self.train_loss = float(loss_sum.item()) / max(1, seen)
        self.train_acc = float(correct.item()) / max(1, seen)

    def _diverged(self, epoch: int, step_in_epoch: int, step: int, value: float) -> None:
        good = find_checkpoint(self.paths.last)
        where = f"the last good checkpoint ({good}) is intact" if good else "no epoch had completed"
        msg = (f"training diverged at epoch {epoch}, step {step_in_epoch}/{self.steps_per_epoch} "
               f"(global step {step}): loss is {value}; {where}; lower --lr or add --warmup-epochs")
        self._summary("diverged", error=msg)
        raise DivergenceError(msg)

    def _end_epoch(self, bar: RunProgress) -> None:
        cfg = self.cfg
        val_loss = val_acc = test_loss = test_acc = None
        if self.val_loader is not None:
            val_loss, val_acc = self._evaluate(self.step_model, self._batches(self.val_loader), self.loss_fn,
                                               self.precision)
        prev_best = best_record(self.history)
        is_best = val_acc is not None and (prev_best is None or val_acc > prev_best["val_acc"])
        # the last epoch of the run: its budget, or (``stop_train_loss``) this epoch's mean training loss below the
        # threshold — what _stop_reason will read from the history once this epoch's record is in it
        done = self.epoch == cfg.epochs or (cfg.stop_train_loss is not None and self.train_loss < cfg.stop_train_loss)
        # The test set is reported only; it never chooses anything. It is scored where a number is reported (the
        # last epoch, every new best validation epoch) and every ``test_every`` epochs for the curves.
        if is_best or done or self.epoch % cfg.test_every == 0:
            test_loss, test_acc = self._evaluate(self.step_model, self._batches(self.test_loader), self.loss_fn,
                                                 self.precision)
        record = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.lr,
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "epoch_time": time.perf_counter() - self.epoch_start,
            "wall_time": self._wall(),
            **model_measurements(self.model),
        }
        self.history.append(record)
        save_last = self.epoch % cfg.checkpoint_every == 0 or done
        if (save_last or is_best) and self.is_main:
            state = self._checkpoint_state()
            if save_last:
                save_checkpoint(self.paths.last, self.model, self.optimizer, state)
            if is_best:
                save_checkpoint(self.paths.best, self.model, self.optimizer, state,
                                link_from=self.paths.last if save_last else None)
        self.metrics.append(record)
        self._summary("completed" if done else "running", **self._stopped())
        bar.message(epoch_line(record, cfg.epochs))


class _NoLog(MetricsLog):
    """The metrics log of a process other than rank 0: it writes nothing."""

    def __init__(self):
        super().__init__(os.devnull)

    def append(self, record: dict[str, Any]) -> None:
        pass

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        pass
