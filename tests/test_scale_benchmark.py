"""benchmarks/scale.py's pieces that need no pipeline run: its images and its per-stage figures."""
from __future__ import annotations

import json

import numpy as np

from pipeline.io import load_mask, read_image
import scale  # benchmarks/scale.py, on sys.path through pytest's `pythonpath` (pyproject.toml)


def test_images_have_the_shape_binary_masks_and_are_cached(tmp_path):
    folder = scale.make_images(tmp_path / "data", 3, (40, 56), workers=1)
    images = sorted((folder / "images").iterdir())
    assert [p.name for p in images] == ["c000_000_disc.png", "c000_001_triangle.png", "c000_002_cross.png"]
    for image in images:
        assert read_image(image).shape == (40, 56, 3)
        assert set(np.unique(load_mask(folder / "masks" / image.name))) <= {0, 255}
    stamp = (folder / ".complete").stat().st_mtime_ns
    scale.make_images(folder, 3, (40, 56), workers=1)  # cached: nothing rewritten
    assert (folder / ".complete").stat().st_mtime_ns == stamp


def test_stage_figures(tmp_path):
    """images/s = N / seconds for per-image stages, steps/s for training; bytes on disk per image; the score."""
    for stage, summary in {"crf": {"seconds": 4.0}, "round1/train": {"seconds": 10.0, "iterations": 20}}.items():
        (tmp_path / stage).mkdir(parents=True)
        (tmp_path / stage / "manifest.json").write_text(json.dumps({"summary": summary}))
    (tmp_path / "crf" / "a.png").write_bytes(b"x" * 1000)
    (tmp_path / "crf" / "scores.json").write_text(json.dumps({"fg_jaccard": 0.5}))
    rate, disk, score = scale.stage_figures(tmp_path, n=2)
    assert rate == {"crf": 0.5, "round1/train": 2.0}
    manifest = len((tmp_path / "crf" / "manifest.json").read_bytes())
    scores = len((tmp_path / "crf" / "scores.json").read_bytes())
    assert disk["crf"] == round((1000 + manifest + scores) / 2)
    assert score == {"crf": 0.5}


def test_running_stage_is_the_one_with_a_manifest_and_no_done(tmp_path):
    assert scale._running_stage(tmp_path) == ""
    for stage in ("coarse", "crf"):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "manifest.json").write_text("{}")
    (tmp_path / "coarse" / "DONE").write_text("x\n")
    assert scale._running_stage(tmp_path) == "crf"
    (tmp_path / "crf" / "DONE").write_text("x\n")
    assert scale._running_stage(tmp_path) == ""
