"""BDD100K semantic segmentation: `images/10k/<split>/<stem>.jpg` + `labels/sem_seg/masks/<split>/<stem>.png`.

Masks already hold the 19 Cityscapes train ids (same class list), 255 = ignore.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.data.datasets.base import SegPairs, identity_lut, pair_by_stem, require_dir
from pipeline.data.datasets.cityscapes import CLASSES


def bdd100k(root: str | Path, split: str, input_scale: float = 1.0) -> SegPairs:
    root = Path(root)
    image_dir = require_dir(root / "images" / "10k" / split, "BDD100K image")
    mask_dir = require_dir(root / "labels" / "sem_seg" / "masks" / split, "BDD100K mask")
    files = pair_by_stem(list(image_dir.glob("*.jpg")), mask_dir, ".jpg", ".png")
    return SegPairs(files, identity_lut(len(CLASSES)), CLASSES, input_scale, where=str(image_dir))
