"""Packed runs: k runs of one architecture trained together as one batched model, so a seed or λ sweep of small
nets fills a GPU instead of leaving it idle.

>>> from convemerge.train import TrainConfig
>>> from convemerge.train.packed import train_packed
>>> base = TrainConfig(model="s-fc", alpha=1, dataset="digits", epochs=2, optimizer="beta-lasso")
>>> runs = [base.replace(seed=s, lam=lam, out=f"runs/sweep/s{s}-lam{lam}")
...         for s in (0, 1) for lam in (1e-6, 1e-5)]
>>> results = train_packed(runs)                              # doctest: +SKIP

Each run is built exactly as :func:`convemerge.train.train` builds it — its own data split, subsample, loader
generator (data order and augmentation), initial weights, optimizer with its own lr / λ / β, metrics log,
checkpoints and summary in its own run directory. Then the k models' tensors are stacked
(``torch.func.stack_module_state``) and every run's model is re-pointed at its slice of the stack, so each run still
owns an ordinary module whose parameters *are* views of the stack. A step runs the k forward passes as one
``vmap``-ed call on the k batches (``(k, B, ...)``), back-propagates the sum of the k losses (each run's gradient is
that of its own loss), hands each run its slice of the gradients and steps each run's own optimizer. Evaluation,
checkpoints, metrics and summaries are the ordinary per-run code.

So a packed run differs from the same run done alone only in the floating-point order of batched kernels; the
tests bound it. Compatible runs share everything that fixes shapes and step counts (:data:`SHARED`); seeds,
learning rates, λ, β, momentum, weight decay and the run directory may differ. Dropout and fp16 loss scaling are not
packed (vmap draws dropout masks differently; the scaler is per optimizer).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from convemerge.errors import ConfigError
from convemerge.train.config import TrainConfig
from convemerge.train.rundir import RunPaths
from convemerge.train.setup import build_optimizer, resolve_device

#: fields every packed run must share (they fix the model's shapes, the data sizes and the step count)
SHARED = ("model", "alpha", "model_options", "dataset", "data_dir", "dataset_options", "val_fraction", "n_train",
          "n_test", "augment", "augment_policy", "pad_to", "optimizer", "schedule", "warmup_epochs", "epochs",
          "batch_size", "loss", "device", "amp", "compile", "num_threads", "deterministic", "eval_batch_size",
          "log_every", "checkpoint_every", "regularize_bias_and_norm", "nesterov", "adam_betas")


def check_packable(configs: Sequence[TrainConfig]) -> None:
    """One-line ConfigError unless ``configs`` can train as one packed model."""
    if len(configs) < 1:
        raise ConfigError("nothing to pack: give at least one run")
    first = configs[0].to_dict()
    for cfg in configs[1:]:
        d = cfg.to_dict()
        for key in SHARED:
            if d[key] != first[key]:
                raise ConfigError(f"runs cannot be packed: {key} differs ({first[key]!r} vs {d[key]!r}); "
                                  f"pack only runs that differ in seed, lr, lam, lam_first, beta, momentum, "
                                  f"weight_decay and out")
    dirs = [str(c.run_dir()) for c in configs]
    if len(set(dirs)) != len(dirs):
        raise ConfigError("packed runs need distinct run directories; give each its own --out")
    if float(first["model_options"].get("dropout", 0) or 0) > 0:
        raise ConfigError("runs with dropout cannot be packed (vmap draws other masks); train them one by one")
    if first["amp"] == "fp16":
        raise ConfigError("fp16 runs (GradScaler) cannot be packed; use --amp bf16 or off")


def train_packed(configs: Sequence[TrainConfig], *, resume: bool = False, verbose: bool = True,
                 command: str | None = None) -> list:
    """Train ``configs`` as one packed model; returns one :class:`RunResult` per config, in order.

    resume: continue every run from its last checkpoint (all must have stopped after the same epoch).
    """
    from convemerge.train.loop import RunResult, _check_run_dir, _Run, _runtime

    configs = list(configs)
    for cfg in configs:
        cfg.validate()
    check_packable(configs)
    device = resolve_device(configs[0].device)
    paths = [RunPaths(c.run_dir()) for c in configs]
    for cfg, p in zip(configs, paths):
        _check_run_dir(cfg, p, resume)
    with _runtime(configs[0], device):
        runs = [_Run(cfg, p, device, progress=False, verbose=False, command=command) for cfg, p in zip(configs, paths)]
        for run in runs:
            run.paths.root.mkdir(parents=True, exist_ok=True)
            run.cfg.to_yaml(run.paths.config)
        pack = _Pack(runs, device, verbose)
        pack.train(resume)
        return [RunResult(r.paths.root, r.cfg, r.history, s, r.model) for r, s in zip(runs, pack.summaries)]


def _alias(model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], k: int) -> None:
    """Re-point ``model``'s parameters and buffers at slice ``k`` of the stacked tensors (shared storage)."""
    for name, stacked in params.items():
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner)
        module._parameters[attr] = nn.Parameter(stacked.detach()[k], requires_grad=True)
    for name, stacked in buffers.items():
        owner, _, attr = name.rpartition(".")
        model.get_submodule(owner)._buffers[attr] = stacked[k]


class _NoBar:
    def message(self, text: str) -> None:
        pass


class _Pack:
    """k ``_Run`` objects whose models share one stacked set of tensors, stepped together."""

    def __init__(self, runs: list, device: torch.device, verbose: bool):
        self.runs, self.device, self.verbose = runs, device, verbose
        models = [r.model for r in runs]
        self.params, self.buffers = stack_module_state(models)  # fresh stacked leaves (copies of each init)
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture, without storage
        for k, run in enumerate(runs):
            _alias(run.model, self.params, self.buffers, k)
            run.step_model = run.model
            run.optimizer = build_optimizer(run.cfg, run.model)  # over the aliased parameters
            for group in run.optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.names = list(self.params)
        self.run_params = [[dict(r.model.named_parameters())[n] for n in self.names] for r in runs]
        self.precision = runs[0].precision
        self.summaries: list[dict[str, Any]] = []
        self.vmapped = self._can_vmap()

    def _can_vmap(self) -> bool:
        """Whether the architecture runs under vmap. A layer built on a custom ``autograd.Function`` without
        functorch support (the locally-connected layer's fold backward) does not: such runs are stepped one after
        another in this process — the same bookkeeping, without the batched kernels."""
        data = self.runs[0].data
        probe = torch.zeros(len(self.runs), 2, data.in_chans, *data.image_size, device=self.device)
        self.base.eval()
        try:
            with torch.no_grad():
                vmap(self._forward)(self.params, self.buffers, probe)
            return True
        except RuntimeError as exc:
            if "functorch" not in str(exc) and "vmap" not in str(exc):
                raise
            return False
        finally:
            self.base.train()

    def _forward(self, params, buffers, x):
        return functional_call(self.base, (params, buffers), (x,))

    def _step(self, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.vmapped:
            return self._step_each(xs, ys)
        for p in self.params.values():
            p.grad = None
        with self.precision.autocast(xs.device):
            out = vmap(self._forward)(self.params, self.buffers, xs)  # (k, B, classes)
            losses = torch.stack([r.loss_fn(out[k], ys[k]) for k, r in enumerate(self.runs)])
        losses.sum().backward()  # run k's slice of every gradient is the gradient of its own loss
        for k, run in enumerate(self.runs):
            for name, p in zip(self.names, self.run_params[k]):
                p.grad = self.params[name].grad[k]
            run.optimizer.step()
        correct = (out.detach().argmax(dim=-1) == ys).sum(dim=1)
        return losses.detach(), correct

    def _step_each(self, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from convemerge.train.engine import train_step

        results = [train_step(run.model, xs[k], ys[k], run.loss_fn, run.optimizer, self.precision, None)
                   for k, run in enumerate(self.runs)]
        return torch.stack([loss for loss, _ in results]), torch.stack([c for _, c in results])

    def train(self, resume: bool) -> None:
        runs = self.runs
        if resume:
            for run in runs:
                run._restore()
            if len({r.epoch for r in runs}) != 1:
                raise ConfigError("packed runs stopped after different epochs "
                                  f"({', '.join(str(r.epoch) for r in runs)}); resume them one by one")
        else:
            for run in runs:
                run.metrics.rewrite([])
        cfg = runs[0].cfg
        if self.verbose:
            print(f"{len(runs)} packed runs of {cfg.model} on {cfg.dataset}: {runs[0].steps_per_epoch} steps/epoch, "
                  f"{self.device.type} {self.precision.name}, {'vmap' if self.vmapped else 'one after another'}",
                  flush=True)
        try:
            while runs[0].epoch < cfg.epochs:
                self._epoch()
                for run in runs:
                    run._end_epoch(_NoBar())
                if self.verbose:
                    accs = " ".join(f"{r.history[-1]['val_acc'] or 0:.3f}" for r in runs)
                    print(f"epoch {runs[0].epoch}/{cfg.epochs}  val acc {accs}", flush=True)
        except KeyboardInterrupt:
            for run in runs:
                run._summary("interrupted")
            raise
        self.summaries = [run._summary("completed", packed={"runs": len(runs), "index": k,
                                                             "vmap": self.vmapped})
                          for k, run in enumerate(runs)]

    def _epoch(self) -> None:
        runs, k = self.runs, len(self.runs)
        start = time.perf_counter()
        for run in runs:
            run.epoch_start = start
            run.model.train()
        epoch = runs[0].epoch + 1
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, dtype=torch.long, device=self.device)
        seen = 0
        sync_every = 1 if self.device.type == "cpu" else runs[0].cfg.log_every
        window = []
        last = runs[0].steps_per_epoch - 1
        for i, batches in enumerate(zip(*(r._batches(r.train_loader) for r in runs))):
            for run in runs:
                run.lr = run._set_lr()
            xs = torch.stack([x for x, _ in batches])
            ys = torch.stack([y for _, y in batches])
            losses, n_correct = self._step(xs, ys)
            for run in runs:
                run.step += 1
            loss_sum += losses * ys.shape[1]
            correct += n_correct
            seen += ys.shape[1]
            window.append(losses)
            if len(window) >= sync_every or i == last:
                stacked = torch.stack(window).float().cpu()  # (steps, k)
                bad = torch.nonzero(~torch.isfinite(stacked))
                if bad.numel():
                    s, r = int(bad[0, 0]), int(bad[0, 1])
                    at = runs[r].step - len(window) + s + 1
                    runs[r]._diverged(epoch, at - (runs[r].step - i - 1), at, float(stacked[s, r]))
                window = []
        for j, run in enumerate(runs):
            run.epoch = epoch
            run.train_loss = float(loss_sum[j].item()) / max(1, seen)
            run.train_acc = float(correct[j].item()) / max(1, seen)
