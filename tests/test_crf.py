"""Dense-CRF pure functions on synthetic images whose right answer is known by construction."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.config import CRFConfig
from pipeline.crf import MIN_CLASS_PROB, active_classes, mask_to_probs, refine_mask, refine_probs
from pipeline.io import IGNORE

CFG = CRFConfig()


def two_region_image(h: int = 60, w: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A red ellipse on a blue background with mild pixel noise, and its true mask (1 = ellipse)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    truth = ((xx - w / 2) ** 2 / (0.3 * w) ** 2 + (yy - h / 2) ** 2 / (0.3 * h) ** 2 < 1).astype(np.uint8)
    image = np.where(truth[..., None] == 1, [200, 60, 50], [40, 90, 190]) + rng.normal(0, 8, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), truth


def salt_and_pepper(mask: np.ndarray, fraction: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flip = rng.random(mask.shape) < fraction
    noisy = mask.copy()
    noisy[flip] = 1 - noisy[flip]
    return noisy


def test_crf_cleans_salt_and_pepper_hard_mask():
    image, truth = two_region_image()
    noisy = salt_and_pepper(truth, 0.2)
    assert 0.78 < (noisy == truth).mean() < 0.82
    refined = refine_mask(image, noisy, [0, 1], CFG)
    assert refined.dtype == np.uint8 and refined.shape == truth.shape
    assert (refined == truth).mean() > 0.98


def test_crf_cleans_noisy_soft_map():
    image, truth = two_region_image(seed=3)
    noisy = salt_and_pepper(truth, 0.2, seed=4)
    p_fg = np.where(noisy == 1, 0.65, 0.35).astype(np.float32)  # weak, wrong on 20 % of pixels
    q = refine_probs(image, np.stack([1 - p_fg, p_fg]), CFG)
    assert q.shape == (2, *truth.shape) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    assert (q.argmax(0) == truth).mean() > 0.98


def test_crf_snaps_blurred_mask_to_colour_edge():
    h, w, edge = 40, 64, 32
    xx = np.broadcast_to(np.arange(w), (h, w))
    image = np.where(xx[..., None] < edge, [220, 200, 40], [30, 40, 160]).astype(np.uint8)
    p_right = (1 / (1 + np.exp(-(xx - 27) / 4.0))).astype(np.float32)  # blurred, boundary 5 px too far left
    probs = np.stack([1 - p_right, p_right])
    assert (probs.argmax(0) == 0).sum(axis=1).max() == 28  # raw boundary at x = 27.5
    q = refine_probs(image, probs, CFG)
    left_width = (q.argmax(0) == 0).sum(axis=1)
    assert (np.abs(left_width - edge) <= 1).all(), left_width


def test_absent_classes_never_appear():
    image, truth = two_region_image()
    k, h, w = 4, *truth.shape
    probs = np.zeros((k, h, w), np.float32)
    probs[0] = np.where(truth == 0, 0.6, 0.4)
    probs[2] = 1 - probs[0]  # classes 1 and 3 hold no mass anywhere
    probs[3, :2, :2] = 0.005  # below MIN_CLASS_PROB 0.01: left out too
    probs[0, :2, :2] -= 0.005
    assert active_classes(probs, MIN_CLASS_PROB).tolist() == [0, 2]
    q = refine_probs(image, probs, CFG)
    assert (q[1] == 0).all() and (q[3] == 0).all()
    assert set(np.unique(q.argmax(0)).tolist()) == {0, 2}
    assert (q.argmax(0) == np.where(truth == 1, 2, 0)).mean() > 0.98


def test_single_class_is_returned_everywhere():
    image, truth = two_region_image()
    probs = np.zeros((2, *truth.shape), np.float32)
    probs[1] = 1.0
    q = refine_probs(image, probs, CFG)
    assert (q[1] == 1).all() and (q[0] == 0).all()


def test_mask_to_probs_values():
    mask = np.array([[0, 3], [IGNORE, 3]], np.uint8)
    p = mask_to_probs(mask, [0, 3, 5], 0.7)
    np.testing.assert_allclose(p[:, 0, 0], [0.7, 0.15, 0.15])
    np.testing.assert_allclose(p[:, 0, 1], [0.15, 0.7, 0.15])
    np.testing.assert_allclose(p[:, 1, 0], [1 / 3] * 3, rtol=1e-6)
    with pytest.raises(ValueError, match=r"class ids \[7\]"):
        mask_to_probs(np.array([[7]], np.uint8), [0, 3], 0.7)


def test_ignore_keep_and_refine():
    image, truth = two_region_image()
    mask = truth.copy()
    mask[20:40, 10:30] = IGNORE  # hole straddling the ellipse's left edge
    kept = refine_mask(image, mask, [0, 1], CFG)
    assert (kept[20:40, 10:30] == IGNORE).all()
    assert (kept[mask != IGNORE] == truth[mask != IGNORE]).mean() > 0.99
    filled = refine_mask(image, mask, [0, 1], CFG, keep_ignore=False)
    assert IGNORE not in filled
    assert (filled[20:40, 10:30] == truth[20:40, 10:30]).mean() > 0.95  # colour decides the hole


def test_large_image_refined_downscaled_then_upsampled():
    image, truth = two_region_image(h=150, w=200, seed=5)
    noisy = salt_and_pepper(truth, 0.2, seed=6)
    cfg_small = dataclasses.replace(CFG, max_side=100)
    p_fg = np.where(noisy == 1, 0.65, 0.35).astype(np.float32)
    q = refine_probs(image, np.stack([1 - p_fg, p_fg]), cfg_small)
    assert q.shape == (2, 150, 200)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    assert (q.argmax(0) == truth).mean() > 0.97


def test_image_resized_to_soft_map_grid_and_bad_shapes_rejected():
    image, truth = two_region_image(h=120, w=160, seed=7)
    p = np.stack([1 - truth, truth]).astype(np.float32)[:, ::2, ::2] * 0.4 + 0.3
    assert refine_probs(image, p, CFG).shape == (2, 60, 80)
    with pytest.raises(ValueError, match="aspect ratio"):
        refine_probs(image, np.full((2, 60, 60), 0.5, np.float32), CFG)
    with pytest.raises(ValueError, match="uint8"):
        refine_probs(image.astype(np.float32), p, CFG)
    with pytest.raises(ValueError, match="non-negative"):
        refine_probs(image, -p, CFG)


def test_deterministic_and_accepts_read_only_arrays():
    image, truth = two_region_image()
    p_fg = np.where(salt_and_pepper(truth, 0.2) == 1, 0.65, 0.35).astype(np.float32)
    probs = np.stack([1 - p_fg, p_fg])
    image.setflags(write=False)
    probs.setflags(write=False)
    a, b = refine_probs(image, probs, CFG), refine_probs(image, probs, CFG)
    assert np.array_equal(a, b)
