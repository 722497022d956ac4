"""(C)NFA of a trained run or of a pretrained ImageNet net: load the weights, rebuild the initialisation, draw
images, and write :func:`~convemerge.experiments.cnfa.report_writer.cnfa_report`'s table, convergence and pictures.

- :func:`load_init_model` rebuilds a run's network as it was before its first step, with the function the
  training loop built it with (:func:`convemerge.runs.init_model`); nothing has to be stored.
- :func:`run_images` draws a seeded sample of a run's *train* split (or its validation hold-out), with exactly the
  run's split, subsample, standardisation and padding. The test split is never offered: the images are an input
  of the analysis, and nothing chosen from them may touch the test set.
- :func:`cnfa_for_run` / :func:`cnfa_for_imagenet` tie these to ``cnfa_report`` and return its record, with a
  ``source`` entry saying what was analysed.

Example::

    rec = cnfa_for_run("runs/vanilla", images=500, power=1.0)     # writes runs/vanilla/cnfa/cnfa.json, *.png
    rec["table"][0]["pearson"], rec["table"][0]["init_pearson"]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convemerge.errors import ConfigError

__all__ = ["run_state", "load_init_model", "run_images", "cnfa_for_run", "cnfa_for_imagenet", "top_outputs",
           "DEFAULT_RUN_IMAGES", "DEFAULT_IMAGENET_IMAGES", "DEFAULT_IMAGENET_OUTPUTS"]

DEFAULT_RUN_IMAGES = 200
DEFAULT_IMAGENET_IMAGES = 20  # the authors' scripts use 10-20 images per pretrained net
DEFAULT_IMAGENET_OUTPUTS = None  # all 1000 outputs, as the authors sum them (a number k: the top-k classes)


def run_state(run_dir: str | Path, which: str = "best") -> dict[str, Any]:
    """The saved state of a run's ``which`` checkpoint ("best", or "last"; "best" falls back to "last" for a
    run without validation): config, geometry, epoch (:func:`convemerge.runs.read_state`)."""
    from convemerge.runs import read_state

    return read_state(run_dir, which, fallback=True)


def load_init_model(run_dir: str | Path) -> nn.Module:
    """The run's model at initialisation (eval mode, CPU), rebuilt from its config and seed by
    :func:`convemerge.runs.init_model`, the function the training loop builds it with. The global RNG of the
    caller is left as it was."""
    from convemerge.runs import load_run_model

    return load_run_model(run_dir, "init")


def _train_config(state: dict[str, Any], dataset: str | None, data_dir: str | Path | None):
    from convemerge.train import TrainConfig

    fields = {**state["config"], "device": "cpu", "out": None}
    if data_dir is not None:
        fields["data_dir"] = str(data_dir)
    if dataset is not None:
        fields["dataset"] = dataset
    return TrainConfig.from_dict(fields, source="run config")


def run_images(run_dir: str | Path, n: int = DEFAULT_RUN_IMAGES, *, split: str = "train",
               dataset: str | None = None, data_dir: str | Path | None = None, seed: int = 0) -> torch.Tensor:
    """``n`` images (a ``seed``-ed sample; all of them if the split is smaller) of the run's train split or
    validation hold-out, standardised and padded exactly as the network saw them in training: (n, C, H, W).

    ``dataset`` takes the images from another data set of the same geometry instead (its own split of the
    run's seed), standardised with the run's training statistics — the scale the network was trained on.
    """
    from convemerge.data import ImageLoader, load_dataset
    from convemerge.train import pad_batch, prepare_data

    if split not in ("train", "val"):
        raise ConfigError(f"split={split!r}: choose train or val (the test split is never used for the analysis)")
    if n < 1:
        raise ConfigError(f"--images {n}: give a positive number of images")
    state = run_state(run_dir)
    cfg = _train_config(state, dataset, data_dir)
    data = prepare_data(cfg)
    part = data.train if split == "train" else data.val
    if part is None:
        raise ConfigError(f"run {Path(run_dir).name} has no validation split (val_fraction=0); use --split train")
    own = state["config"]["dataset"]
    fill = data.pad_fill
    geo = state["geometry"]
    size = tuple(geo["image_size"]) if isinstance(geo["image_size"], list) else (geo["image_size"],) * 2
    if dataset is not None and dataset != own:
        ref = load_dataset(own, "train", root=cfg.data_dir, **(state["config"].get("dataset_options") or {}))
        if (part.in_chans, part.image_shape) != (ref.in_chans, ref.image_shape):
            raise ConfigError(
                f"{dataset} has {part.in_chans}×{part.image_shape[0]}×{part.image_shape[1]} images, the run's {own} "
                f"{ref.in_chans}×{ref.image_shape[0]}×{ref.image_shape[1]}: choose a --dataset of the same geometry")
        part = dataclasses.replace(part, mean=ref.mean, std=ref.std)
        fill = -torch.tensor(ref.mean, dtype=torch.float32) / torch.tensor(ref.std, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(part), generator=gen)[: min(n, len(part))]
    batches = [x for x, _ in ImageLoader(part.subset(idx), 1024)]
    return pad_batch(torch.cat(batches), size, fill)


def _write_source(out: Path, record: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    from convemerge.runs import RunPaths, atomic_write_json

    record = {"source": source, **record}
    atomic_write_json(RunPaths(out).cnfa, record, indent=2)
    return record


def cnfa_for_run(run_dir: str | Path, out_dir: str | Path | None = None, *, images: int = DEFAULT_RUN_IMAGES,
                 split: str = "train", dataset: str | None = None, data_dir: str | Path | None = None,
                 power: float = 1.0, which: str = "best", seed: int = 0, layers: Sequence[str] | None = None,
                 sizes: Sequence[int] | None = None, extra_powers: Sequence[float] = (),
                 **report_options) -> dict[str, Any]:
    """(C)NFA report of a training run's ``which`` checkpoint against its initialisation.

    Writes ``cnfa.json`` and the pictures into ``out_dir`` (default ``<run_dir>/cnfa``) and returns the record:
    ``source`` (run, checkpoint, epoch, dataset, split, image count), ``settings``, ``table`` (per layer: the
    claim and every baseline of ``convemerge.analysis.cnfa``), ``convergence`` and ``figures``; with
    ``extra_powers`` also ``tables_by_power`` ({"0.5": table, ...}: the same table against AGOP^p, same AGOPs).
    """
    from convemerge.experiments.cnfa.report_writer import cnfa_report
    from convemerge.runs import load_run_model

    run_dir = Path(run_dir)
    state = run_state(run_dir, which)
    model = load_run_model(run_dir, state["checkpoint"])
    init = load_init_model(run_dir)
    x = run_images(run_dir, images, split=split, dataset=dataset, data_dir=data_dir, seed=seed)
    out = Path(out_dir) if out_dir is not None else run_dir / "cnfa"
    if sizes is not None:
        report_options["sizes"] = sizes
    record = cnfa_report(model, x, init_model=init, out_dir=out, power=power, seed=seed, layers=layers,
                         extra_powers=tuple(extra_powers), **report_options)
    cfg = state["config"]
    source = {"kind": "run", "run": run_dir.name, "checkpoint": state["checkpoint"], "epoch": state.get("epoch"),
              "model": cfg["model"], "model_options": cfg.get("model_options") or {}, "alpha": cfg.get("alpha"),
              "optimizer": cfg["optimizer"], "dataset": dataset or cfg["dataset"], "split": split,
              "images": int(x.shape[0]), "init": "rebuilt from the run's seed"}
    return _write_source(out, record, source)


@torch.no_grad()
def top_outputs(model: nn.Module, x: torch.Tensor, k: int, batch_size: int = 32) -> list[int]:
    """The ``k`` outputs with the largest mean logit over ``x`` (the classes the images are about), ascending."""
    model.eval()
    total = None
    for i in range(0, x.shape[0], batch_size):
        f = model(x[i : i + batch_size]).double().sum(0)
        total = f if total is None else total + f
    k = min(k, total.numel())
    return sorted(torch.topk(total, k).indices.tolist())


def cnfa_for_imagenet(name: str, weights: str | Path, images_dir: str | Path, out_dir: str | Path, *,
                      images: int = DEFAULT_IMAGENET_IMAGES, outputs: int | None = DEFAULT_IMAGENET_OUTPUTS,
                      power: float = 1.0, layers: Sequence[str] | None = None, random_init: bool = True,
                      init_seed: int = 0, seed: int = 0, sizes: Sequence[int] | None = None,
                      **report_options) -> dict[str, Any]:
    """CNFA of a pretrained ``vgg11`` / ``resnet18`` on the first ``images`` files of ``images_dir``.

    The AGOP sums over all outputs by default, as the authors' do; ``outputs=k`` restricts it to the k classes
    with the largest mean logit over the images (1000 backward passes per image cost ~100× as much as 10). The
    pretrained net's own initialisation is unknown; with ``random_init`` a fresh random net of the same
    architecture (``init_seed``) stands in for it, so the "init" columns are a chance baseline.
    """
    from convemerge.experiments.cnfa.report_writer import cnfa_report
    from convemerge.models.imagenet import build_imagenet_model, load_image_folder, load_imagenet_model

    if outputs is not None and outputs < 1:
        raise ConfigError(f"--outputs {outputs}: give a positive number of outputs")
    model = load_imagenet_model(name, weights)
    x = load_image_folder(images_dir, limit=images)
    chosen = top_outputs(model, x, outputs) if outputs is not None else None
    init = None
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            init = build_imagenet_model(name, num_classes=model.state_dict()[_head_key(model)].shape[0]).eval()
    if sizes is not None:
        report_options["sizes"] = sizes
    record = cnfa_report(model, x, init_model=init, out_dir=out_dir, power=power, seed=seed, layers=layers,
                         outputs=chosen, **report_options)
    source = {"kind": "imagenet", "model": name, "weights": Path(weights).name, "images_dir": Path(images_dir).name,
              "images": int(x.shape[0]), "outputs": chosen,
              "init": f"a random {name} (seed {init_seed}), not the net's own initialisation" if random_init
              else None}
    return _write_source(Path(out_dir), record, source)


def _head_key(model: nn.Module) -> str:
    keys = model.state_dict().keys()
    return "fc.weight" if "fc.weight" in keys else "classifier.6.weight"
