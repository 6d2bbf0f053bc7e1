"""Coarse methods on the offline EfficientNet-Lite0 ImageNet weights: DDT co-localises a cat photo pasted into
varied textures, the ImageNet CAM covers the cat in scikit-image's `chelsea`, fine-tuned CAM on two pasted
classes, and the stage's group path (DDT statistics cached per label, deterministic on resume)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.transform import resize

from pipeline.coarse.cam import class_activation_map
from pipeline.coarse.ddt import ddt_statistics
from pipeline.config import load_config
from pipeline.io import load_mask, load_probs, save_image
from pipeline.metrics import foreground_jaccard
from pipeline.stage import Record, StageContext
from stages import coarse as coarse_stage

TEXTURES = ("brick", "grass", "gravel", "camera")  # grey scikit-image textures, tinted per image


def pasted_cats(folder: Path, h: int = 128, w: int = 160) -> tuple[list[Record], dict[str, np.ndarray]]:
    """The same cat photo (a crop of `chelsea`) pasted at seeded positions into four different textures."""
    rng = np.random.default_rng(0)
    cat = resize(skdata.chelsea()[10:290, 30:390], (64, 80), anti_aliasing=True)
    records, masks = [], {}
    for i, name in enumerate(TEXTURES):
        texture = resize(getattr(skdata, name)(), (h, w), anti_aliasing=True)
        image = np.stack([texture * rng.uniform(0.5, 1.0) for _ in range(3)], -1)
        y, x = int(rng.integers(0, h - 64)), int(rng.integers(0, w - 80))
        image[y:y + 64, x:x + 80] = cat
        mask = np.zeros((h, w), bool)
        mask[y:y + 64, x:x + 80] = True
        path = folder / f"cat{i}.png"
        save_image(path, (image * 255).astype(np.uint8))
        records.append(Record(stem=f"cat{i}", image=path, label=1))
        masks[f"cat{i}"] = mask
    return records, masks


def stage_maps(records, classes: tuple[str, ...], dst: Path, overrides: list[str]) -> dict[str, np.ndarray]:
    """The coarse stage (serial) on `records`: the foreground probability it stored for each."""
    cfg = load_config(overrides=overrides + ["ray.enabled=false"])
    ctx = StageContext(cfg=cfg, records=tuple(records), classes=classes, run_dir=dst.parent)
    assert coarse_stage.run(ctx, None, dst)["images"] == len(records)
    return {r.stem: load_probs(dst / f"{r.stem}.npz")[0][1] for r in records}


def test_ddt_statistics_hand_computed():
    # points spread along (1, 1) around mean (1, 2): the first component is +-(1, 1)/sqrt(2)
    d = np.array([[0.0, 1.0], [2.0, 3.0], [1.0, 2.0], [1.1, 1.9]])
    mean, pc = ddt_statistics(d)
    np.testing.assert_allclose(mean, [1.025, 1.975])
    np.testing.assert_allclose(np.abs(pc), [2**-0.5, 2**-0.5], atol=0.05)
    with pytest.raises(ValueError, match="at least 2"):
        ddt_statistics(np.ones((1, 3)))


@pytest.mark.slow
def test_ddt_finds_common_object(tmp_path):
    records, masks = pasted_cats(tmp_path)
    maps = stage_maps(records, ("background", "cat"), tmp_path / "ddt", ["coarse.method=ddt", "coarse.image_side=224"])
    scores = [foreground_jaccard(maps[s] >= 0.5, masks[s]) for s in masks]
    assert min(scores) > 0.45 and np.mean(scores) > 0.55, scores  # the cat is 25 % of each image
    assert all(maps[s][masks[s]].mean() > maps[s][~masks[s]].mean() + 0.3 for s in masks)
    assert (tmp_path / "ddt" / "_ddt" / "label_1.npz").is_file()  # group statistics kept for resuming


@pytest.mark.slow
def test_imagenet_cam_covers_chelsea(tmp_path):
    save_image(tmp_path / "chelsea.png", skdata.chelsea())
    records = [Record("chelsea", tmp_path / "chelsea.png", 1)]  # one label: the ImageNet top-1 class's CAM
    prob = stage_maps(records, ("background", "cat"), tmp_path / "cam",
                      ["coarse.method=cam", "coarse.image_side=224"])["chelsea"]
    assert prob.shape == (300, 451)
    box = np.zeros(prob.shape, bool)
    box[20:, 40:380] = True  # hand-drawn box around the cat's head and chest
    assert foreground_jaccard(prob >= 0.5, box) > 0.5
    assert (prob[80:, 400:] >= 0.5).mean() < 0.2  # the blurred room on the right is not the cat


def test_class_activation_map_is_weighted_relu_sum():
    head = torch.tensor([[[1.0, 0.0], [2.0, 0.0]], [[0.0, 1.0], [0.0, 3.0]]])  # 2 channels, 2x2
    cam = class_activation_map(head, torch.tensor([1.0, -1.0]))
    # raw [[1, -1], [2, -3]] -> ReLU [[1, 0], [2, 0]] -> / 2
    np.testing.assert_allclose(cam.numpy(), [[0.5, 0.0], [1.0, 0.0]])


@pytest.mark.slow
def test_stage_ddt_resume_is_deterministic(tmp_path, ray_cluster):
    records, masks = pasted_cats(tmp_path)
    cfg = load_config(overrides=["coarse.method=ddt", "coarse.image_side=160"])
    ctx = StageContext(cfg=cfg, records=tuple(records), classes=("background", "cat"), run_dir=tmp_path)
    dst = tmp_path / "coarse"
    summary = coarse_stage.run(ctx, None, dst)
    assert summary["images"] == 4
    first = {r.stem: load_probs(dst / f"{r.stem}.npz")[0] for r in records}
    for r in records[:2]:
        (dst / f"{r.stem}.png").unlink()
    summary = coarse_stage.run(ctx, None, dst)  # resumed: cached statistics, features only for the two pending
    assert summary["images"] == 2 and summary["skipped"] == 2
    for r in records:
        np.testing.assert_array_equal(load_probs(dst / f"{r.stem}.npz")[0], first[r.stem])
        mask = load_mask(dst / f"{r.stem}.png")
        assert set(np.unique(mask).tolist()) <= {0, 1, 255}
        assert foreground_jaccard(mask == 1, masks[r.stem], valid=mask != 255) > 0.5


@pytest.mark.slow
def test_fine_tuned_cam_localises_each_class(tmp_path):
    cats, cat_masks = pasted_cats(tmp_path)
    rng = np.random.default_rng(1)
    cup = resize(skdata.coffee()[20:380, 40:520], (64, 80), anti_aliasing=True)
    records, masks = [cats[0], cats[1]], {s: cat_masks[s] for s in ("cat0", "cat1")}
    for i, name in enumerate(TEXTURES[2:]):  # coffee cups on the other two textures
        image = np.stack([resize(getattr(skdata, name)(), (128, 160), anti_aliasing=True)] * 3, -1) * 0.8
        y, x = int(rng.integers(0, 64)), int(rng.integers(0, 80))
        image[y:y + 64, x:x + 80] = cup
        save_image(tmp_path / f"cup{i}.png", (image * 255).astype(np.uint8))
        records.append(Record(f"cup{i}", tmp_path / f"cup{i}.png", 2))
        masks[f"cup{i}"] = np.zeros((128, 160), bool)
        masks[f"cup{i}"][y:y + 64, x:x + 80] = True
    maps = stage_maps(records, ("background", "cat", "cup"), tmp_path / "cam",
                      ["coarse.method=cam", "coarse.image_side=224", "coarse.cam_epochs=15"])
    assert (tmp_path / "cam" / "_cam" / "classifier.pt").is_file()
    for stem, mask in masks.items():
        assert maps[stem][mask].mean() > maps[stem][~mask].mean() + 0.2, stem
        assert foreground_jaccard(maps[stem] >= 0.5, mask) > 0.4, stem
