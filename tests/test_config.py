"""Config dataclasses, presets and the trainer options, all read by one typed loader."""

import dataclasses
from pathlib import Path

import pytest

from hdrprep.config import Config, load_preset, preset_names
from hdrprep.errors import ConfigError

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
PRESETS = sorted(p for p in PIPELINES.glob("*.yaml") if not p.stem.startswith("cluster"))


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_loads(path):
    config = load_preset(path)
    assert config.name == path.stem
    assert Config.from_dict(config.to_dict()) == config


def test_santos2020_preset_equals_builtin_defaults():
    assert load_preset(PIPELINES / "santos2020.yaml") == Config()
    assert load_preset("santos2020") == Config()
    assert {"santos2020", "smoke"} <= set(preset_names())


@pytest.mark.parametrize("data, key", [
    ({"camera": {"mask_alpha": 1.5}}, "camera.mask_alpha"),
    ({"camera": {"clip_low": 0.97}}, "camera.clip_low"),
    ({"sampling": {"patch_size": 100}}, "sampling.patch_size"),
    ({"select": {"target_pairs": 0}}, "select.target_pairs"),
    ({"metric": {"normalisation": "whole"}}, "metric.normalisation"),
    ({"camera": {"curve": "table"}}, "camera.table_path"),
    ({"camera": {"nosie": True}}, "camera.nosie"),
    ({"seed": "seven"}, "seed"),
    ({"camera": {"noise": "yes"}}, "camera.noise"),
])
def test_validation_names_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Config.from_dict(data)


def test_override_ignores_none_and_rejects_unknown():
    c = Config().override(**{"select.threshold": 0.5, "seed": None})
    assert c.select.threshold == 0.5 and c.seed == 0
    with pytest.raises(ConfigError, match="select.treshold"):
        Config().override(**{"select.treshold": 0.5})


def test_unknown_preset_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="smoke"):
        load_preset("no-such-preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_preset(bad)


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_preset(evil)


def test_unknown_key_suggests_the_meant_one():
    with pytest.raises(ConfigError, match=r"unknown key 'camera\.nosie' = True; did you mean 'camera\.noise'\?"):
        Config.from_dict({"camera": {"nosie": True}})
    with pytest.raises(ConfigError, match=r"did you mean 'select\.threshold'"):
        Config().override(**{"select.treshold": 0.5})


def test_null_means_none_or_the_section_defaults_and_is_refused_elsewhere():
    assert Config.from_dict({"metric": {"prescreen_margin": None}, "camera": None}).metric.prescreen_margin is None
    with pytest.raises(ConfigError, match="'camera.noise': use true or false"):
        Config.from_dict({"camera": {"noise": None}})


def test_train_config_new_run_and_resume():
    from hdrprep.config import TrainConfig

    assert TrainConfig.from_options({"width": 8, "lr": 1, "depth": None}) == TrainConfig(width=8, lr=1.0)
    with pytest.raises(ConfigError, match="'width': use an integer >= 1"):
        TrainConfig.from_options({"width": 0})
    with pytest.raises(ConfigError, match="did you mean 'width'"):
        TrainConfig.from_options({"widht": 8})
    saved = dataclasses.asdict(TrainConfig(width=8, max_steps=10))
    resumed = TrainConfig.from_options({"max_steps": 20, "num_workers": 0, "width": 8, "depth": None}, saved)
    assert resumed == TrainConfig(width=8, max_steps=20, num_workers=0)
    with pytest.raises(ConfigError, match=r"--resume: option\(s\) width=16 \(checkpoint: 8\)"):
        TrainConfig.from_options({"width": 16}, saved)
