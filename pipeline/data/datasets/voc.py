"""PASCAL VOC 2012: `JPEGImages/<id>.jpg`, `SegmentationClass[Aug]/<id>.png` (palette PNGs: the pixel index is the
class, 255 = boundary/ignore), split lists `ImageSets/Segmentation/<split>.txt` (train, val, trainval; with
`aug=True` a `train_aug.txt` there or in SegmentationClassAug/ is used when split is `train_aug`).
`root` is the VOC2012 folder (the one holding JPEGImages).
"""
from __future__ import annotations

from pathlib import Path

from pipeline.data.datasets.base import DatasetError, SegPairs, identity_lut, require_dir

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
           "tvmonitor")


def voc(root: str | Path, split: str, aug: bool = False, input_scale: float = 1.0) -> SegPairs:
    root = Path(root)
    image_dir = require_dir(root / "JPEGImages", "VOC JPEGImages")
    mask_dir = require_dir(root / ("SegmentationClassAug" if aug else "SegmentationClass"), "VOC mask")
    candidates = [root / "ImageSets" / "Segmentation" / f"{split}.txt", mask_dir / f"{split}.txt"]
    list_file = next((p for p in candidates if p.is_file()), None)
    if list_file is None:
        raise DatasetError(f"{candidates[0]}: VOC split list not found")
    files = []
    for line in list_file.read_text().split():
        image, mask = image_dir / f"{line}.jpg", mask_dir / f"{line}.png"
        if not image.is_file() or not mask.is_file():
            raise DatasetError(f"{list_file}: {line} has no {image if not image.is_file() else mask}")
        files.append((image, mask))
    return SegPairs(files, identity_lut(len(CLASSES)), CLASSES, input_scale, where=str(list_file))
