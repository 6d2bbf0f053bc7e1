"""A plain folder: `<root>/<split>/<images>/*.{jpg,png}` + `<root>/<split>/<masks>/<stem>.png` of class ids
0..num_classes-1 (other values are ignored). Class names are "0".."num_classes-1".
"""
from __future__ import annotations

from pathlib import Path

from pipeline.data.datasets.base import DatasetError, SegPairs, identity_lut, pair_by_stem, require_dir


def folder(root: str | Path, split: str, num_classes: int, images: str = "images", masks: str = "masks",
           input_scale: float = 1.0) -> SegPairs:
    if num_classes < 1:
        raise DatasetError("config key 'full.folder_classes': a folder data set needs the number of classes (>= 1)")
    base = Path(root) / split
    image_dir = require_dir(base / images, "image")
    mask_dir = require_dir(base / masks, "mask")
    files = []
    for suffix in (".jpg", ".jpeg", ".png"):
        files += pair_by_stem(list(image_dir.glob(f"*{suffix}")), mask_dir, suffix, ".png")
    names = tuple(str(i) for i in range(num_classes))
    return SegPairs(sorted(files), identity_lut(num_classes), names, input_scale, where=str(image_dir))
