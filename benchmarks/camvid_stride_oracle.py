"""How much of CamVid val survives a network that predicts at stride s: the ground truth itself, sent through stride s.

    .venv/bin/python benchmarks/camvid_stride_oracle.py --root ../shared/data/camvid

Each val mask (360x480, SegNet layout `valannot/*.png`, 11 = ignore) becomes one-hot, is area-averaged to the
stride-s grid of the 240x320 network input (ANCHORS.md's evaluation size), upsampled bilinearly back to 360x480
(what the evaluation does with logits) and arg-maxed; the printed mIoU and per-class IoU against the original mask
are the ceiling of a perfect stride-s predictor with bilinear upsampling. The segmentation network's logits are at
stride 4 (pipeline/models/segnet.py); `model.upsample: convex` (pipeline/models/upsample.py) is meant to recover
part of the gap to stride 1 on thin classes (pole, sign).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian", "bicyclist")


def stride_round_trip_iou(masks: list[np.ndarray], stride: int, input_size: tuple[int, int]) -> np.ndarray:
    """Per-class IoU [11] of the masks after one-hot -> area average to input_size / stride -> bilinear back."""
    num = len(CLASSES)
    confusion = np.zeros(num * num, dtype=np.int64)
    for mask in masks:
        y = torch.from_numpy(mask.astype(np.int64))
        valid = y < num
        one_hot = F.one_hot(y.clamp(max=num - 1), num).permute(2, 0, 1)[None].float()
        small = F.interpolate(one_hot, size=(input_size[0] // stride, input_size[1] // stride), mode="area")
        back = F.interpolate(small, size=mask.shape, mode="bilinear", align_corners=False)[0].argmax(0)
        confusion += np.bincount((y[valid] * num + back[valid]).numpy(), minlength=num * num)
    confusion = confusion.reshape(num, num)
    return np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="CamVid folder (SegNet layout)")
    p.add_argument("--input-size", type=int, nargs=2, default=(240, 320), help="network input h w")
    args = p.parse_args()
    files = sorted(Path(args.root, "valannot").glob("*.png"))
    if not files:
        raise SystemExit(f"{Path(args.root, 'valannot')}: no *.png masks (expected the SegNet layout)")
    masks = [np.array(Image.open(f)) for f in files]
    print(f"{len(masks)} val masks; ground truth through stride s of a {args.input_size[0]}x{args.input_size[1]} input")
    for stride in (8, 4, 2, 1):
        iou = stride_round_trip_iou(masks, stride, tuple(args.input_size))
        per_class = ", ".join(f"{c} {v:.2f}" for c, v in zip(CLASSES, iou))
        print(f"stride {stride}: mIoU {100 * iou.mean():.1f}  ({per_class})")


if __name__ == "__main__":
    main()
