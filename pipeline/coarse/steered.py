"""`coarse.method: steered`: ISNet's salient objects, those the image's label points at (the second track).

    p = steer_salient(salient, [p_cam], object_evidence=p_objects)   # float [H, W] each -> float32 [H, W]
    method(setting)      # for stages/coarse.py: the parts (isnet, then `coarse.evidence`), then one CPU task per image

ISNet's map (pipeline/coarse/salient.py) is class-agnostic: it finds every salient object. The label's class evidence,
the methods listed in `coarse.evidence` (cam, ddt, saliency; their geometric mean), picks the objects to keep. With
`objects` in the evidence, each salient object's crop is also classified as the label's ImageNet classes
(pipeline/coarse/objects.py) and that probability joins each object's score. The salient map is always ISNet's, the
only salient-object network the project ships. Measured on COCO-MVal: docs/results.md (how the rule was chosen:
docs/experiments.md).
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import numpy as np

from pipeline.coarse.fusion import geometric_mean
from pipeline.coarse.method import Method, MethodSetting, Parts

STEER_KEEP = 0.5  # a salient object is kept when its class evidence reaches this share of the best object's
STEER_MIN = 0.3  # below this evidence on every salient object, the label's object is not among them
OBJECT_WEIGHT = 0.3  # object evidence: mean CAM^(1 - this) x crop probability^this (chosen on COCO's tune half)
SALIENT = "isnet"  # the part holding the salient map
OBJECTS = "objects"  # the evidence that is each object's own crop probability, not a map to average


def label_objects(salient: np.ndarray) -> tuple[np.ndarray, int]:
    """The salient map's objects: connected regions of p >= 0.5 (8-connectivity), numbered 1..count."""
    from scipy import ndimage

    return ndimage.label(np.asarray(salient) >= 0.5, structure=np.ones((3, 3), bool))


def steer_salient(salient: np.ndarray, evidence: Sequence[np.ndarray], keep: float = STEER_KEEP,
                  min_evidence: float = STEER_MIN, object_evidence: np.ndarray | None = None,
                  object_weight: float = OBJECT_WEIGHT) -> np.ndarray:
    """The salient map's objects that the image's label points at (label steering of a class-agnostic map).

    The salient mask (p >= 0.5) is split into connected objects (8-connectivity). An object's class evidence is the
    mean, over its pixels, of the evidence maps' geometric mean (e.g. the label group's DDT map, the label's CAM).
    Objects whose evidence reaches `keep` x the best object's keep their salient probability; everywhere else the
    probability is the geometric mean of the salient map and the evidence, so a salient object of another class
    drops out while a region both maps agree on stays. When no object reaches `min_evidence`, the labelled object
    is not among the salient ones and the evidence map alone is returned. With `object_evidence` (a map holding each
    object's own class probability, pipeline/coarse/objects.py), an object's evidence is the weighted geometric mean
    of its mean evidence above and that probability (weight `object_weight`), and the objects not kept take the
    geometric mean of all three maps, so one the crop calls another class drops out even where the CAM lies on it.
    """
    from scipy import ndimage

    salient = np.asarray(salient, np.float32)
    cue = geometric_mean(evidence)
    if cue.shape != salient.shape:
        raise ValueError(f"steered: evidence {cue.shape} and salient map {salient.shape} differ in shape")
    objects, count = label_objects(salient)
    if count == 0:
        return cue
    score = ndimage.mean(cue, labels=objects, index=np.arange(1, count + 1))
    dropped = geometric_mean([salient, cue])
    if object_evidence is not None:
        if object_evidence.shape != salient.shape:
            raise ValueError(f"steered: object evidence {object_evidence.shape} and salient map {salient.shape} "
                             "differ")
        own = ndimage.mean(object_evidence, labels=objects, index=np.arange(1, count + 1))
        score = score ** (1 - object_weight) * own ** object_weight
        dropped = np.where(objects > 0, geometric_mean([salient, cue, object_evidence]), dropped)
    if score.max() < min_evidence:
        return cue
    kept = np.isin(objects, 1 + np.flatnonzero(score >= keep * score.max()))
    return np.where(kept, salient, dropped).astype(np.float32)


def steered_probability(image: None, parts: Parts, evidence: tuple[str, ...]) -> np.ndarray:
    """The per-image function of `coarse.method: steered`: the salient part steered by the `evidence` parts (each
    name once, in order; `objects` as each object's own evidence)."""
    cues = [parts[name] for name in dict.fromkeys(evidence) if name != OBJECTS]
    return steer_salient(parts[SALIENT], cues, object_evidence=parts[OBJECTS] if OBJECTS in evidence else None)


def method(setting: MethodSetting) -> Method:
    """`coarse.method: steered`: ISNet's part, then the evidence's parts (`coarse.evidence`), then one CPU task per
    image. load_config checks the evidence (known names, one besides `objects`, what `objects` needs)."""
    evidence = tuple(setting.coarse.evidence)
    return Method(parts=(SALIENT, *evidence), per_image=partial(steered_probability, evidence=evidence))
