"""Segmentation scores from one confusion matrix (torchvision references style: a single `bincount`).

    cm = confusion_matrix(pred, gt, num_classes)        # rows = truth, columns = prediction
    scores = scores_from_confusion(cm, class_names)     # mIoU, per-class IoU, pixel accuracy
    per_image = read_per_image(run_dir / "crf")         # {stem: foreground Jaccard} written by stages/evaluate.py
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.io import IGNORE


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = IGNORE) -> np.ndarray:
    """[num_classes, num_classes] int64 counts of (truth, prediction); truth == ignore_index is skipped.

    Predictions outside [0, num_classes) (e.g. an ignore value in a pseudo-label) are counted as background.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    gt = gt.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    keep = (gt != ignore_index) & (gt >= 0) & (gt < num_classes)
    gt, pred = gt[keep], pred[keep]
    pred = np.where((pred >= 0) & (pred < num_classes), pred, 0)
    return np.bincount(gt * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores_from_confusion(cm: np.ndarray, class_names: list[str] | tuple[str, ...] | None = None) -> dict:
    """mIoU over classes present in truth or prediction, per-class IoU (None where absent) and pixel accuracy."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(cm))]
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
    }


def foreground_jaccard(pred_fg: np.ndarray, gt_fg: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Intersection over union of two boolean foreground masks over `valid` pixels; 1.0 when both are empty."""
    if valid is not None:
        pred_fg, gt_fg = pred_fg & valid, gt_fg & valid
    union = np.logical_or(pred_fg, gt_fg).sum()
    return float(np.logical_and(pred_fg, gt_fg).sum() / union) if union else 1.0


PER_IMAGE_FILE = "per_image.csv"  # in a scored stage folder: stem,fg_jaccard (empty: not scored)


def iter_per_image(stage_dir: str | Path) -> Iterator[tuple[str, float | None]]:
    """(stem, foreground Jaccard) rows of `stage_dir/per_image.csv` (written by the evaluate stage), read lazily."""
    path = Path(stage_dir) / PER_IMAGE_FILE
    if not path.is_file():
        return
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            yield row["stem"], float(row["fg_jaccard"]) if row["fg_jaccard"] else None


def read_per_image(stage_dir: str | Path) -> dict[str, float | None]:
    """{stem: foreground Jaccard} of a scored stage folder ({} if it has no per_image.csv)."""
    return dict(iter_per_image(stage_dir))
