"""From soft maps to pseudo-labels: which pixels get a class, which are background, which are ignored (255)."""
from __future__ import annotations

import numpy as np

from pipeline.io import IGNORE


def soft_to_mask(probs: np.ndarray, class_ids: np.ndarray, fg_threshold: float, bg_threshold: float) -> np.ndarray:
    """Threshold a soft map [K, H, W] over class_ids (which must include 0 = background) into a pseudo-label.

    Foreground probability is 1 - p(background). Pixels with fg >= fg_threshold take the most probable non-background
    class; pixels with fg < bg_threshold are background; those in between are ignore (255), so training skips them.
    """
    class_ids = np.asarray(class_ids)
    if bg_threshold > fg_threshold:
        raise ValueError(f"bg_threshold {bg_threshold} must not exceed fg_threshold {fg_threshold}")
    bg_rows = np.flatnonzero(class_ids == 0)
    if len(bg_rows) != 1:
        raise ValueError(f"soft map must hold background (class 0) exactly once, got class ids {class_ids.tolist()}")
    fg_prob = 1.0 - probs[bg_rows[0]]
    fg_rows = np.flatnonzero(class_ids != 0)
    mask = np.full(probs.shape[1:], IGNORE, np.uint8)
    if len(fg_rows):
        best = class_ids[fg_rows][np.argmax(probs[fg_rows], axis=0)]
        mask[fg_prob >= fg_threshold] = best[fg_prob >= fg_threshold]
    mask[fg_prob < bg_threshold] = 0
    return mask


def class_argmax(probs: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """The class id of the most probable row of a soft map [K, H, W] over `class_ids`, per pixel (uint8)."""
    return np.asarray(class_ids)[np.argmax(probs, axis=0)].astype(np.uint8)
