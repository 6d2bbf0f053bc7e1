"""Semantic Refinement Module (SRM): learned, offset-guided upsampling of low-resolution features.

    srm = SemanticRefinement(channels=96, kernel=3, use_mask=True)
    up = srm(low, high)        # low [B,C,h,w] -> [B,C,H,W] aligned to high [B,C,H,W]

What it does (the paper's abstract gives only "offsets + a mask over neighbouring offsets + warping"; the details
below are the well-founded choices made here):
1. Offset prediction follows SFNet's flow alignment (Li et al. 2020): both inputs are reduced to C/2 channels with
   1x1 convs (the low-resolution one before upsampling, which is cheaper), the low one is upsampled bilinearly,
   the two are concatenated and a 3x3 conv predicts a 2-channel offset field (dx, dy) at the high resolution.
2. The mask follows RAFT's convex upsampling (Teed & Deng 2020): a second 3x3 conv on the same input predicts
   k*k logits per pixel, softmax over them, and the final offset of a pixel is the softmax-weighted sum of the raw
   offsets in its k x k neighbourhood (edge-replicated at the borders). `use_mask=False` uses the raw offsets.
3. Offsets are in pixels of the high-resolution grid. The low-resolution features are sampled with
   `grid_sample(bilinear, align_corners=False, padding_mode="border")` at (pixel centre + offset). With a zero
   offset this is exactly `F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)`. Sampling runs
   in float32 even under bf16 autocast (bf16 coordinates would be off by up to ~1/256 of the image width).
4. The offset conv starts at zero weight and bias, so an untrained SRM equals bilinear upsampling. The mask conv
   has the default init (any convex combination of zero offsets is zero). At the first step only the offset conv
   gets a gradient; the mask conv starts learning once offsets are non-zero.
5. The module returns only the aligned upsampled features; the decoder adds the high-resolution features (FPN).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pixel_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """[1, H, W, 2] normalised (x, y) coordinates of the pixel centres for grid_sample(align_corners=False)."""
    ys = (torch.arange(height, device=like.device, dtype=like.dtype) + 0.5) * (2.0 / height) - 1.0
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) * (2.0 / width) - 1.0
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1)[None]


def warp(low: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Sample `low` [B,C,h,w] at the high-res pixel centres shifted by `offset` [B,2,H,W] (pixels, x then y)."""
    height, width = offset.shape[-2:]
    offset = offset.float()  # in bf16 the normalised coordinates would be off by up to ~1/256 of the image width
    scale = torch.tensor((2.0 / width, 2.0 / height), device=offset.device, dtype=offset.dtype)
    grid = pixel_grid(height, width, offset) + offset.permute(0, 2, 3, 1) * scale
    out = F.grid_sample(low.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(low.dtype)


def convex_combine(offset: torch.Tensor, mask_logits: torch.Tensor, kernel: int) -> torch.Tensor:
    """Per pixel, the softmax(mask_logits)-weighted sum of the offsets in its kernel x kernel neighbourhood."""
    batch, _, height, width = offset.shape
    pad = kernel // 2
    # edge replication by concatenating the edge rows/columns, not F.pad(mode="replicate"): the same numbers and speed,
    # but inductor (torch.compile) fails a stride check in replication_pad2d_backward on channels_last offsets
    padded = torch.cat([offset[:, :, :1].expand(-1, -1, pad, -1), offset, offset[:, :, -1:].expand(-1, -1, pad, -1)], 2)
    padded = torch.cat([padded[..., :1].expand(-1, -1, -1, pad), padded, padded[..., -1:].expand(-1, -1, -1, pad)], 3)
    neighbours = F.unfold(padded, kernel).view(batch, 2, kernel * kernel, height, width)
    weights = torch.softmax(mask_logits, dim=1).unsqueeze(1)  # [B, 1, k*k, H, W]
    return (neighbours * weights).sum(dim=2)


class SemanticRefinement(nn.Module):
    """Upsample `low` to the size of `high` by warping it along predicted (optionally convex-combined) offsets."""

    def __init__(self, channels: int, kernel: int = 3, use_mask: bool = True):  # k = 3: RAFT's 3x3 neighbourhood
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"model.srm_kernel: {kernel} must be an odd number >= 1")
        half = max(channels // 2, 1)
        self.down_low = nn.Conv2d(channels, half, 1, bias=False)
        self.down_high = nn.Conv2d(channels, half, 1, bias=False)
        self.offset = nn.Conv2d(2 * half, 2, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.kernel = kernel
        self.use_mask = use_mask
        self.mask = nn.Conv2d(2 * half, kernel * kernel, 3, padding=1) if use_mask else None

    def predict_offset(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Final per-pixel offset [B, 2, H, W] in high-resolution pixels."""
        size = high.shape[-2:]
        low_up = F.interpolate(self.down_low(low), size=size, mode="bilinear", align_corners=False)
        both = torch.cat((low_up, self.down_high(high)), dim=1)
        offset = self.offset(both)
        if self.mask is not None:
            offset = convex_combine(offset, self.mask(both), self.kernel)
        return offset

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return warp(low, self.predict_offset(low, high))
