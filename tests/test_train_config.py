"""TrainConfig: defaults, YAML round-trip, validation errors, CLI-style overrides."""

from __future__ import annotations

import dataclasses

import pytest

from convemerge.errors import ConfigError
from convemerge.train.config import (
    PANELS,
    RESUME_MUTABLE,
    TrainConfig,
    merge_overrides,
    parse_option_pairs,
    setting_of,
    settings,
)


def test_every_field_has_a_default_and_a_setting():
    for f in dataclasses.fields(TrainConfig):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
        s = setting_of(f)
        assert s.panel in PANELS and len(s.help) > 5, f"{f.name} lacks its help"


def test_a_field_without_a_setting_fails_the_check():
    @dataclasses.dataclass
    class Extended(TrainConfig):
        stop_train_loss: float | None = None  # declared the old way: no setting(...)

    with pytest.raises(TypeError, match="'stop_train_loss' has no Setting"):
        settings(Extended)


def test_resume_mutable_is_derived_from_the_fields():
    assert RESUME_MUTABLE == {name for name, s in settings().items() if s.resume}
    assert RESUME_MUTABLE == {"device", "compile", "num_threads", "data_dir", "log_every", "eval_batch_size",
                              "checkpoint_every", "test_every", "out"}


@pytest.mark.parametrize("name", [n for n, s in settings().items() if s.choices])
def test_declared_choices_are_checked(name):
    with pytest.raises(ConfigError, match=f"{name}='nope' is invalid: choose one of"):
        TrainConfig(**{name: "nope"}).validate()


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(model="vanilla-cnn", alpha=3, model_options={"depth": 4, "dropout": 0.1}, lam_first=2e-5,
                      adam_betas=(0.8, 0.99), n_train=500, augment=False, pad_to=32, optimizer="beta-lasso")
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    back = TrainConfig.from_yaml(path)
    assert back == cfg
    assert isinstance(back.adam_betas, tuple)


def test_partial_yaml_keeps_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: s-conv\nlr: 0.01\n")
    cfg = TrainConfig.from_yaml(path)
    assert cfg.model == "s-conv" and cfg.lr == 0.01 and cfg.batch_size == TrainConfig().batch_size


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("lrr: 0.1\n", "unknown option(s) lrr"),
        ("optimizer: rmsprop\n", "optimizer='rmsprop' is invalid"),
        ("val_fraction: 1.0\n", "val_fraction"),
        ("epochs: 0\n", "epochs"),
        ("momentum: 0\nnesterov: true\n", "nesterov"),
        ("- a\n- b\n", "must be a mapping"),
        ("model: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_is_one_line_config_error(tmp_path, text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(path)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nlam: 1e-6\nlam_first: 2e-5\nepochs: 10.0\nweight_decay: 0\n")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.lr, cfg.lam, cfg.lam_first, cfg.epochs) == (1e-3, 1e-6, 2e-5, 10)
    assert isinstance(cfg.weight_decay, float) and isinstance(cfg.epochs, int)
    path.write_text("lr: fast\n")
    with pytest.raises(ConfigError, match="lr='fast' .* is not a float"):
        TrainConfig.from_yaml(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")


def test_overrides_beat_file_and_none_means_unset():
    base = TrainConfig(model="s-fc", lr=0.5, model_options={"depth": 3, "width": 8})
    cfg = merge_overrides(base, {"lr": 0.1, "model": None, "model_options": {"width": 16}})
    assert cfg.lr == 0.1 and cfg.model == "s-fc"
    assert cfg.model_options == {"depth": 3, "width": 16}


def test_parse_option_pairs_types():
    assert parse_option_pairs(["depth=4", "dropout=0.5", "bias=false", "name=abc", "kernel-size=5"]) == {
        "depth": 4, "dropout": 0.5, "bias": False, "name": "abc", "kernel_size": 5}
    # YAML 1.1 reads exponent notation without a dot as text; options take it as the number it is
    assert parse_option_pairs(["init_std=5e-3", "a=1E4", "b=-2.5e-1", "c=e5"]) == {
        "init_std": 0.005, "a": 1e4, "b": -0.25, "c": "e5"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_option_pairs(["depth"])


def test_default_run_dir():
    assert str(TrainConfig(model="s-fc", dataset="mnist", optimizer="sgd", seed=3).run_dir()).endswith(
        "s-fc-mnist-sgd-s3")
