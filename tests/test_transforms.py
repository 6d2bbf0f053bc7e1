"""Transforms move image and mask together: known scales, flips, padding with 255 / mean colour."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.transforms import EvalTransform, PhotometricJitter, TrainTransform, normalize

MEAN, STD = (0.5, 0.25, 0.75), (0.5, 0.25, 0.125)


def denorm(x: torch.Tensor) -> np.ndarray:
    m, s = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return np.rint(((x * s + m) * 255).permute(1, 2, 0).numpy()).astype(np.int64)


def test_normalize_hand_computed():
    img = np.array([[[255, 0, 51]]], np.uint8)
    x = normalize(img, MEAN, STD)
    assert x.shape == (3, 1, 1) and x.dtype == torch.float32
    assert x[:, 0, 0].tolist() == pytest.approx([(1 - 0.5) / 0.5, (0 - 0.25) / 0.25, (0.2 - 0.75) / 0.125])


def test_crop_larger_than_image_pads_mask_255_and_image_to_zero():
    img = np.full((4, 4, 3), 200, np.uint8)
    mask = np.ones((4, 4), np.uint8)
    t = TrainTransform(crop=(8, 8), scale_range=(1.0, 1.0), flip=False, jitter=0.0, mean=MEAN, std=STD)
    x, y = t(img, mask, np.random.default_rng(0))
    assert x.shape == (3, 8, 8) and y.shape == (8, 8) and y.dtype == torch.int64
    assert (y == 255).sum() == 64 - 16 and (y == 1).sum() == 16
    pad = y == 255
    # padding is the mean colour rounded to uint8, so it normalises to within half a grey level of 0
    assert x[:, pad].abs().max() <= 0.5 / 255 / min(STD) + 1e-6
    assert torch.allclose(x[:, ~pad], normalize(img[:1, :1], MEAN, STD)[:, 0, 0].view(3, 1).expand(3, 16))


def test_scale_two_is_nearest_for_mask_and_keeps_alignment():
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 5, (6, 6)).astype(np.uint8)
    img = np.repeat(mask[..., None] * 40, 3, axis=2).astype(np.uint8)
    t = TrainTransform(crop=(12, 12), scale_range=(2.0, 2.0), flip=False, jitter=0.0, mean=MEAN, std=STD)
    _, y = t(img, mask, np.random.default_rng(3))
    assert np.array_equal(y.numpy(), np.kron(mask, np.ones((2, 2), np.uint8)))


def test_flip_moves_image_and_mask_together_and_is_seeded():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    mask = (img[..., 0] % 7).astype(np.uint8)
    t = TrainTransform(crop=(5, 7), scale_range=(1.0, 1.0), flip=True, jitter=0.0, mean=MEAN, std=STD)
    flips = 0
    for seed in range(20):
        x, y = t(img, mask, np.random.default_rng(seed))
        back = denorm(x)
        assert np.array_equal(back[..., 0] % 7, y.numpy())  # still aligned
        flipped = np.array_equal(y.numpy(), mask[:, ::-1])
        assert flipped or np.array_equal(y.numpy(), mask)
        flips += flipped
        x2, y2 = t(img, mask, np.random.default_rng(seed))
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert 3 <= flips <= 17  # p = 0.5 over 20 draws


def test_random_scale_and_crop_keep_labels_on_their_pixels():
    # mask is a function of the colour, so after scale/crop/flip every non-255 label must sit on its colour
    rng = np.random.default_rng(5)
    mask = np.kron(rng.integers(0, 4, (4, 4)), np.ones((16, 16), np.int64)).astype(np.uint8)
    colours = np.array([[10, 10, 10], [250, 10, 10], [10, 250, 10], [10, 10, 250]], np.uint8)
    img = colours[mask]
    t = TrainTransform(crop=(48, 48), scale_range=(0.5, 2.0), flip=True, jitter=0.0, mean=MEAN, std=STD)
    for seed in range(10):
        x, y = t(img, mask, np.random.default_rng(seed))
        back, y = denorm(x), y.numpy()
        labelled = y != 255
        err = np.abs(back[labelled] - colours[y[labelled]]).max(axis=1)
        # bilinear blends only along block borders; a misaligned mask would be wrong on whole blocks
        assert (err <= 2).mean() > 0.7


def test_jitter_changes_colour_not_mask_and_zero_is_identity():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    mask = rng.integers(0, 3, (6, 6)).astype(np.uint8)
    j_img, j_mask = PhotometricJitter(0.4)(img, mask, np.random.default_rng(0))
    assert j_mask is mask and j_img.dtype == np.uint8 and not np.array_equal(j_img, img)
    same, _ = PhotometricJitter(0.0)(img, mask, np.random.default_rng(0))
    assert np.array_equal(same, img)


def test_eval_transform_and_size_mismatch_error():
    img = np.zeros((3, 4, 3), np.uint8)
    x, y = EvalTransform(MEAN, STD)(img, np.zeros((3, 4), np.uint8))
    assert x.shape == (3, 3, 4) and y.shape == (3, 4)
    t = TrainTransform(crop=(2, 2), scale_range=(1.0, 1.0), flip=False, jitter=0.0)
    with pytest.raises(ValueError, match="differ in size"):
        t(img, np.zeros((2, 2), np.uint8), np.random.default_rng(0))
