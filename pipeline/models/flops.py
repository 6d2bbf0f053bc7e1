"""GMACs and parameter counts of the network variants and ablation switches (inference, one image).

    python -m pipeline.models.flops                  # 1x3x1024x2048, lite/r50/r101 x srm/srm_mask/crm settings
    python -m pipeline.models.flops --size 512 1024 --variants lite

Conventions (the paper reports 137.9 "GFLOPs" for its lightweight network at 1024x2048; segmentation papers
usually mean multiply-adds by that, so compare it with the GMACs column):
- One multiply-add = 1 MAC. Convolutions and matmuls come from torch.utils.flop_counter.FlopCounterMode
  (which counts 2 FLOPs per multiply-add; halved here).
- Ops FlopCounterMode does not count are added with these formulas (per output element unless said otherwise):
    grid_sample (bilinear)              4 MACs per output element (4 weighted taps per channel)
    upsample_bilinear2d                 4 MACs per output element (same arithmetic as grid_sample)
    mul (attention gating x*sigmoid(a), SRM mask-weighted offsets)   1 MAC per output element
                                        (the sum over the k*k neighbours is folded into these MACs)
    softmax (SRM mask)                  3 ops per element (exp, sum, divide), counted as 3 MACs
    sigmoid (CRM attention)             1 per element
    mean / amax / adaptive_avg_pool2d   1 per input element (CBAM pooling, CRM resizing)
- Not counted (the usual convention): BatchNorm (folds into the convs at inference), ReLU/ReLU6, residual adds,
  padding. Parameters are those used at inference (the auxiliary head, training only, is left out).
- The count is exact for the given size: the model runs on the "meta" device (shapes only, no memory, no time).
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import ModelConfig
from pipeline.models.segnet import build_model

aten = torch.ops.aten
VARIANTS = {  # the model sections of configs/lite.yaml, r50.yaml, r101.yaml
    "lite": ModelConfig(backbone="lite0", width=96),
    "r50": ModelConfig(backbone="resnet50", width=256),
    "r101": ModelConfig(backbone="resnet101", width=256),
}
SWITCHES = (  # (srm, srm_mask, crm)
    (False, False, False),
    (True, False, False),
    (True, True, False),
    (False, False, True),
    (True, False, True),
    (True, True, True),
)
PAPER_LITE_GFLOPS = 137.9  # Wang et al. 2025, lightweight network at 1024x2048


def _numel(shape) -> int:
    return math.prod(shape)


# FlopCounterMode formulas return FLOPs = 2 x MACs, so every extra formula returns 2 x its MAC count.
def _per_output(macs_per_element: int):
    def formula(*args, out_shape=None, **kwargs) -> int:
        return 2 * macs_per_element * _numel(out_shape)
    return formula


def _per_input(*args, out_shape=None, **kwargs) -> int:
    return 2 * _numel(args[0])


EXTRA_FORMULAS = {
    aten.grid_sampler_2d: _per_output(4),
    aten.upsample_bilinear2d: _per_output(4),
    aten.mul: _per_output(1),
    aten._softmax: _per_output(3),
    aten.sigmoid: _per_output(1),
    aten.mean: _per_input,
    aten.amax: _per_input,
    aten._adaptive_avg_pool2d: _per_input,
}


def count(cfg: ModelConfig, size: tuple[int, int], num_classes: int = 19) -> dict:
    """{"gmacs", "backbone_gmacs", "params_m"} of one inference pass of a 1x3xHxW image."""
    cfg = replace(cfg, pretrained="none", aux=False)
    with torch.device("meta"):
        model = build_model(cfg, num_classes).eval()
        x = torch.empty(1, 3, *size)
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    with counter, torch.no_grad():
        model(x)
    per_module = counter.get_flop_counts()
    backbone = sum(v for k, ops in per_module.items() if k.endswith(".backbone") for v in ops.values())
    return {"gmacs": counter.get_total_flops() / 2e9, "backbone_gmacs": backbone / 2e9,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def table(variants: list[str], size: tuple[int, int], num_classes: int) -> list[str]:
    lines = [f"GMACs (1 multiply-add = 1) and parameters at 1x3x{size[0]}x{size[1]}, {num_classes} classes, inference",
             "| variant | srm | srm_mask | crm | GMACs | backbone GMACs | params (M) |",
             "|---|---|---|---|---:|---:|---:|"]
    for name in variants:
        for srm, srm_mask, crm in SWITCHES:
            cfg = replace(VARIANTS[name], srm=srm, srm_mask=srm_mask, crm=crm)
            c = count(cfg, size, num_classes)
            lines.append(f"| {name} ({cfg.backbone}, width {cfg.width}) | {'on' if srm else 'off'} | "
                         f"{'on' if srm and srm_mask else 'off'} | {'on' if crm else 'off'} | {c['gmacs']:.2f} | "
                         f"{c['backbone_gmacs']:.2f} | {c['params_m']:.2f} |")
    lines.append(f"Paper (Wang et al. 2025), lightweight network at 1024x2048: {PAPER_LITE_GFLOPS} GFLOPs.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coarse2fine flops", description=__doc__.split("\n")[0])
    parser.add_argument("--size", nargs=2, type=int, default=(1024, 2048), metavar=("H", "W"),
                        help="input height and width (default: 1024 2048, Cityscapes)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="network variants to count (default: all)")
    parser.add_argument("--classes", type=int, default=19, help="output classes (default: 19, Cityscapes)")
    args = parser.parse_args(argv)
    if min(args.size) < 1 or args.classes < 1:
        parser.error("--size and --classes must be positive")
    print("\n".join(table(args.variants, tuple(args.size), args.classes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
