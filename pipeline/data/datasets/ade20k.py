"""ADE20K (SceneParsing): `ADEChallengeData2016/images/<split>/*.jpg` + `.../annotations/<split>/*.png`.

Splits are `training` / `validation`. Masks hold 0 = other/unlabelled and 1..150 = classes; train id = value - 1,
0 -> 255 (mmsegmentation's `reduce_zero_label`). Class names are not bundled: "class_1".."class_150".
`root` may be the folder containing ADEChallengeData2016 or that folder itself.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io import IGNORE
from pipeline.data.datasets.base import SegPairs, pair_by_stem, require_dir

NUM_CLASSES = 150


def reduce_zero_lut() -> np.ndarray:
    lut = np.full(256, IGNORE, np.uint8)
    lut[1:NUM_CLASSES + 1] = np.arange(NUM_CLASSES)
    return lut


def ade20k(root: str | Path, split: str, input_scale: float = 1.0) -> SegPairs:
    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    image_dir = require_dir(root / "images" / split, "ADE20K image")
    mask_dir = require_dir(root / "annotations" / split, "ADE20K annotation")
    files = pair_by_stem(list(image_dir.glob("*.jpg")), mask_dir, ".jpg", ".png")
    names = tuple(f"class_{i}" for i in range(1, NUM_CLASSES + 1))
    return SegPairs(files, reduce_zero_lut(), names, input_scale, where=str(image_dir))
