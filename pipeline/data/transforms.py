"""Training-time augmentation that moves an image and its mask together (torchvision-references style).

    t = TrainTransform(crop=(192, 192), scale_range=(0.5, 2.0), flip=True, jitter=0.2,
                       mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x, y = t(image_uint8_hwc, mask_uint8_hw, np.random.default_rng(0))   # float32 [3,h,w], int64 [h,w]

Every random choice is drawn from the `rng` argument, so a sample is a pure function of (image, mask, rng seed):
the training engine seeds one generator per sample, which makes runs (and resumed runs) reproducible.

Conventions / assumptions:
- `mean` and `std` are per-channel in [0, 1] units of pixel / 255 (the torchvision convention).
- Masks are resized with nearest neighbour; images bilinearly (PIL). When a crop window reaches past the image the
  mask is padded with 255 (ignore) and the image with the mean colour, so padding normalises to exactly 0.
- Photometric jitter: brightness, contrast and saturation factors drawn uniformly in [1 - j, 1 + j], applied in a
  random order (as torchvision ColorJitter, without hue, which is costly and rarely helps street scenes).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from pipeline.io import IGNORE

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision ImageNet statistics, [0, 1] units
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] with (x / 255 - mean) / std per channel."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"normalize: expected an RGB image [H, W, 3], got shape {image.shape}")
    x = torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1).float().div_(255.0)  # copy: inputs may be read-only
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (x - m) / s


def _resize(image: np.ndarray, mask: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))
    return image, mask


class RandomScale:
    """Rescale image and mask by one factor drawn uniformly from `scale_range`."""

    def __init__(self, scale_range: tuple[float, float]):
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
        self.lo, self.hi = lo, hi

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        s = rng.uniform(self.lo, self.hi)
        h, w = mask.shape
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        if (nh, nw) == (h, w):
            return image, mask
        return _resize(image, mask, nh, nw)


class RandomCrop:
    """Crop a (h, w) window at a random place; where the image is smaller, pad (mask 255, image `fill`)."""

    def __init__(self, size: tuple[int, int], fill: Sequence[int]):
        self.size = (int(size[0]), int(size[1]))
        self.fill = np.asarray(fill, np.uint8)

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        ch, cw = self.size
        h, w = mask.shape
        ph, pw = max(ch, h), max(cw, w)
        if (ph, pw) != (h, w):  # pad bottom/right so every crop offset stays valid
            big_img = np.empty((ph, pw, 3), np.uint8)
            big_img[:] = self.fill
            big_img[:h, :w] = image
            big_mask = np.full((ph, pw), IGNORE, np.uint8)
            big_mask[:h, :w] = mask
            image, mask, h, w = big_img, big_mask, ph, pw
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
        return image[top:top + ch, left:left + cw], mask[top:top + ch, left:left + cw]


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):  # p: probability of flipping
        self.p = p

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        if rng.random() < self.p:
            return image[:, ::-1], mask[:, ::-1]
        return image, mask


class PhotometricJitter:
    """Brightness, contrast and saturation, each by a factor in [1 - strength, 1 + strength], random order."""

    def __init__(self, strength: float):
        self.strength = strength

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        if self.strength <= 0:
            return image, mask
        x = image.astype(np.float32)
        factors = rng.uniform(1 - self.strength, 1 + self.strength, size=3)
        for op in rng.permutation(3):
            f = float(factors[op])
            grey = x @ np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma, as torchvision
            if op == 0:  # brightness: blend with black
                x = x * f
            elif op == 1:  # contrast: blend with the mean grey level
                x = (x - grey.mean()) * f + grey.mean()
            else:  # saturation: blend with the per-pixel grey image
                x = (x - grey[..., None]) * f + grey[..., None]
            x = np.clip(x, 0, 255)
        return np.rint(x).astype(np.uint8), mask


class TrainTransform:
    """scale -> crop (pad 255 / mean colour) -> flip -> jitter -> normalise; returns (float32 [3,h,w], int64 [h,w])."""

    def __init__(self, crop: tuple[int, int], scale_range: tuple[float, float], flip: bool, jitter: float,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = tuple(mean), tuple(std)
        fill = [int(round(m * 255)) for m in self.mean]  # normalises to ~0
        self.steps = [RandomScale(scale_range), RandomCrop(crop, fill)]
        if flip:
            self.steps.append(RandomHorizontalFlip())
        if jitter > 0:
            self.steps.append(PhotometricJitter(jitter))

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if image.shape[:2] != mask.shape:
            raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
        for step in self.steps:
            image, mask = step(image, mask, rng)
        return normalize(image, self.mean, self.std), torch.from_numpy(np.array(mask, np.int64))


class EvalTransform:
    """No augmentation: normalise the image, keep the mask at full size (int64)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize(image, self.mean, self.std), torch.from_numpy(np.array(mask, np.int64))
