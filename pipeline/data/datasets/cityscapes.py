"""Cityscapes: `leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png` + `gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`.

The 34 label ids map to the 19 train ids of cityscapesscripts' `labels.py` (others -> 255). With
`labels="labelTrainIds"` the `_gtFine_labelTrainIds.png` files (made by cityscapesscripts' createTrainIdLabelImgs)
are read as they are.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io import IGNORE
from pipeline.data.datasets.base import SegPairs, identity_lut, pair_by_stem, require_dir

CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
           "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
LABEL_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def label_id_lut() -> np.ndarray:
    lut = np.full(256, IGNORE, np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


def cityscapes(root: str | Path, split: str, labels: str = "labelIds", input_scale: float = 1.0) -> SegPairs:
    root = Path(root)
    image_dir = require_dir(root / "leftImg8bit" / split, "Cityscapes image")
    gt_dir = require_dir(root / "gtFine" / split, "Cityscapes gtFine")
    files = []
    for city in sorted(p for p in image_dir.iterdir() if p.is_dir()):
        images = list(city.glob("*_leftImg8bit.png"))
        files += pair_by_stem(images, gt_dir / city.name, "_leftImg8bit.png", f"_gtFine_{labels}.png")
    lut = label_id_lut() if labels == "labelIds" else identity_lut(len(CLASSES))
    return SegPairs(files, lut, CLASSES, input_scale, where=str(image_dir))
