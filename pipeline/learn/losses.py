"""Segmentation loss: cross-entropy with ignore 255 on "out" (optionally OHEM), plus the auxiliary head's loss.

    loss_fn = SegLoss.from_config(cfg.train)     # what training uses
    loss = loss_fn(model(x), target)             # target: long [B, H, W], 255 = ignore

- OHEM follows the common OhemCrossEntropy (HRNet/OCRNet code): among non-ignored pixels, take the softmax
  probability of the true class; the threshold is max(ohem_thresh (OHEM_THRESH in training), the
  ohem_min_kept-th smallest such probability); the loss is the mean cross-entropy of the pixels whose probability
  is below (or at) the threshold. So at least ohem_min_kept pixels (or all of them, if fewer) are always kept.
- Assumption: OHEM applies to the main output only; the auxiliary head uses plain cross-entropy (it is a
  regulariser, and mining on its coarser predictions would pick different pixels).
- A batch with no labelled pixel gives a zero loss that still depends on the logits (no NaN, backward works).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.config import TrainConfig

IGNORE_INDEX = 255  # pipeline.io.IGNORE
# Fixed to the one value every config used (they were config keys until no config varied them):
AUX_WEIGHT = 0.4  # weight of the auxiliary head's loss (PSPNet's)
OHEM_THRESH = 0.7  # OHEM keeps the pixels whose true-class probability is below this (HRNet/OCRNet's)


def _plain_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    if not (target != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def _ohem_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, thresh: float,
             min_kept: int) -> torch.Tensor:
    pixel_loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none").flatten()
    valid = (target != ignore_index).flatten()
    if not valid.any():
        return logits.sum() * 0.0
    pixel_loss = pixel_loss[valid]
    true_prob = torch.exp(-pixel_loss.detach())  # softmax probability of the true class
    sorted_prob = true_prob.sort().values
    kth = sorted_prob[min(min_kept, sorted_prob.numel()) - 1]
    threshold = torch.clamp(kth, min=thresh)
    return pixel_loss[true_prob <= threshold].mean()


class SegLoss:
    """`loss(outputs, target)`: CE (or OHEM CE) on outputs["out"], + aux_weight * CE on outputs["aux"] if present."""

    def __init__(self, aux_weight: float, ohem: bool, ohem_thresh: float, ohem_min_kept: int,
                 ignore_index: int = IGNORE_INDEX):
        if aux_weight < 0:
            raise ValueError(f"aux_weight: {aux_weight} must be >= 0")
        if not 0.0 <= ohem_thresh <= 1.0:
            raise ValueError(f"ohem_thresh: {ohem_thresh} must be in [0, 1]")
        if ohem_min_kept < 1:
            raise ValueError(f"train.ohem_min_kept: {ohem_min_kept} must be >= 1")
        self.aux_weight = aux_weight
        self.ohem = ohem
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = ohem_min_kept
        self.ignore_index = ignore_index

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> "SegLoss":
        """The loss `cfg` (train.*) asks for: the training engine's and the benchmarks' single source."""
        return cls(AUX_WEIGHT, cfg.ohem, OHEM_THRESH, cfg.ohem_min_kept)

    def __call__(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        logits = outputs["out"]
        if target.ndim != 3 or target.shape[0] != logits.shape[0] or target.shape[-2:] != logits.shape[-2:]:
            raise ValueError(f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)} "
                             f"(expected [B, H, W])")
        target = target.long()
        if self.ohem:
            loss = _ohem_ce(logits, target, self.ignore_index, self.ohem_thresh, self.ohem_min_kept)
        else:
            loss = _plain_ce(logits, target, self.ignore_index)
        if "aux" in outputs and self.aux_weight > 0:
            loss = loss + self.aux_weight * _plain_ce(outputs["aux"], target, self.ignore_index)
        return loss
