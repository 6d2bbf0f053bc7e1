"""Segmentation loss: cross-entropy with ignore 255 on "out", optional OHEM, plus the weighted auxiliary loss.

    loss_fn = SegLoss(aux_weight=0.4, ohem=False, ohem_thresh=0.7, ohem_min_kept=10_000)
    loss = loss_fn(model(x), target)      # target: long [B, H, W], 255 = ignore
    weights = enet_class_weights(train_set.class_pixel_counts())   # optional per-class weights (train.class_weights)
    loss_fn = SegLoss(0.4, False, 0.7, 10_000, class_weights=weights)

- OHEM follows the common OhemCrossEntropy (HRNet/OCRNet code): among non-ignored pixels, take the softmax
  probability of the true class; the threshold is max(ohem_thresh, the ohem_min_kept-th smallest such
  probability); the loss is the mean cross-entropy of the pixels whose probability is below (or at) the threshold.
  So at least ohem_min_kept pixels (or all of them, if fewer) are always kept.
- Assumption: OHEM applies to the main output only; the auxiliary head uses plain cross-entropy (it is a
  regulariser, and mining on its coarser predictions would pick different pixels).
- Class weights (mmsegmentation's `class_weight`): each pixel's loss is multiplied by its true class's weight and
  the mean is taken over the weights (sum w_i l_i / sum w_i), which is PyTorch's weighted cross-entropy; OHEM picks
  its pixels as without weights, then takes that weighted mean over them; the auxiliary loss uses the same weights.
  `enet_class_weights` gives ENet's weighting (Paszke et al. 2016, also ERFNet's): w_c = 1 / ln(1.02 + p_c), p_c the
  class's share of the labelled training pixels, so rare classes (CamVid's pole, sign) weigh up to ~50, common ones ~3.
- A batch with no labelled pixel gives a zero loss that still depends on the logits (no NaN, backward works).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = 255  # pipeline.io.IGNORE


def enet_class_weights(pixel_counts: Sequence[int], c: float = 1.02) -> list[float]:
    """ENet's class weights 1 / ln(c + p) from per-class labelled pixel counts (p = share of all of them)."""
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"pixel counts {counts.tolist()} must be non-negative with a positive total")
    if c <= 1.0:
        raise ValueError(f"c = {c} must be > 1 (the weights are 1 / ln(c + p))")
    return [float(w) for w in 1.0 / np.log(c + counts / counts.sum())]


def _plain_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int,
              weight: torch.Tensor | None) -> torch.Tensor:
    if not (target != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index)


def _ohem_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, thresh: float,
             min_kept: int, weight: torch.Tensor | None) -> torch.Tensor:
    pixel_loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none").flatten()
    valid = (target != ignore_index).flatten()
    if not valid.any():
        return logits.sum() * 0.0
    pixel_loss = pixel_loss[valid]
    true_prob = torch.exp(-pixel_loss.detach())  # softmax probability of the true class
    sorted_prob = true_prob.sort().values
    kth = sorted_prob[min(min_kept, sorted_prob.numel()) - 1]
    threshold = torch.clamp(kth, min=thresh)
    kept = true_prob <= threshold
    if weight is None:
        return pixel_loss[kept].mean()
    pixel_weight = weight[target.flatten()[valid][kept]]
    return (pixel_loss[kept] * pixel_weight).sum() / pixel_weight.sum()


class SegLoss:
    """`loss(outputs, target)`: CE (or OHEM CE) on outputs["out"] + aux_weight * CE on outputs["aux"] if present."""

    def __init__(self, aux_weight: float, ohem: bool, ohem_thresh: float, ohem_min_kept: int,
                 ignore_index: int = IGNORE_INDEX, class_weights: Sequence[float] = ()):
        if aux_weight < 0:
            raise ValueError(f"train.aux_weight: {aux_weight} must be >= 0")
        if not 0.0 <= ohem_thresh <= 1.0:
            raise ValueError(f"train.ohem_thresh: {ohem_thresh} must be in [0, 1]")
        if ohem_min_kept < 1:
            raise ValueError(f"train.ohem_min_kept: {ohem_min_kept} must be >= 1")
        if any(not w > 0 for w in class_weights):
            raise ValueError(f"train.class_weights: {list(class_weights)} must all be > 0")
        self.aux_weight = aux_weight
        self.ohem = ohem
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = ohem_min_kept
        self.ignore_index = ignore_index
        self.class_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None

    def __call__(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        logits = outputs["out"]
        if target.ndim != 3 or target.shape[0] != logits.shape[0] or target.shape[-2:] != logits.shape[-2:]:
            raise ValueError(f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)} "
                             f"(expected [B, H, W])")
        target = target.long()
        weight = self.class_weights
        if weight is not None:
            if weight.numel() != logits.shape[1]:
                raise ValueError(f"train.class_weights: {weight.numel()} weights for {logits.shape[1]} classes")
            weight = weight.to(device=logits.device, dtype=logits.dtype)
        if self.ohem:
            loss = _ohem_ce(logits, target, self.ignore_index, self.ohem_thresh, self.ohem_min_kept, weight)
        else:
            loss = _plain_ce(logits, target, self.ignore_index, weight)
        if "aux" in outputs and self.aux_weight > 0:
            loss = loss + self.aux_weight * _plain_ce(outputs["aux"], target, self.ignore_index, weight)
        return loss
