"""Data-parallel training over several processes (``torchrun``): one model replica per process, the global batch
split between them, gradients averaged by DistributedDataParallel.

``torchrun --standalone --nproc-per-node N -m convemerge train ARGS`` runs the same command in N processes; each
reads its rank from the environment torchrun sets, and :func:`from_environment` joins them into one process group
(nccl on GPUs, gloo on CPUs). Everything else about a run stays as in one process:

- **The global batch is the configured batch.** Every rank holds the same data loader with the same generator, so
  every rank draws the same permutation and the same augmentation for the whole global batch, and keeps its own
  contiguous slice of it (:meth:`Distributed.shard`). The loader's generator state is therefore identical on every
  rank, and resuming from rank 0's checkpoint is exact.
- **Gradients are those of the global batch.** Each rank's loss is its shard's mean times ``n_rank·W/n_global``, so
  DDP's average over ranks is the mean over the global batch even when the last batch splits unevenly; BatchNorm
  layers become :class:`SyncedBatchNorm`, whose statistics are those of the global batch (autograd flows through
  the all-reduce), so a W-process step computes what a one-process step on the same batch computes, up to the
  order of floating-point sums.
- **The optimizer step is replicated, not communicated.** After DDP's all-reduce every rank holds the same
  gradient bits, so BetaLasso's L1 step and threshold give the same weights everywhere;
  :meth:`Distributed.check_replicas` verifies this at the end of a run (bit for bit) and records it.
- **Only rank 0 writes** the run directory (config, metrics, checkpoints, summary) and prints.

Dropout draws from each process's global torch generator, seeded alike: the masks of rank r's shard repeat those of
rank 0's, so a run with dropout is statistically (not bitwise) like a one-process run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from convemerge.errors import ConfigError

#: environment variables torchrun sets for every worker
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def world_size_from_env() -> int:
    """How many processes the launcher started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


@dataclass
class Distributed:
    """This process's place in the process group, and the collective helpers the training loop calls."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    owns_group: bool = False  # this object initialised the group (and so tears it down)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ batches
    def shard(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of ``n`` samples (the loader's own rule)."""
        from convemerge.data.loader import shard_slice

        return shard_slice(n, self.rank, self.world_size)

    def check_batch_size(self, batch_size: int, n_train: int) -> None:
        """One-line ConfigError unless every rank gets an equal, non-empty share of each full batch."""
        if batch_size % self.world_size:
            raise ConfigError(f"batch_size={batch_size} is not divisible by the {self.world_size} processes; "
                              f"--batch-size is the global batch: give a multiple of {self.world_size}")
        if n_train < self.world_size:
            raise ConfigError(f"{n_train} training samples cannot be split over {self.world_size} processes")

    def weighted_step(self, step_fn: Callable, global_batch: Callable[[], int]) -> Callable:
        """Wrap ``train_step(model, x, y, loss_fn, ...)`` so the backward pass sees the shard's loss weighted by
        ``n_rank·W/n_global`` (DDP then averages to the global-batch mean) while the caller still gets the
        shard's unweighted mean loss. ``global_batch()`` gives the size of the current global batch."""

        def step(model, x, y, loss_fn, *args, **kwargs):
            weight = y.numel() * self.world_size / global_batch()
            if weight == 1.0:
                return step_fn(model, x, y, loss_fn, *args, **kwargs)
            loss, correct = step_fn(model, x, y, lambda out, t: loss_fn(out, t) * weight, *args, **kwargs)
            return loss / weight, correct

        return step

    # ------------------------------------------------------------------ collectives
    def sum(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Element-wise sums over ranks (one all-reduce; float64 so counts and losses add exactly enough)."""
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
        dist.all_reduce(flat)
        out, at = [], 0
        for t in tensors:
            out.append(flat[at:at + t.numel()].reshape(t.shape).to(t.dtype))
            at += t.numel()
        return out

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean over ranks (NaN / inf on any rank propagate, so every rank sees a divergence together)."""
        return self.sum(t)[0] / self.world_size

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], loss_fn,
                 precision) -> tuple[float, float]:
        """(mean loss, accuracy) over the shards of every rank: per-rank sums, then one all-reduce."""
        was_training = model.training
        model.eval()
        device = None
        loss_sum = correct = n = None
        try:
            for x, y in batches:
                device = x.device
                with precision.autocast(x.device):
                    out = model(x)
                batch = [loss_fn(out, y).double() * y.numel(), (out.argmax(dim=1) == y).sum().double(),
                         torch.tensor(float(y.numel()), dtype=torch.float64, device=device)]
                if loss_sum is None:
                    loss_sum, correct, n = batch
                else:
                    loss_sum, correct, n = loss_sum + batch[0], correct + batch[1], n + batch[2]
        finally:
            model.train(was_training)
        if loss_sum is None:  # an empty shard still takes part in the all-reduce
            device = device or _param_device(model)
            loss_sum = correct = n = torch.zeros((), dtype=torch.float64, device=device)
        loss_sum, correct, n = self.sum(loss_sum, correct, n)
        total = float(n.item())
        if total == 0:
            return float("nan"), float("nan")
        return float(loss_sum.item()) / total, float(correct.item()) / total

    @torch.no_grad()
    def check_replicas(self, model: nn.Module) -> None:
        """Raise RuntimeError unless every parameter and buffer equals rank 0's bit for bit."""
        bad = torch.zeros((), dtype=torch.float64, device=_param_device(model))
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            ref = t.detach().clone()
            dist.broadcast(ref, src=0)
            if not torch.equal(ref, t.detach()):
                bad += 1
        (bad,) = self.sum(bad)
        if int(bad.item()):
            raise RuntimeError(f"model replicas differ between the {self.world_size} processes "
                               f"({int(bad.item())} tensor mismatches); this is a bug, please report it")

    def barrier(self) -> None:
        dist.barrier()

    def close(self, *, finished: bool = True) -> None:
        """Leave the process group. After a finished run every rank first waits for the others: a rank that tore
        its group down while another still had a collective in flight could abort in gloo's threads."""
        if self.owns_group and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()

    # ------------------------------------------------------------------ model
    def wrap(self, model: nn.Module, device: torch.device) -> tuple[nn.Module, nn.Module]:
        """(model with synchronised BatchNorm, its DistributedDataParallel wrapper for the training step)."""
        from torch.nn.parallel import DistributedDataParallel

        model = SyncedBatchNorm.convert(model)
        ids = [device.index] if device.type == "cuda" else None
        # buffers (BatchNorm's running statistics) are computed alike on every rank: no per-step broadcast
        return model, DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)

    def describe(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend}


def _param_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def from_environment(device_name: str) -> Distributed | None:
    """Join the process group torchrun describes in the environment; None for a single process.

    The device: each rank takes ``cuda:LOCAL_RANK`` on GPUs (nccl), the CPU otherwise (gloo). An already
    initialised group (a caller that set one up itself) is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                           dist.get_backend())
    if world_size_from_env() <= 1:
        return None
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is set but {', '.join(missing)} is not; launch with torchrun "
                          f"--nproc-per-node N -m convemerge train ...")
    local = int(os.environ["LOCAL_RANK"])
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError("device='cuda' was requested but CUDA is not available; use --device cpu")
        if local >= torch.cuda.device_count():
            raise ConfigError(f"process {local} has no GPU: only {torch.cuda.device_count()} visible; "
                              f"lower --nproc-per-node")
        torch.cuda.set_device(local)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), local, backend, owns_group=True)


def process_device(ctx: Distributed | None, device: torch.device) -> torch.device:
    """The device this process trains on: its own GPU (``cuda:LOCAL_RANK``) under torchrun."""
    if ctx is not None and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


# ----------------------------------------------------------------------------- BatchNorm over the global batch
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks with a gradient: every rank's input feeds every rank's output, so each input's gradient is
    the sum over ranks of the output gradients (itself an all-reduce)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class SyncedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch across all processes.

    The same parameters and buffers as ``nn.BatchNorm1d/2d/3d`` (a checkpoint loads into either), any device and
    backend (``nn.SyncBatchNorm`` refuses CPU tensors, so gloo runs could not use it). Statistics in fp32, two
    all-reduces per layer (the sums, then the centred squares: the two-pass variance, as exact as BatchNorm's own);
    ``torch.distributed.nn``'s all-reduce carries the gradient back across processes. Outside training, or without
    a process group, it is plain BatchNorm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-d input (N, C, ...), got {x.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.full((1,), x.numel() // x.shape[1], dtype=torch.float32, device=x.device)
        summed = all_reduce(torch.cat([xf.sum(dims), count]))
        n = summed[-1]
        mean = summed[:-1] / n
        centred = xf - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return y.to(x.dtype)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """``module`` with every BatchNorm layer replaced by a SyncedBatchNorm sharing its tensors."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
            new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      device=None)
            if module.affine:
                new.weight, new.bias = module.weight, module.bias
            if module.track_running_stats:
                new.running_mean, new.running_var = module.running_mean, module.running_var
                new.num_batches_tracked = module.num_batches_tracked
            new.training = module.training
            return new
        for name, child in module.named_children():
            new_child = cls.convert(child)
            if new_child is not child:
                setattr(module, name, new_child)
        return module
