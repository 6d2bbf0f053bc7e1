"""Scores against a hand-computed confusion matrix; soft map -> pseudo-label thresholds against hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.labels import class_argmax, soft_to_mask
from pipeline.metrics import confusion_matrix, foreground_jaccard, scores_from_confusion


def test_confusion_matrix_and_scores_by_hand():
    gt = np.array([[0, 0, 1, 1], [2, 2, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 255, 2]])
    cm = confusion_matrix(pred, gt, 3)
    # truth 0: pred 0, 1; truth 1: pred 1, 1, 255 (-> background 0); truth 2: pred 2, 0; the 255 truth is skipped
    assert cm.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]
    s = scores_from_confusion(cm, ["bg", "a", "b"])
    # IoU = tp / (row + col - tp): bg 1/(2+3-1) = 1/4, a 2/(3+3-2) = 1/2, b 1/(2+1-1) = 1/2
    assert s["per_class_iou"] == pytest.approx({"bg": 0.25, "a": 0.5, "b": 0.5})
    assert s["miou"] == pytest.approx((0.25 + 0.5 + 0.5) / 3)
    assert s["pixel_acc"] == pytest.approx(4 / 7)


def test_absent_classes_do_not_count_in_miou():
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 1]), 4)
    s = scores_from_confusion(cm)
    assert s["miou"] == 1.0 and s["per_class_iou"]["2"] is None and s["per_class_iou"]["3"] is None


def test_foreground_jaccard_by_hand():
    pred = np.array([1, 1, 0, 0, 1], bool)
    gt = np.array([1, 0, 1, 0, 1], bool)
    assert foreground_jaccard(pred, gt) == pytest.approx(2 / 4)
    valid = np.array([1, 0, 1, 1, 1], bool)  # drop the false positive
    assert foreground_jaccard(pred, gt, valid) == pytest.approx(2 / 3)
    assert foreground_jaccard(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_soft_to_mask_thresholds_by_hand():
    p_fg = np.array([[0.95, 0.6, 0.59], [0.31, 0.3, 0.0]], np.float32)
    probs = np.stack([1 - p_fg, p_fg])
    mask = soft_to_mask(probs, np.array([0, 7]), fg_threshold=0.6, bg_threshold=0.31)
    assert mask.tolist() == [[7, 7, 255], [255, 0, 0]]


def test_soft_to_mask_picks_best_foreground_class_and_checks_input():
    probs = np.array([[[0.1]], [[0.3]], [[0.6]]], np.float32)  # bg 0.1, class 2: 0.3, class 5: 0.6
    assert soft_to_mask(probs, np.array([0, 2, 5]), 0.6, 0.3).tolist() == [[5]]
    with pytest.raises(ValueError, match="must not exceed"):
        soft_to_mask(probs, np.array([0, 2, 5]), 0.3, 0.6)
    with pytest.raises(ValueError, match="background"):
        soft_to_mask(probs, np.array([1, 2, 5]), 0.6, 0.3)


def test_class_argmax_by_hand():
    probs = np.array([[[0.7, 0.45]], [[0.3, 0.55]]], np.float32)
    assert class_argmax(probs, np.array([0, 3])).tolist() == [[0, 3]]
