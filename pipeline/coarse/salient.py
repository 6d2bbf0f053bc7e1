"""Salient-object maps from ISNet: the coarse method of the second track (`coarse.method: isnet`).

    inputs = isnet_inputs(image, parts={})                    # {"x": [3, 1024, 1024] float32}, resized, normalised
    saliency = Saliency(weights)(**inputs)                    # [1024, 1024] in [0, 1], on the actor's device
    prob = saliency_probability(saliency, image.shape[:2])    # back at the image size

ISNet (pipeline/models/isnet.py) was trained with pixel masks on DIS5K, other data than ours: a run that uses it is
weakly supervised by image-level labels *plus* a saliency network, the "S" track of weakly supervised segmentation
tables, and its numbers are reported apart from the image-level-only track. The map is class-agnostic; the image's
label names its class, and steering it by the label's class evidence (`coarse.method: steered`,
pipeline/coarse/steered.py) lets the label pick its object among the salient ones. Without a class to choose by,
`coarse.single_object` keeps only the largest salient object (`largest_object`), for data that labels one object
per photo.

Resizing to and from the network's 1024 x 1024 runs on a CPU; the network runs on the device (bf16 autocast and
channels_last on CUDA, float32 on CPU), one image (with its mirror image, `coarse.isnet_flip`) per forward pass, so
an image's map never depends on which images share a batch. stages/coarse.py runs these three steps (`method`) on
the pending images, sharded over the cluster's devices.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.coarse.features import pick_device
from pipeline.coarse.method import Inputs, Method, MethodSetting, NetworkPass, Parts
from pipeline.models.isnet import ISNET_SIZE, load_isnet_onnx, network_input
from pipeline.models.weights import isnet_path
from pipeline.stage import Record


def isnet_inputs(image: np.ndarray, parts: Parts) -> Inputs:
    """The network's input {"x": [3, 1024, 1024] float32} for an RGB uint8 image (resized on this CPU)."""
    return {"x": network_input(np.asarray(image, np.uint8), ISNET_SIZE, torch.device("cpu"))[0].numpy()}


class Saliency:
    """ISNet on this process's device (loaded once); maps an `isnet_inputs` x to its saliency [1024, 1024] in
    [0, 1]."""

    def __init__(self, weights: str, flip: bool = False):
        self.flip = flip  # also map the mirror image, mirror its map back and average the two
        self.device = pick_device()
        self.model = load_isnet_onnx(isnet_path(weights)).to(self.device).eval()
        self.on_cuda = self.device.type == "cuda"
        if self.on_cuda:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray, record: Record | None = None) -> np.ndarray:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.on_cuda):
            batch = torch.tensor(x)[None].to(self.device)
            prob = self.model(torch.cat([batch, batch.flip(-1)]) if self.flip else batch).float()
        if self.flip:
            prob = (prob[:1] + prob[1:].flip(-1)) / 2
        return prob[0, 0].cpu().numpy()


def saliency_probability(saliency: np.ndarray, size: tuple[int, int], single_object: bool = False) -> np.ndarray:
    """The saliency map resized (bilinear) to the image size [H, W], in [0, 1]; with `single_object`, only its
    largest object (`largest_object`)."""
    t = torch.from_numpy(np.asarray(saliency, np.float32))[None, None]
    prob = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].clamp_(0.0, 1.0).numpy()
    return largest_object(prob) if single_object else prob


def largest_object(prob: np.ndarray) -> np.ndarray:
    """The salient map with every object (8-connected region of p >= 0.5) but the largest turned to background:
    p -> 1 - p there, so a confident other object becomes confident background. For data sets that label one
    object per photo (GrabCut) and carry no class to choose it by; ties go to the first object in raster order."""
    from scipy import ndimage

    objects, count = ndimage.label(prob >= 0.5, structure=np.ones((3, 3), bool))
    if count < 2:
        return prob
    areas = np.bincount(objects.ravel(), minlength=count + 1)[1:]
    other = (objects > 0) & (objects != 1 + int(np.argmax(areas)))
    return np.where(other, 1.0 - prob, prob).astype(np.float32)



def method(setting: MethodSetting) -> Method:
    """`coarse.method: isnet` (and the salient part of `steered`): nothing per group, then the network per image."""
    cfg = setting.coarse
    isnet_path(cfg.isnet_weights)  # missing weights: one clear error here, before any actor starts
    return Method(network=NetworkPass(prepare=isnet_inputs,
                                      network=partial(Saliency, cfg.isnet_weights, cfg.isnet_flip),
                                      finish=partial(saliency_probability, single_object=cfg.single_object)))
