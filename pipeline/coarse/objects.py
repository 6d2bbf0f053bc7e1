"""Class evidence per salient object: each ISNet object's crop classified by the ImageNet classifier (`objects` in
`coarse.evidence` of `coarse.method: steered`, with `cam` and `coarse.cam_imagenet_classes`).

    inputs = object_input(image, salient)                        # CPU: the salient objects and a crop of each
    evidence = ObjectClassifier(label_classes)(**inputs, record=r)  # device: P(the label's classes | the crop) on
                                                                  # each object's pixels
    method(setting)  # for stages/coarse.py: reads the `isnet` part; steered.steer_salient reads what it writes
                     # (`_parts/objects/`) as `object_evidence`

The label's CAM is computed at 448 px on the whole photo, a 14 x 14 grid: too coarse to tell a small labelled object
from its neighbours. Its crop, classified at the classifier's own resolution, can; `steered.steer_salient` scores
each object by a weighted geometric mean of both (docs/experiments.md). The objects are those `steer_salient`
finds (`steered.label_objects`): the connected regions (8-connectivity) of the stored salient map at p >= 0.5.
"""
from __future__ import annotations

from functools import partial
from typing import Mapping

import numpy as np
import torch
from scipy import ndimage

from pipeline.coarse.features import image_to_tensor, load_backbone, pick_device
from pipeline.coarse.method import Inputs, Method, MethodSetting, NetworkPass, Parts
from pipeline.coarse.steered import SALIENT, label_objects
from pipeline.stage import Record

CROP_SIDE = 224  # the classifier's training resolution: each crop is resized to CROP_SIDE x CROP_SIDE
CROP_MARGIN = 0.1  # context: the crop is a square of the object's longer box side x (1 + 2 x this), clipped
MIN_OBJECT = 0.002  # objects under this share of the photo are not classified (evidence 0): a few stray pixels
NO_EVIDENCE = 0.5  # a label without ImageNet classes: every pixel as likely, like the CAM's 0.5 there


def crop_tensor(crop: np.ndarray) -> np.ndarray:
    """An RGB uint8 crop as the classifier's input: float32 [3, CROP_SIDE, CROP_SIDE], normalised."""
    return image_to_tensor(crop, CROP_SIDE, square=True)[0].numpy()


def object_input(image: np.ndarray, salient: np.ndarray) -> Inputs:
    """What the device step needs for one image: "objects" (int32 [H, W], 0 = not salient, k = object k),
    "ids" (the objects classified, those of at least MIN_OBJECT of the photo) and "crops" (their crops,
    float32 [n, 3, CROP_SIDE, CROP_SIDE])."""
    objects, count = label_objects(salient)
    if image.shape[:2] != objects.shape:
        raise ValueError(f"object_input: image {image.shape[:2]} and salient map {objects.shape} differ in size")
    height, width = objects.shape
    areas = np.bincount(objects.ravel(), minlength=count + 1)[1:]  # pixels per object
    crops, ids = [], []
    for number, (area, box) in enumerate(zip(areas, ndimage.find_objects(objects)), start=1):
        if area < MIN_OBJECT * height * width:
            continue
        side = max(box[0].stop - box[0].start, box[1].stop - box[1].start) * (1 + 2 * CROP_MARGIN)
        cy, cx = (box[0].start + box[0].stop) / 2, (box[1].start + box[1].stop) / 2
        y0, y1 = int(max(0, cy - side / 2)), int(min(height, cy + side / 2))
        x0, x1 = int(max(0, cx - side / 2)), int(min(width, cx + side / 2))
        crops.append(crop_tensor(image[y0:y1, x0:x1]))
        ids.append(number)
    crops_array = np.stack(crops) if crops else np.zeros((0, 3, CROP_SIDE, CROP_SIDE), np.float32)
    return {"objects": objects.astype(np.int32), "ids": np.array(ids, np.int64), "crops": crops_array}


def object_inputs(image: np.ndarray, parts: Parts) -> Inputs:
    """The `prepare` step of the objects pass: `object_input` of the image and its ISNet part."""
    return object_input(image, parts[SALIENT])


class ObjectClassifier:
    """Device step: an image's object evidence [H, W] from its `object_input`, each classified object's pixels
    holding its crop's probability summed over the label's ImageNet classes, all other pixels 0; a label without
    classes gets NO_EVIDENCE everywhere. One image's crops per forward pass."""

    def __init__(self, label_classes: Mapping[int, tuple[int, ...]]):
        self.label_classes = label_classes
        self.device = pick_device()
        self.model = load_backbone(self.device)

    @torch.no_grad()
    def evidence(self, crops: np.ndarray, objects: np.ndarray, ids: np.ndarray, label: int) -> np.ndarray:
        classes = list(self.label_classes.get(label, ()))
        if not classes:
            return np.full(objects.shape, NO_EVIDENCE, np.float32)
        per_object = np.zeros(int(objects.max()) + 1, np.float32)
        if len(ids):
            probs = self.model(torch.tensor(np.asarray(crops, np.float32), device=self.device)).softmax(-1)
            per_object[np.asarray(ids)] = probs[:, classes].sum(-1).cpu().numpy()
        return per_object[objects]

    def __call__(self, crops: np.ndarray, objects: np.ndarray, ids: np.ndarray, record: Record) -> np.ndarray:
        return self.evidence(crops, objects, ids, record.label)


def full_size(evidence: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The `finish` step of the objects pass: the evidence is made at the image's size already."""
    if evidence.shape != tuple(size):
        raise ValueError(f"object evidence {evidence.shape} is not at the image's size {size}")
    return evidence


def method(setting: MethodSetting) -> Method:
    """The objects pass (`objects` in `coarse.evidence`): reads the `isnet` part, nothing per group, then the
    ImageNet classifier on each image's object crops."""
    if setting.label_classes is None:
        raise ValueError("coarse.evidence: objects classifies each salient object as the label's ImageNet classes, "
                         "so it needs coarse.cam_imagenet_classes set")
    return Method(parts=(SALIENT,), network=NetworkPass(prepare=object_inputs,
                                                        network=partial(ObjectClassifier, setting.label_classes),
                                                        finish=full_size))
