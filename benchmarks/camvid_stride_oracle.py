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

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.datasets.camvid import CLASSES, camvid
from pipeline.io import load_mask
from pipeline.metrics import confusion_matrix, scores_from_confusion


def stride_round_trip_scores(masks: list[np.ndarray], stride: int, input_size: tuple[int, int]) -> dict:
    """Scores of the train-id masks (255 = ignore) after one-hot -> area average to input_size / stride ->
    bilinear back to the mask size -> argmax, against themselves."""
    num = len(CLASSES)
    confusion = np.zeros((num, num), dtype=np.int64)
    for mask in masks:
        y = torch.from_numpy(mask.astype(np.int64))
        one_hot = F.one_hot(y.clamp(max=num - 1), num).permute(2, 0, 1)[None].float()  # ignore: any class, unscored
        small = F.interpolate(one_hot, size=(input_size[0] // stride, input_size[1] // stride), mode="area")
        back = F.interpolate(small, size=mask.shape, mode="bilinear", align_corners=False)[0].argmax(0)
        confusion += confusion_matrix(back.numpy(), mask, num)
    return scores_from_confusion(confusion, CLASSES)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="CamVid folder (SegNet layout)")
    p.add_argument("--input-size", type=int, nargs=2, default=(240, 320), help="network input h w")
    args = p.parse_args()
    pairs = camvid(args.root, "val")  # names the folder when it is missing or empty
    masks = [pairs.lut[load_mask(mask_path)] for _, mask_path in pairs.files]
    print(f"{len(masks)} val masks; ground truth through stride s of a {args.input_size[0]}x{args.input_size[1]} input")
    for stride in (8, 4, 2, 1):
        scores = stride_round_trip_scores(masks, stride, tuple(args.input_size))
        per_class = ", ".join(f"{c} {v:.2f}" for c, v in scores["per_class_iou"].items())
        print(f"stride {stride}: mIoU {100 * scores['miou']:.1f}  ({per_class})")


if __name__ == "__main__":
    main()
