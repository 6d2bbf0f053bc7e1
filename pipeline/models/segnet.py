"""The SRM/CRM segmentation network: backbone -> CRM context -> top-down decoder with SRM upsampling -> heads.

    model = build_model(load_config("configs/lite.yaml").model, num_classes=21)
    out = model(x)["out"]                 # [B, 21, H, W] logits at the input size; x normalised with model.mean/std
    out = model(x)["aux"]                 # training mode with model.aux only: auxiliary logits, same shape

Layout (Wang et al., TMM 2025, as far as the abstract goes; the rest are the choices listed here):
- Encoder: four stages at strides 4, 8, 16, 32 (pipeline/models/backbones.py).
- Top of the decoder (stride 32): the CRM context (pipeline/models/crm.py) over all four stages; with `crm: false`
  a 1x1 conv + BN + ReLU of the deepest stage (a plain FPN top).
- Top-down path (FPN, Lin et al. 2017), for stride 16, 8, 4: lateral 1x1 conv + BN + ReLU of the backbone stage to
  `width`, plus the coarser decoder level upsampled by SRM (`srm: true`, pipeline/models/srm.py) or bilinearly
  (`srm: false`), then a 3x3 conv + BN + ReLU. SRM is used at all three decoder upsampling steps; the last x4
  step from the stride-4 logits to the input size is bilinear (`upsample: bilinear`; there are no image-resolution
  features to align to) or RAFT's convex upsampling with weights from the head's hidden features (`upsample:
  convex`, pipeline/models/upsample.py; it starts as bilinear).
- `stride2: true` adds one more level at stride 2 from the encoder's last stride-2 features (Lite0's block 0,
  ResNet's conv1), with width / 2 channels (a 3x3 conv's cost grows with the pixel count, 4x at stride 2, and with
  the square of the width, so at width / 2 the head's 3x3 conv costs what it did at stride 4): lateral 1x1 conv
  plus the stride-4 level reduced to width / 2 by a 1x1 conv (before upsampling: 4x cheaper) and upsampled by SRM
  (`srm: true`) or bilinearly, with no 3x3 conv of its own (the head's follows); the head sits on it and the last
  step is x2. A bf16 CamVid step (8 x 240x320, width 64, 2 cores) costs ~12 % more in a micro-benchmark. Why: on
  CamVid val at 240x320 even the ground truth sent through stride 4 and back scores 32 % IoU for poles, through
  stride 2 78 % (benchmarks/camvid_stride_oracle.py). Off by default; the extra level is ours, not the paper's. At
  the 20-minute CPU budget it did not pay (docs/results_full.md: 67.9 vs 68.5-69.1 on the same seed).
- Segmentation head on the stride-4 level (stride 2 with `stride2`): 3x3 conv + BN + ReLU, Dropout2d(0.1), 1x1 conv
  to classes.
- Auxiliary head (`aux: true`, training only) on the stride-16 decoder level: 3x3 conv + BN + ReLU, 1x1 conv.
  The loss weight 0.4 lives in TrainConfig.aux_weight (pipeline/models/losses.py).
- Any input size works: each decoder level takes the exact size of its backbone stage.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import ModelConfig
from pipeline.models.backbones import build_backbone
from pipeline.models.crm import ContextualRefinement, conv_bn_relu
from pipeline.models.srm import SemanticRefinement
from pipeline.models.upsample import ConvexUpsample


class SegHead(nn.Module):
    """3x3 conv + BN + ReLU, optional dropout, 1x1 conv to class logits."""

    def __init__(self, width: int, num_classes: int, dropout: float):
        super().__init__()
        self.conv = conv_bn_relu(width, width, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classify = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.dropout(self.conv(x)))

    def forward_with_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, the 3x3 conv's features they were classified from)."""
        hidden = self.conv(x)
        return self.classify(self.dropout(hidden)), hidden


class TopDownDecoder(nn.Module):
    """FPN top-down path from stride 32 to stride 4; SRM (or bilinear) at every upsampling step."""

    def __init__(self, in_channels: tuple[int, int, int, int], width: int, use_crm: bool, use_srm: bool,
                 srm_mask: bool, srm_kernel: int):
        super().__init__()
        self.top = ContextualRefinement(in_channels, width) if use_crm else conv_bn_relu(in_channels[3], width)
        self.use_crm = use_crm
        # index 0, 1, 2 = strides 16, 8, 4 (the order the top-down path visits them)
        self.lateral = nn.ModuleList(conv_bn_relu(c, width) for c in reversed(in_channels[:3]))
        self.smooth = nn.ModuleList(conv_bn_relu(width, width, 3) for _ in range(3))
        self.srm = (nn.ModuleList(SemanticRefinement(width, srm_kernel, srm_mask) for _ in range(3))
                    if use_srm else None)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the stride-4 and stride-16 decoder levels."""
        p = self.top(feats) if self.use_crm else self.top(feats[3])
        levels = []
        for i, feat in enumerate((feats[2], feats[1], feats[0])):
            lateral = self.lateral[i](feat)
            if self.srm is not None:
                up = self.srm[i](p, lateral)
            else:
                up = F.interpolate(p, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            p = self.smooth[i](lateral + up)
            levels.append(p)
        return levels[2], levels[0]


class Stride2Level(nn.Module):
    """The `stride2` decoder level: lateral(stride-2 features) + upsample(reduce(p4))."""

    def __init__(self, in_channels: int, width: int, out_width: int, use_srm: bool, srm_mask: bool, srm_kernel: int):
        super().__init__()
        self.lateral = conv_bn_relu(in_channels, out_width)
        self.reduce = conv_bn_relu(width, out_width)
        self.srm = SemanticRefinement(out_width, srm_kernel, srm_mask) if use_srm else None

    def forward(self, p4: torch.Tensor, stride2: torch.Tensor) -> torch.Tensor:
        lateral, low = self.lateral(stride2), self.reduce(p4)
        if self.srm is not None:
            up = self.srm(low, lateral)
        else:
            up = F.interpolate(low, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        return lateral + up  # the head's 3x3 conv smooths it (a 3x3 conv of its own: +17 % per step instead of +12 %)


class SegNet(nn.Module):
    """Backbone + decoder + heads; `forward(x)` -> {"out": logits[, "aux": logits]} at the input size."""

    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: {num_classes} must be >= 1")
        self.backbone = build_backbone(cfg.backbone, cfg.pretrained, cfg.frozen_stages)
        self.mean = tuple(self.backbone.mean)
        self.std = tuple(self.backbone.std)
        self.decoder = TopDownDecoder(tuple(self.backbone.channels), cfg.width, cfg.crm, cfg.srm, cfg.srm_mask,
                                      cfg.srm_kernel)
        head_width = cfg.width // 2 if cfg.stride2 else cfg.width
        self.stride2 = (Stride2Level(self.backbone.stride2_channels, cfg.width, head_width, cfg.srm, cfg.srm_mask,
                                     cfg.srm_kernel) if cfg.stride2 else None)
        self.head = SegHead(head_width, num_classes, dropout=0.1)  # 0.1: the usual segmentation-head dropout
        self.aux_head = SegHead(cfg.width, num_classes, dropout=0.0) if cfg.aux else None
        self.upsample = (ConvexUpsample(head_width, factor=2 if cfg.stride2 else 4)  # the head's stride
                         if cfg.upsample == "convex" else None)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"model input must be [B, 3, H, W], got {tuple(x.shape)}")
        size = x.shape[-2:]
        if self.stride2 is not None:
            stride2, feats = self.backbone.stride2_and_stages(x)
            p4, p16 = self.decoder(feats)
            top = self.stride2(p4, stride2)
        else:
            top, p16 = self.decoder(self.backbone(x))
        if self.upsample is not None:
            logits, hidden = self.head.forward_with_hidden(top)
            out = {"out": self.upsample(logits, hidden, size)}
        else:
            out = {"out": F.interpolate(self.head(top), size=size, mode="bilinear", align_corners=False)}
        if self.training and self.aux_head is not None:
            out["aux"] = F.interpolate(self.aux_head(p16), size=size, mode="bilinear", align_corners=False)
        return out


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The segmentation network described by `cfg` (see configs/lite.yaml, r50.yaml, r101.yaml)."""
    return SegNet(cfg, num_classes)
