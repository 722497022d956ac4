"""One optimisation step, evaluation passes and the per-epoch model measurements.

Nothing here synchronises with the device inside a step: losses and correct counts stay on the device and
are read by the loop only at its sync points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from convemerge.train.setup import Precision

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_loss(kind: str, num_classes: int) -> LossFn:
    """``ce``: cross-entropy on logits; ``mse``: squared error against one-hot targets, averaged over the
    batch and the classes (``nn.MSELoss``'s convention); ``bce-onehot``: an independent sigmoid per class with
    binary cross-entropy against one-hot targets, averaged over the batch and the classes
    (``nn.BCEWithLogitsLoss``'s default — what the public student reproduction of Table 2 trains with; its
    gradients are about ``num_classes`` times smaller than cross-entropy's). All return the batch mean in fp32."""
    if kind == "ce":
        return lambda out, y: F.cross_entropy(out.float(), y)
    if kind == "mse":
        return lambda out, y: F.mse_loss(out.float(), F.one_hot(y, num_classes).float())
    if kind == "bce-onehot":
        return lambda out, y: F.binary_cross_entropy_with_logits(out.float(), F.one_hot(y, num_classes).float())
    raise ValueError(f"unknown loss {kind!r}")


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    scaler: torch.amp.GradScaler | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and update on one batch; returns (batch-mean loss, number correct), on device."""
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast(x.device):
        out = model(x)
        loss = loss_fn(out, y)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # skipped (and the scale lowered) when the scaled gradients overflowed
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    correct = (out.detach().argmax(dim=1) == y).sum()
    return loss.detach(), correct


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    precision: Precision,
) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` in eval mode over ``batches``; restores the previous mode."""
    was_training = model.training
    model.eval()
    loss_sum = None
    correct = None
    n = 0
    try:
        for x, y in batches:
            with precision.autocast(x.device):
                out = model(x)
            batch_loss = loss_fn(out, y) * y.numel()
            batch_correct = (out.argmax(dim=1) == y).sum()
            loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
            correct = batch_correct if correct is None else correct + batch_correct
            n += y.numel()
    finally:
        model.train(was_training)
    if n == 0:
        return math.nan, math.nan
    return float(loss_sum.item()) / n, float(correct.item()) / n


@torch.no_grad()
def model_measurements(model: nn.Module) -> dict:
    """Per-epoch structure metrics: non-zero weights per layer and in total, first-layer locality."""
    from convemerge.models.base import nonzero_per_layer
    from convemerge.models.locality import median_participation_ratio, nonzero_per_unit

    nonzero = nonzero_per_layer(model)
    record: dict = {"nonzero": nonzero, "nonzero_total": sum(nonzero.values())}
    if hasattr(model, "first_layer_filters"):
        filters = model.first_layer_filters()
        record["first_layer_pr_median"] = median_participation_ratio(filters)
        record["first_layer_units_live"] = int((nonzero_per_unit(filters) > 0).sum().item())
    return record
