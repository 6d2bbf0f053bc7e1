"""Bad files at scale: an image whose header is intact but whose pixels are not (a JPEG cut in half) neither stops
`coarse2fine run` with `data.on_bad_image: skip` nor `coarse2fine predict --skip-bad`; it is listed with its reason and
left out of every stage. Without them, the command stops with one line naming the file.

The run uses the hand-built data of tests/fake_run.py (4 images of 32 x 32 px, a width-8 network, 2 training steps,
no Ray) plus the damaged JPEG, so a whole run takes seconds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

import orchestrate
from bad_input_helpers import jpeg_bytes
from fake_run import STEMS, make_config, make_data, make_run
from pipeline.io import save_image


def data_with_a_cut_jpeg(tmp_path: Path) -> tuple[Path, Path]:
    """fake_run's data set plus images/cut.jpg (first half of a JPEG) in labels.csv; returns (config file, run dir)."""
    cfg = make_config(tmp_path)
    make_data(Path(cfg.data.root))
    data = jpeg_bytes()
    (Path(cfg.data.root) / "images" / "cut.jpg").write_bytes(data[: len(data) // 2])
    with open(Path(cfg.data.root) / "labels.csv", "a") as f:
        f.write("cut.jpg,square\n")
    config = tmp_path / "fake.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    return config, Path(cfg.run.root) / cfg.run.name


def test_run_stops_with_one_line_naming_the_cut_jpeg(tmp_path, capsys):
    config, run_dir = data_with_a_cut_jpeg(tmp_path)
    assert orchestrate.main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "labels.csv:6: " in err[0]
    assert "cut.jpg: cannot decode image (image file is truncated" in err[0]
    assert not (run_dir / "coarse").exists()  # found before any stage ran


def test_run_with_skip_lists_the_cut_jpeg_and_leaves_it_out_of_every_stage(tmp_path, capsys):
    config, run_dir = data_with_a_cut_jpeg(tmp_path)
    assert orchestrate.main(["run", "--config", str(config), "--set", "data.on_bad_image=skip"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 bad input(s)" in err and "cut.jpg: cannot decode image" in err
    run_json = json.loads((run_dir / "run.json").read_text())
    assert run_json["images"] == len(STEMS) and len(run_json["skipped"]) == 1
    assert "labels.csv:6: " in run_json["skipped"][0] and "cut.jpg: cannot decode image" in run_json["skipped"][0]
    assert json.loads((run_dir / "scores.json").read_text())["skipped"] == run_json["skipped"]
    for stage in ("coarse", "crf", "round1/train", "round1/predict", "round1/crf"):
        assert (run_dir / stage / "DONE").is_file(), stage
    for stage in ("coarse", "crf", "round1/predict", "round1/crf"):
        assert sorted(p.stem for p in (run_dir / stage).glob("*.png")) == sorted(STEMS), stage


def test_predict_skip_bad_flag(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path)
    photos, out = tmp_path / "photos", tmp_path / "seg"
    save_image(photos / "a.png", np.full((24, 40, 3), 90, np.uint8))
    data = jpeg_bytes()
    (photos / "b.jpg").write_bytes(data[: len(data) // 2])
    save_image(photos / "c.png", np.full((20, 20, 3), 30, np.uint8))
    argv = ["predict", "--run", str(run_dir), "--images", str(photos), "--out", str(out), "--device", "cpu"]
    assert orchestrate.main(argv) == 2  # default: stops at the first unreadable image, naming it
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b.jpg: cannot decode image" in err[0] and "--skip-bad" in err[0]
    assert orchestrate.main(argv + ["--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert f"1 of 3 images written to {out}" in captured.out and "1 unreadable, listed in" in captured.out
    assert "skipped: " in captured.err and "b.jpg: cannot decode image" in captured.err
    assert [e["file"] for e in json.loads((out / "skipped.json").read_text())] == [str(photos / "b.jpg")]
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "c.png"]
