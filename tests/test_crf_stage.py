"""The `crf` stage: per-image files in and out, serial == Ray byte for byte, resumable, copy-through, errors."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Config, CRFConfig, RayConfig
from pipeline.io import IGNORE, load_mask, load_probs, save_image, save_mask, save_probs
from pipeline.stage import Record, StageContext
from stages import crf as crf_stage

CLASSES = ("background", "cat", "dog")


def make_inputs(root: Path, n: int = 6, h: int = 48, w: int = 64) -> tuple[list[Record], list[np.ndarray], Path]:
    """n images (a coloured ellipse on another colour), their noisy coarse soft maps + pseudo-labels in root/coarse."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    src = root / "coarse"
    records, truths = [], []
    for i in range(n):
        label = 1 + i % 2
        cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
        truth = np.where((xx - cx) ** 2 / (0.25 * w) ** 2 + (yy - cy) ** 2 / (0.25 * h) ** 2 < 1, label, 0)
        fg_colour, bg_colour = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        while np.abs(fg_colour - bg_colour).sum() < 200:
            bg_colour = rng.integers(0, 256, 3)
        image = np.where(truth[..., None] > 0, fg_colour, bg_colour) + rng.normal(0, 6, (h, w, 3))
        save_image(root / "images" / f"im{i}.png", np.clip(image, 0, 255).astype(np.uint8))
        flip = rng.random((h, w)) < 0.2
        p_fg = np.where((truth > 0) ^ flip, 0.65, 0.35).astype(np.float32)
        stem = f"im{i}"
        if i == n - 1:  # the last image has only a hard pseudo-label (no soft map)
            save_mask(src / f"{stem}.png", np.where(p_fg > 0.5, label, 0).astype(np.uint8))
        else:
            save_probs(src / f"{stem}.npz", np.stack([1 - p_fg, p_fg]), [0, label])
            pseudo = np.where(p_fg > 0.5, label, 0).astype(np.uint8)
            pseudo[:4, :4] = IGNORE  # an uncertain corner the CRF stage must keep ignored
            save_mask(src / f"{stem}.png", pseudo)
        records.append(Record(stem=stem, image=root / "images" / f"im{i}.png", label=label))
        truths.append(truth.astype(np.uint8))
    return records, truths, src


def context(records: list[Record], root: Path, ray_enabled: bool, **crf: object) -> StageContext:
    cfg = Config(crf=dataclasses.replace(CRFConfig(), **crf), ray=RayConfig(enabled=ray_enabled))
    return StageContext(cfg=cfg, records=tuple(records), classes=CLASSES, run_dir=root)


def test_stage_refines_files_and_keeps_ignore(tmp_path):
    records, truths, src = make_inputs(tmp_path)
    dst = tmp_path / "coarse_crf"
    summary = crf_stage.run(context(records, tmp_path, ray_enabled=False), src, dst)
    assert summary["images"] == 6 and summary["skipped"] == 0
    assert summary["tasks_per_node"] == {"local": 6} or sum(summary["tasks_per_node"].values()) == 6
    assert 0.1 < summary["changed_fraction"] < 0.3  # the CRF undid most of the 20 % flips
    for rec, truth in zip(records, truths):
        mask = load_mask(dst / f"{rec.stem}.png")
        probs, class_ids = load_probs(dst / f"{rec.stem}.npz")
        assert class_ids.tolist() == [0, rec.label] and probs.shape == (2, *truth.shape)
        if rec.stem != "im5":
            assert (mask[:4, :4] == IGNORE).all()
        valid = mask != IGNORE
        assert (mask[valid] == truth[valid]).mean() > 0.97
        assert set(np.unique(mask[valid]).tolist()) <= {0, rec.label}


def test_serial_and_ray_give_identical_files(tmp_path, ray_cluster):
    records, _, src = make_inputs(tmp_path)
    serial, parallel = tmp_path / "serial", tmp_path / "ray"
    crf_stage.run(context(records, tmp_path, ray_enabled=False), src, serial)
    summary = crf_stage.run(context(records, tmp_path, ray_enabled=True), src, parallel)
    assert summary["images"] == 6 and "local" not in summary["tasks_per_node"]  # really ran as Ray tasks
    for rec in records:
        for suffix in (".png", ".npz"):
            a = (serial / f"{rec.stem}{suffix}").read_bytes()
            assert a == (parallel / f"{rec.stem}{suffix}").read_bytes(), f"{rec.stem}{suffix} differs"


def test_stage_resumes_per_image(tmp_path):
    records, _, src = make_inputs(tmp_path, n=4)
    dst = tmp_path / "out"
    ctx = context(records, tmp_path, ray_enabled=False)
    crf_stage.run(ctx, src, dst)
    first = (dst / "im1.png").read_bytes()
    (dst / "im1.png").unlink()  # as if the run died after writing im1.npz but before im1.png
    (dst / "im2.png").write_bytes(b"sentinel")  # finished images are not touched again
    summary = crf_stage.run(ctx, src, dst)
    assert summary["images"] == 1 and summary["skipped"] == 3
    assert (dst / "im1.png").read_bytes() == first
    assert (dst / "im2.png").read_bytes() == b"sentinel"


def test_disabled_copies_through(tmp_path):
    records, _, src = make_inputs(tmp_path, n=3)
    dst = tmp_path / "out"
    crf_stage.run(context(records, tmp_path, ray_enabled=False, enabled=False), src, dst)
    for rec in records:
        assert (dst / f"{rec.stem}.png").read_bytes() == (src / f"{rec.stem}.png").read_bytes()
        if (src / f"{rec.stem}.npz").exists():
            assert (dst / f"{rec.stem}.npz").read_bytes() == (src / f"{rec.stem}.npz").read_bytes()
    assert not (dst / "im2.npz").exists()  # the hard-mask-only image has no soft map to copy


def test_missing_source_raises_naming_file(tmp_path):
    records, _, src = make_inputs(tmp_path, n=2)
    (src / "im0.npz").unlink()
    (src / "im0.png").unlink()
    with pytest.raises(FileNotFoundError, match="im0.npz"):
        crf_stage.run(context(records, tmp_path, ray_enabled=False), src, tmp_path / "out")
    (src / "im1.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"im1\.npz: cannot read soft map"):
        crf_stage.run(context(records[1:], tmp_path, ray_enabled=False), src, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        crf_stage.run(context(records, tmp_path, ray_enabled=False), tmp_path / "nope", tmp_path / "out")
