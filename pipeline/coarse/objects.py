"""Class evidence per salient object: each ISNet object's crop classified by the ImageNet classifier
(`coarse.classify_objects`, with `fusion: [isnet, cam]` and `coarse.cam_imagenet_classes`).

    columns = object_input(image, salient)          # CPU: the salient objects and a crop of each
    batch = ObjectClassifier(label_classes)(batch)  # device: each object's pixels <- P(the label's classes | crop)
    # stages/coarse.py writes that map into `_parts/objects/`; fusion.steer_salient reads it as `object_evidence`

The label's CAM is computed at 448 px on the whole photo, a 14 x 14 grid: too coarse to tell a small labelled object
from its neighbours. Its crop, classified at the classifier's own resolution, can; `fusion.steer_salient` scores
each object by a weighted geometric mean of both (docs/experiments.md). The objects are those `steer_salient`
finds: the connected regions (8-connectivity) of the stored salient map at p >= 0.5.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from pipeline.coarse.features import image_to_tensor, load_backbone, pick_device
from pipeline.coarse.fusion import label_objects
from pipeline.orchestration.sharded import Batch, batch_records, replace_columns

CROP_SIDE = 224  # the classifier's training resolution: each crop is resized to CROP_SIDE x CROP_SIDE
CROP_MARGIN = 0.1  # context: the crop is a square of the object's longer box side x (1 + 2 x this), clipped
MIN_OBJECT = 0.002  # objects under this share of the photo are not classified (evidence 0): a few stray pixels
NO_EVIDENCE = 0.5  # a label without ImageNet classes: every pixel as likely, like the CAM's 0.5 there


def crop_tensor(crop: np.ndarray) -> np.ndarray:
    """An RGB uint8 crop as the classifier's input: float32 [3, CROP_SIDE, CROP_SIDE], normalised."""
    return image_to_tensor(crop, CROP_SIDE, square=True)[0].numpy()


def object_input(image: np.ndarray, salient: np.ndarray) -> dict[str, np.ndarray]:
    """The columns the device step needs for one image: "objects" (int32 [H, W], 0 = not salient, k = object k),
    "ids" (the objects classified, those of at least MIN_OBJECT of the photo) and "input" (their crops,
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
    return {"objects": objects.astype(np.int32), "ids": np.array(ids, np.int64), "input": crops_array}


class ObjectClassifier:
    """Device step over a batch of `object_input` rows: "score" = the image's object evidence [H, W], each
    classified object's pixels holding its crop's probability summed over the label's ImageNet classes, all
    other pixels 0; a label without classes gets NO_EVIDENCE everywhere. One image's crops per forward pass."""

    def __init__(self, label_classes: dict[int, tuple[int, ...]]):
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

    def __call__(self, batch: Batch) -> Batch:
        maps = [self.evidence(crops, objects, ids, record.label) for crops, objects, ids, record
                in zip(batch["input"], batch["objects"], batch["ids"], batch_records(batch))]
        return replace_columns({k: v for k, v in batch.items() if k not in ("objects", "ids")}, "input", score=maps)
