"""Convex upsampling of the stride-4 logits to the input size (RAFT's learned upsampling, Teed & Deng 2020).

    up = ConvexUpsample(channels=64, factor=4)
    logits_full = up(logits, hidden, size=(H, W))   # logits [B,K,h,w], hidden [B,64,h,w] -> [B,K,H,W]

Why: the decoder ends at stride 4, and bilinear x4 upsampling smears anything thinner than a 4-pixel cell (on
CamVid val at 240x320, even the ground truth sent through stride 4 and back tops out at 32 % IoU for poles; through
stride 2, 78 %). RAFT upsamples its stride-8 flow by letting every full-resolution pixel take a learned convex
combination of the 3x3 coarse pixels around its cell; the weights come from the features, so a cell can put its
thin structure on the right sub-pixels. Here the weights come from the segmentation head's hidden features (the
3x3 conv before its classifier), as RAFT's come from its GRU state.

Choices (ours, where RAFT differs or is silent):
- a 1x1 conv from the hidden features to 9 x factor^2 weight logits (RAFT: 3x3 conv + ReLU + 1x1; the head's 3x3
  conv already sits in front here), softmax over the 9 neighbours;
- borders are edge-replicated, not zero-padded (RAFT pads flow with zeros; zero logits would pull border pixels
  towards a uniform class distribution);
- the 1x1 conv starts at zero weight and a bias equal to the log of bilinear interpolation's weights, so an
  untrained module is exactly `F.interpolate(bilinear, align_corners=False)` and training starts from the
  baseline (as SRM starts as bilinear upsampling);
- sizes that are not factor x the coarse size (inputs not divisible by 4) get a final bilinear resize.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ZERO_WEIGHT_LOGIT = -30.0  # log-weight of the neighbours bilinear interpolation does not use (e^-30 ~ 1e-13)


def bilinear_neighbour_weights(factor: int) -> torch.Tensor:
    """[9, factor, factor]: weight of each 3x3 coarse neighbour (row-major, -1..1) for each sub-pixel of a cell,
    as `F.interpolate(mode="bilinear", align_corners=False)` upsampling by `factor` computes it."""
    pos = (torch.arange(factor, dtype=torch.float64) + 0.5) / factor - 0.5  # sub-pixel centre - cell centre, cells
    one_d = torch.stack((pos.neg().clamp(min=0), 1 - pos.abs(), pos.clamp(min=0)))  # [3 neighbours, factor]
    return torch.einsum("ai,bj->abij", one_d, one_d).reshape(9, factor, factor).float()


def convex_upsample(x: torch.Tensor, weight_logits: torch.Tensor, factor: int) -> torch.Tensor:
    """Each output pixel = softmax-weighted sum of the 3x3 coarse pixels around its cell.

    x [B, C, h, w], weight_logits [B, 9 * factor^2, h, w] (neighbour-major) -> [B, C, h * factor, w * factor]."""
    batch, channels, height, width = x.shape
    weights = torch.softmax(weight_logits.float().view(batch, 9, factor, factor, height, width), dim=1)
    padded = F.pad(x.float(), (1, 1, 1, 1), mode="replicate")
    neighbours = F.unfold(padded, 3).view(batch, channels, 9, height, width)
    up = torch.einsum("bnijhw,bcnhw->bcijhw", weights, neighbours)  # [B, C, factor, factor, h, w], no 9x copy
    return up.permute(0, 1, 4, 2, 5, 3).reshape(batch, channels, height * factor, width * factor).to(x.dtype)


class ConvexUpsample(nn.Module):
    """Upsample logits by `factor` with weights predicted from the features they were classified from."""

    def __init__(self, channels: int, factor: int = 4):  # 4: the decoder's last level is at stride 4
        super().__init__()
        self.factor = factor
        self.weights = nn.Conv2d(channels, 9 * factor * factor, 1)
        nn.init.zeros_(self.weights.weight)
        with torch.no_grad():  # log(0) = -inf for the unused neighbours, clamped to a finite e^-30
            self.weights.bias.copy_(bilinear_neighbour_weights(factor).log().clamp(min=_ZERO_WEIGHT_LOGIT).flatten())

    def forward(self, logits: torch.Tensor, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        up = convex_upsample(logits, self.weights(features), self.factor)
        if tuple(up.shape[-2:]) != tuple(size):
            up = F.interpolate(up, size=size, mode="bilinear", align_corners=False)
        return up
