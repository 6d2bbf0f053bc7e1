"""The commands that use a finished run: status, predict, export, compare; and evaluate's best/worst gallery.

All work on the hand-built run of tests/fake_run.py (4 images of 32 x 32 px, a width-8 network), without Ray.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import orchestrate
from fake_run import STEMS, make_run
from pipeline.commands.gallery import best_and_worst
from pipeline.io import load_mask, save_image
from pipeline.metrics import read_per_image


def test_best_and_worst_by_hand():
    scores = {"a": 0.9, "b": 0.2, "c": 0.6, "d": 0.4, "e": None, "f": 0.6}
    assert best_and_worst(scores, 2) == (["a", "c"], ["b", "d"])  # tie c/f broken by name; e has no score
    assert best_and_worst(scores, 3) == (["a", "c", "f"], ["b", "d"])  # never both best and worst
    assert best_and_worst(scores, 0) == ([], [])


def test_status_prints_every_stage_done(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path)
    assert orchestrate.main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    for stage in ("coarse", "crf", "round1/train", "round1/predict", "round1/crf"):
        line = next(line for line in out.splitlines() if line.split() and line.split()[0] == stage)
        assert "done" in line, line
    assert orchestrate.main(["status", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_predict_writes_masks_and_overlays_and_names_bad_input(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path)
    photos = tmp_path / "photos"
    rng = np.random.default_rng(1)
    for name in ("x.png", "y.jpg"):
        save_image(photos / name, rng.integers(0, 255, (24, 40, 3)).astype(np.uint8))
    out = tmp_path / "seg"
    argv = ["predict", "--run", str(run_dir), "--images", str(photos), "--out", str(out), "--scales", "0.5,1",
            "--flip", "--device", "cpu"]
    assert orchestrate.main(argv) == 0
    assert "2 of 2 images written" in capsys.readouterr().out
    for stem in ("x", "y"):
        mask = load_mask(out / f"{stem}.png")
        assert mask.shape == (24, 40) and mask.max() <= 2  # classes of the fake run: 0, 1, 2
        with Image.open(out / f"{stem}_overlay.jpg") as im:
            assert im.size == (40, 24)
    (tmp_path / "empty").mkdir()
    assert orchestrate.main(argv[:4] + [str(tmp_path / "empty")] + argv[5:]) == 2
    assert "no images" in capsys.readouterr().err
    assert orchestrate.main(argv[:2] + [str(tmp_path)] + argv[3:]) == 2  # not a run directory
    assert "run.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: a negative scale is refused before anything runs
        orchestrate.main(argv[:8] + ["-1"] + argv[9:])


def test_export_writes_checked_files(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path)
    out = tmp_path / "export"
    assert orchestrate.main(["export", "--run", str(run_dir), "--out", str(out), "--size", "32", "32"]) == 0
    assert (out / "model.ts").stat().st_size > 0 and (out / "model.onnx").stat().st_size > 0
    assert "checked against PyTorch" in capsys.readouterr().out
    assert orchestrate.main(["export", "--run", str(run_dir), "--round", "3", "--out", str(out),
                             "--size", "32", "32"]) == 2  # the fake run has only round 1
    assert "round3" in capsys.readouterr().err


def test_compare_trains_the_full_reference_and_writes_the_report(tmp_path, capsys):
    run_dir, cfg = make_run(tmp_path)
    config = tmp_path / "fake.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    assert orchestrate.main(["compare", "--config", str(config), "--full-iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert "weak mIoU" in out and "full mIoU" in out
    assert (run_dir / "compare" / "report.html").is_file()
    assert (run_dir / "full_reference" / "DONE").is_file() and (run_dir / "compare" / "DONE").is_file()
    full = json.loads((run_dir / "compare" / "full_metrics.json").read_text())
    assert full["iterations"] == 2 and 0.0 <= full["miou"] <= 1.0
    assert orchestrate.main(["compare", "--config", str(config), "--full-iterations", "0"]) == 2
    assert "train.iterations" in capsys.readouterr().err  # checked as the override it is


def test_evaluate_gallery_draws_best_and_worst(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path)
    config = tmp_path / "fake.yaml"
    config.write_text(yaml.safe_dump(json.loads((run_dir / "run.json").read_text())["config"]))
    out = tmp_path / "eval"
    assert orchestrate.main(["evaluate", "--config", str(config), "--pred", str(run_dir / "crf"), "--out", str(out),
                             "--serial", "--gallery", "1"]) == 0
    assert "gallery: 2 images" in capsys.readouterr().out
    per_image = read_per_image(out)
    best, worst = best_and_worst(per_image, 1)
    assert sorted(per_image) == sorted(STEMS) and best != worst
    for name in ("gallery_best_1.png", "gallery_worst_1.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 4 * im.size[1] / 2  # one row of four panels
    assert not (out / "gallery_best_2.png").exists()
