"""Fusion of coarse foreground maps: the per-pixel geometric mean of the methods' probabilities.

    p = geometric_mean([p_ddt, p_saliency])        # float [H, W] each -> float32 [H, W]

A pixel is confident foreground only when every method leans that way (the geometric mean is pulled down by any
low vote), which suits coarse labels: a false foreground pixel costs more than an ignored one. Probabilities are
floored at FLOOR before the logarithm so a single hard zero does not veto the others completely. How the fusion
compares with the single methods on real photos: docs/results.md.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

FLOOR = 1e-3  # smallest probability entering the log (one method's 0 gives at most FLOOR^(1/n))


def geometric_mean(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel geometric mean of foreground probability maps of one shape."""
    if not maps:
        raise ValueError("fusion needs at least one map")
    shape = np.shape(maps[0])
    for m in maps:
        if np.shape(m) != shape:
            raise ValueError(f"fusion: maps differ in shape ({np.shape(m)} vs {shape})")
    logs = [np.log(np.clip(np.asarray(m, np.float64), FLOOR, 1.0)) for m in maps]
    return np.exp(np.mean(logs, axis=0)).astype(np.float32)


STEER_KEEP = 0.5  # a salient object is kept when its class evidence reaches this share of the best object's
STEER_MIN = 0.3  # below this evidence on every salient object, the label's object is not among them
OBJECT_WEIGHT = 0.3  # object evidence: mean CAM^(1 - this) x crop probability^this (chosen on COCO's tune half)


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
        raise ValueError(f"fusion: evidence {cue.shape} and salient map {salient.shape} differ in shape")
    objects, count = label_objects(salient)
    if count == 0:
        return cue
    score = ndimage.mean(cue, labels=objects, index=np.arange(1, count + 1))
    dropped = geometric_mean([salient, cue])
    if object_evidence is not None:
        if object_evidence.shape != salient.shape:
            raise ValueError(f"fusion: object evidence {object_evidence.shape} and salient map {salient.shape} differ")
        own = ndimage.mean(object_evidence, labels=objects, index=np.arange(1, count + 1))
        score = score ** (1 - object_weight) * own ** object_weight
        dropped = np.where(objects > 0, geometric_mean([salient, cue, object_evidence]), dropped)
    if score.max() < min_evidence:
        return cue
    kept = np.isin(objects, 1 + np.flatnonzero(score >= keep * score.max()))
    return np.where(kept, salient, dropped).astype(np.float32)
