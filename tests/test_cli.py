"""The command line: errors exit 2 with one line naming the key or file; `evaluate` scores any folder of masks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import orchestrate
from pipeline.config import RENAMED_KEYS, DataConfig
from pipeline.data.demo import ensure_demo
from pipeline.metrics import read_per_image
from pipeline.io import load_mask, save_mask

ROOT = Path(__file__).resolve().parent.parent


def test_unknown_config_key_exits_2_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {ROOT / 'configs' / 'base.yaml'}\ntrain:\n  iterashuns: 5\n")
    assert orchestrate.main(["run", "--config", str(bad)]) == 2
    assert "'train.iterashuns'" in capsys.readouterr().err
    assert orchestrate.main(["run", "--config", str(ROOT / "configs" / "demo.yaml"), "--set", "crf.sxy=3"]) == 2
    assert "'crf.sxy'" in capsys.readouterr().err


@pytest.mark.parametrize("old", sorted(RENAMED_KEYS))
def test_old_key_exits_2_with_one_line_naming_the_new_one(tmp_path, capsys, old):
    section, key = old.split(".")
    config = tmp_path / "old.yaml"
    config.write_text(f"base: {ROOT / 'configs' / 'base.yaml'}\n{section}:\n  {key}: 1\n")
    for argv in (["run", "--config", str(config)], ["full", "--config", str(ROOT / "configs" / "base.yaml"),
                                                     "--set", f"{old}=1"]):
        assert orchestrate.main(argv) == 2
        assert capsys.readouterr().err == f"error: config key '{old}': {RENAMED_KEYS[old]}\n"


def test_labels_file_naming_a_missing_image_exits_2_naming_it(tmp_path, capsys):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "labels.csv").write_text("image,label\nghost.jpg,cat\n")
    code = orchestrate.main(["run", "--config", str(ROOT / "configs" / "base.yaml"), "--set",
                             f"data.root={tmp_path / 'data'}", "--set", "data.classes=", "--set",
                             f"run.root={tmp_path / 'runs'}", "--set", "ray.enabled=false"])
    err = capsys.readouterr().err
    assert code == 2 and "ghost.jpg" in err and "not found" in err


def test_evaluate_scores_a_folder_of_masks(tmp_path, capsys):
    data = ensure_demo(DataConfig(kind="demo", root=str(tmp_path / "data"), demo_images=6))
    pred = tmp_path / "pred"
    pred.mkdir()
    for gt in sorted((data / "masks").glob("*.png")):  # perfect masks, except one image predicted all background
        mask = load_mask(gt)
        save_mask(pred / gt.name, np.zeros_like(mask) if gt.name.startswith("000") else mask)
    code = orchestrate.main(["evaluate", "--config", str(ROOT / "configs" / "demo.yaml"), "--pred", str(pred),
                             "--set", f"data.root={data}", "--serial"])
    assert code == 0
    scores = json.loads((pred / "scores.json").read_text())
    assert scores["scored"] == 6
    assert scores["fg_jaccard"] == pytest.approx(5 / 6)  # five perfect images, one with Jaccard 0
    assert min(read_per_image(pred).values()) == 0.0 and len(read_per_image(pred)) == 6
    assert "fg Jaccard" in capsys.readouterr().out


def test_console_script_and_module_are_the_same_cli():
    out = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "run" in out.stdout and "evaluate" in out.stdout
    script = Path(sys.executable).parent / "coarse2fine"
    assert script.is_file(), "pip install -e . should install the coarse2fine console script"
    out2 = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out2.stdout.replace("orchestrate.py", "coarse2fine") == out.stdout.replace("orchestrate.py", "coarse2fine")
