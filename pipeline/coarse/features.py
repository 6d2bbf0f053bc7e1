"""Frozen EfficientNet-Lite0 (offline ImageNet weights) features for the coarse methods DDT and CAM.

    model = load_backbone(device)
    x = image_to_tensor(image, side=448)            # uint8 RGB [H, W, 3] -> normalised [1, 3, h, w], long side 448
    x = backbone_input(image, side=448)             # the same as a numpy [3, h, w] (what a CPU step hands a device)
    backbone_inputs(image, parts, side=448)         # {"x": that}: the `prepare` step of DDT's and CAM's network pass
    c32 = model.forward_features(x.to(device))[-1]  # [1, 320, h/32, w/32]
    head = head_features(model, x.to(device))       # [1, 1280, h/32, w/32]: what DDT and CAM use

`upsample_to(map, h, w)` brings a low-resolution score map back to the image's full resolution (bilinear, align
corners false), and `piecewise_probability` turns a score with a known decision point into a probability whose 0.5
sits exactly at that point (linear on each side, scaled by the image's own extremes).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.coarse.method import Inputs, Parts
from pipeline.models.efficientnet_lite import LITE0_MEAN, LITE0_STD, EfficientNetLite0, load_lite0_imagenet


def pick_device() -> torch.device:
    """CUDA when the task holds a GPU, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_backbone(device: torch.device) -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode, gradients off."""
    model = load_lite0_imagenet(EfficientNetLite0()).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def image_to_tensor(image: np.ndarray, side: int, model: EfficientNetLite0 | None = None,
                    square: bool = False) -> torch.Tensor:
    """Resize so the long side is `side` (aspect kept; `square`: to side x side), scale to 0-1 and normalise with the
    backbone's mean/std (`model`'s, by default EfficientNet-Lite0's)."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (side, side) if square else (max(32, round(h * scale)), max(32, round(w * scale)))
    x = torch.from_numpy(np.array(image, np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    mean = torch.tensor(model.mean if model is not None else LITE0_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(model.std if model is not None else LITE0_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def backbone_input(image: np.ndarray, side: int) -> np.ndarray:
    """`image_to_tensor` for the EfficientNet-Lite0 backbone as float32 [3, h, w] (resized and normalised on a CPU)."""
    return image_to_tensor(image, side)[0].numpy()


def backbone_inputs(image: np.ndarray, parts: Parts, side: int) -> Inputs:
    """The `prepare` step of DDT's and CAM's network pass (pipeline/coarse/method.py): {"x": `backbone_input`}."""
    return {"x": backbone_input(image, side)}


def head_features(model: EfficientNetLite0, x: torch.Tensor) -> torch.Tensor:
    """The classifier's 1280-channel stride-32 feature map (1x1 head conv + BN + ReLU6), before global pooling."""
    c32 = model.forward_features(x)[-1]
    return F.relu6(model._bn1(model._conv_head(c32)))


def upsample_to(score: np.ndarray | torch.Tensor, h: int, w: int) -> np.ndarray:
    """Bilinearly resize a 2-D score map to [h, w] (float32 numpy)."""
    t = torch.as_tensor(np.asarray(score, np.float32))[None, None]
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()


def piecewise_probability(score: np.ndarray, decision: float) -> np.ndarray:
    """Map scores to [0, 1] linearly on each side of `decision` (-> 0.5): max -> 1, min -> 0 (when on that side)."""
    score = np.asarray(score, np.float32)
    hi = max(float(score.max()) - decision, 1e-6)
    lo = max(decision - float(score.min()), 1e-6)
    prob = np.where(score >= decision, 0.5 + 0.5 * (score - decision) / hi, 0.5 - 0.5 * (decision - score) / lo)
    return np.clip(prob, 0.0, 1.0).astype(np.float32)
