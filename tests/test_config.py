"""Config loading: base inheritance, overrides, named errors, and configs/base.yaml documenting every key."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pipeline.config import RENAMED_KEYS, Config, ConfigError, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_base_yaml_is_exactly_the_defaults_and_documents_every_key():
    assert load_config(CONFIGS / "base.yaml") == Config()
    text = (CONFIGS / "base.yaml").read_text()
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.type if isinstance(section.type, type) else type(section.default)):
            line = re.search(rf"^  {f.name}: .*$", text.split(f"\n{section.name}:")[1], re.M)
            assert line, f"{section.name}.{f.name} missing from base.yaml"
            assert "  # " in line.group(0), f"{section.name}.{f.name} has no comment in base.yaml"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_loads(name):
    load_config(CONFIGS / name)


def test_child_overrides_base_section_by_section(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  lr: 0.5\n  iterations: 7\ncrf:\n  iterations: 3\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\ntrain:\n  lr: 0.25\n")
    cfg = load_config(child)
    assert (cfg.train.lr, cfg.train.iterations, cfg.crf.iterations) == (0.25, 7, 3)
    assert cfg.model == Config().model  # untouched sections keep the defaults


def test_overrides_apply_last_and_parse_yaml(tmp_path):
    child = write(tmp_path / "c.yaml", "train:\n  lr: 0.25\n")
    cfg = load_config(child, ["train.lr=1e-3", "train.crop=[64, 96]", "crf.enabled=false", "run.name=x"])
    assert cfg.train.lr == 1e-3 and cfg.train.crop == (64, 96) and cfg.crf.enabled is False and cfg.run.name == "x"


def test_base_of_base_is_refused(tmp_path):
    write(tmp_path / "a.yaml", "train:\n  lr: 0.5\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    c = write(tmp_path / "c.yaml", "base: b.yaml\n")
    with pytest.raises(ConfigError, match="one level only"):
        load_config(c)


@pytest.mark.parametrize("text, key", [
    ("train:\n  learning_rate: 0.1\n", "train.learning_rate"),
    ("trian:\n  lr: 0.1\n", "trian"),
    ("train:\n  iterations: ten\n", "train.iterations"),
    ("train:\n  iterations: 0\n", "train.iterations"),
    ("train:\n  crop: [1, 2, 3]\n", "train.crop"),
    ("coarse:\n  method: magic\n", "coarse.method"),
    ("crf:\n  enabled: 1\n", "crf.enabled"),
    ("data:\n  gt_foreground_value: 255\n", "data.gt_foreground_value"),  # 255 is ignored by default
])
def test_bad_keys_and_values_name_the_full_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path / "bad.yaml", text))
    assert f"'{key}'" in str(err.value)


def test_bad_override_names_the_key():
    with pytest.raises(ConfigError, match="'rounds.cuont'"):
        load_config(None, ["rounds.cuont=3"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["rounds.count"])


@pytest.mark.parametrize("old", sorted(RENAMED_KEYS))
def test_old_key_names_what_became_of_it_in_files_and_overrides(tmp_path, old):
    section, key = old.split(".")
    expected = f"config key '{old}': {RENAMED_KEYS[old]}"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path / "old.yaml", f"{section}:\n  {key}: 1\n"))
    assert str(err.value) == expected
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "base.yaml", [f"{old}=1"])
    assert str(err.value) == expected


def test_renamed_keys_are_gone_and_name_keys_that_exist():
    cfg = Config()
    fields = {f"{s.name}.{f.name}" for s in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, s.name))}
    for old, message in RENAMED_KEYS.items():
        assert old not in fields, old
        assert "\n" not in message and message.startswith(("renamed to ", "moved to ", "removed: ")), message
        if not message.startswith("removed: "):
            assert message.split()[2] in fields, message


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.lr = 1.0  # type: ignore[misc]


def test_crf_for_round_takes_the_rounds_kernel_from_rounds_crf():
    plain = Config()
    assert plain.crf_for_round(0) == plain.crf and plain.crf_for_round(2) == plain.crf  # equal defaults: one CRF
    cfg = load_config(overrides=["rounds_crf.bilateral_sxy=50", "crf.bilateral_compat=7", "crf.iterations=4"])
    assert cfg.crf_for_round(0) == cfg.crf  # the coarse maps' CRF is never changed
    r1 = cfg.crf_for_round(1)  # the kernel from rounds_crf (its compat default 10, not crf's 7), the rest from crf
    assert (r1.bilateral_sxy, r1.bilateral_compat, r1.iterations) == (50.0, 10.0, 4)


def test_keys_feeding_follow_the_field_metadata():
    cfg = Config()
    train = cfg.keys_feeding("train", round_=1)
    assert "train.lr" in train and "model.width" in train and "run.seed" in train
    assert "train.log_every" not in train and "train.checkpoint_every" not in train  # never change the weights
    assert "rounds.lr_decay" not in train and "rounds.lr_decay" in cfg.keys_feeding("train", round_=2)
    predict = cfg.keys_feeding("predict", round_=2)
    assert set(predict) == {"rounds.foreground_network", "test_time.scales", "test_time.flip", "rounds.ensemble",
                            "rounds.reset_iou", "rounds.keep_other_classes_from"}
    assert {"test_time.scales", "test_time.flip", "full.eval_window"} <= set(cfg.keys_feeding("full"))
    assert "rounds.ensemble" not in cfg.keys_feeding("predict", round_=1)  # round 1 has nothing to average
    assert set(cfg.keys_feeding("score")) == {"data.masks", "data.gt_foreground_value", "data.gt_ignore_values"}
    assert "data.masks" not in cfg.keys_feeding("coarse") and "data.root" in cfg.keys_feeding("coarse")
    assert not any(k.startswith(("ray.", "rounds_crf.")) for k in {**train, **predict, **cfg.keys_feeding("crf")})
