"""Inference and evaluation: whole-image or sliding-window prediction, multi-scale + flip, mIoU over a data set.

    probs = predict_probs(model, image, scales=(0.75, 1.0, 1.25), flip=True, window=512, stride=341)  # [C, H, W]
    scores = evaluate(model, pairs, num_classes=19, class_names=names, window=512, stride=341)

The model contract: `model.mean`, `model.std` (per channel, [0, 1] units) normalise the image; `model(x)["out"]`
gives logits [N, C, h, w] (at input size, or smaller: they are upsampled bilinearly).

Test-time augmentation averages softmax probabilities (as mmsegmentation's aug_test): the image is resized by each
scale (bilinear), predicted whole or window by window, the probabilities resized back to the image size, and
(with `flip`) the horizontally flipped image is predicted too and flipped back. Sliding windows are `window` square
with step `stride` (default window * 2 / 3); the image (after scaling) is padded with zeros (= mean colour after
normalisation) up to one window, and overlapping window probabilities are averaged.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.io import IGNORE
from pipeline.metrics import confusion_matrix, foreground_jaccard, scores_from_confusion
from pipeline.data.transforms import normalize


def _window_starts(size: int, window: int, stride: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:  # the last window ends flush with the border
        starts.append(size - window)
    return starts


def _logits_to_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits = model(x)["out"]
    if logits.shape[-2:] != x.shape[-2:]:
        logits = F.interpolate(logits.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return torch.softmax(logits.float(), dim=1)


def _sliding_probs(model: nn.Module, x: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """Probabilities [1, C, H, W] from square windows; padded (zeros) up to one window where the image is smaller."""
    _, _, h, w = x.shape
    ph, pw = max(h, window), max(w, window)
    if (ph, pw) != (h, w):
        x = F.pad(x, (0, pw - w, 0, ph - h))
    total, count = None, torch.zeros(1, 1, ph, pw, device=x.device)
    for top in _window_starts(ph, window, stride):
        for left in _window_starts(pw, window, stride):
            p = _logits_to_probs(model, x[:, :, top:top + window, left:left + window])
            if total is None:
                total = torch.zeros(1, p.shape[1], ph, pw, device=x.device)
            total[:, :, top:top + window, left:left + window] += p
            count[:, :, top:top + window, left:left + window] += 1
    return (total / count)[:, :, :h, :w]


@torch.no_grad()
def predict_probs(model: nn.Module, image: np.ndarray, *, scales: Sequence[float] = (1.0,), flip: bool = False,
                  window: int = 0, stride: int = 0, device: str | torch.device = "cpu") -> np.ndarray:
    """Softmax probabilities float32 [C, H, W] at the image size, averaged over scales and flips."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"predict_probs: expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if window < 0 or stride < 0:
        raise ValueError(f"window ({window}) and stride ({stride}) must be >= 0")
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive, got {tuple(scales)}")
    stride = stride or max(1, window * 2 // 3)  # default: one third overlap
    h, w = image.shape[:2]
    was_training = model.training
    model.eval()
    x = normalize(image, model.mean, model.std)[None].to(device)
    total = None
    for s in scales:
        xs = x
        if s != 1.0:
            size = (max(1, int(round(h * s))), max(1, int(round(w * s))))
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        for flipped in ([False, True] if flip else [False]):
            xi = torch.flip(xs, dims=[3]) if flipped else xs
            p = _sliding_probs(model, xi, window, stride) if window > 0 else _logits_to_probs(model, xi)
            if flipped:
                p = torch.flip(p, dims=[3])
            if p.shape[-2:] != (h, w):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
            total = p if total is None else total + p
    model.train(was_training)
    probs = total[0] / (len(scales) * (2 if flip else 1))
    return probs.cpu().numpy().astype(np.float32)


def evaluate(model: nn.Module, pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int,
             class_names: Sequence[str] | None = None, *, scales: Sequence[float] = (1.0,), flip: bool = False,
             window: int = 0, stride: int = 0, device: str | torch.device = "cpu",
             input_scale: float = 1.0, labels: Sequence[int] | None = None) -> dict:
    """mIoU, per-class IoU and pixel accuracy of arg-max predictions over (image uint8, mask uint8) pairs.

    Mask values outside [0, num_classes) (255, or a data set's ignore id mapped to 255) are not scored.
    `input_scale` multiplies every scale (e.g. 0.5 = evaluate at half resolution, scored at full resolution).
    `labels` (one class id per pair, in order) adds "fg_jaccard": the mean over images of the foreground Jaccard of
    each image's label class (the weak pipeline's measure), and "images".
    """
    cm = np.zeros((num_classes, num_classes), np.int64)
    jaccards = []
    for i, (image, mask) in enumerate(pairs):
        probs = predict_probs(model, image, scales=[s * input_scale for s in scales], flip=flip,
                              window=window, stride=stride, device=device)
        pred = np.argmax(probs, axis=0)
        cm += confusion_matrix(pred, mask, num_classes)
        if labels is not None:
            jaccards.append(foreground_jaccard(pred == labels[i], mask == labels[i], mask != IGNORE))
    scores = scores_from_confusion(cm, list(class_names) if class_names is not None else None)
    if labels is not None:
        scores.update(fg_jaccard=float(np.mean(jaccards)) if jaccards else float("nan"), images=len(jaccards))
    scores["confusion"] = cm.tolist()
    return scores
