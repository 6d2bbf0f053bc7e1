"""Contextual Refinement Module (CRM): multi-level aggregation followed by CBAM-style attention, with a residual.

    crm = ContextualRefinement(in_channels=(24, 40, 112, 320), width=96)
    context = crm([c4, c8, c16, c32])     # [B, width, h32, w32]: the top of the decoder's top-down path

Assumptions (the paper's abstract says "project the four stages to a common width, bring them to one resolution,
aggregate, channel then spatial attention, residual"; everything else is chosen here):
- Projection: 1x1 conv + BN + ReLU per stage to `width` channels.
- Common resolution: the stride-32 grid of the deepest stage. Finer stages are area-averaged onto it with
  `adaptive_avg_pool2d` (exact for any input size, also when sizes are not multiples of 32). The CRM output is the
  context at the top of the decoder, where SFNet puts its pyramid pooling module; at stride 32 it is cheap.
- Aggregation: concatenate the four projections and fuse with 1x1 conv + BN + ReLU (4*width -> width).
- Attention order and form follow CBAM (Woo et al. 2018): channel attention = sigmoid(MLP(avgpool) + MLP(maxpool))
  with a shared 2-layer MLP of reduction 8 (CBAM uses 16; 8 keeps >= 12 hidden units at width 96); spatial
  attention = sigmoid(7x7 conv over [mean over channels, max over channels]).
- Residual: output = ReLU(aggregate + attended(aggregate)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class ChannelAttention(nn.Module):
    """CBAM channel attention: x * sigmoid(MLP(avg_pool(x)) + MLP(max_pool(x)))."""

    def __init__(self, channels: int, reduction: int = 8):  # reduction 8: see module docstring
        super().__init__()
        hidden = max(channels // reduction, 4)  # at least 4 hidden units for narrow decoders
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)
        peak = x.amax(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.mlp(avg) + self.mlp(peak))


class SpatialAttention(nn.Module):
    """CBAM spatial attention: x * sigmoid(conv7x7([mean_c(x), max_c(x)]))."""

    def __init__(self, kernel: int = 7):  # CBAM's 7x7
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class ContextualRefinement(nn.Module):
    """Project 4 stages to `width`, pool to stride 32, fuse, then channel + spatial attention with a residual."""

    def __init__(self, in_channels: tuple[int, int, int, int], width: int):
        super().__init__()
        self.project = nn.ModuleList(conv_bn_relu(c, width) for c in in_channels)
        self.fuse = conv_bn_relu(4 * width, width)
        self.channel_attention = ChannelAttention(width)
        self.spatial_attention = SpatialAttention()

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[-1].shape[-2:]
        levels = []
        for project, feat in zip(self.project, feats):
            y = project(feat)
            if y.shape[-2:] != size:
                y = F.adaptive_avg_pool2d(y, size)
            levels.append(y)
        aggregate = self.fuse(torch.cat(levels, dim=1))
        attended = self.spatial_attention(self.channel_attention(aggregate))
        return F.relu(aggregate + attended)
