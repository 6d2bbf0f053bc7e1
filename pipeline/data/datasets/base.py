"""Image/mask pair lists shared by every fully supervised data set.

    pairs = SegPairs(files, lut, class_names, input_scale=0.5)
    image, mask = pairs.load(0)            # uint8 [H, W, 3], uint8 [H, W] of train ids, 255 = ignore
    x, y = pairs.with_transform(t).get(0, rng)   # what pipeline.learn.engine.train_model consumes

Each data set module only lists its (image, mask) files and the lookup table from the stored mask values to train
ids (`lut[value] = train id or 255`). Missing folders, empty splits and images without masks raise `DatasetError`
naming the path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from pipeline.data import DatasetError
from pipeline.io import IGNORE, load_mask, read_image


def identity_lut(num_classes: int) -> np.ndarray:
    """Values 0..num_classes-1 map to themselves, every other value to 255."""
    lut = np.full(256, IGNORE, np.uint8)
    lut[:num_classes] = np.arange(num_classes)
    return lut


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} folder not found")
    return path


def pair_by_stem(images: list[Path], mask_dir: Path, image_suffix: str, mask_suffix: str) -> list[tuple[Path, Path]]:
    """Match `<stem><image_suffix>` to `mask_dir/<stem><mask_suffix>`; a missing mask is an error."""
    pairs = []
    for img in sorted(images):
        stem = img.name[: len(img.name) - len(image_suffix)]
        mask = mask_dir / f"{stem}{mask_suffix}"
        if not mask.is_file():
            raise DatasetError(f"{img}: no mask {mask}")
        pairs.append((img, mask))
    return pairs


class SegPairs:
    """(image, mask) files with a label lookup table; optional resize and training transform."""

    def __init__(self, files: Sequence[tuple[Path, Path]], lut: np.ndarray, class_names: Sequence[str],
                 input_scale: float = 1.0, transform: Callable | None = None, where: str = ""):
        if not files:
            raise DatasetError(f"{where or 'data set'}: no image/mask pairs found")
        self.files, self.lut, self.class_names = list(files), lut, tuple(class_names)
        self.input_scale, self.transform = input_scale, transform  # input_scale: resize factor at load time

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int, scale_mask: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Image (resized by input_scale) and train-id mask (resized with it unless scale_mask=False)."""
        image_path, mask_path = self.files[index]
        image, raw = read_image(image_path), load_mask(mask_path)
        if image.shape[:2] != raw.shape:
            raise DatasetError(f"{mask_path}: mask {raw.shape} does not match image {image.shape[:2]} ({image_path})")
        mask = self.lut[raw]
        if self.input_scale != 1.0:
            h, w = raw.shape
            size = (max(1, round(w * self.input_scale)), max(1, round(h * self.input_scale)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            if scale_mask:
                mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
        return image, mask

    def get(self, index: int, rng: np.random.Generator):
        if self.transform is None:
            raise DatasetError("SegPairs.get needs a transform (use with_transform)")
        return self.transform(*self.load(index), rng)

    def with_transform(self, transform: Callable) -> "SegPairs":
        return SegPairs(self.files, self.lut, self.class_names, self.input_scale, transform)

    def subset(self, count: int) -> "SegPairs":
        """The first `count` pairs (all when count is 0)."""
        files = self.files[:count] if count else self.files
        return SegPairs(files, self.lut, self.class_names, self.input_scale, self.transform)

    def class_pixel_counts(self) -> list[int]:
        """Labelled pixels per class over all masks at their stored size (255 and out-of-range values skipped)."""
        counts = np.zeros(self.num_classes, np.int64)
        for _, mask_path in self.files:
            ids = self.lut[load_mask(mask_path)].ravel()
            counts += np.bincount(ids[ids < self.num_classes], minlength=self.num_classes)
        return counts.tolist()

    def eval_pairs(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Images at full size with full-size masks (evaluation scores at the original resolution)."""
        for i in range(len(self)):
            image_path, mask_path = self.files[i]
            yield read_image(image_path), self.lut[load_mask(mask_path)]
