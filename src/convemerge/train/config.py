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
SCHEDULES = ("cosine", "cosine-epoch", "constant")
L1_SIGNS = ("pre", "post")  # BetaLasso's choices, copied: this module imports no torch
LOSSES = ("ce", "mse", "bce-onehot")
# Other spellings accepted on input; the canonical name is what config.yaml records (and what run ids hash).
LOSS_ALIASES = {"cross-entropy": "ce"}
INPUT_NORMS = ("dataset", "half")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "off", "bf16", "fp16")

# The help panels of ``convemerge train --help``.
MODEL, DATA, OPTIMISATION, RUNTIME = "Model", "Data", "Optimisation", "Runtime"
PANELS = (MODEL, DATA, OPTIMISATION, RUNTIME)


@dataclass(frozen=True)
class Setting:
    """What a :class:`TrainConfig` field means beyond its type and default, declared once with the field:
    ``convemerge train`` builds the field's option from it (``--<name with dashes>``, ``--x/--no-x`` for a bool),
    :meth:`TrainConfig.validate` checks ``choices``, and the ``resume`` fields make up :data:`RESUME_MUTABLE`."""

    help: str  # the one-line help of the field's CLI option
    panel: str  # the help panel it is listed under (one of PANELS)
    choices: tuple[str, ...] | None = None  # the allowed values, checked by validate()
    resume: bool = False  # may differ between a killed run and its resumption (where or how fast, not what)
    cli: bool = True  # has an option of its own (False: set in a --config file, or through a CLI shortcut)
    short: str | None = None  # a short form of its flag, e.g. "-o"

    def __post_init__(self) -> None:
        if self.panel not in PANELS:
            raise ValueError(f"panel {self.panel!r} is not one of {PANELS}")


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A TrainConfig field with its :class:`Setting` (``help``, ``panel``, ``choices``, ``resume``, ``cli``, ``short``)
    as metadata: ``lr: float = setting(0.1, help="Peak learning rate.", panel=OPTIMISATION)``."""
    return field(default=default, default_factory=default_factory, metadata={"setting": Setting(**meta)})


@dataclass
class TrainConfig:
    """Hyperparameters and runtime options of one training run (defaults follow the paper's Appendix A.2).

    Each field is declared once, here, with :func:`setting`: its default, its CLI help and panel, its allowed
    values, and whether it may change on resume; ``convemerge train``'s options are generated from these.
    """

    # --- model ---
    # a registered model name (convemerge.models.list_models())
    model: str = setting("s-fc", help="Model name (s-conv, s-local, s-fc, d-conv, ..., vanilla-cnn).", panel=MODEL)
    # None = the model's own default
    alpha: int | None = setting(None, help="Base channel count α.", panel=MODEL)
    # extra create_model options (depth, width, dropout, ...); on the command line --opt key=value and --dropout
    model_options: dict[str, Any] = setting(default_factory=dict, help="Extra create_model options.", panel=MODEL,
                                            cli=False)

    # --- data ---
    # a dataset name (convemerge.data.list_datasets())
    dataset: str = setting("cifar10", help="Dataset name (mnist, fashion-mnist, cifar10, ..., mnist-5k, digits).",
                           panel=DATA)
    # None = the data package's default search paths
    data_dir: str | None = setting(None, help="Dataset root folder.", panel=DATA, resume=True)
    # extra load_dataset options (e.g. sigma, n_train of synthetic tasks); on the command line --data-opt key=value
    dataset_options: dict[str, Any] = setting(default_factory=dict, help="Extra load_dataset options.", panel=DATA,
                                              cli=False)
    # stratified hold-out of the train split used for model selection (0 = none)
    val_fraction: float = setting(0.1, help="Validation hold-out fraction of the train split.", panel=DATA)
    # stratified, seeded subsample of the remaining train split; None = all of it
    n_train: int | None = setting(None, help="Stratified subsample size of the training set.", panel=DATA)
    # None = all
    n_test: int | None = setting(
        None, help="Stratified subsample of the test set (the same images for every seed).", panel=DATA)
    # None = the dataset's default
    augment: bool | None = setting(None, help="Crop+flip augmentation (default: the dataset's).", panel=DATA)
    # a policy (or .json) applied per image before crop+flip, then Cutout 16 px; turns augmentation on
    augment_policy: str | None = setting(
        None, help="autoaugment | fast-autoaugment | policy.json: per-image policy before crop+flip, then Cutout.",
        panel=DATA)
    # zero-pad (black) images to this side on the device, e.g. 28 -> 32 for D-models
    pad_to: int | None = setting(
        None, help="Zero-pad images to this side (e.g. 32 for D-models on 28px data).", panel=DATA)
    # dataset: per-channel mean/std of the train split; half: (x - 0.5) / 0.5 per channel
    input_norm: str = setting("dataset", help="dataset (per-channel mean/std) | half ((x - 0.5) / 0.5).", panel=DATA,
                              choices=INPUT_NORMS)

    # --- optimisation ---
    optimizer: str = setting("sgd", help="sgd | adam | beta-lasso.", panel=OPTIMISATION, choices=OPTIMIZERS)
    # the paper: 0.1; Adam experiments: 1e-3
    lr: float = setting(0.1, help="Peak learning rate.", panel=OPTIMISATION)
    # ignored by adam and beta-lasso
    momentum: float = setting(0.9, help="SGD momentum.", panel=OPTIMISATION)
    nesterov: bool = setting(False, help="Nesterov momentum (SGD).", panel=OPTIMISATION)
    # on weights (biases and norms excluded)
    weight_decay: float = setting(0.0, help="Weight decay (sgd/adam; weights only).", panel=OPTIMISATION)
    adam_betas: tuple[float, float] = setting((0.9, 0.999), help="Adam's (beta1, beta2).", panel=OPTIMISATION,
                                              cli=False)
    # weights with |w| < beta*lam are zeroed
    beta: float = setting(50.0, help="β-LASSO threshold multiplier β.", panel=OPTIMISATION)
    lam: float = setting(1e-6, help="β-LASSO λ for all but the first layer.", panel=OPTIMISATION)
    # None = lam
    lam_first: float | None = setting(None, help="β-LASSO λ for the first layer.", panel=OPTIMISATION)
    regularize_bias_and_norm: bool = setting(
        False, help="Also apply weight decay / L1 to biases and norm parameters.", panel=OPTIMISATION, cli=False)
    # pre: Algorithm 1's sign(θ) before the step; post: the sign after the gradient step (the student reproduction)
    l1_sign: str = setting("pre", help="β-LASSO L1 step: sign of the weight before the step (pre, Algorithm 1) or "
                           "after the gradient step (post, the student reproduction's optimizer).",
                           panel=OPTIMISATION, choices=L1_SIGNS)
    # cosine: annealed per step to 0 over all steps
    schedule: str = setting("cosine", help="cosine (annealed every step) | cosine-epoch (every epoch, as "
                            "torch's CosineAnnealingLR stepped once an epoch) | constant.", panel=OPTIMISATION,
                            choices=SCHEDULES)
    # linear warm-up from 0 to lr over this many epochs (then the schedule)
    warmup_epochs: float = setting(0.0, help="Linear warm-up length in epochs.", panel=OPTIMISATION)
    # passes over the training set (the paper: 400, Table 2: 4000)
    epochs: int = setting(400, help="Number of epochs.", panel=OPTIMISATION)
    # e.g. the CNFA authors' 1e-5
    stop_train_loss: float | None = setting(
        None, help="Also stop after the first epoch whose mean training loss is below this (e.g. 1e-5).",
        panel=OPTIMISATION)
    batch_size: int = setting(512, help="Training batch size.", panel=OPTIMISATION)
    # ce is also spelled cross-entropy (LOSS_ALIASES)
    loss: str = setting(
        "ce", help="ce (cross-entropy) | mse | bce-onehot (sigmoid per class on one-hot targets).", panel=OPTIMISATION,
        choices=LOSSES)

    # --- runtime ---
    # seeds torch, numpy, python random, the data split, the subsample and the loader generator
    seed: int = setting(0, help="Seed of every random choice.", panel=RUNTIME)
    # auto: cuda if available
    device: str = setting("auto", help="auto | cpu | cuda.", panel=RUNTIME, choices=DEVICES, resume=True)
    # auto: bf16 on CUDA if supported, else fp16; off on CPU
    amp: str = setting("auto", help="auto | off | bf16 | fp16 mixed precision.", panel=RUNTIME, choices=AMP_MODES)
    # CUDA only in practice
    compile: bool = setting(False, help="torch.compile the model.", panel=RUNTIME, resume=True)
    # None = torch's default
    num_threads: int | None = setting(None, help="torch CPU threads.", panel=RUNTIME, resume=True)
    # None = on for CPU, off for CUDA
    deterministic: bool | None = setting(None, help="torch deterministic algorithms.", panel=RUNTIME, cli=False)
    eval_batch_size: int = setting(1024, help="Evaluation batch size.", panel=RUNTIME, resume=True)
    # also the steps between divergence checks on CUDA
    log_every: int = setting(20, help="Steps between progress refreshes.", panel=RUNTIME, resume=True)
    # the final epoch and each new best are always saved
    checkpoint_every: int = setting(1, help="Epochs between 'last' checkpoints.", panel=RUNTIME, resume=True)
    test_every: int = setting(
        1, help="Epochs between test passes (the last epoch and each new best validation are always tested).",
        panel=RUNTIME, resume=True)
    # None = runs/<model>-<dataset>-<optimizer>-s<seed>
    out: str | None = setting(None, help="Run directory.", panel=RUNTIME, resume=True, short="-o")

    def __post_init__(self) -> None:
        self.loss = LOSS_ALIASES.get(self.loss, self.loss)

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
            from convemerge.runs import atomic_write_text

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

        for name, s in settings().items():
            if s.choices is not None:
                choice(name, s.choices)
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
        if self.augment_policy is not None:
            from convemerge.data.autoaugment import POLICIES

            if not isinstance(self.augment_policy, str) or (self.augment_policy not in POLICIES
                                                            and not self.augment_policy.endswith(".json")):
                raise bad("augment_policy", f"choose {', '.join(POLICIES)} or give a policy .json file")
            if self.augment is False:
                raise ConfigError("augment_policy needs augmentation on; drop --no-augment or the policy")
        if self.pad_to is not None and (not _is_int(self.pad_to) or self.pad_to < 1):
            raise bad("pad_to", "must be a positive integer (the padded image side) or None")
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every", "checkpoint_every", "test_every"):
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


def setting_of(f: dataclasses.Field) -> Setting:
    """The :class:`Setting` of a TrainConfig field; TypeError naming a field declared without one."""
    s = f.metadata.get("setting")
    if not isinstance(s, Setting):
        raise TypeError(f"TrainConfig field {f.name!r} has no Setting; declare it with "
                        f"setting(<default>, help=..., panel=...) in train/config.py")
    return s


def settings(cls: type = TrainConfig) -> dict[str, Setting]:
    """Every field's :class:`Setting`, in field order (what ``convemerge train`` builds its options from)."""
    return {f.name: setting_of(f) for f in dataclasses.fields(cls)}


# Fields that may differ between a killed run and its resumption: they change where or how fast it runs,
# not what it computes (on the same device). Declared per field (``setting(..., resume=True)``).
RESUME_MUTABLE = frozenset(name for name, s in settings().items() if s.resume)


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
