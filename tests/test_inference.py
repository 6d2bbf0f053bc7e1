"""Inference: sliding window == whole image for a pointwise model, flip averaging, scales, metrics vs torchmetrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.learn.inference import _window_starts, evaluate, predict_probs


class PointwiseNet(nn.Module):
    """Per-pixel 1x1 conv: its output at a pixel depends only on that pixel's colour."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.mean, self.std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
        self.head = nn.Conv2d(3, num_classes, 1)

    def forward(self, x):
        return {"out": self.head(x)}


class LeftBiasedNet(nn.Module):
    """Two classes; logit of class 0 falls from left to right across the input (position-dependent)."""

    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def forward(self, x):
        n, _, h, w = x.shape
        ramp = torch.linspace(2, -2, w).view(1, 1, 1, w).expand(n, 1, h, w)
        return {"out": torch.cat([ramp, torch.zeros_like(ramp)], dim=1)}


class ColourIsClassNet(nn.Module):
    """Predicts class = red value of the pixel (one-hot logits), so predictions can be planted in an image."""

    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        red = torch.round(x[:, 0] * 255).long().clamp(0, self.num_classes - 1)
        return {"out": 20.0 * nn.functional.one_hot(red, self.num_classes).permute(0, 3, 1, 2).float()}


def test_window_starts_cover_the_border():
    assert _window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert _window_starts(9, 4, 2) == [0, 2, 4, 5]
    assert _window_starts(3, 4, 2) == [0]


def test_sliding_window_equals_whole_image_for_pointwise_model():
    img = np.random.default_rng(0).integers(0, 256, (13, 21, 3)).astype(np.uint8)
    model = PointwiseNet()
    whole = predict_probs(model, img)
    assert whole.shape == (4, 13, 21) and whole.dtype == np.float32
    assert np.allclose(whole.sum(0), 1.0, atol=1e-5)
    for window, stride in [(8, 5), (8, 0), (32, 0)]:  # (32: smaller image is padded to one window)
        assert np.allclose(predict_probs(model, img, window=window, stride=stride), whole, atol=1e-6)
    assert np.allclose(predict_probs(model, img, flip=True), whole, atol=1e-6)  # pointwise: flip-invariant


def test_flip_averaging_makes_a_biased_model_symmetric():
    img = np.zeros((4, 9, 3), np.uint8)
    plain = predict_probs(LeftBiasedNet(), img)
    assert plain[0, 0, 0] > 0.85 and plain[0, 0, -1] < 0.15
    both = predict_probs(LeftBiasedNet(), img, flip=True)
    assert np.allclose(both, 0.5, atol=1e-6)  # p(x) and p(w-1-x) average to exactly 1/2 here
    # sliding windows restart the ramp in every window: the first window's left column is confident again
    win = predict_probs(LeftBiasedNet(), img, window=4, stride=4)
    assert win[0, 0, 4] == pytest.approx(plain[0, 0, 0], abs=1e-6)


def test_multiscale_on_constant_regions_and_size():
    img = np.zeros((16, 24, 3), np.uint8)
    img[:, 12:] = 200
    model = PointwiseNet()
    single = predict_probs(model, img)
    multi = predict_probs(model, img, scales=(0.5, 1.0, 1.5), flip=True)
    assert multi.shape == single.shape
    interior = np.r_[0:9, 15:24]  # away from the colour edge the scales agree
    assert np.allclose(multi[:, :, interior], single[:, :, interior], atol=1e-5)
    with pytest.raises(ValueError, match="scales"):
        predict_probs(model, img, scales=(0.0,))


def test_evaluate_matches_torchmetrics_on_random_inputs():
    torchmetrics = pytest.importorskip("torchmetrics")
    rng = np.random.default_rng(0)
    num_classes = 5
    pairs, preds, gts = [], [], []
    for _ in range(3):
        pred = rng.integers(0, num_classes, (12, 17)).astype(np.uint8)
        gt = np.where(rng.random((12, 17)) < 0.6, pred, rng.integers(0, num_classes, (12, 17))).astype(np.uint8)
        gt[rng.random((12, 17)) < 0.1] = 255
        img = np.zeros((12, 17, 3), np.uint8)
        img[..., 0] = pred
        pairs.append((img, gt))
        preds.append(torch.from_numpy(pred).long())
        gts.append(torch.from_numpy(gt).long())
    scores = evaluate(ColourIsClassNet(num_classes), pairs, num_classes, window=8, stride=6, flip=True)
    p, g = torch.stack(preds), torch.stack(gts)
    iou = torchmetrics.classification.MulticlassJaccardIndex(num_classes, average=None, ignore_index=255)(p, g)
    acc = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro", ignore_index=255)(p, g)
    assert [scores["per_class_iou"][str(c)] for c in range(num_classes)] == pytest.approx(iou.tolist(), abs=1e-6)
    assert scores["miou"] == pytest.approx(float(iou.mean()), abs=1e-6)
    assert scores["pixel_acc"] == pytest.approx(float(acc), abs=1e-6)
