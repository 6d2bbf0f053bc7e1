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
  step from the stride-4 logits to the input size is bilinear (there are no image-resolution features to align to).
- Segmentation head on the stride-4 level: 3x3 conv + BN + ReLU, Dropout2d(0.1), 1x1 conv to classes.
- Auxiliary head (`aux: true`, training only) on the stride-16 decoder level: 3x3 conv + BN + ReLU, 1x1 conv.
  The loss weight 0.4 is AUX_WEIGHT in pipeline/learn/losses.py.
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


class SegHead(nn.Module):
    """3x3 conv + BN + ReLU, optional dropout, 1x1 conv to class logits."""

    def __init__(self, width: int, num_classes: int, dropout: float):
        super().__init__()
        self.conv = conv_bn_relu(width, width, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classify = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.dropout(self.conv(x)))


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
        self.head = SegHead(cfg.width, num_classes, dropout=0.1)  # 0.1: the usual segmentation-head dropout
        self.aux_head = SegHead(cfg.width, num_classes, dropout=0.0) if cfg.aux else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"model input must be [B, 3, H, W], got {tuple(x.shape)}")
        size = x.shape[-2:]
        p4, p16 = self.decoder(self.backbone(x))
        out = {"out": F.interpolate(self.head(p4), size=size, mode="bilinear", align_corners=False)}
        if self.training and self.aux_head is not None:
            out["aux"] = F.interpolate(self.aux_head(p16), size=size, mode="bilinear", align_corners=False)
        return out


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The segmentation network described by `cfg` (see configs/lite.yaml, r50.yaml, r101.yaml)."""
    return SegNet(cfg, num_classes)
