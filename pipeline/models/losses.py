"""Segmentation loss: cross-entropy with ignore 255 on "out", optional OHEM and Lovász-softmax, plus the aux loss.

    loss_fn = SegLoss(aux_weight=0.4, ohem=False, ohem_thresh=0.7, ohem_min_kept=10_000)
    loss_fn = SegLoss.from_config(cfg.train)     # what training uses: every loss key of TrainConfig
    loss = loss_fn(model(x), target)      # target: long [B, H, W], 255 = ignore
    weights = enet_class_weights(train_set.class_pixel_counts())   # optional per-class weights (train.class_weights)
    loss_fn = SegLoss(0.4, False, 0.7, 10_000, class_weights=weights)
    loss_fn = SegLoss(0.4, True, 0.7, 10_000, lovasz_weight=1.0, lovasz_stride=4)   # (OHEM) CE + 1.0 * Lovász

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
- Lovász-softmax (Berman et al., CVPR 2018; the authors' `lovasz_softmax` with classes="present", per_image=False):
  for each class present in the batch's labels, the pixels' errors |[y = c] - p_c| sorted in decreasing order are
  dotted with the gradient of the Jaccard loss along that order (the Lovász extension of 1 - IoU, so on one-hot
  predictions it equals 1 - IoU exactly); the loss is the mean over those classes. It is a surrogate for mIoU that
  weighs every present class equally, however few its pixels. It is added as `lovasz_weight * Lovász` to the main
  output's (OHEM) cross-entropy, unweighted by class (the classes are already equal in it), in float32.
  Sorting every pixel of a CamVid batch (8 x 240 x 320 x 11 classes) costs ~0.65 s on 2 cores, as much as the
  rest of a step, so it is computed on every `lovasz_stride`-th pixel of every `lovasz_stride`-th row (a fixed
  grid; random scale and crop move the content under it): stride 4 costs ~0.045 s and keeps the labels exact at
  the sampled pixels (no label downsampling, which would erase 1-2 px classes such as CamVid's pole).
- A batch with no labelled pixel gives a zero loss that still depends on the logits (no NaN, backward works).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import TrainConfig

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


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Lovász-softmax loss of logits [B, C, H, W] against target [B, H, W] over the classes present in target."""
    probs = logits.float().softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    labels = target.reshape(-1)
    valid = labels != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    probs, labels = probs[valid], labels[valid]
    per_class = []
    for c in labels.unique().tolist():
        is_c = (labels == c).float()
        errors, order = (is_c - probs[:, c]).abs().sort(descending=True)
        in_order = is_c[order]
        positives = in_order.sum()
        jaccard = 1.0 - (positives - in_order.cumsum(0)) / (positives + (1.0 - in_order).cumsum(0))
        jaccard[1:] = jaccard[1:] - jaccard[:-1]  # the Jaccard loss's gradient along the sorted errors
        per_class.append(torch.dot(errors, jaccard))
    return torch.stack(per_class).mean()


class SegLoss:
    """`loss(outputs, target)`: CE (or OHEM CE) [+ lovasz_weight * Lovász] on outputs["out"], + aux_weight * CE
    on outputs["aux"] if present."""

    def __init__(self, aux_weight: float, ohem: bool, ohem_thresh: float, ohem_min_kept: int,
                 ignore_index: int = IGNORE_INDEX, class_weights: Sequence[float] = (),
                 lovasz_weight: float = 0.0, lovasz_stride: int = 4):
        if aux_weight < 0:
            raise ValueError(f"train.aux_weight: {aux_weight} must be >= 0")
        if not 0.0 <= ohem_thresh <= 1.0:
            raise ValueError(f"train.ohem_thresh: {ohem_thresh} must be in [0, 1]")
        if ohem_min_kept < 1:
            raise ValueError(f"train.ohem_min_kept: {ohem_min_kept} must be >= 1")
        if any(not w > 0 for w in class_weights):
            raise ValueError(f"train.class_weights: {list(class_weights)} must all be > 0")
        if lovasz_weight < 0:
            raise ValueError(f"train.lovasz_weight: {lovasz_weight} must be >= 0")
        if lovasz_stride < 1:
            raise ValueError(f"train.lovasz_stride: {lovasz_stride} must be >= 1")
        self.aux_weight = aux_weight
        self.lovasz_weight = lovasz_weight
        self.lovasz_stride = lovasz_stride
        self.ohem = ohem
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = ohem_min_kept
        self.ignore_index = ignore_index
        self.class_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> "SegLoss":
        """The loss `cfg` (train.*) asks for: the training engine's and the benchmarks' single source."""
        return cls(cfg.aux_weight, cfg.ohem, cfg.ohem_thresh, cfg.ohem_min_kept, class_weights=cfg.class_weights,
                   lovasz_weight=cfg.lovasz_weight, lovasz_stride=cfg.lovasz_stride)

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
        if self.lovasz_weight > 0:
            s = self.lovasz_stride
            loss = loss + self.lovasz_weight * lovasz_softmax(logits[:, :, ::s, ::s], target[:, ::s, ::s],
                                                              self.ignore_index)
        if "aux" in outputs and self.aux_weight > 0:
            loss = loss + self.aux_weight * _plain_ce(outputs["aux"], target, self.ignore_index, weight)
        return loss
