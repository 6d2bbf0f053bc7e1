"""Bad input matrix, YAML configs and `--set` overrides: every mistake raises ConfigError naming the key or file."""
from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config


@pytest.mark.parametrize("text, message", [
    ("train:\n  itrations: 5\n", r"unknown config key 'train\.itrations' \(known here: .*iterations"),
    ("trian:\n  iterations: 5\n", r"unknown config key 'trian'"),
    ("train:\n  iterations: '5'\n", r"config key 'train\.iterations': expected int, got str '5'"),
    ("train:\n  lr: true\n", r"config key 'train\.lr': expected float, got bool True"),
    ("train:\n  crop: 192\n", r"config key 'train\.crop': expected a list, got 192"),
    ("train:\n  crop: [1, 2, 3]\n", r"config key 'train\.crop': expected 2 values, got 3"),
    ("crf:\n  iterations: 0\n", r"config key 'crf\.iterations': 0 is out of range \[1, 100\]"),
    ("coarse:\n  fg_threshold: 1.5\n", r"config key 'coarse\.fg_threshold': 1\.5 is out of range \[0\.0, 1\.0\]"),
    ("train:\n  lr: .nan\n", r"config key 'train\.lr': nan is not a finite number"),
    ("crf:\n  bilateral_sxy: .inf\n", r"config key 'crf\.bilateral_sxy': inf is not a finite number"),
    ("coarse:\n  method: magic\n", r"config key 'coarse\.method': 'magic' is not one of saliency, ddt"),
    ("- train\n- crf\n", r"bad\.yaml: top level must be a mapping of sections, got list"),
    ("just a string\n", r"bad\.yaml: top level must be a mapping of sections, got str"),
    ("train: 5\n", r"config key 'train': expected a mapping \(a section of keys\), got int 5"),
    ("train:\n  3: 4\n", r"config key train\.3: keys must be names \(strings\), got int"),
    ("train: {lr: 1\n", r"bad\.yaml: not valid YAML"),
    ("run:\n  name: 2024-02-30\n", r"bad\.yaml: not valid YAML: day is out of range"),
    ("base: 7\n", r"bad\.yaml: key 'base' must be a file path string"),
    ("base: nothere.yaml\n", r"nothere\.yaml: config file not found"),
])
def test_yaml_config_errors_name_file_or_key(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "bad.yaml")


def test_yaml_not_utf8_and_bad_overrides(tmp_path):
    (tmp_path / "bad.yaml").write_bytes(b"run:\n  name: d\xe9mo\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not UTF-8 text"):
        load_config(tmp_path / "bad.yaml")
    for items, message in [(["train.iterations"], r"override 'train\.iterations': expected KEY=VALUE"),
                           (["train.lr=[1"], r"override 'train\.lr=\[1': value is not valid YAML"),
                           (["train.lr=1", "train.lr.x=1"], r"override 'train\.lr\.x=1': 'lr' is not a section"),
                           (["train.lr.x=1"], r"config key 'train\.lr': expected float, got dict"),
                           (["train.lr=-1"], r"config key 'train\.lr': -1\.0 is out of range")]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, items)
    (tmp_path / "empty_section.yaml").write_text("train:\n")  # an empty section takes overrides
    assert load_config(tmp_path / "empty_section.yaml", ["train.iterations=7"]).train.iterations == 7
