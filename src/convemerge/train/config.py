"""``TrainConfig``: every knob of a training run, with defaults, validation and YAML round-trips.

A run is fully described by its config (plus the library version): ``config.yaml`` in the run directory is
this dataclass written out, and ``TrainConfig.from_yaml`` reads it back. CLI flags override a ``--config``
file through :func:`merge_overrides`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from convemerge.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "beta-lasso")
SCHEDULES = ("cosine", "constant")
LOSSES = ("ce", "mse")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "off", "bf16", "fp16")

# Fields that may differ between a killed run and its resumption: they change where or how fast it runs,
# not what it computes (on the same device).
RESUME_MUTABLE = frozenset(
    {"device", "compile", "num_threads", "data_dir", "log_every", "eval_batch_size", "checkpoint_every", "out"}
)


@dataclass
class TrainConfig:
    """Hyperparameters and runtime options of one training run (defaults follow the paper's Appendix A.2)."""

    # --- model ---
    model: str = "s-fc"  # registered model name (convemerge.models.list_models())
    alpha: int | None = None  # base channel count α; None = the model's own default
    model_options: dict[str, Any] = field(default_factory=dict)  # extra create_model options (depth, width, dropout, ...)

    # --- data ---
    dataset: str = "cifar10"  # dataset name (convemerge.data.list_datasets())
    data_dir: str | None = None  # dataset root; None = the data package's default search paths
    dataset_options: dict[str, Any] = field(default_factory=dict)  # extra load_dataset options (e.g. sigma, n_train of synthetic tasks)
    val_fraction: float = 0.1  # stratified hold-out of the train split used for model selection (0 = none)
    n_train: int | None = None  # stratified, seeded subsample of the remaining train split; None = all of it
    n_test: int | None = None  # stratified subsample of the test split, the same images for every seed; None = all
    augment: bool | None = None  # crop+flip augmentation; None = the dataset's default
    pad_to: int | None = None  # zero-pad (black) images to this side on the device, e.g. 28 -> 32 for D-models

    # --- optimisation ---
    optimizer: str = "sgd"  # sgd | adam | beta-lasso
    lr: float = 0.1  # peak learning rate (the paper: 0.1; Adam experiments: 1e-3)
    momentum: float = 0.9  # SGD momentum (ignored by adam and beta-lasso)
    nesterov: bool = False  # Nesterov momentum for SGD
    weight_decay: float = 0.0  # L2 weight decay for sgd/adam on weights (biases and norms excluded)
    adam_betas: tuple[float, float] = (0.9, 0.999)  # Adam's (beta1, beta2)
    beta: float = 50.0  # β-LASSO threshold multiplier: weights with |w| < beta*lam are zeroed
    lam: float = 1e-6  # β-LASSO L1 strength on every weight layer but the first
    lam_first: float | None = None  # β-LASSO L1 strength on the first weight layer; None = lam
    regularize_bias_and_norm: bool = False  # also apply weight decay / L1 to biases and norm parameters
    schedule: str = "cosine"  # cosine (annealed per step to 0 over all steps) | constant
    warmup_epochs: float = 0.0  # linear warm-up from 0 to lr over this many epochs (then the schedule)
    epochs: int = 400  # number of passes over the training set (the paper: 400, Table 2: 4000)
    stop_train_loss: float | None = None  # also stop after an epoch whose mean training loss is below this (CNFA authors: 1e-5)
    batch_size: int = 512  # training mini-batch size
    loss: str = "ce"  # ce (cross-entropy) | mse (squared error against one-hot targets)

    # --- runtime ---
    seed: int = 0  # seeds torch, numpy, python random, the data split, the subsample and the loader generator
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    amp: str = "auto"  # auto (bf16 on CUDA if supported, else fp16; off on CPU) | off | bf16 | fp16
    compile: bool = False  # wrap the model in torch.compile (CUDA only in practice)
    num_threads: int | None = None  # torch CPU threads; None = torch's default
    deterministic: bool | None = None  # torch deterministic algorithms; None = on for CPU, off for CUDA
    eval_batch_size: int = 1024  # batch size for validation / test passes
    log_every: int = 20  # steps between progress-bar refreshes (and divergence checks on CUDA)
    checkpoint_every: int = 1  # epochs between "last" checkpoints (the final epoch and each new best always saved)
    out: str | None = None  # run directory; None = runs/<model>-<dataset>-<optimizer>-s<seed>

    # ------------------------------------------------------------------ dict / YAML
    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe dict of every field."""
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build and validate a config from a dict; unknown keys are an error (typos must not pass silently)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source} must be a mapping of option names to values, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} in {source}; known: {', '.join(sorted(known))}")
        values = {k: _coerce(k, v, _FIELD_TYPES[k], source) for k, v in data.items()}
        for key in ("model_options", "dataset_options"):
            if values.get(key) is None:
                values[key] = {}
        if "adam_betas" in values and values["adam_betas"] is not None:
            values["adam_betas"] = tuple(float(b) for b in values["adam_betas"])
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML text; also written (atomically) to ``path`` if given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        if path is not None:
            from convemerge.train.checkpoint import atomic_write_text

            atomic_write_text(Path(path), text)
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML config file (any subset of the fields; the rest keep their defaults)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found; check the path") from None
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "syntax error"
            raise ConfigError(f"config file {path} is not valid YAML ({first}); fix the file") from None
        return cls.from_dict(data or {}, source=str(path))

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with some fields changed."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ConfigError (one line) for a value or combination that cannot work."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{name}={getattr(self, name)!r} is invalid: {why}")

        def choice(name: str, options: tuple[str, ...]) -> None:
            if getattr(self, name) not in options:
                raise bad(name, f"choose one of {', '.join(options)}")

        choice("optimizer", OPTIMIZERS)
        choice("schedule", SCHEDULES)
        choice("loss", LOSSES)
        choice("device", DEVICES)
        choice("amp", AMP_MODES)
        if not isinstance(self.model, str) or not self.model:
            raise bad("model", "give a registered model name")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise bad("dataset", "give a dataset name")
        for name in ("model_options", "dataset_options"):
            if not isinstance(getattr(self, name), dict):
                raise bad(name, "must be a mapping of option names to values")
        if self.alpha is not None and (not _is_int(self.alpha) or self.alpha < 1):
            raise bad("alpha", "must be a positive integer")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise bad("val_fraction", "must be in [0, 1)")
        if self.n_train is not None and (not _is_int(self.n_train) or self.n_train < 1):
            raise bad("n_train", "must be a positive integer or None")
        if self.n_test is not None and (not _is_int(self.n_test) or self.n_test < 1):
            raise bad("n_test", "must be a positive integer or None")
        if self.pad_to is not None and (not _is_int(self.pad_to) or self.pad_to < 1):
            raise bad("pad_to", "must be a positive integer (the padded image side) or None")
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every", "checkpoint_every"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        if self.num_threads is not None and (not _is_int(self.num_threads) or self.num_threads < 1):
            raise bad("num_threads", "must be a positive integer or None")
        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", "must be a non-negative integer")
        if not float(self.lr) > 0:
            raise bad("lr", "must be > 0")
        for name in ("momentum", "weight_decay", "beta", "lam", "warmup_epochs"):
            if float(getattr(self, name)) < 0:
                raise bad(name, "must be >= 0")
        if self.stop_train_loss is not None and not float(self.stop_train_loss) > 0:
            raise bad("stop_train_loss", "must be > 0 (e.g. 1e-5) or None")
        if self.lam_first is not None and float(self.lam_first) < 0:
            raise bad("lam_first", "must be >= 0 or None")
        if float(self.momentum) >= 1:
            raise bad("momentum", "must be < 1")
        if self.nesterov and self.optimizer == "sgd" and float(self.momentum) == 0:
            raise ConfigError("nesterov=True needs momentum > 0; set --momentum or drop --nesterov")
        if (not isinstance(self.adam_betas, (tuple, list)) or len(self.adam_betas) != 2
                or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.adam_betas)):
            raise bad("adam_betas", "give two numbers in [0, 1)")
        if self.warmup_epochs > self.epochs:
            raise bad("warmup_epochs", f"must not exceed epochs={self.epochs}")

    # ------------------------------------------------------------------ derived
    def run_dir(self) -> Path:
        """The run directory (``out``, or a name built from model, dataset, optimizer and seed)."""
        if self.out:
            return Path(self.out)
        return Path("runs") / f"{self.model}-{self.dataset}-{self.optimizer}-s{self.seed}"


_FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value: Any, type_name: str, source: str) -> Any:
    """Give a value read from YAML or the command line its field's type.

    YAML 1.1 reads ``1e-3`` (no dot) as a string, so numbers may arrive as text; ints are accepted for floats,
    integral floats (``100.0``) for ints. Anything else is left for ``validate`` to judge.
    """
    if value is None:
        return None
    base = type_name.replace(" | None", "")
    try:
        if base == "float" and isinstance(value, (str, int)) and not isinstance(value, bool):
            return float(value)
        if base == "int" and isinstance(value, float) and value.is_integer():
            return int(value)
        if base == "int" and isinstance(value, str):
            return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} in {source} is not a {base}; give a number") from None
    return value


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def merge_overrides(base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """``base`` with every override whose value is not None applied (how CLI flags beat a --config file).

    ``model_options`` / ``dataset_options`` overrides are merged key by key into the base's options.
    """
    data = base.to_dict()
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("model_options", "dataset_options"):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    return TrainConfig.from_dict(data, source="command-line options")


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_option_pairs(pairs: list[str] | None) -> dict[str, Any]:
    """Parse ``key=value`` strings (values read as YAML scalars: 3 -> int, 0.5 -> float, true -> bool)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"option {pair!r} is not of the form key=value; e.g. --opt depth=4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 5e-3 (no dot) as text
        out[key.strip().replace("-", "_")] = value
    return out
