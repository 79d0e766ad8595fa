"""Config validation: unknown or ill-typed parameters fail at once and name themselves."""

import pytest

from medcl_lite.config import ConfigError, from_params, to_dict
from medcl_lite.train import FinetuneConfig, PretrainConfig


def test_from_params_fills_and_coerces():
    cfg = from_params(PretrainConfig, {"lr": 1, "max_epochs": 3, "framework": "moco"})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.max_epochs == 3


def test_unknown_parameter_named_with_suggestion():
    with pytest.raises(ConfigError, match=r"'lrr'.*'lr'"):
        from_params(PretrainConfig, {"lrr": 0.1})


@pytest.mark.parametrize(
    "params, name",
    [({"max_epochs": 2.5}, "max_epochs"), ({"amp": "yes"}, "amp"), ({"lr": "fast"}, "lr"), ({"batch_size": True}, "batch_size")],
)
def test_ill_typed_parameter_named(params, name):
    with pytest.raises(ConfigError, match=name):
        from_params(PretrainConfig, params)


@pytest.mark.parametrize(
    "params, name",
    [({"framework": "byol"}, "framework"), ({"pairing": "spatial"}, "pairing"), ({"batch_size": 1}, "batch_size"), ({"temperature": 0.0}, "temperature")],
)
def test_bad_values_named(params, name):
    with pytest.raises(ConfigError, match=name):
        from_params(PretrainConfig, params)


def test_finetune_config_checks():
    with pytest.raises(ConfigError, match="init"):
        from_params(FinetuneConfig, {"init": "imagenet"})
    assert to_dict(from_params(FinetuneConfig, {"max_steps": 5}))["max_steps"] == 5


def test_resume_needs_out_dir():
    with pytest.raises(ConfigError, match="out_dir"):
        PretrainConfig(resume=True)


def test_pick_takes_the_default_only_for_empty_values():
    from medcl_lite.config import pick

    for empty in (0, 0.0, -1, [], "", None):
        assert pick(empty, "size") == "size"
    for value in (1, 0.5, [0], "x", True):
        assert pick(value, "size") == value


def test_changed_fields_reads_missing_saved_fields_as_defaults():
    from medcl_lite.config import changed_fields
    from medcl_lite.train import FinetuneConfig

    cfg = FinetuneConfig(lr=1e-4, progress=False)
    assert changed_fields({"lr": 1e-4}, cfg, {"progress"}) == set()  # every other field: its default
    assert changed_fields({"lr": 1e-3}, cfg) == {"lr", "progress"}


def test_reproduction_settings_apply_overrides_of_the_defaults_type():
    from medcl_lite.config import reproduction_settings

    defaults = {"ft_lr": 0.0, "n_folds": 0, "settings": [], "loss": "ce+dice", "resume": True, "extra": None}
    settings = reproduction_settings(defaults, {"ft_lr": 1, "settings": ["semi"], "extra": [1]})
    assert settings.ft_lr == 1.0 and isinstance(settings.ft_lr, float)  # an int stands for a float
    assert settings.settings == ["semi"] and settings.n_folds == 0 and settings.loss == "ce+dice"
    assert settings.extra == [1]  # None accepts anything
    assert vars(reproduction_settings(defaults)) == defaults
    with pytest.raises(ConfigError, match=r"unknown setting 'ft_lrr' \(did you mean 'ft_lr'\?\)"):
        reproduction_settings(defaults, {"ft_lrr": 1e-4})
    for key, bad in [("n_folds", 2.5), ("n_folds", True), ("loss", 3), ("settings", "semi"), ("resume", 1)]:
        with pytest.raises(ConfigError, match=f"setting '{key}' must be"):
            reproduction_settings(defaults, {key: bad})
    with pytest.raises(ConfigError, match="must be a mapping"):
        reproduction_settings(defaults, ["ft_lr"])
